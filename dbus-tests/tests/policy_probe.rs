//! This machine's real system bus policy (system.conf and every system.d/*.conf), decided by
//! telbusd and by dbus-daemon side by side: the same probes — own a name, call a method — as
//! several users, on both buses, and the decisions must agree on every one.
//!
//! Both buses run the harness's system configuration (the machine's files, on a private
//! socket). The probes come from the rules themselves: every name an `own` or
//! `send_destination` rule mentions (and one none does), and for each destination every
//! interface and member its rules mention, plus a member and interfaces no rule names. A root
//! connection owns every name it may and answers every call; clients of root, the system users
//! the rules name (polkitd, systemd-network, systemd-timesync) when they exist, messagebus and
//! nobody connect from threads that switched to that user (the bus sees the connecting thread's
//! credentials), ask for each name and make each call. A decision is "denied" when the answer
//! is AccessDenied, otherwise "passed" (a reply, or another error such as ServiceUnknown).
//!
//! Needs root and dbus-daemon; skipped (with a message) without them or when the bus under test
//! is dbus-daemon already.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use telbus_busconfig::{PolicyContext, RuleKind};
use telbus_dbus_tests::{
    RawClient, SYSTEM_CONF, TestBus, TestBusBuilder, daemon_path, driver_call, socket_path,
};
use zbus::Message;
use zbus::message::Type;

const DBUS_DAEMON: &str = "/usr/bin/dbus-daemon";
/// A name no rule mentions.
const UNLISTED: &str = "org.example.Unlisted";
/// RequestName's DO_NOT_QUEUE: a probe never waits in a queue.
const DO_NOT_QUEUE: u32 = 4;

/// What the probes are made of, read from the machine's rules.
#[derive(Default)]
struct Probes {
    own_names: BTreeSet<String>,
    /// Destination → (interface, member) pairs to call.
    calls: BTreeMap<String, BTreeSet<(Option<String>, String)>>,
    users: BTreeSet<String>,
}

fn probes_from_rules() -> Probes {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("system.conf");
    std::fs::write(
        &conf,
        telbus_dbus_tests::system_config("unix:tmpdir=/tmp", dir.path(), ""),
    )
    .unwrap();
    let config = telbus_busconfig::load(&conf).expect("this machine's system.conf loads");
    let mut probes = Probes::default();
    probes.own_names.insert(UNLISTED.to_string());
    for user in ["root", "messagebus", "nobody"] {
        probes.users.insert(user.to_string());
    }
    for section in &config.policies {
        if let PolicyContext::User(user) = &section.context
            && user != "*"
        {
            probes.users.insert(user.clone());
        }
        for rule in &section.rules {
            match &rule.kind {
                RuleKind::Own {
                    name,
                    prefix: false,
                } if name != "*" => {
                    probes.own_names.insert(name.clone());
                }
                RuleKind::Send(send) => {
                    let Some(destination) = &send.destination else {
                        continue;
                    };
                    if destination == "org.freedesktop.DBus" || send.destination_is_prefix {
                        continue;
                    }
                    probes.own_names.insert(destination.clone());
                    let calls = probes.calls.entry(destination.clone()).or_default();
                    let member = send.member.clone().unwrap_or_else(|| "Probe".to_string());
                    calls.insert((send.interface.clone(), member));
                    if let Some(interface) = &send.interface {
                        calls.insert((Some(interface.clone()), "NoRuleNamesThis".to_string()));
                    }
                }
                _ => {}
            }
        }
    }
    for calls in probes.calls.values_mut() {
        calls.insert((None, "Probe".to_string()));
        calls.insert((
            Some("org.freedesktop.DBus.Introspectable".into()),
            "Introspect".into(),
        ));
        calls.insert((Some("org.freedesktop.DBus.Properties".into()), "Set".into()));
        calls.insert((Some("org.example.NoRuleNamesThis".into()), "Probe".into()));
    }
    probes
}

/// uid and gid of a user, from /etc/passwd.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() > 3 && fields[0] == name)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

