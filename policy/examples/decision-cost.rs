//! How long policy decisions take with a real configuration (default: the machine's
//! system.conf with its system.d files): compiling, choosing a connection's rules, and
//! deciding on typical messages.
//!
//! `cargo run --release -p telbus-policy --example decision-cost [-- config-file]`

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use telbus_policy::{MessageFacts, MessageType, PeerIdentity, Policy};

fn message<'a>(
    msg_type: MessageType,
    destination: Option<&'a str>,
    interface: &'a str,
    member: &'a str,
) -> MessageFacts<'a> {
    MessageFacts {
        msg_type,
        interface: Some(interface),
        member: Some(member),
        path: Some("/org/example"),
        error_name: None,
        destination,
        is_reply: false,
        requested_reply: false,
        unix_fds: 0,
    }
}

fn time(label: &str, rounds: u32, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut allowed = 0;
    for _ in 0..rounds {
        allowed += u32::from(black_box(f()));
    }
    let each = start.elapsed().as_nanos() as f64 / f64::from(rounds);
    println!(
        "{label:<58} {each:>8.1} ns  ({})",
        if allowed > 0 { "allowed" } else { "denied" }
    );
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .or_else(|| telbus_busconfig::default_config_path(telbus_busconfig::BusKind::System))
        .expect("a configuration file");
    let start = Instant::now();
    let config = telbus_busconfig::load(&path).unwrap();
    let loaded = start.elapsed();
    let rules: usize = config.policies.iter().map(|s| s.rules.len()).sum();
    let start = Instant::now();
    let policy = Policy::compile(&config.policies).unwrap();
    let compiled = start.elapsed();
    println!(
        "{}: {} files, {} sections, {rules} rules",
        path.display(),
        config.files.len(),
        config.policies.len()
    );
    println!("load {loaded:?}, compile {compiled:?}");

    let identity = PeerIdentity {
        uid: 65534,
        gids: vec![65534],
        at_console: false,
    };
    let start = Instant::now();
    let peer = policy.for_peer(&identity);
    println!(
        "rules for a new set of credentials: {:?} {:?}",
        start.elapsed(),
        peer.rule_counts()
    );
    let start = Instant::now();
    for _ in 0..1000 {
        black_box(policy.for_peer(&identity));
    }
    println!(
        "rules for known credentials (cached): {:?} each",
        start.elapsed() / 1000
    );

    let rounds = 1_000_000;
    let login1 = ["org.freedesktop.login1", ":1.3"];
    let list = message(
        MessageType::MethodCall,
        Some("org.freedesktop.login1"),
        "org.freedesktop.login1.Manager",
        "ListSessions",
    );
    let unlisted = ["org.example.Svc", ":1.9"];
    let to_unlisted = message(
        MessageType::MethodCall,
        Some("org.example.Svc"),
        "org.example.I",
        "Do",
    );
    let to_bus = message(
        MessageType::MethodCall,
        Some("org.freedesktop.DBus"),
        "org.freedesktop.DBus",
        "Hello",
    );
    println!(
        "send rules a decision may test: login1 call {}, unlisted service {}, bus driver {} (of {})",
        peer.send_candidates(&list, &login1, false),
        peer.send_candidates(&to_unlisted, &unlisted, false),
        peer.send_candidates(&to_bus, &[], true),
        peer.rule_counts().0
    );
    time("call login1 ListSessions", rounds, || {
        peer.can_send(&list, &login1, false).is_allowed()
    });
    let unknown = message(
        MessageType::MethodCall,
        Some("org.freedesktop.login1"),
        "org.freedesktop.login1.Manager",
        "Nope",
    );
    time(
        "call login1 unlisted method (deny, counting matches)",
        rounds,
        || peer.can_send(&unknown, &login1, false).is_allowed(),
    );
    let other = ["org.example.Svc", ":1.9"];
    let call = message(
        MessageType::MethodCall,
        Some("org.example.Svc"),
        "org.example.I",
        "Do",
    );
    time("call a service without system.d file", rounds, || {
        peer.can_send(&call, &other, false).is_allowed()
    });
    let hello = message(
        MessageType::MethodCall,
        Some("org.freedesktop.DBus"),
        "org.freedesktop.DBus",
        "Hello",
    );
    time("call the bus driver", rounds, || {
        peer.can_send(&hello, &[], true).is_allowed()
    });
    let signal = message(MessageType::Signal, None, "org.example.I", "Changed");
    time("broadcast a signal", rounds, || {
        peer.can_send(&signal, &[":1.9"], false).is_allowed()
    });
    time("receive a broadcast", rounds, || {
        peer.can_receive(&signal, &other, false, false).is_allowed()
    });
    time("own a name", rounds, || {
        peer.can_own("org.freedesktop.login1").is_allowed()
    });
}
