//! Match rules (AddMatch, RemoveMatch, BecomeMonitor): parsing, matching, and an index so that
//! routing a broadcast looks only at rules that could match it.
//!
//! zbus has a `MatchRule`, but a bus cannot use it: it compares `argNpath` only as equal object
//! paths (the specification also matches strings, and prefixes ending in '/', which dconf uses
//! with `arg0path='/a/b/'`, a value zbus refuses), it treats `path_namespace='/a'` as a string
//! prefix (so it matches `/ab`), and rules are not counted, so a second AddMatch of the same
//! rule would be lost on the first RemoveMatch. The grammar and semantics here follow the
//! specification and dbus-daemon.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

use zbus::message::Type;
use zbus::names::{BusName, InterfaceName, MemberName};
use zbus::wire::ObjectPath;

/// The highest argument index a rule may test.
pub const MAX_ARG: u8 = 63;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchRuleError(pub String);

impl fmt::Display for MatchRuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn invalid(text: impl Into<String>) -> MatchRuleError {
    MatchRuleError(text.into())
}

/// What a rule says about one argument.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ArgMatch {
    /// `argN='…'`: a string argument equal to this.
    Str(String),
    /// `argNpath='…'`: a string or object path equal to this, or a '/'-ended prefix of it (or
    /// the other way round).
    Path(String),
    /// `arg0namespace='…'`: a string argument in this dot-separated namespace.
    Namespace(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchRule {
    msg_type: Option<Type>,
    sender: Option<String>,
    interface: Option<String>,
    member: Option<String>,
    path: Option<String>,
    path_namespace: Option<String>,
    destination: Option<String>,
    /// Sorted by argument index; at most one entry per index.
    args: Vec<(u8, ArgMatch)>,
    eavesdrop: bool,
}

fn type_name(t: Type) -> &'static str {
    match t {
        Type::Signal => "signal",
        Type::MethodCall => "method_call",
        Type::MethodReturn => "method_return",
        Type::Error => "error",
    }
}

/// Split a rule into its `key=value` pairs, with dbus-daemon's quoting: a value may mix quoted
/// ('…', inside which everything is literal) and unquoted parts; outside quotes, `\'` is a
/// quote character and a comma ends the value.
fn pairs(text: &str) -> Result<Vec<(String, String)>, MatchRuleError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        let key = key.trim().to_string();
        if key.is_empty() {
            return Err(invalid(format!(
                "Match rule has an empty key in \"{text}\""
            )));
        }
        let mut value = String::new();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            if quoted {
                if c == '\'' {
                    quoted = false;
                } else {
                    value.push(c);
                }
            } else if c == '\'' {
                quoted = true;
            } else if c == '\\' && chars.peek() == Some(&'\'') {
                chars.next();
                value.push('\'');
            } else if c == ',' {
                break;
            } else {
                value.push(c);
            }
        }
        if quoted {
            return Err(invalid(format!(
                "Unbalanced quotation marks in match rule \"{text}\""
            )));
        }
        out.push((key, value));
    }
    Ok(out)
}

fn valid_path(value: &str, key: &str) -> Result<String, MatchRuleError> {
    ObjectPath::try_from(value)
        .map(|_| value.to_string())
        .map_err(|_| invalid(format!("{key} '{value}' is not a valid object path")))
}

