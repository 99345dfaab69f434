//! Helpers for the policy tests: configurations from text, peers, messages.
#![allow(dead_code)]

use std::path::Path;

use telbus_policy::{Decision, MessageFacts, MessageType, PeerIdentity, PeerPolicy, Policy};

/// A policy from `<policy>` sections (and anything else that goes in a busconfig).
pub fn policy(sections: &str) -> Policy {
    let text = format!("<busconfig><listen>unix:tmpdir=/tmp</listen>\n{sections}\n</busconfig>");
    let config = telbus_busconfig::load_str(&text, Path::new("/t/policy.conf"))
        .unwrap_or_else(|e| panic!("{e}"));
    Policy::compile(&config.policies).unwrap()
}

/// A policy from the rules of one default section.
pub fn default_rules(rules: &str) -> PeerPolicy {
    peer(
        &policy(&format!("<policy context=\"default\">{rules}</policy>")),
        0,
        &[0],
    )
}

pub fn peer(policy: &Policy, uid: u32, gids: &[u32]) -> PeerPolicy {
    policy.for_peer(&PeerIdentity {
        uid,
        gids: gids.to_vec(),
        at_console: false,
    })
}

/// The uid and gid of `nobody`/`nogroup` (or another unprivileged account), for tests that
/// need a user that is not root and exists.
pub fn unprivileged() -> Option<(u32, u32)> {
    let uid = ["nobody", "daemon"]
        .iter()
        .find_map(|u| telbus_busconfig::lookup_user(u))?;
    let gid = ["nogroup", "nobody", "daemon"]
        .iter()
        .find_map(|g| telbus_busconfig::lookup_group(g))?;
    Some((uid, gid))
}

pub fn call<'a>(destination: &'a str, interface: &'a str, member: &'a str) -> MessageFacts<'a> {
    MessageFacts {
        msg_type: MessageType::MethodCall,
        interface: Some(interface),
        member: Some(member),
        path: Some("/"),
        error_name: None,
        destination: Some(destination),
        is_reply: false,
        requested_reply: false,
        unix_fds: 0,
    }
}

pub fn signal<'a>(
    interface: &'a str,
    member: &'a str,
    destination: Option<&'a str>,
) -> MessageFacts<'a> {
    MessageFacts {
        msg_type: MessageType::Signal,
        interface: Some(interface),
        member: Some(member),
        path: Some("/"),
        error_name: None,
        destination,
        is_reply: false,
        requested_reply: false,
        unix_fds: 0,
    }
}

pub fn reply(destination: &str, requested: bool) -> MessageFacts<'_> {
    MessageFacts {
        msg_type: MessageType::MethodReturn,
        interface: None,
        member: None,
        path: None,
        error_name: None,
        destination: Some(destination),
        is_reply: true,
        requested_reply: requested,
        unix_fds: 0,
    }
}

pub fn error<'a>(destination: &'a str, name: &'a str, requested: bool) -> MessageFacts<'a> {
    MessageFacts {
        msg_type: MessageType::Error,
        interface: None,
        member: None,
        path: None,
        error_name: Some(name),
        destination: Some(destination),
        is_reply: true,
        requested_reply: requested,
        unix_fds: 0,
    }
}

pub fn allowed(d: Decision) -> bool {
    d.is_allowed()
}
