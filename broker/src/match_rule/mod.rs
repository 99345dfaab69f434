//! Match rules (AddMatch, RemoveMatch, BecomeMonitor): parsing, matching, and an index so that
//! routing a message looks only at the rules that could match it.
//!
//! The grammar and the semantics are dbus-daemon's (bus/signals.c), which the specification
//! describes: see [`MatchRule::parse`] for the text, [`MatchRule::matches`] for what each key
//! means, and [`MatchIndex`] for the index and the eavesdropping rules.
//!
//! Why not zbus's `MatchRule`: a bus cannot use it. It compares `argNpath` only as equal object
//! paths, where the specification also takes strings and prefixes ending in '/' both ways
//! (dconf subscribes with `arg0path='/a/b/'`, a value zbus refuses); it treats
//! `path_namespace='/a'` as a string prefix, so it matches `/ab`; its validators of names differ
//! from dbus-daemon's at the edges (`:1`, one-element `arg0namespace`); and equal rules are one
//! value, while a bus must count them, as a client may add a rule twice and remove it once.

mod args;
mod index;
mod names;
mod parse;

use std::fmt;

use zbus::message::Type;

use args::{Arg, LazyArgs};
pub use index::MatchIndex;
pub use parse::MAX_RULE_LENGTH;

/// The highest argument index a rule may test.
pub const MAX_ARG: u8 = 63;

/// The error a bus answers an invalid rule with.
pub const MATCH_RULE_INVALID: &str = "org.freedesktop.DBus.Error.MatchRuleInvalid";
/// The error a bus answers a rule longer than [`MAX_RULE_LENGTH`] with.
pub const LIMITS_EXCEEDED: &str = "org.freedesktop.DBus.Error.LimitsExceeded";

/// Why a rule text was refused: a D-Bus error name and dbus-daemon's text for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchRuleError {
    name: &'static str,
    message: String,
}

impl MatchRuleError {
    fn invalid(message: impl Into<String>) -> Self {
        MatchRuleError {
            name: MATCH_RULE_INVALID,
            message: message.into(),
        }
    }

    fn too_long(message: String) -> Self {
        MatchRuleError {
            name: LIMITS_EXCEEDED,
            message,
        }
    }

    /// The D-Bus error name to reply with: [`MATCH_RULE_INVALID`], or [`LIMITS_EXCEEDED`] for
    /// a rule text over 1024 bytes (as dbus-daemon does).
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for MatchRuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for MatchRuleError {}

/// `path=` or `path_namespace=` (a rule has at most one of them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathMatch {
    /// `path='…'`: the message's path is this one.
    Exact(String),
    /// `path_namespace='…'`: the message's path is this one or below it.
    Namespace(String),
}

impl PathMatch {
    /// Does a message with this path match?
    fn takes(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(want) => path == want,
            PathMatch::Namespace(ns) => in_path_namespace(path, ns),
        }
    }
}

/// What a rule says about one argument.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ArgMatch {
    /// `argN='…'`: a STRING argument equal to this.
    Str(String),
    /// `argNpath='…'`: a STRING or OBJECT_PATH argument equal to this, or of which this is a
    /// prefix ending in '/', or which is a prefix of this ending in '/'.
    Path(String),
    /// `arg0namespace='…'`: a STRING argument equal to this, or starting with this and a '.'.
    Namespace(String),
}

/// A parsed match rule. Two rules are equal when dbus-daemon would find them equal: the same
/// keys with the same values, whatever the order and quoting of their texts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MatchRule {
    msg_type: Option<Type>,
    sender: Option<String>,
    interface: Option<String>,
    member: Option<String>,
    path: Option<PathMatch>,
    destination: Option<String>,
    /// Sorted by argument index; at most one entry per index.
    args: Vec<(u8, ArgMatch)>,
    eavesdrop: bool,
}

/// A message as matching sees it. The router fills it from the header it has parsed already.
pub struct MatchMessage<'a> {
    pub msg_type: Type,
    /// Unique name of the sender, or "org.freedesktop.DBus" for the bus itself.
    pub sender: Option<&'a str>,
    /// Well-known names the sender is the primary owner of.
    pub sender_names: &'a [&'a str],
    /// The DESTINATION header field as sent (a name).
    pub destination: Option<&'a str>,
    /// Unique name of the connection the message is addressed to (None for a broadcast).
    pub addressed_unique: Option<&'a str>,
    /// Well-known names the addressed connection is the primary owner of.
    pub addressed_names: &'a [&'a str],
    pub path: Option<&'a str>,
    pub interface: Option<&'a str>,
    pub member: Option<&'a str>,
    /// The whole message's bytes: `argN` keys read its body, once per message, and only if a
    /// rule that is otherwise a candidate has them.
    pub message: &'a [u8],
}

