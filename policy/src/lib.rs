//! Access decisions with dbus-daemon's `<policy>` semantics, compiled for the hot path.
//!
//! dbus-daemon gives each connection the rules that apply to it — the default context, then
//! those of its groups, of its user, at_console, and the mandatory context — in that order,
//! and for each message walks them all: the last rule that matches decides, and nothing
//! matching means "deny". The same answers come from here, cheaper:
//!
//! - a connection's rules are selected once, when it connects ([`Policy::for_peer`]);
//! - its send and receive rules are bucketed by the interface they name, so a message only
//!   looks at rules for its interface or for any interface;
//! - the candidates are visited from the last to the first, and the first that matches
//!   decides (the same as "the last match wins"), so the usual decision costs a few rules.

use std::collections::HashMap;
use std::sync::Arc;

use telbus_busconfig::{MessageKind, Origin, PolicyContext, PolicySection, ReceiveRule, RuleKind, SendRule};

pub use telbus_busconfig::MessageKind as MessageType;

/// The result of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(Denial),
}

/// Why something was refused: the rule that decided (None: nothing matched, which denies).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub rule: Option<Origin>,
    /// Rules that matched, as dbus-daemon counts them in its messages (here: 1 or 0).
    pub matched_rules: usize,
}

impl Decision {
    fn from_rule(allow: bool, origin: Option<&Origin>) -> Decision {
        if allow {
            Decision::Allow
        } else {
            Decision::Deny(Denial {
                rule: origin.cloned(),
                matched_rules: origin.is_some() as usize,
            })
        }
    }

    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

#[derive(Debug)]
pub struct PolicyError(pub String);

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

/// Who a connection is, for choosing its rules.
#[derive(Clone, Debug, Default)]
pub struct PeerIdentity {
    pub uid: u32,
    pub gids: Vec<u32>,
    pub at_console: bool,
}

/// The facts about a message that rules test.
#[derive(Clone, Debug)]
pub struct MessageFacts<'a> {
    pub msg_type: MessageType,
    pub interface: Option<&'a str>,
    pub member: Option<&'a str>,
    pub path: Option<&'a str>,
    pub error_name: Option<&'a str>,
    /// The DESTINATION field as sent (rules test it for messages to the bus itself).
    pub destination: Option<&'a str>,
    /// A reply: rules about requested replies apply.
    pub is_reply: bool,
    /// For a reply: whether the call it answers was waiting for it.
    pub requested_reply: bool,
    pub unix_fds: u32,
}

impl MessageFacts<'_> {
    fn is_broadcast(&self) -> bool {
        self.destination.is_none() && self.msg_type == MessageKind::Signal
    }
}

/// A name another connection owns or waits for, as send_destination and receive_sender test it.
fn owns_or_queued(names: &[&str], name: &str) -> bool {
    names.contains(&name)
}

/// `name` is `prefix` or starts with `prefix` followed by a dot.
fn starts_with_words(name: &str, prefix: &str) -> bool {
    name == prefix || (name.starts_with(prefix) && name.as_bytes().get(prefix.len()) == Some(&b'.'))
}

struct Indexed<R> {
    allow: bool,
    rule: R,
    origin: Origin,
}

/// Rules of one direction, in order, bucketed by the interface they name.
struct Bucketed<R> {
    rules: Vec<Indexed<R>>,
    by_interface: HashMap<String, Vec<usize>>,
    any_interface: Vec<usize>,
}

impl<R> Default for Bucketed<R> {
    fn default() -> Self {
        Bucketed {
            rules: Vec::new(),
            by_interface: HashMap::new(),
            any_interface: Vec::new(),
        }
    }
}

impl<R> Bucketed<R> {
    fn push(&mut self, allow: bool, rule: R, interface: Option<&str>, origin: Origin) {
        let id = self.rules.len();
        self.rules.push(Indexed { allow, rule, origin });
        match interface {
            Some(i) => self.by_interface.entry(i.to_string()).or_default().push(id),
            None => self.any_interface.push(id),
        }
    }

    /// The last rule that matches: candidates for `interface` and for any interface, merged
    /// from the end. A message without an interface can match rules that name one (deny rules
    /// do), so then every rule is a candidate.
    fn decide(&self, interface: Option<&str>, matches: impl Fn(&Indexed<R>) -> bool) -> Decision {
        let found = match interface {
            Some(i) => {
                let named = self.by_interface.get(i).map_or(&[][..], |v| v.as_slice());
                let any = self.any_interface.as_slice();
                let (mut a, mut b) = (named.len(), any.len());
                let mut hit = None;
                while a > 0 || b > 0 {
                    let next = match (a.checked_sub(1).map(|x| named[x]), b.checked_sub(1).map(|x| any[x])) {
                        (Some(x), Some(y)) if x > y => {
                            a -= 1;
                            x
                        }
                        (Some(x), None) => {
                            a -= 1;
                            x
                        }
                        (_, Some(y)) => {
                            b -= 1;
                            y
                        }
                        (None, None) => unreachable!(),
                    };
                    if matches(&self.rules[next]) {
                        hit = Some(next);
                        break;
                    }
                }
                hit
            }
            None => (0..self.rules.len()).rev().find(|id| matches(&self.rules[*id])),
        };
        match found {
            Some(id) => Decision::from_rule(self.rules[id].allow, Some(&self.rules[id].origin)),
            None => Decision::from_rule(false, None),
        }
    }
}