/// A namespace for arg0namespace: a bus or interface name, or a prefix of one (no trailing '.').
fn valid_namespace(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 255
        && !value.starts_with('.')
        && !value.ends_with('.')
        && !value.contains("..")
        && value.split('.').all(|element| {
            !element.is_empty()
                && !element.starts_with(|c: char| c.is_ascii_digit())
                && element
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

impl MatchRule {
    pub fn parse(text: &str) -> Result<MatchRule, MatchRuleError> {
        let mut rule = MatchRule::default();
        let mut seen: Vec<String> = Vec::new();
        for (key, value) in pairs(text)? {
            if seen.contains(&key) {
                return Err(invalid(format!("Key '{key}' appears twice in match rule")));
            }
            seen.push(key.clone());
            match key.as_str() {
                "type" => {
                    rule.msg_type = Some(match value.as_str() {
                        "signal" => Type::Signal,
                        "method_call" => Type::MethodCall,
                        "method_return" => Type::MethodReturn,
                        "error" => Type::Error,
                        other => {
                            return Err(invalid(format!(
                                "Invalid message type \"{other}\" in match rule"
                            )));
                        }
                    })
                }
                "sender" => {
                    BusName::try_from(value.as_str())
                        .map_err(|_| invalid(format!("Sender name '{value}' is invalid")))?;
                    rule.sender = Some(value);
                }
                "interface" => {
                    InterfaceName::try_from(value.as_str())
                        .map_err(|_| invalid(format!("Interface name '{value}' is invalid")))?;
                    rule.interface = Some(value);
                }
                "member" => {
                    MemberName::try_from(value.as_str())
                        .map_err(|_| invalid(format!("Member name '{value}' is invalid")))?;
                    rule.member = Some(value);
                }
                "path" => rule.path = Some(valid_path(&value, "Path")?),
                "path_namespace" => {
                    rule.path_namespace = Some(valid_path(&value, "Path namespace")?)
                }
                "destination" => {
                    BusName::try_from(value.as_str())
                        .map_err(|_| invalid(format!("Destination name '{value}' is invalid")))?;
                    rule.destination = Some(value);
                }
                "eavesdrop" => {
                    rule.eavesdrop = match value.as_str() {
                        "true" => true,
                        "false" => false,
                        other => {
                            return Err(invalid(format!(
                                "eavesdrop='{other}' is invalid, should be 'true' or 'false'"
                            )));
                        }
                    }
                }
                _ => rule.parse_arg_key(&key, value)?,
            }
        }
        if rule.path.is_some() && rule.path_namespace.is_some() {
            return Err(invalid(
                "path and path_namespace cannot both appear in a match rule",
            ));
        }
        rule.args.sort();
        Ok(rule)
    }

    fn parse_arg_key(&mut self, key: &str, value: String) -> Result<(), MatchRuleError> {
        let Some(rest) = key.strip_prefix("arg") else {
            return Err(invalid(format!("Unknown key \"{key}\" in match rule")));
        };
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (digits, suffix) = rest.split_at(digits_end);
        let index: u8 = match digits.parse::<u32>() {
            Ok(n)
                if n <= MAX_ARG as u32
                    && !digits.is_empty()
                    && (digits == "0" || !digits.starts_with('0')) =>
            {
                n as u8
            }
            _ => {
                return Err(invalid(format!(
                    "Key {key} is not a valid argument key (arg0 to arg{MAX_ARG})"
                )));
            }
        };
        let matcher = match suffix {
            "" => ArgMatch::Str(value),
            "path" => ArgMatch::Path(value),
            "namespace" if index == 0 => {
                if !valid_namespace(&value) {
                    return Err(invalid(format!(
                        "arg0namespace='{value}' is not a valid prefix of a bus name"
                    )));
                }
                ArgMatch::Namespace(value)
            }
            _ => return Err(invalid(format!("Key {key} is not a valid argument key"))),
        };
        if self.args.iter().any(|(i, _)| *i == index) {
            return Err(invalid(format!("Argument {index} matched more than once")));
        }
        self.args.push((index, matcher));
        Ok(())
    }

    pub fn eavesdrop(&self) -> bool {
        self.eavesdrop
    }

    pub fn sender(&self) -> Option<&str> {
        self.sender.as_deref()
    }

    pub fn member(&self) -> Option<&str> {
        self.member.as_deref()
    }

    fn needs_args(&self) -> bool {
        !self.args.is_empty()
    }

    /// Does this rule match `msg`, whose arguments (if needed) are `args`? Sender and eavesdrop
    /// conditions are the index's business; this checks everything else.
    fn matches_fields(&self, msg: &MatchMessage<'_>, args: &Args) -> bool {
        if self.msg_type.is_some_and(|t| t != msg.msg_type) {
            return false;
        }
        if let Some(i) = &self.interface {
            if msg.interface != Some(i.as_str()) {
                return false;
            }
        }
        if let Some(m) = &self.member {
            if msg.member != Some(m.as_str()) {
                return false;
            }
        }
        if let Some(p) = &self.path {
            if msg.path != Some(p.as_str()) {
                return false;
            }
        }
        if let Some(ns) = &self.path_namespace {
            let Some(path) = msg.path else {
                return false;
            };
            let inside = ns == "/"
                || path == ns
                || (path.starts_with(ns.as_str()) && path.as_bytes().get(ns.len()) == Some(&b'/'));
            if !inside {
                return false;
            }
        }
        if let Some(d) = &self.destination {
            if msg.addressed_unique != Some(d.as_str()) && msg.destination != Some(d.as_str()) {
                return false;
            }
        }
        self.args.iter().all(|(index, matcher)| {
            let Some(arg) = args.get(*index as usize) else {
                return false;
            };
            match (matcher, arg) {
                (ArgMatch::Str(want), Arg::Str(have)) => want == have,
                (ArgMatch::Path(want), Arg::Str(have) | Arg::Path(have)) => {
                    want == have
                        || (want.ends_with('/') && have.starts_with(want.as_str()))
                        || (have.ends_with('/') && want.starts_with(have.as_str()))
                }
                (ArgMatch::Namespace(ns), Arg::Str(have)) => {
                    have == ns
                        || (have.starts_with(ns.as_str())
                            && have.as_bytes().get(ns.len()) == Some(&b'.'))
                }
                _ => false,
            }
        })
    }
}

impl fmt::Display for MatchRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        let quote = |v: &str| format!("'{}'", v.replace('\'', "'\\''"));
        if let Some(t) = self.msg_type {
            parts.push(format!("type='{}'", type_name(t)));
        }
        for (key, value) in [
            ("sender", &self.sender),
            ("interface", &self.interface),
            ("member", &self.member),
            ("path", &self.path),
            ("path_namespace", &self.path_namespace),
            ("destination", &self.destination),
        ] {
            if let Some(v) = value {
                parts.push(format!("{key}={}", quote(v)));
            }
        }
        for (index, matcher) in &self.args {
            let (suffix, v) = match matcher {
                ArgMatch::Str(v) => ("", v),
                ArgMatch::Path(v) => ("path", v),
                ArgMatch::Namespace(v) => ("namespace", v),
            };
            parts.push(format!("arg{index}{suffix}={}", quote(v)));
        }
        if self.eavesdrop {
            parts.push("eavesdrop='true'".into());
        }
        f.write_str(&parts.join(","))
    }
}

/// A message as matching sees it.
pub struct MatchMessage<'a> {
    pub msg_type: Type,
    /// Unique name of the sender, or "org.freedesktop.DBus" for the bus.
    pub sender: Option<&'a str>,
    /// Well-known names the sender is primary owner of.
    pub sender_names: &'a [&'a str],
    /// The DESTINATION field as sent.
    pub destination: Option<&'a str>,
    /// Unique name of the connection the message is addressed to (None for a broadcast).
    pub addressed_unique: Option<&'a str>,
    pub path: Option<&'a str>,
    pub interface: Option<&'a str>,
    pub member: Option<&'a str>,
    /// The message, for its arguments.
    pub message: &'a zbus::Message,
}

