//! Whether one rule applies to one message: dbus-daemon's tests, field by field. The index
//! (index.rs) has already ruled out rules about other destinations, senders or interfaces;
//! these functions test everything, so that they are right on their own.

use telbus_busconfig::{MAXIMUM_MESSAGE_UNIX_FDS, ReceiveRule, SendRule};

use crate::MessageFacts;

/// `name` is `prefix`, or `prefix` followed by a dot and more (dbus-daemon's "starts with
/// words"): own_prefix and send_destination_prefix.
pub(crate) fn has_name_prefix(name: &str, prefix: &str) -> bool {
    match name.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('.'),
        None => false,
    }
}

/// The prefixes `has_name_prefix` accepts for `name`: "a", "a.b", "a.b.c" for "a.b.c".
pub(crate) fn name_prefixes(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices('.')
        .map(move |(i, _)| &name[..i])
        .chain(std::iter::once(name))
}

/// A rule's field that names something: None matches anything; a message without the field
/// matches too (dbus-daemon only skips a rule when both are present and differ).
fn lax(want: Option<&str>, have: Option<&str>) -> bool {
    match (want, have) {
        (Some(want), Some(have)) => want == have,
        _ => true,
    }
}

/// The interface, which is stricter: a message without one escapes allow rules that name one,
/// but not deny rules.
fn interface_matches(allow: bool, want: Option<&str>, have: Option<&str>) -> bool {
    match (want, have) {
        (None, _) => true,
        (Some(_), None) => !allow,
        (Some(want), Some(have)) => want == have,
    }
}

/// For replies (messages with a reply serial): an allow rule that is only about requested
/// replies (the default for allow rules) does not let an unrequested one through, unless it
/// allows eavesdropping; a deny rule that is only about unrequested replies (the default for
/// deny rules) leaves requested ones alone.
fn reply_matches(
    msg: &MessageFacts<'_>,
    allow: bool,
    requested_reply: bool,
    eavesdrop: bool,
) -> bool {
    if !msg.is_reply {
        return true;
    }
    if !msg.requested_reply && allow && requested_reply && !eavesdrop {
        return false;
    }
    if msg.requested_reply && !allow && !requested_reply {
        return false;
    }
    true
}

fn fds_match(msg: &MessageFacts<'_>, min: u32, max: u32) -> bool {
    if min == 0 && max >= MAXIMUM_MESSAGE_UNIX_FDS {
        return true;
    }
    (min..=max).contains(&msg.unix_fds)
}

/// Whether a send rule applies to `msg` going to a connection that owns (or is queued for)
/// `destination_names`; for a message to no connection (the bus itself, activation) the
/// caller passes the message's DESTINATION as the only name.
pub(crate) fn send_rule_matches(
    rule: &SendRule,
    allow: bool,
    msg: &MessageFacts<'_>,
    destination_names: &[&str],
) -> bool {
    if rule.msg_type.is_some_and(|t| t != msg.msg_type) {
        return false;
    }
    if !reply_matches(msg, allow, rule.requested_reply, rule.eavesdrop) {
        return false;
    }
    if !lax(rule.path.as_deref(), msg.path)
        || !interface_matches(allow, rule.interface.as_deref(), msg.interface)
        || !lax(rule.member.as_deref(), msg.member)
        || !lax(rule.error.as_deref(), msg.error_name)
    {
        return false;
    }
    if rule.broadcast.is_some_and(|b| b != msg.is_broadcast()) {
        return false;
    }
    if let Some(destination) = &rule.destination {
        let hit = if rule.destination_is_prefix {
            destination_names
                .iter()
                .any(|name| has_name_prefix(name, destination))
        } else {
            destination_names.contains(&destination.as_str())
        };
        if !hit {
            return false;
        }
    }
    fds_match(msg, rule.min_fds, rule.max_fds)
}

/// Whether a receive rule applies to `msg` from a connection that owns (or is queued for)
/// `sender_names`; `eavesdropping`: the message is addressed to someone else.
pub(crate) fn receive_rule_matches(
    rule: &ReceiveRule,
    allow: bool,
    msg: &MessageFacts<'_>,
    sender_names: &[&str],
    eavesdropping: bool,
) -> bool {
    if rule.msg_type.is_some_and(|t| t != msg.msg_type) {
        return false;
    }
    // An allow rule covers eavesdropping only if it says eavesdrop="true"; a deny rule that
    // says eavesdrop="true" covers only eavesdropping.
    if eavesdropping && allow && !rule.eavesdrop {
        return false;
    }
    if !eavesdropping && !allow && rule.eavesdrop {
        return false;
    }
    if !reply_matches(msg, allow, rule.requested_reply, rule.eavesdrop) {
        return false;
    }
    if !lax(rule.path.as_deref(), msg.path)
        || !interface_matches(allow, rule.interface.as_deref(), msg.interface)
        || !lax(rule.member.as_deref(), msg.member)
        || !lax(rule.error.as_deref(), msg.error_name)
    {
        return false;
    }
    if let Some(sender) = &rule.sender
        && !sender_names.contains(&sender.as_str())
    {
        return false;
    }
    fds_match(msg, rule.min_fds, rule.max_fds)
}