/// Rules that apply to one connection.
#[derive(Default)]
struct PeerRules {
    send: Bucketed<SendRule>,
    receive: Bucketed<ReceiveRule>,
    own: Vec<(bool, String, bool, Origin)>,
}

/// A connection's policy: cheap to clone, queried for every message.
#[derive(Clone)]
pub struct PeerPolicy {
    rules: Arc<PeerRules>,
}

/// The compiled `<policy>` sections of a configuration.
pub struct Policy {
    sections: Vec<CompiledSection>,
}

struct CompiledSection {
    applies: Applies,
    section: PolicySection,
}

/// Whom a section is for, with names resolved to ids.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Applies {
    Default,
    Mandatory,
    User(Option<u32>),
    Group(Option<u32>),
    AnyUser,
    AnyGroup,
    AtConsole(bool),
}

fn user_id(name: &str) -> Option<u32> {
    if let Ok(uid) = name.parse() {
        return Some(uid);
    }
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns static storage that is read at once.
    unsafe {
        let pw = libc::getpwnam(c.as_ptr());
        (!pw.is_null()).then(|| (*pw).pw_uid)
    }
}

fn group_id(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse() {
        return Some(gid);
    }
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getgrnam returns static storage that is read at once.
    unsafe {
        let gr = libc::getgrnam(c.as_ptr());
        (!gr.is_null()).then(|| (*gr).gr_gid)
    }
}

impl Policy {
    /// Compile a configuration's sections. Unknown user and group names make their sections
    /// apply to nobody (dbus-daemon warns and goes on).
    pub fn compile(sections: &[PolicySection]) -> Result<Policy, PolicyError> {
        let sections = sections
            .iter()
            .map(|section| {
                let applies = match &section.context {
                    PolicyContext::Default => Applies::Default,
                    PolicyContext::Mandatory => Applies::Mandatory,
                    PolicyContext::User(u) if u == "*" => Applies::AnyUser,
                    PolicyContext::User(u) => Applies::User(user_id(u)),
                    PolicyContext::Group(g) if g == "*" => Applies::AnyGroup,
                    PolicyContext::Group(g) => Applies::Group(group_id(g)),
                    PolicyContext::AtConsole(b) => Applies::AtConsole(*b),
                };
                CompiledSection {
                    applies,
                    section: section.clone(),
                }
            })
            .collect();
        Ok(Policy { sections })
    }

    fn sections_of(&self, applies: impl Fn(Applies) -> bool) -> impl Iterator<Item = &PolicySection> {
        self.sections
            .iter()
            .filter(move |s| applies(s.applies))
            .map(|s| &s.section)
    }

    /// May a connection of `uid` (with `gids`) connect? Without connection rules only the
    /// bus's own user may (dbus-daemon's default).
    pub fn allows_user(&self, uid: u32, gids: &[u32], bus_uid: u32) -> Decision {
        let mut allowed = (uid == bus_uid, None);
        for applies in [Applies::Default, Applies::Mandatory] {
            for section in self.sections_of(|a| a == applies) {
                for rule in &section.rules {
                    let hit = match &rule.kind {
                        RuleKind::User(u) => u == "*" || user_id(u) == Some(uid),
                        RuleKind::Group(g) => g == "*" || group_id(g).is_some_and(|gid| gids.contains(&gid)),
                        _ => false,
                    };
                    if hit {
                        allowed = (rule.allow, Some(&rule.origin));
                    }
                }
            }
        }
        Decision::from_rule(allowed.0, allowed.1)
    }

    /// Select the rules for a connection, in dbus-daemon's order.
    pub fn for_peer(&self, peer: &PeerIdentity) -> PeerPolicy {
        let mut rules = PeerRules::default();
        let order: [&dyn Fn(Applies) -> bool; 5] = [
            &|a| a == Applies::Default,
            &|a| matches!(a, Applies::AnyGroup) || matches!(a, Applies::Group(Some(g)) if peer.gids.contains(&g)),
            &|a| matches!(a, Applies::AnyUser) || a == Applies::User(Some(peer.uid)),
            &|a| a == Applies::AtConsole(peer.at_console),
            &|a| a == Applies::Mandatory,
        ];
        for applies in order {
            for section in self.sections_of(applies) {
                for rule in &section.rules {
                    match &rule.kind {
                        RuleKind::Send(s) => rules.send.push(rule.allow, s.clone(), s.interface.as_deref(), rule.origin.clone()),
                        RuleKind::Receive(r) => rules.receive.push(rule.allow, r.clone(), r.interface.as_deref(), rule.origin.clone()),
                        RuleKind::Own { name, prefix } => rules.own.push((rule.allow, name.clone(), *prefix, rule.origin.clone())),
                        RuleKind::User(_) | RuleKind::Group(_) => {}
                    }
                }
            }
        }
        PeerPolicy { rules: Arc::new(rules) }
    }
}