/// A string-like argument of a message body.
enum Arg {
    Str(String),
    Path(String),
    Other,
}

type Args = Vec<Arg>;

/// The message's arguments, up to arg63, as matching needs them.
fn parse_args(msg: &zbus::Message) -> Args {
    let body = msg.body();
    let Ok(structure) = body.deserialize::<zbus::wire::Structure<'_>>() else {
        return Vec::new();
    };
    structure
        .fields()
        .iter()
        .take(MAX_ARG as usize + 1)
        .map(|v| match v {
            zbus::wire::Variant::Str(s) => Arg::Str(s.as_str().to_string()),
            zbus::wire::Variant::ObjectPath(p) => Arg::Path(p.as_str().to_string()),
            _ => Arg::Other,
        })
        .collect()
}

/// Which rules a broadcast could match: by sender, then by member.
#[derive(Default)]
struct Bucket {
    by_member: HashMap<String, Vec<usize>>,
    any_member: Vec<usize>,
}

impl Bucket {
    fn slot(&mut self, member: Option<&str>) -> &mut Vec<usize> {
        match member {
            Some(m) => self.by_member.entry(m.to_string()).or_default(),
            None => &mut self.any_member,
        }
    }

    fn is_empty(&self) -> bool {
        self.by_member.is_empty() && self.any_member.is_empty()
    }
}

