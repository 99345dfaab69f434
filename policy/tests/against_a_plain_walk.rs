//! The indexed decisions agree with a plain walk over the rules, written here straight from
//! dbus-daemon's description (bus/policy.c): random rule sets, random messages.

mod common;

use std::path::Path;

use telbus_busconfig::{PolicyContext, PolicySection, ReceiveRule, RuleKind, SendRule};
use telbus_policy::{Decision, MessageFacts, MessageType, PeerIdentity, Policy};

struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const NAMES: &[&str] = &[
    "a",
    "a.b",
    "a.b.c",
    "ab",
    "x.y",
    ":1.1",
    "org.freedesktop.DBus",
];
const INTERFACES: &[&str] = &["i.A", "i.B", "i.C"];
const MEMBERS: &[&str] = &["M", "N"];
const PATHS: &[&str] = &["/", "/p"];
const ERRORS: &[&str] = &["e.E", "e.F"];
const TYPES: &[&str] = &["method_call", "method_return", "error", "signal"];

/// One random, valid `<allow>`/`<deny>`.
fn random_rule(r: &mut Random) -> String {
    let verdict = if r.chance(50) { "allow" } else { "deny" };
    let mut attributes = Vec::new();
    match r.next() % 3 {
        0 => {
            if r.chance(20) {
                attributes.push(format!("own=\"{}\"", r.pick(&["*", "a", "a.b", "x.y"])));
            } else {
                attributes.push(format!("own_prefix=\"{}\"", r.pick(&["a", "a.b", "x"])));
            }
        }
        direction => {
            let d = if direction == 1 { "send" } else { "receive" };
            if r.chance(50) {
                let (attr, names) = if d == "send" {
                    if r.chance(30) {
                        ("send_destination_prefix", &["a", "a.b", "x", "org"][..])
                    } else {
                        ("send_destination", NAMES)
                    }
                } else {
                    ("receive_sender", NAMES)
                };
                attributes.push(format!("{attr}=\"{}\"", r.pick(names)));
            }
            if r.chance(40) {
                attributes.push(format!("{d}_interface=\"{}\"", r.pick(INTERFACES)));
                if r.chance(40) {
                    attributes.push(format!("{d}_member=\"{}\"", r.pick(MEMBERS)));
                }
            } else if r.chance(15) {
                attributes.push(format!("{d}_error=\"{}\"", r.pick(ERRORS)));
            }
            if r.chance(25) {
                attributes.push(format!("{d}_path=\"{}\"", r.pick(PATHS)));
            }
            if r.chance(40) {
                attributes.push(format!("{d}_type=\"{}\"", r.pick(TYPES)));
            }
            if r.chance(25) {
                attributes.push(format!(
                    "{d}_requested_reply=\"{}\"",
                    r.pick(&["true", "false"])
                ));
            }
            if r.chance(20) {
                attributes.push(format!("eavesdrop=\"{}\"", r.pick(&["true", "false"])));
            }
            if d == "send"
                && r.chance(15)
                && !attributes
                    .iter()
                    .any(|a| a.starts_with("send_destination="))
            {
                attributes.push(format!("send_broadcast=\"{}\"", r.pick(&["true", "false"])));
            }
            if r.chance(10) {
                attributes.push(format!("min_fds=\"{}\"", r.next() % 3));
            }
            if r.chance(10) {
                attributes.push(format!("max_fds=\"{}\"", r.next() % 3));
            }
            if !attributes.iter().any(|a| a.starts_with(d)) {
                attributes.push(format!("{d}_type=\"*\""));
            }
        }
    }
    format!("<{verdict} {}/>", attributes.join(" "))
}

fn random_message<'a>(r: &mut Random) -> MessageFacts<'a> {
    let msg_type = [
        MessageType::MethodCall,
        MessageType::MethodReturn,
        MessageType::Error,
        MessageType::Signal,
    ][(r.next() % 4) as usize];
    let is_reply =
        matches!(msg_type, MessageType::MethodReturn | MessageType::Error) || r.chance(5);
    MessageFacts {
        msg_type,
        interface: (msg_type != MessageType::Error && r.chance(80)).then(|| r.pick(INTERFACES)),
        member: r.chance(80).then(|| r.pick(MEMBERS)),
        path: r.chance(80).then(|| r.pick(PATHS)),
        error_name: (msg_type == MessageType::Error).then(|| r.pick(ERRORS)),
        destination: (msg_type != MessageType::Signal || r.chance(50)).then(|| r.pick(NAMES)),
        is_reply,
        requested_reply: is_reply && r.chance(50),
        unix_fds: (r.next() % 4) as u32,
    }
}

