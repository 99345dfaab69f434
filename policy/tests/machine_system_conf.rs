//! The machine's real system bus configuration (system.conf and every system.d file),
//! compiled, with probes taken from those files.

mod common;

use std::path::Path;

use common::*;
use telbus_busconfig::{BusConfig, BusKind, PolicyContext, RuleKind, default_config_path};
use telbus_policy::{Decision, MessageFacts, Policy};

fn system() -> Option<(BusConfig, Policy)> {
    let Some(path) = default_config_path(BusKind::System) else {
        println!("note: skipped, no system.conf on this machine");
        return None;
    };
    let config = telbus_busconfig::load(&path).unwrap();
    let policy = Policy::compile(&config.policies).unwrap();
    Some((config, policy))
}

fn to_bus<'a>(interface: &'a str, member: &'a str) -> MessageFacts<'a> {
    call("org.freedesktop.DBus", interface, member)
}

#[test]
fn an_ordinary_user_on_the_system_bus() {
    let Some((_, policy)) = system() else {
        return;
    };
    let Some((uid, gid)) = unprivileged() else {
        return;
    };
    assert!(
        allowed(policy.allows_user(uid, &[gid], 0)),
        "system.conf lets every user connect"
    );
    let user = peer(&policy, uid, &[gid]);

    // The bus itself.
    assert!(allowed(user.can_send(
        &to_bus("org.freedesktop.DBus", "Hello"),
        &[],
        true
    )));
    assert!(allowed(user.can_send(
        &to_bus("org.freedesktop.DBus", "RequestName"),
        &[],
        true
    )));
    assert!(allowed(user.can_send(
        &to_bus("org.freedesktop.DBus.Introspectable", "Introspect"),
        &[],
        true
    )));
    assert!(!allowed(user.can_send(
        &to_bus("org.freedesktop.DBus", "UpdateActivationEnvironment"),
        &[],
        true
    )));
    assert!(!allowed(user.can_send(
        &to_bus("org.freedesktop.DBus.Debug.Stats", "GetStats"),
        &[],
        true
    )));
    assert!(!allowed(user.can_send(
        &to_bus("org.freedesktop.DBus.Monitoring", "BecomeMonitor"),
        &[],
        true
    )));

    // Owning names: nothing, unless a system.d file says so for this user.
    for name in [
        "org.freedesktop.NetworkManager",
        "org.freedesktop.login1",
        "org.example.Anything",
    ] {
        match user.can_own(name) {
            Decision::Deny(d) => {
                let rule = d.rule.expect("<deny own=\"*\"/> decides");
                assert!(rule.file.ends_with("system.conf"), "{rule}");
            }
            Decision::Allow => panic!("a user may not own {name}"),
        }
    }

    // Method calls to a service with no system.d file: denied by system.conf.
    let svc = ["org.example.Svc", ":1.7"];
    assert!(!allowed(user.can_send(
        &call("org.example.Svc", "org.example.I", "Do"),
        &svc,
        false
    )));
    // Signals may be sent, replies to calls that asked for them too, not others.
    assert!(allowed(user.can_send(
        &signal("org.example.I", "Changed", None),
        &[],
        false
    )));
    assert!(allowed(user.can_send(&reply(":1.7", true), &svc, false)));
    assert!(!allowed(user.can_send(&reply(":1.7", false), &svc, false)));
    // Everything may be received, but not eavesdropped.
    assert!(allowed(user.can_receive(
        &call(":1.9", "a.b", "M"),
        &svc,
        false,
        false
    )));
    assert!(!allowed(user.can_receive(
        &call(":1.9", "a.b", "M"),
        &svc,
        false,
        true
    )));
}