struct Entry<K> {
    owner: K,
    rule: MatchRule,
    /// How many times the owner added this rule.
    count: usize,
}

/// Every connection's match rules, indexed by sender and member. A query looks at the rules
/// without a sender, those for the sender's unique name and for each name it owns, and in each
/// of those only at rules for the message's member or for any member: the cost follows the
/// rules that could match, not all rules on the bus.
pub struct MatchIndex<K> {
    entries: Vec<Option<Entry<K>>>,
    free: Vec<usize>,
    any_sender: Bucket,
    by_sender: HashMap<String, Bucket>,
    by_owner: HashMap<K, Vec<usize>>,
    total: usize,
}

impl<K: Copy + Eq + Hash + Ord> Default for MatchIndex<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy + Eq + Hash + Ord> MatchIndex<K> {
    pub fn new() -> Self {
        MatchIndex {
            entries: Vec::new(),
            free: Vec::new(),
            any_sender: Bucket::default(),
            by_sender: HashMap::new(),
            by_owner: HashMap::new(),
            total: 0,
        }
    }

    fn bucket(&mut self, sender: Option<&str>) -> &mut Bucket {
        match sender {
            Some(s) => self.by_sender.entry(s.to_string()).or_default(),
            None => &mut self.any_sender,
        }
    }