/// What dbus-daemon does, rule by rule: the rules of the default section only (the sections
/// here are all default), dropping those before a match-everything rule, last match wins.
enum Plain<'a> {
    Send(bool, &'a SendRule),
    Receive(bool, &'a ReceiveRule),
    Own(bool, &'a str, bool),
}

fn plain_rules(sections: &[PolicySection]) -> Vec<Plain<'_>> {
    let mut rules: Vec<Plain<'_>> = Vec::new();
    for section in sections {
        assert_eq!(section.context, PolicyContext::Default);
        for rule in &section.rules {
            let plain = match &rule.kind {
                RuleKind::Send(s) => Plain::Send(rule.allow, s),
                RuleKind::Receive(r) => Plain::Receive(rule.allow, r),
                RuleKind::Own { name, prefix } => Plain::Own(rule.allow, name, *prefix),
                _ => continue,
            };
            // bus_client_policy_optimize: a rule matching everything of its kind removes the
            // rules of that kind before it.
            let everything = match &plain {
                Plain::Send(_, s) => {
                    s.msg_type.is_none()
                        && s.path.is_none()
                        && s.interface.is_none()
                        && s.member.is_none()
                        && s.error.is_none()
                        && s.destination.is_none()
                }
                Plain::Receive(_, r) => {
                    r.msg_type.is_none()
                        && r.path.is_none()
                        && r.interface.is_none()
                        && r.member.is_none()
                        && r.error.is_none()
                        && r.sender.is_none()
                }
                Plain::Own(_, name, prefix) => !prefix && *name == "*",
            };
            if everything {
                let kind = std::mem::discriminant(&plain);
                rules.retain(|r| std::mem::discriminant(r) != kind);
            }
            rules.push(plain);
        }
    }
    rules
}

/// Both the rule and the message name something, and not the same thing.
fn differs(want: &Option<String>, have: Option<&str>) -> bool {
    matches!((want, have), (Some(w), Some(h)) if w != h)
}

fn words(name: &str, prefix: &str) -> bool {
    name == prefix || (name.starts_with(prefix) && name[prefix.len()..].starts_with('.'))
}

fn plain_send(rules: &[Plain<'_>], m: &MessageFacts<'_>, names: &[&str]) -> (bool, usize) {
    let mut allowed = false;
    let mut toggles = 0;
    for rule in rules {
        let Plain::Send(allow, s) = rule else {
            continue;
        };
        let allow = *allow;
        if s.msg_type.is_some_and(|t| t != m.msg_type) {
            continue;
        }
        if m.is_reply {
            if !m.requested_reply && allow && s.requested_reply && !s.eavesdrop {
                continue;
            }
            if m.requested_reply && !allow && !s.requested_reply {
                continue;
            }
        }
        if differs(&s.path, m.path) {
            continue;
        }
        if let Some(w) = &s.interface {
            match m.interface {
                None if allow => continue,
                Some(h) if h != w => continue,
                _ => {}
            }
        }
        if differs(&s.member, m.member) {
            continue;
        }
        if differs(&s.error, m.error_name) {
            continue;
        }
        if let Some(b) = s.broadcast {
            let is_broadcast = m.destination.is_none() && m.msg_type == MessageType::Signal;
            if b != is_broadcast {
                continue;
            }
        }
        if let Some(d) = &s.destination {
            let hit = if s.destination_is_prefix {
                names.iter().any(|n| words(n, d))
            } else {
                names.contains(&d.as_str())
            };
            if !hit {
                continue;
            }
        }
        if m.unix_fds < s.min_fds || m.unix_fds > s.max_fds {
            continue;
        }
        allowed = allow;
        toggles += 1;
    }
    (allowed, toggles)
}

fn plain_receive(
    rules: &[Plain<'_>],
    m: &MessageFacts<'_>,
    names: &[&str],
    eavesdropping: bool,
) -> (bool, usize) {
    let mut allowed = false;
    let mut toggles = 0;
    for rule in rules {
        let Plain::Receive(allow, r) = rule else {
            continue;
        };
        let allow = *allow;
        if r.msg_type.is_some_and(|t| t != m.msg_type) {
            continue;
        }
        if eavesdropping && allow && !r.eavesdrop {
            continue;
        }
        if !eavesdropping && !allow && r.eavesdrop {
            continue;
        }
        if m.is_reply {
            if !m.requested_reply && allow && r.requested_reply && !r.eavesdrop {
                continue;
            }
            if m.requested_reply && !allow && !r.requested_reply {
                continue;
            }
        }
        if differs(&r.path, m.path) {
            continue;
        }
        if let Some(w) = &r.interface {
            match m.interface {
                None if allow => continue,
                Some(h) if h != w => continue,
                _ => {}
            }
        }
        if differs(&r.member, m.member) {
            continue;
        }
        if differs(&r.error, m.error_name) {
            continue;
        }
        if r.sender
            .as_ref()
            .is_some_and(|s| !names.contains(&s.as_str()))
        {
            continue;
        }
        if m.unix_fds < r.min_fds || m.unix_fds > r.max_fds {
            continue;
        }
        allowed = allow;
        toggles += 1;
    }
    (allowed, toggles)
}

fn plain_own(rules: &[Plain<'_>], name: &str) -> bool {
    let mut allowed = false;
    for rule in rules {
        let Plain::Own(allow, rule_name, prefix) = rule else {
            continue;
        };
        let hit = if *prefix {
            words(name, rule_name)
        } else {
            *rule_name == "*" || *rule_name == name
        };
        if hit {
            allowed = *allow;
        }
    }
    allowed
}

fn verdict(d: &Decision) -> (bool, usize) {
    match d {
        Decision::Allow => (true, 0),
        Decision::Deny(denial) => (false, denial.matched_rules),
    }
}

#[test]
fn indexed_decisions_match_a_plain_walk() {
    let mut r = Random(0x2545_f491_4f6c_dd1d);
    let (mut sends, mut receives) = ([0usize; 2], [0usize; 2]);
    for round in 0..300 {
        let count = 1 + r.next() % 25;
        let rules: Vec<String> = (0..count).map(|_| random_rule(&mut r)).collect();
        let text = format!(
            "<busconfig><listen>unix:tmpdir=/tmp</listen><policy context=\"default\">{}</policy></busconfig>",
            rules.join("\n")
        );
        let config = telbus_busconfig::load_str(&text, Path::new("/t/random.conf"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let policy = Policy::compile(&config.policies).unwrap();
        let peer = policy.for_peer(&PeerIdentity {
            uid: 0,
            gids: vec![0],
            at_console: false,
        });
        let plain = plain_rules(&config.policies);
        for _ in 0..200 {
            let m = random_message(&mut r);
            let mut names: Vec<&str> = NAMES.iter().copied().filter(|_| r.chance(30)).collect();
            names.push(":1.1");
            let to_bus = r.chance(10);
            let send_names: Vec<&str> = if to_bus {
                m.destination.into_iter().collect()
            } else {
                names.clone()
            };
            let ours = verdict(&peer.can_send(&m, &names, to_bus));
            let (allow, toggles) = plain_send(&plain, &m, &send_names);
            let theirs = (allow, if allow { 0 } else { toggles });
            assert_eq!(
                ours, theirs,
                "round {round}: send {m:?} to {names:?} (bus: {to_bus})\n{text}"
            );
            sends[usize::from(allow)] += 1;

            let eavesdropping = r.chance(20);
            let from_bus = r.chance(10);
            let receive_names = if from_bus {
                vec!["org.freedesktop.DBus"]
            } else {
                names.clone()
            };
            let ours = verdict(&peer.can_receive(&m, &names, from_bus, eavesdropping));
            let (allow, toggles) = plain_receive(&plain, &m, &receive_names, eavesdropping);
            let theirs = (allow, if allow { 0 } else { toggles });
            assert_eq!(
                ours, theirs,
                "round {round}: receive {m:?} from {names:?} (bus: {from_bus}, eavesdropping: {eavesdropping})\n{text}"
            );
            receives[usize::from(allow)] += 1;
        }
        for name in ["a", "a.b", "a.b.c", "ab", "x", "x.y", "x.y.z", "*", "org.a"] {
            assert_eq!(
                peer.can_own(name).is_allowed(),
                plain_own(&plain, name),
                "round {round}: own {name}\n{text}"
            );
        }
    }
    // Both answers were exercised, plenty of times.
    assert!(
        sends.iter().chain(&receives).all(|n| *n > 5000),
        "{sends:?} {receives:?}"
    );
}