#[test]
fn system_d_files_open_their_services() {
    let Some((config, policy)) = system() else {
        return;
    };
    let Some((uid, gid)) = unprivileged() else {
        return;
    };
    let user = peer(&policy, uid, &[gid]);
    let root = peer(&policy, 0, &[0]);
    let mut probed = 0;
    // For each service a system.d file lets root own: root may own it, the user may not,
    // and the user's calls go through exactly when a default rule lets them.
    for section in config
        .policies
        .iter()
        .filter(|s| s.context == PolicyContext::User("root".into()))
    {
        if section.origin.file.ends_with("system.conf") {
            continue;
        }
        for rule in &section.rules {
            let RuleKind::Own {
                name,
                prefix: false,
            } = &rule.kind
            else {
                continue;
            };
            assert!(allowed(root.can_own(name)), "root owns {name}");
            assert!(!allowed(user.can_own(name)), "user owns {name}");
            probed += 1;
        }
    }
    if Path::new("/usr/share/dbus-1/system.d/org.freedesktop.login1.conf").exists() {
        let login1 = ["org.freedesktop.login1", ":1.3"];
        let list = call(
            "org.freedesktop.login1",
            "org.freedesktop.login1.Manager",
            "ListSessions",
        );
        assert!(allowed(user.can_send(&list, &login1, false)));
        let power_off = call(
            "org.freedesktop.login1",
            "org.freedesktop.login1.Manager",
            "PowerOffWithFlags",
        );
        let allowed_by_file =
            std::fs::read_to_string("/usr/share/dbus-1/system.d/org.freedesktop.login1.conf")
                .unwrap()
                .contains("send_member=\"PowerOffWithFlags\"");
        assert_eq!(
            allowed(user.can_send(&power_off, &login1, false)),
            allowed_by_file
        );
        let unknown = call(
            "org.freedesktop.login1",
            "org.freedesktop.login1.Manager",
            "NoSuchMethod",
        );
        match user.can_send(&unknown, &login1, false) {
            Decision::Deny(d) => assert!(
                d.rule
                    .unwrap()
                    .file
                    .ends_with("org.freedesktop.login1.conf")
            ),
            Decision::Allow => panic!("login1.conf denies what it does not list"),
        }
        // Root may call anything there.
        assert!(allowed(root.can_send(&unknown, &login1, false)));
        // Signals from login1 may be received.
        assert!(allowed(user.can_receive(
            &signal("org.freedesktop.login1.Manager", "SessionNew", None),
            &login1,
            false,
            false
        )));
    }
    println!("probed {probed} names");
}

#[test]
fn the_compiled_system_policy_is_indexed() {
    let Some((config, policy)) = system() else {
        return;
    };
    let total_rules: usize = config.policies.iter().map(|s| s.rules.len()).sum();
    let root = peer(&policy, 0, &[0]);
    let (send, receive, own) = root.rule_counts();
    assert!(send + receive + own <= total_rules);
    assert!(send > 10, "{send} send rules");
    // The send rules are filed under many destinations: a message only looks at those for
    // its receiver's names, not at all of them.
    let (send_keys, _) = root.index_keys();
    let services = config
        .policies
        .iter()
        .flat_map(|s| &s.rules)
        .filter_map(|r| match &r.kind {
            RuleKind::Send(s) => s.destination.clone(),
            _ => None,
        })
        .collect::<std::collections::HashSet<_>>()
        .len();
    assert!(
        send_keys >= services.min(2),
        "{send_keys} keys for {services} destinations"
    );
    // A decision looks at a few of them, not at all of them.
    let probes = [
        (
            call(
                "org.freedesktop.login1",
                "org.freedesktop.login1.Manager",
                "ListSessions",
            ),
            vec!["org.freedesktop.login1", ":1.3"],
            false,
        ),
        (
            call(
                "org.freedesktop.systemd1",
                "org.freedesktop.DBus.Properties",
                "Get",
            ),
            vec!["org.freedesktop.systemd1", ":1.1"],
            false,
        ),
        (
            call("org.example.Svc", "org.example.I", "Do"),
            vec!["org.example.Svc", ":1.9"],
            false,
        ),
        (
            call("org.freedesktop.DBus", "org.freedesktop.DBus", "Hello"),
            vec![],
            true,
        ),
        (
            signal("org.example.I", "Changed", None),
            vec![":1.9"],
            false,
        ),
    ];
    for (msg, names, to_bus) in &probes {
        let looked_at = root.send_candidates(msg, names, *to_bus);
        assert!(
            looked_at <= 12 && looked_at * 8 <= send,
            "{looked_at} of {send} rules for {msg:?}"
        );
    }
    // Connections with the same credentials share one compiled rule set.
    for _ in 0..100 {
        peer(&policy, 0, &[0]);
    }
    assert_eq!(policy.cached_peers(), 1);
}