/// A raw client connected as `uid`/`gid` (no supplementary groups), from a thread that became
/// that user with raw system calls (glibc's wrappers would change every thread).
fn connect_as(bus: &TestBus, uid: u32, gid: u32) -> RawClient {
    let path = socket_path(bus);
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                if uid != 0 {
                    // SAFETY: credential system calls with valid arguments, on this thread only.
                    unsafe {
                        assert_eq!(
                            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<u32>()),
                            0
                        );
                        assert_eq!(libc::syscall(libc::SYS_setresgid, gid, gid, gid), 0);
                        assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
                    }
                }
                let mut client = RawClient::authenticate(&path);
                client.hello();
                client
            })
            .join()
            .expect("connect")
    })
}

/// "denied" for AccessDenied, otherwise "passed", with what came back.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Decision {
    denied: bool,
    answer: String,
}

impl Decision {
    fn of(reply: &Message) -> Decision {
        let header = reply.header();
        let answer = match header.error_name() {
            Some(name) => format!(
                "{name}: {}",
                reply.body().deserialize::<String>().unwrap_or_default()
            ),
            None => "a reply".to_string(),
        };
        Decision {
            denied: answer.starts_with("org.freedesktop.DBus.Error.AccessDenied:"),
            answer,
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.denied { "denied" } else { "passed" };
        write!(f, "{verdict} ({})", self.answer)
    }
}

/// Root connections, one per name (as each service owns its own), that own every name root
/// may own and answer every call with an empty reply, each on its own thread until the bus
/// goes away.
///
/// One connection owning them all would make every `send_destination` rule of every name
/// apply to each call, and the answer would depend on the order system.d's files are read
/// in, which for dbus-daemon 1.14 is readdir order (telbus sorts them by name).
fn start_responders(bus: &TestBus, names: &BTreeSet<String>) {
    for name in names {
        let mut client = connect_as(bus, 0, 0);
        let serial = client.send(driver_call("RequestName"), &(name.as_str(), DO_NOT_QUEUE));
        client.read_reply_to(serial);
        client.stream.set_read_timeout(None).unwrap();
        std::thread::spawn(move || {
            while let Some(msg) = client.read_message() {
                let header = msg.header();
                if header.message_type() == Type::MethodCall {
                    client.send(Message::method_return(&header), &());
                }
            }
        });
    }
}

/// Sends a message that gets no reply, then a call to the bus: messages from one connection
/// are handled in order, so a refusal (an error to the message's serial) comes before the
/// call's reply.
fn refused_or_delivered(client: &mut RawClient, msg: zbus::message::Builder<'_>) -> Decision {
    let serial = client.send(msg, &());
    let sync = client.send(driver_call("GetId"), &());
    let mut refusal = None;
    loop {
        let msg = client.read_message().expect("the bus answers");
        let reply_to = msg.header().reply_serial().map(|s| s.get());
        if reply_to == Some(serial) {
            refusal = Some(Decision::of(&msg));
        } else if reply_to == Some(sync) {
            break;
        }
    }
    refusal.unwrap_or(Decision {
        denied: false,
        answer: "no error".to_string(),
    })
}

/// Every probe's decision on one bus, keyed by a description of the probe.
fn run_probes(
    bus: &TestBus,
    probes: &Probes,
    users: &[(String, u32, u32)],
) -> BTreeMap<String, Decision> {
    start_responders(bus, &probes.own_names);
    let mut decisions = BTreeMap::new();
    for (user, uid, gid) in users {
        let mut client = connect_as(bus, *uid, *gid);
        for name in &probes.own_names {
            let serial = client.send(driver_call("RequestName"), &(name.as_str(), DO_NOT_QUEUE));
            let reply = client.read_reply_to(serial);
            if reply.header().message_type() == Type::MethodReturn
                && reply.body().deserialize::<u32>().ok() == Some(1)
            {
                let serial = client.send(driver_call("ReleaseName"), &(name.as_str(),));
                client.read_reply_to(serial);
            }
            decisions.insert(format!("{user} own {name}"), Decision::of(&reply));
        }
        for (destination, calls) in &probes.calls {
            for (interface, member) in calls {
                let mut call = Message::method_call("/probe", member.as_str())
                    .destination(destination.as_str());
                if let Some(interface) = interface {
                    call = call.interface(interface.as_str());
                }
                let serial = client.send(call, &());
                let reply = client.read_reply_to(serial);
                decisions.insert(
                    format!(
                        "{user} call {destination} {}.{member}",
                        interface.as_deref().unwrap_or("(no interface)")
                    ),
                    Decision::of(&reply),
                );
            }
        }
        // Unicast signals.
        for (destination, calls) in &probes.calls {
            for interface in calls.iter().filter_map(|(i, _)| i.as_deref()) {
                let signal = Message::signal("/probe", interface, "Probed")
                    .destination(destination.as_str());
                let decision = refused_or_delivered(&mut client, signal);
                decisions.insert(
                    format!("{user} signal {destination} {interface}.Probed"),
                    decision,
                );
            }
        }
        // Replies nobody asked for, sent the same way.
        for destination in probes.calls.keys() {
            let call = Message::method_call("/probe", "Unasked")
                .destination(destination.as_str())
                .build(&())
                .expect("a call to answer");
            let reply = Message::method_return(&call.header()).destination(destination.as_str());
            let decision = refused_or_delivered(&mut client, reply);
            decisions.insert(
                format!("{user} unrequested reply to {destination}"),
                decision,
            );
        }
        for (interface, member) in [
            ("org.freedesktop.DBus", "GetId"),
            ("org.freedesktop.DBus", "UpdateActivationEnvironment"),
            ("org.freedesktop.DBus.Debug.Stats", "GetStats"),
            ("org.freedesktop.DBus.Introspectable", "Introspect"),
            ("org.freedesktop.DBus.Peer", "Ping"),
        ] {
            let call = Message::method_call("/org/freedesktop/DBus", member)
                .destination("org.freedesktop.DBus")
                .interface(interface);
            let serial = client.send(call, &());
            let reply = client.read_reply_to(serial);
            decisions.insert(
                format!("{user} call the bus {interface}.{member}"),
                Decision::of(&reply),
            );
        }
    }
    bus.assert_alive();
    decisions
}

#[test]
fn system_policy_decisions_agree_with_dbus_daemon() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root (to connect as other users)");
        return;
    }
    if !Path::new(DBUS_DAEMON).exists() || !Path::new(SYSTEM_CONF).exists() {
        eprintln!("skipped: needs {DBUS_DAEMON} and {SYSTEM_CONF}");
        return;
    }
    if daemon_path().ends_with("dbus-daemon") {
        eprintln!("skipped: the bus under test is dbus-daemon already");
        return;
    }
    let probes = probes_from_rules();
    let users: Vec<(String, u32, u32)> = probes
        .users
        .iter()
        .filter_map(|user| user_ids(user).map(|(uid, gid)| (user.clone(), uid, gid)))
        .collect();

    let telbusd = TestBusBuilder::default().system().start();
    let dbus_daemon = TestBusBuilder::default()
        .system()
        .daemon(DBUS_DAEMON)
        .start();
    let ours = run_probes(&telbusd, &probes, &users);
    let theirs = run_probes(&dbus_daemon, &probes, &users);

    assert_eq!(ours.len(), theirs.len());
    let disagreements: Vec<String> = ours
        .iter()
        .filter(|(probe, decision)| theirs.get(*probe).map(|d| d.denied) != Some(decision.denied))
        .map(|(probe, decision)| {
            format!("{probe}: telbusd {decision}, dbus-daemon {}", theirs[probe])
        })
        .collect();
    let denied = ours.values().filter(|d| d.denied).count();
    eprintln!(
        "{} probes ({} denied, {} passed) for users {:?}: {} agree, {} disagree",
        ours.len(),
        denied,
        ours.len() - denied,
        users.iter().map(|(u, _, _)| u.as_str()).collect::<Vec<_>>(),
        ours.len() - disagreements.len(),
        disagreements.len()
    );
    assert!(
        disagreements.is_empty(),
        "telbusd and dbus-daemon disagree:\n{}",
        disagreements.join("\n")
    );
}