impl MatchRule {
    pub fn msg_type(&self) -> Option<Type> {
        self.msg_type
    }

    pub fn sender(&self) -> Option<&str> {
        self.sender.as_deref()
    }

    pub fn interface(&self) -> Option<&str> {
        self.interface.as_deref()
    }

    pub fn member(&self) -> Option<&str> {
        self.member.as_deref()
    }

    pub fn path(&self) -> Option<&PathMatch> {
        self.path.as_ref()
    }

    pub fn destination(&self) -> Option<&str> {
        self.destination.as_deref()
    }

    /// The argument conditions, by increasing index.
    pub fn args(&self) -> &[(u8, ArgMatch)] {
        &self.args
    }

    pub fn eavesdrop(&self) -> bool {
        self.eavesdrop
    }

    /// The same rule with eavesdrop set: dbus-daemon makes every rule of a monitor (BecomeMonitor)
    /// an eavesdropping one.
    pub fn with_eavesdrop(mut self, eavesdrop: bool) -> Self {
        self.eavesdrop = eavesdrop;
        self
    }

    /// The `arg0='…'` value, if the rule has one: the index files rules under it.
    fn arg0_str(&self) -> Option<&str> {
        match self.args.first() {
            Some((0, ArgMatch::Str(value))) => Some(value),
            _ => None,
        }
    }

    /// Does `msg` satisfy every key of this rule? Eavesdropping is not decided here but by
    /// [`MatchIndex::recipients`], which knows who the message is addressed to.
    ///
    /// - `type`, `interface`, `member`, `path`: equal to the header field (absent never matches).
    /// - `path_namespace='/a/b'`: the path is `/a/b` or starts with `/a/b/`; `'/'` takes any
    ///   path.
    /// - `sender`: the sender's unique name, or a well-known name it is the primary owner of;
    ///   `org.freedesktop.DBus` for messages from the bus.
    /// - `destination`: only messages with a DESTINATION field; the name must be the unique
    ///   name of the connection they are addressed to, or the name they were sent to (that
    ///   connection's primary name), or with no addressed connection the DESTINATION itself.
    /// - `argN`: a STRING argument, byte for byte. `argNpath`: a STRING or OBJECT_PATH argument
    ///   equal to the value, or one of the two a prefix of the other that ends in '/'.
    ///   `arg0namespace`: a STRING argument equal to the value or starting with it and a '.'.
    pub fn matches(&self, msg: &MatchMessage<'_>) -> bool {
        self.matches_with(msg, &LazyArgs::new(msg.message))
    }

    /// [`Self::matches`], with the message's arguments shared between rules.
    fn matches_with(&self, msg: &MatchMessage<'_>, args: &LazyArgs<'_>) -> bool {
        fn same(want: &Option<String>, have: Option<&str>) -> bool {
            want.as_deref().is_none_or(|want| have == Some(want))
        }
        if self.msg_type.is_some_and(|t| t != msg.msg_type)
            || !same(&self.member, msg.member)
            || !same(&self.interface, msg.interface)
        {
            return false;
        }
        if let Some(sender) = self.sender.as_deref()
            && msg.sender != Some(sender)
            && !msg.sender_names.contains(&sender)
        {
            return false;
        }
        if let Some(want) = self.destination.as_deref() {
            let Some(destination) = msg.destination else {
                return false;
            };
            // As dbus-daemon: once the recipient is known, the rule names it by any name it
            // owns, whichever name the sender used; before that, by the name the sender used.
            let names_recipient = match msg.addressed_unique {
                Some(unique) => want == unique || msg.addressed_names.contains(&want),
                None => want == destination,
            };
            if !names_recipient {
                return false;
            }
        }
        if let Some(want) = &self.path
            && !msg.path.is_some_and(|path| want.takes(path))
        {
            return false;
        }
        self.args.iter().all(
            |(index, matcher)| match (matcher, args.get(usize::from(*index))) {
                (ArgMatch::Str(want), Some(Arg::Str(have))) => want == have,
                (ArgMatch::Path(want), Some(Arg::Str(have) | Arg::Path(have))) => {
                    path_prefix_match(want, have)
                }
                (ArgMatch::Namespace(ns), Some(Arg::Str(have))) => in_name_namespace(have, ns),
                _ => false,
            },
        )
    }
}