/// The fields every send and receive rule tests the same way.
#[allow(clippy::too_many_arguments)]
fn common_fields_match(
    msg: &MessageFacts<'_>,
    allow: bool,
    msg_type: Option<MessageKind>,
    rule_requested_reply: bool,
    eavesdrop: bool,
    path: Option<&str>,
    interface: Option<&str>,
    member: Option<&str>,
    error: Option<&str>,
    fds: (u32, u32),
) -> bool {
    if msg_type.is_some_and(|t| t != msg.msg_type) {
        return false;
    }
    if msg.is_reply {
        // An allow rule about requested replies does not let an unrequested one through,
        // unless it is an eavesdrop rule; a deny rule about unrequested replies leaves
        // requested ones alone.
        if !msg.requested_reply && allow && rule_requested_reply && !eavesdrop {
            return false;
        }
        if msg.requested_reply && !allow && !rule_requested_reply {
            return false;
        }
    }
    if let (Some(want), Some(have)) = (path, msg.path) {
        if want != have {
            return false;
        }
    }
    if let Some(want) = interface {
        match msg.interface {
            // A message without an interface escapes allow rules about one, not deny rules.
            None if allow => return false,
            Some(have) if have != want => return false,
            _ => {}
        }
    }
    if let (Some(want), Some(have)) = (member, msg.member) {
        if want != have {
            return false;
        }
    }
    if let (Some(want), Some(have)) = (error, msg.error_name) {
        if want != have {
            return false;
        }
    }
    let (min, max) = fds;
    if msg.unix_fds < min || msg.unix_fds > max {
        return false;
    }
    true
}

impl PeerPolicy {
    /// May this connection own `name`?
    pub fn can_own(&self, name: &str) -> Decision {
        for (allow, rule_name, prefix, origin) in self.rules.own.iter().rev() {
            let hit = if *prefix {
                starts_with_words(name, rule_name)
            } else {
                rule_name == "*" || rule_name == name
            };
            if hit {
                return Decision::from_rule(*allow, Some(origin));
            }
        }
        Decision::from_rule(false, None)
    }

    /// May this connection send `msg` to a connection that owns or waits for
    /// `receiver_names` (its unique name included), or to the bus itself
    /// (`receiver_is_driver`)?
    pub fn can_send(&self, msg: &MessageFacts<'_>, receiver_names: &[&str], receiver_is_driver: bool) -> Decision {
        self.rules.send.decide(msg.interface, |r| {
            let s = &r.rule;
            if !common_fields_match(
                msg,
                r.allow,
                s.msg_type,
                s.requested_reply,
                s.eavesdrop,
                s.path.as_deref(),
                s.interface.as_deref(),
                s.member.as_deref(),
                s.error.as_deref(),
                (s.min_fds, s.max_fds),
            ) {
                return false;
            }
            if let Some(want) = s.broadcast {
                if want != msg.is_broadcast() {
                    return false;
                }
            }
            if let Some(dest) = &s.destination {
                let hit = if receiver_is_driver {
                    match msg.destination {
                        Some(d) if s.destination_is_prefix => starts_with_words(d, dest),
                        Some(d) => d == dest,
                        None => false,
                    }
                } else if s.destination_is_prefix {
                    receiver_names.iter().any(|n| !n.starts_with(':') && starts_with_words(n, dest))
                } else {
                    owns_or_queued(receiver_names, dest)
                };
                if !hit {
                    return false;
                }
            }
            true
        })
    }

    /// May this connection receive `msg` from a connection that owns or waits for
    /// `sender_names`, or from the bus itself? `eavesdropping`: the message is addressed to
    /// another connection.
    pub fn can_receive(&self, msg: &MessageFacts<'_>, sender_names: &[&str], sender_is_driver: bool, eavesdropping: bool) -> Decision {
        self.rules.receive.decide(msg.interface, |r| {
            let rule = &r.rule;
            // An allow rule without eavesdrop="true" does not cover eavesdropping; a deny rule
            // with it only covers eavesdropping.
            if eavesdropping && r.allow && !rule.eavesdrop {
                return false;
            }
            if !eavesdropping && !r.allow && rule.eavesdrop {
                return false;
            }
            if !common_fields_match(
                msg,
                r.allow,
                rule.msg_type,
                rule.requested_reply,
                rule.eavesdrop,
                rule.path.as_deref(),
                rule.interface.as_deref(),
                rule.member.as_deref(),
                rule.error.as_deref(),
                (rule.min_fds, rule.max_fds),
            ) {
                return false;
            }
            if let Some(sender) = &rule.sender {
                let hit = if sender_is_driver {
                    sender == "org.freedesktop.DBus"
                } else {
                    owns_or_queued(sender_names, sender)
                };
                if !hit {
                    return false;
                }
            }
            true
        })
    }
}

#[cfg(test)]
mod tests;