    pub fn add(&mut self, owner: K, rule: MatchRule) {
        self.total += 1;
        if let Some(ids) = self.by_owner.get(&owner) {
            for &id in ids {
                if let Some(e) = &mut self.entries[id] {
                    if e.rule == rule {
                        e.count += 1;
                        return;
                    }
                }
            }
        }
        let (sender, member) = (rule.sender.clone(), rule.member.clone());
        let entry = Entry {
            owner,
            rule,
            count: 1,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id] = Some(entry);
                id
            }
            None => {
                self.entries.push(Some(entry));
                self.entries.len() - 1
            }
        };
        self.bucket(sender.as_deref())
            .slot(member.as_deref())
            .push(id);
        self.by_owner.entry(owner).or_default().push(id);
    }

    fn unlink(&mut self, id: usize) {
        let Some(entry) = self.entries[id].take() else {
            return;
        };
        let sender = entry.rule.sender.as_deref();
        let member = entry.rule.member.as_deref();
        let bucket = match sender {
            Some(s) => self.by_sender.get_mut(s),
            None => Some(&mut self.any_sender),
        };
        if let Some(bucket) = bucket {
            let list = match member {
                Some(m) => bucket.by_member.get_mut(m),
                None => Some(&mut bucket.any_member),
            };
            if let Some(list) = list {
                if let Some(pos) = list.iter().position(|x| *x == id) {
                    list.swap_remove(pos);
                }
                if list.is_empty() {
                    if let Some(m) = member {
                        bucket.by_member.remove(m);
                    }
                }
            }
            if let Some(s) = sender {
                if bucket.is_empty() {
                    self.by_sender.remove(s);
                }
            }
        }
        self.free.push(id);
    }

    /// Remove one instance of `rule` added by `owner`.
    pub fn remove(&mut self, owner: K, rule: &MatchRule) -> bool {
        let Some(ids) = self.by_owner.get_mut(&owner) else {
            return false;
        };
        let Some(pos) = ids
            .iter()
            .position(|id| self.entries[*id].as_ref().is_some_and(|e| &e.rule == rule))
        else {
            return false;
        };
        let id = ids[pos];
        self.total -= 1;
        let entry = self.entries[id].as_mut().expect("listed entry exists");
        entry.count -= 1;
        if entry.count == 0 {
            ids.swap_remove(pos);
            if ids.is_empty() {
                self.by_owner.remove(&owner);
            }
            self.unlink(id);
        }
        true
    }

    pub fn remove_owner(&mut self, owner: K) {
        for id in self.by_owner.remove(&owner).unwrap_or_default() {
            if let Some(e) = &self.entries[id] {
                self.total -= e.count;
            }
            self.unlink(id);
        }
    }

    /// Rules of `owner`, duplicates counted.
    pub fn rule_count(&self, owner: K) -> usize {
        self.by_owner.get(&owner).map_or(0, |ids| {
            ids.iter()
                .filter_map(|id| self.entries[*id].as_ref())
                .map(|e| e.count)
                .sum()
        })
    }

    pub fn rules_of(&self, owner: K) -> impl Iterator<Item = &MatchRule> {
        self.by_owner
            .get(&owner)
            .into_iter()
            .flatten()
            .filter_map(|id| self.entries[*id].as_ref())
            .flat_map(|e| std::iter::repeat_n(&e.rule, e.count))
    }

    pub fn total_rules(&self) -> usize {
        self.total
    }

    /// Call `f` once for each owner with a rule matching `msg`. `addressed` is the connection
    /// a unicast message goes to: other owners' rules match it only with eavesdrop='true'.
    pub fn recipients(&self, msg: &MatchMessage<'_>, addressed: Option<K>, mut f: impl FnMut(K)) {
        let mut buckets: Vec<&Bucket> = Vec::with_capacity(2 + msg.sender_names.len());
        buckets.push(&self.any_sender);
        for name in msg
            .sender
            .into_iter()
            .chain(msg.sender_names.iter().copied())
        {
            if let Some(b) = self.by_sender.get(name) {
                buckets.push(b);
            }
        }
        let mut args: Option<Args> = None;
        let mut owners: Vec<K> = Vec::new();
        for bucket in buckets {
            let by_member = msg.member.and_then(|m| bucket.by_member.get(m));
            for &id in by_member
                .into_iter()
                .flatten()
                .chain(bucket.any_member.iter())
            {
                let Some(entry) = &self.entries[id] else {
                    continue;
                };
                if let Some(a) = addressed {
                    if entry.owner != a && !entry.rule.eavesdrop {
                        continue;
                    }
                }
                let args = if entry.rule.needs_args() {
                    &*args.get_or_insert_with(|| parse_args(msg.message))
                } else {
                    &Vec::new()
                };
                if entry.rule.matches_fields(msg, args) {
                    owners.push(entry.owner);
                }
            }
        }
        owners.sort_unstable();
        owners.dedup();
        for owner in owners {
            f(owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::Message;

    fn rule(text: &str) -> MatchRule {
        MatchRule::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn signal(
        path: &str,
        iface: &str,
        member: &str,
        body: impl serde::Serialize + zbus::wire::DynamicType,
    ) -> Message {
        Message::signal(path, iface, member).build(&body).unwrap()
    }

    /// The header fields of a test message, owned so that a query can borrow them.
    struct Fields {
        path: String,
        interface: String,
        member: String,
    }

    fn fields(msg: &Message) -> Fields {
        let h = msg.header();
        Fields {
            path: h.path().unwrap().to_string(),
            interface: h.interface().unwrap().to_string(),
            member: h.member().unwrap().to_string(),
        }
    }

    fn query<'a>(
        msg: &'a Message,
        f: &'a Fields,
        sender: &'a str,
        names: &'a [&'a str],
    ) -> MatchMessage<'a> {
        MatchMessage {
            msg_type: Type::Signal,
            sender: Some(sender),
            sender_names: names,
            destination: None,
            addressed_unique: None,
            path: Some(&f.path),
            interface: Some(&f.interface),
            member: Some(&f.member),
            message: msg,
        }
    }

    fn matching(index: &MatchIndex<u64>, q: &MatchMessage<'_>, addressed: Option<u64>) -> Vec<u64> {
        let mut out = Vec::new();
        index.recipients(q, addressed, |o| out.push(o));
        out
    }

    fn one(text: &str, msg: &Message) -> bool {
        let mut index = MatchIndex::new();
        index.add(1u64, rule(text));
        let f = fields(msg);
        !matching(&index, &query(msg, &f, ":1.5", &["org.x.Owner"]), None).is_empty()
    }

    #[test]
    fn parse_every_key_and_print_it_back() {
        let r = rule(
            "type='signal',sender='org.a',interface='org.b',member='C',path='/d',destination=':1.2',arg0='x',arg1path='/p/',arg3='y',eavesdrop='true'",
        );
        assert!(r.eavesdrop());
        let again = rule(&r.to_string());
        assert_eq!(again, r);
        assert_eq!(
            rule("path_namespace='/a',arg0namespace='org.b'").to_string(),
            "path_namespace='/a',arg0namespace='org.b'"
        );
        assert_eq!(rule(""), MatchRule::default());
    }

    #[test]
    fn quoting_and_escapes() {
        assert_eq!(rule("arg0='a,b'").args[0].1, ArgMatch::Str("a,b".into()));
        assert_eq!(rule(r"arg0=\'").args[0].1, ArgMatch::Str("'".into()));
        assert_eq!(rule(r"arg0='\'").args[0].1, ArgMatch::Str("\\".into()));
        assert_eq!(
            rule("arg0=unquoted").args[0].1,
            ArgMatch::Str("unquoted".into())
        );
        assert_eq!(rule(" member='X', type='signal'").member(), Some("X"));
        let r = rule("arg0='it'\\''s'");
        assert_eq!(r.args[0].1, ArgMatch::Str("it's".into()));
        assert_eq!(rule(&r.to_string()), r);
    }

    #[test]
    fn invalid_rules_are_refused() {
        for text in [
            "type='bogus'",
            "member='1bad'",
            "interface='nodots'",
            "path='no/slash'",
            "path='/a',path_namespace='/b'",
            "arg64='x'",
            "arg01='x'",
            "arg1namespace='a.b'",
            "arg0namespace='a..b'",
            "argx='y'",
            "foo='bar'",
            "member='A',member='B'",
            "arg0='a',arg0path='/b'",
            "eavesdrop='maybe'",
            "sender='!'",
            "member='unterminated",
            "='x'",
        ] {
            assert!(MatchRule::parse(text).is_err(), "{text} should be invalid");
        }
    }

    #[test]
    fn fields_match() {
        let m = signal(
            "/org/x/Obj",
            "org.x.Iface",
            "Changed",
            ("first", zbus::wire::ObjectPath::try_from("/a/b/c").unwrap()),
        );
        assert!(one(
            "type='signal',interface='org.x.Iface',member='Changed'",
            &m
        ));
        assert!(!one("type='method_call'", &m));
        assert!(!one("member='Other'", &m));
        assert!(one("path='/org/x/Obj'", &m));
        assert!(one("path_namespace='/org/x'", &m));
        assert!(one("path_namespace='/'", &m));
        assert!(!one("path_namespace='/org/xy'", &m));
        assert!(!one("path_namespace='/org/x/Ob'", &m));
        assert!(one("sender=':1.5'", &m));
        assert!(one("sender='org.x.Owner'", &m));
        assert!(!one("sender='org.x.Other'", &m));
        assert!(one("arg0='first'", &m));
        assert!(!one("arg0='firs'", &m));
        assert!(!one("arg1='/a/b/c'", &m), "argN matches strings only");
        assert!(one("arg1path='/a/b/c'", &m));
        assert!(one("arg1path='/a/b/'", &m));
        assert!(one("arg1path='/'", &m));
        assert!(!one("arg1path='/a/b'", &m));
        assert!(one("arg0path='first'", &m), "argNpath compares strings too");
        assert!(!one("arg2='x'", &m), "missing argument");
    }

    #[test]
    fn argpath_prefix_goes_both_ways_and_namespaces_split_on_dots() {
        let m = signal("/", "org.x.I", "S", ("/a/b/",));
        assert!(one("arg0path='/a/b/c'", &m));
        assert!(one("arg0path='/a/'", &m));
        assert!(!one("arg0path='/a/bc'", &m));
        let m = signal("/", "org.x.I", "S", ("org.gtk.Foo",));
        assert!(one("arg0namespace='org.gtk'", &m));
        assert!(one("arg0namespace='org.gtk.Foo'", &m));
        assert!(!one("arg0namespace='org.gt'", &m));
    }

    #[test]
    fn eavesdropping_needs_the_flag() {
        let m = signal("/", "org.x.I", "S", ());
        let mut index = MatchIndex::new();
        index.add(1u64, rule("member='S'"));
        index.add(2u64, rule("member='S',eavesdrop='true'"));
        index.add(3u64, rule("member='S'"));
        let f = fields(&m);
        let q = query(&m, &f, ":1.9", &[]);
        assert_eq!(matching(&index, &q, None), vec![1, 2, 3]);
        assert_eq!(matching(&index, &q, Some(3)), vec![2, 3]);
    }

    #[test]
    fn duplicates_are_counted() {
        let mut index = MatchIndex::new();
        index.add(1u64, rule("member='S'"));
        index.add(1u64, rule("member='S'"));
        assert_eq!(index.rule_count(1), 2);
        assert_eq!(index.total_rules(), 2);
        assert_eq!(index.rules_of(1).count(), 2);
        assert!(index.remove(1, &rule("member='S'")));
        let m = signal("/", "org.x.I", "S", ());
        let f = fields(&m);
        assert_eq!(matching(&index, &query(&m, &f, ":1.1", &[]), None), vec![1]);
        assert!(index.remove(1, &rule("member='S'")));
        assert!(!index.remove(1, &rule("member='S'")));
        assert!(matching(&index, &query(&m, &f, ":1.1", &[]), None).is_empty());
        assert_eq!(index.total_rules(), 0);
    }

    #[test]
    fn removing_an_owner_forgets_its_rules() {
        let mut index = MatchIndex::new();
        index.add(1u64, rule("sender='org.a',member='S'"));
        index.add(1u64, rule("interface='org.x.I'"));
        index.add(2u64, rule("interface='org.x.I'"));
        index.remove_owner(1);
        assert_eq!(index.total_rules(), 1);
        assert!(index.by_sender.is_empty());
        let m = signal("/", "org.x.I", "S", ());
        let f = fields(&m);
        assert_eq!(
            matching(&index, &query(&m, &f, ":1.1", &["org.a"]), None),
            vec![2]
        );
    }

    /// A tiny deterministic generator, enough to shake the index.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    #[test]
    fn the_index_agrees_with_a_scan_of_every_rule() {
        let senders = ["", "sender=':1.1',", "sender='org.a',", "sender='org.b',"];
        let members = ["", "member='A',", "member='B',"];
        let paths = ["", "path='/x',", "path_namespace='/x',"];
        let args = ["", "arg0='v',", "arg0path='/x/',"];
        let mut rng = Rng(0x9E3779B97F4A7C15);
        let mut index = MatchIndex::new();
        let mut all: Vec<(u64, MatchRule)> = Vec::new();
        for _ in 0..400 {
            let text = format!(
                "{}{}{}{}type='signal'",
                senders[rng.next(4)],
                members[rng.next(3)],
                paths[rng.next(3)],
                args[rng.next(3)]
            );
            let owner = rng.next(20) as u64;
            let r = rule(&text);
            index.add(owner, r.clone());
            all.push((owner, r));
        }
        for _ in 0..200 {
            let member = ["A", "B", "C"][rng.next(3)];
            let path = ["/x", "/x/y", "/z"][rng.next(3)];
            let arg = ["v", "/x/q", "w"][rng.next(3)];
            let m = signal(path, "org.x.I", member, (arg,));
            let (sender, names): (&str, &[&str]) = [
                (":1.1", &["org.a"][..]),
                (":1.2", &["org.b"][..]),
                (":1.3", &[][..]),
            ][rng.next(3)];
            let f = fields(&m);
            let q = query(&m, &f, sender, names);
            let got = matching(&index, &q, None);
            let mut want: Vec<u64> = all
                .iter()
                .filter(|(_, r)| {
                    r.sender
                        .as_deref()
                        .is_none_or(|s| s == sender || names.contains(&s))
                        && r.matches_fields(&q, &parse_args(&m))
                })
                .map(|(o, _)| *o)
                .collect();
            want.sort_unstable();
            want.dedup();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn the_parser_never_panics() {
        let mut rng = Rng(12345);
        let alphabet: Vec<char> = "type=signal',\\ arg0path_namespace/.:1=eavesdroptrue\u{e9}\0"
            .chars()
            .collect();
        for _ in 0..20000 {
            let len = rng.next(40);
            let text: String = (0..len)
                .map(|_| alphabet[rng.next(alphabet.len())])
                .collect();
            let _ = MatchRule::parse(&text);
        }
    }
}