fn in_path_namespace(path: &str, ns: &str) -> bool {
    ns == "/"
        || path
            .strip_prefix(ns)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// `argNpath`: equal, or the shorter one is a prefix of the longer and ends in '/'.
fn path_prefix_match(want: &str, have: &str) -> bool {
    let (short, long) = if want.len() <= have.len() {
        (want, have)
    } else {
        (have, want)
    };
    long.starts_with(short) && (short.len() == long.len() || short.ends_with('/'))
}

fn in_name_namespace(name: &str, ns: &str) -> bool {
    name.strip_prefix(ns)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

fn type_name(t: Type) -> &'static str {
    match t {
        Type::Signal => "signal",
        Type::MethodCall => "method_call",
        Type::MethodReturn => "method_return",
        Type::Error => "error",
    }
}

/// The canonical text: dbus-daemon's (Debug.Stats GetAllMatchRules shows the same strings), with
/// its keys in its order, every value quoted, and a quote in a value written `'\''`. Parsing the
/// text gives back an equal rule.
impl fmt::Display for MatchRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut pair = |f: &mut fmt::Formatter<'_>, key: fmt::Arguments<'_>, value: &str| {
            if !std::mem::take(&mut first) {
                f.write_str(",")?;
            }
            write!(f, "{key}='{}'", value.replace('\'', r"'\''"))
        };
        if let Some(t) = self.msg_type {
            pair(f, format_args!("type"), type_name(t))?;
        }
        if let Some(v) = &self.interface {
            pair(f, format_args!("interface"), v)?;
        }
        if let Some(v) = &self.member {
            pair(f, format_args!("member"), v)?;
        }
        match &self.path {
            Some(PathMatch::Exact(v)) => pair(f, format_args!("path"), v)?,
            Some(PathMatch::Namespace(v)) => pair(f, format_args!("path_namespace"), v)?,
            None => {}
        }
        if let Some(v) = &self.sender {
            pair(f, format_args!("sender"), v)?;
        }
        if let Some(v) = &self.destination {
            pair(f, format_args!("destination"), v)?;
        }
        if self.eavesdrop {
            pair(f, format_args!("eavesdrop"), "true")?;
        }
        for (index, matcher) in &self.args {
            match matcher {
                ArgMatch::Str(v) => pair(f, format_args!("arg{index}"), v)?,
                ArgMatch::Path(v) => pair(f, format_args!("arg{index}path"), v)?,
                ArgMatch::Namespace(v) => pair(f, format_args!("arg{index}namespace"), v)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_helpers() {
        assert!(in_path_namespace("/a/b", "/a/b"));
        assert!(in_path_namespace("/a/b/c", "/a/b"));
        assert!(!in_path_namespace("/a/bc", "/a/b"));
        assert!(!in_path_namespace("/a", "/a/b"));
        assert!(in_path_namespace("/anything", "/"));
        assert!(path_prefix_match("/a/", "/a/b"));
        assert!(path_prefix_match("/a/b", "/a/"));
        assert!(path_prefix_match("/a", "/a"));
        assert!(!path_prefix_match("/a", "/a/b"));
        assert!(!path_prefix_match("/a/b", "/a/c"));
        assert!(path_prefix_match("", ""));
        assert!(!path_prefix_match("", "/"));
        assert!(in_name_namespace("a.b", "a"));
        assert!(in_name_namespace("a", "a"));
        assert!(!in_name_namespace("ab", "a"));
    }

    #[test]
    fn display_quotes_and_orders_like_dbus_daemon() {
        let rule = MatchRule::parse(
            "arg1path='/p/',eavesdrop=true,arg0='it'\\''s',destination=':1.2',sender='org.a',path_namespace='/n',member=M,interface=org.b,type=signal",
        )
        .unwrap();
        assert_eq!(
            rule.to_string(),
            "type='signal',interface='org.b',member='M',path_namespace='/n',sender='org.a',destination=':1.2',eavesdrop='true',arg0='it'\\''s',arg1path='/p/'"
        );
        assert_eq!(MatchRule::parse(&rule.to_string()).unwrap(), rule);
        assert_eq!(MatchRule::default().to_string(), "");
    }
}
