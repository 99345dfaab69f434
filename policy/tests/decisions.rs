//! Decision tables for each rule attribute, with dbus-daemon's semantics.

mod common;

use common::*;
use telbus_policy::{Decision, MessageType};

const RECEIVER: [&str; 2] = ["org.x.Svc", ":1.7"];

#[test]
fn nothing_matching_means_no() {
    let p = default_rules("<allow send_destination=\"org.other\"/>");
    match p.can_send(&call("org.x.Svc", "org.x.I", "M"), &RECEIVER, false) {
        Decision::Deny(d) => assert_eq!((d.rule, d.matched_rules), (None, 0)),
        Decision::Allow => panic!("nothing allows it"),
    }
    assert!(!allowed(p.can_own("org.x.Svc")));
    assert!(!allowed(p.can_receive(
        &signal("a.b", "S", None),
        &[":1.2"],
        false,
        false
    )));
}

#[test]
fn the_last_matching_rule_decides_and_is_named() {
    let p = default_rules(
        "<allow send_destination=\"*\"/>\n\
         <deny send_destination=\"org.x.Svc\" send_interface=\"org.x.I\"/>\n\
         <allow send_destination=\"org.x.Svc\" send_interface=\"org.x.I\" send_member=\"Open\"/>",
    );
    assert!(allowed(p.can_send(
        &call("org.x.Svc", "org.x.I", "Open"),
        &RECEIVER,
        false
    )));
    match p.can_send(&call("org.x.Svc", "org.x.I", "Close"), &RECEIVER, false) {
        Decision::Deny(d) => {
            let rule = d.rule.unwrap();
            assert_eq!((rule.file.to_str(), rule.line), (Some("/t/policy.conf"), 3));
            // Both the allow-all rule and the deny matched, as dbus-daemon counts.
            assert_eq!(d.matched_rules, 2);
        }
        Decision::Allow => panic!("Close is denied"),
    }
    assert!(allowed(p.can_send(
        &call("org.x.Svc", "org.x.Other", "Close"),
        &RECEIVER,
        false
    )));
    assert!(
        allowed(p.can_send(&call(":1.9", "org.x.I", "Close"), &[":1.9"], false)),
        "another receiver"
    );
}

#[test]
fn send_destination_matches_any_name_of_the_receiver() {
    let p = default_rules("<allow send_destination=\"org.x.Svc\"/>");
    // Sent to the unique name, the receiver also owns org.x.Svc (or is queued for it).
    assert!(allowed(p.can_send(
        &call(":1.7", "i.j", "M"),
        &RECEIVER,
        false
    )));
    assert!(!allowed(p.can_send(
        &call(":1.7", "i.j", "M"),
        &[":1.7"],
        false
    )));
    // Unique names are names too.
    let u = default_rules("<allow send_destination=\":1.7\"/>");
    assert!(allowed(u.can_send(
        &call("org.x.Svc", "i.j", "M"),
        &RECEIVER,
        false
    )));
}

#[test]
fn send_destination_prefix_matches_whole_elements() {
    let p = default_rules("<allow send_destination_prefix=\"com.example\"/>");
    for (name, ok) in [
        ("com.example", true),
        ("com.example.A", true),
        ("com.example.A.B", true),
        ("com.examples", false),
        ("com", false),
        ("org.com.example", false),
    ] {
        let verdict = p.can_send(&call(":1.1", "i.j", "M"), &[name, ":1.1"], false);
        assert_eq!(allowed(verdict), ok, "{name}");
    }
    // "*" is not a wildcard in a prefix.
    let star = default_rules("<allow send_destination_prefix=\"*\"/>");
    assert!(!allowed(star.can_send(
        &call(":1.1", "i.j", "M"),
        &["a.b", ":1.1"],
        false
    )));
}

#[test]
fn messages_to_the_bus_test_their_destination_field() {
    let p = default_rules(
        "<allow send_destination=\"org.freedesktop.DBus\" send_interface=\"org.freedesktop.DBus\"/>\
         <allow send_destination_prefix=\"org.activatable\"/>",
    );
    let hello = call("org.freedesktop.DBus", "org.freedesktop.DBus", "Hello");
    assert!(allowed(p.can_send(&hello, &[], true)));
    let other = call("org.freedesktop.DBus", "org.freedesktop.DBus.Peer", "Ping");
    assert!(!allowed(p.can_send(&other, &[], true)));
    // Activation: no receiver yet, the destination decides.
    assert!(allowed(p.can_send(
        &call("org.activatable.Thing", "i.j", "M"),
        &[],
        true
    )));
    assert!(!allowed(p.can_send(
        &call("org.other", "i.j", "M"),
        &[],
        true
    )));
}

#[test]
fn interface_member_path_and_error() {
    let p = default_rules(
        "<allow send_interface=\"org.x.I\"/>\
         <deny send_interface=\"org.x.I\" send_member=\"Secret\"/>\
         <deny send_path=\"/private\" send_member=\"Read\"/>",
    );
    let mut m = call("org.x.Svc", "org.x.I", "Open");
    assert!(allowed(p.can_send(&m, &RECEIVER, false)));
    m.member = Some("Secret");
    assert!(!allowed(p.can_send(&m, &RECEIVER, false)));
    // A message without a member matches rules about members.
    m.member = None;
    assert!(!allowed(p.can_send(&m, &RECEIVER, false)));
    m.member = Some("Read");
    m.path = Some("/private");
    assert!(!allowed(p.can_send(&m, &RECEIVER, false)));
    m.path = Some("/public");
    assert!(allowed(p.can_send(&m, &RECEIVER, false)));
    // A message without a path matches rules about paths.
    m.path = None;
    assert!(!allowed(p.can_send(&m, &RECEIVER, false)));
    // A message without an interface escapes the allow rule (and is denied by default), and
    // is caught by the deny rule that names an interface.
    let mut no_interface = call("org.x.Svc", "org.x.I", "Open");
    no_interface.interface = None;
    assert!(!allowed(p.can_send(&no_interface, &RECEIVER, false)));
    let open = default_rules("<allow send_destination=\"*\"/><deny send_interface=\"org.x.I\"/>");
    match open.can_send(&no_interface, &RECEIVER, false) {
        Decision::Deny(d) => assert_eq!(d.rule.unwrap().line, 2),
        Decision::Allow => panic!("deny rules catch messages without an interface"),
    }

    let e = default_rules(
        "<allow send_type=\"error\" send_requested_reply=\"false\"/><deny send_error=\"org.x.Bad\"/>",
    );
    assert!(allowed(e.can_send(
        &error(":1.1", "org.x.Fine", false),
        &[":1.1"],
        false
    )));
    assert!(!allowed(e.can_send(
        &error(":1.1", "org.x.Bad", false),
        &[":1.1"],
        false
    )));
}

#[test]
fn message_types() {
    let p = default_rules("<allow send_type=\"signal\"/><allow receive_type=\"method_call\"/>");
    assert!(allowed(p.can_send(&signal("a.b", "S", None), &[], false)));
    assert!(!allowed(p.can_send(
        &call("a.b", "a.b", "M"),
        &["a.b"],
        false
    )));
    assert!(allowed(p.can_receive(
        &call("a.b", "a.b", "M"),
        &[":1.1"],
        false,
        false
    )));
    assert!(!allowed(p.can_receive(
        &signal("a.b", "S", None),
        &[":1.1"],
        false,
        false
    )));
}

#[test]
fn broadcasts() {
    let p = default_rules(
        "<allow send_type=\"signal\" send_broadcast=\"true\"/>\
         <allow send_destination=\"*\" send_broadcast=\"false\" send_interface=\"x.Unicast\"/>",
    );
    assert!(allowed(p.can_send(
        &signal("a.b", "S", None),
        &[":1.3"],
        false
    )));
    assert!(
        !allowed(p.can_send(&signal("a.b", "S", Some(":1.3")), &[":1.3"], false)),
        "unicast signal"
    );
    assert!(allowed(p.can_send(
        &signal("x.Unicast", "S", Some(":1.3")),
        &[":1.3"],
        false
    )));
    // The first rule allows every broadcast signal, whatever its interface.
    assert!(allowed(p.can_send(
        &signal("x.Unicast", "S", None),
        &[":1.3"],
        false
    )));
    let q = default_rules("<allow send_interface=\"x.Unicast\" send_broadcast=\"false\"/>");
    assert!(allowed(q.can_send(
        &signal("x.Unicast", "S", Some(":1.3")),
        &[":1.3"],
        false
    )));
    assert!(!allowed(q.can_send(
        &signal("x.Unicast", "S", None),
        &[":1.3"],
        false
    )));
}

/// Replies against every combination of rule verdict and requested_reply attribute.
#[test]
fn requested_replies() {
    // (rules, requested reply allowed, unrequested reply allowed)
    let table = [
        // allow rules cover requested replies only, unless they say requested_reply="false".
        ("<allow send_type=\"method_return\"/>", true, false),
        (
            "<allow send_type=\"method_return\" send_requested_reply=\"true\"/>",
            true,
            false,
        ),
        (
            "<allow send_type=\"method_return\" send_requested_reply=\"false\"/>",
            true,
            true,
        ),
        // eavesdrop="true" lifts the restriction too.
        (
            "<allow send_type=\"method_return\" eavesdrop=\"true\"/>",
            true,
            true,
        ),
        // deny rules cover unrequested replies only, unless they say requested_reply="true".
        (
            "<allow send_type=\"method_return\" send_requested_reply=\"false\"/><deny send_type=\"method_return\"/>",
            true,
            false,
        ),
        (
            "<allow send_type=\"method_return\" send_requested_reply=\"false\"/><deny send_type=\"method_return\" send_requested_reply=\"false\"/>",
            true,
            false,
        ),
        (
            "<allow send_type=\"method_return\" send_requested_reply=\"false\"/><deny send_type=\"method_return\" send_requested_reply=\"true\"/>",
            false,
            false,
        ),
        // A plain allow-everything rule: only requested replies.
        ("<allow send_destination=\"*\"/>", true, false),
    ];
    for (rules, requested, unrequested) in table {
        let p = default_rules(rules);
        assert_eq!(
            allowed(p.can_send(&reply(":1.1", true), &[":1.1"], false)),
            requested,
            "requested: {rules}"
        );
        assert_eq!(
            allowed(p.can_send(&reply(":1.1", false), &[":1.1"], false)),
            unrequested,
            "unrequested: {rules}"
        );
    }
    // The same for receive rules.
    let p = default_rules("<allow receive_type=\"method_return\"/>");
    assert!(allowed(p.can_receive(
        &reply(":1.1", true),
        &[":1.2"],
        false,
        false
    )));
    assert!(!allowed(p.can_receive(
        &reply(":1.1", false),
        &[":1.2"],
        false,
        false
    )));
    let p = default_rules(
        "<allow receive_requested_reply=\"false\" receive_type=\"method_return\"/><deny receive_requested_reply=\"true\" receive_sender=\":1.2\"/>",
    );
    assert!(!allowed(p.can_receive(
        &reply(":1.1", true),
        &[":1.2"],
        false,
        false
    )));
    assert!(allowed(p.can_receive(
        &reply(":1.1", true),
        &[":1.3"],
        false,
        false
    )));
    // Messages that are not replies ignore requested_reply altogether.
    let p = default_rules(
        "<deny send_requested_reply=\"true\" send_type=\"signal\"/><allow send_type=\"signal\" send_requested_reply=\"true\"/>",
    );
    assert!(allowed(p.can_send(&signal("a.b", "S", None), &[], false)));
}

#[test]
fn eavesdropping() {
    let sig = signal("a.b", "S", Some(":1.9"));
    // (rules, normal delivery allowed, eavesdropped copy allowed)
    let table = [
        ("<allow receive_type=\"signal\"/>", true, false),
        (
            "<allow receive_type=\"signal\" eavesdrop=\"true\"/>",
            true,
            true,
        ),
        ("<allow eavesdrop=\"true\"/>", true, true),
        ("<allow eavesdrop=\"false\"/>", true, false),
        (
            "<allow eavesdrop=\"true\"/><deny receive_interface=\"a.b\" eavesdrop=\"true\"/>",
            true,
            false,
        ),
        (
            "<allow eavesdrop=\"true\"/><deny receive_interface=\"a.b\"/>",
            false,
            false,
        ),
    ];
    for (rules, normal, eavesdropped) in table {
        let p = default_rules(rules);
        assert_eq!(
            allowed(p.can_receive(&sig, &[":1.2"], false, false)),
            normal,
            "normal: {rules}"
        );
        assert_eq!(
            allowed(p.can_receive(&sig, &[":1.2"], false, true)),
            eavesdropped,
            "eavesdropped: {rules}"
        );
    }
}

#[test]
fn receive_sender() {
    let p = default_rules(
        "<allow receive_sender=\"org.x.Svc\"/><allow receive_sender=\"org.freedesktop.DBus\" receive_type=\"signal\"/>",
    );
    let sig = signal("a.b", "S", None);
    assert!(allowed(p.can_receive(
        &sig,
        &["org.x.Svc", ":1.4"],
        false,
        false
    )));
    assert!(!allowed(p.can_receive(&sig, &[":1.4"], false, false)));
    // From the bus: its name is org.freedesktop.DBus.
    assert!(allowed(p.can_receive(&sig, &[], true, false)));
    assert!(!allowed(p.can_receive(
        &call(":1.1", "a.b", "M"),
        &[],
        true,
        false
    )));
}

#[test]
fn fd_counts() {
    // (With send_type, so that dbus-daemon's match-everything rule does not drop rules.)
    let p = default_rules(
        "<allow send_type=\"method_call\"/>\
         <deny send_type=\"method_call\" min_fds=\"2\"/>\
         <allow send_type=\"method_call\" min_fds=\"5\" max_fds=\"6\"/>",
    );
    for (fds, ok) in [
        (0, true),
        (1, true),
        (2, false),
        (4, false),
        (5, true),
        (6, true),
        (7, false),
    ] {
        let mut m = call(":1.1", "a.b", "M");
        m.unix_fds = fds;
        assert_eq!(allowed(p.can_send(&m, &[":1.1"], false)), ok, "{fds} fds");
    }
    // Without a type, each rule drops the ones before it: only the last is left.
    let quirk = default_rules(
        "<allow send_destination=\"*\"/><deny send_destination=\"*\" min_fds=\"2\"/>\
         <allow send_destination=\"*\" min_fds=\"5\" max_fds=\"6\"/>",
    );
    assert!(!allowed(quirk.can_send(
        &call(":1.1", "a.b", "M"),
        &[":1.1"],
        false
    )));
    let r = default_rules("<allow receive_type=\"*\" max_fds=\"0\"/>");
    let mut m = signal("a.b", "S", None);
    assert!(allowed(r.can_receive(&m, &[":1.1"], false, false)));
    m.unix_fds = 1;
    assert!(!allowed(r.can_receive(&m, &[":1.1"], false, false)));
}

#[test]
fn owning_names() {
    let p = default_rules(
        "<allow own=\"*\"/>\
         <deny own_prefix=\"org.locked\"/>\
         <allow own=\"org.locked.Open\"/>\
         <deny own=\"org.single\"/>",
    );
    for (name, ok) in [
        ("org.anything", true),
        ("org.locked", false),
        ("org.locked.Sub", false),
        ("org.locked.Open", true),
        ("org.locked.Open.Sub", false),
        ("org.lockedout", true),
        ("org.single", false),
        ("org.single.Sub", true),
    ] {
        assert_eq!(allowed(p.can_own(name)), ok, "{name}");
    }
    // dbus's check-own-rules case.
    let q = default_rules(
        "<allow user=\"*\"/><deny own=\"*\"/><allow own_prefix=\"org.freedesktop.ManySystems\"/>",
    );
    for (name, ok) in [
        ("org.freedesktop", false),
        ("org.freedesktop.ManySystem", false),
        ("org.freedesktop.ManySystems", true),
        ("org.freedesktop.ManySystems.foo", true),
        ("org.freedesktop.ManySystems.foo.bar", true),
        ("org.freedesktop.ManySystems2", false),
        ("org.freedesktop.ManySystems2.foo", false),
        ("org.freedesktop.ManySystems2.foo.bar", false),
    ] {
        assert_eq!(allowed(q.can_own(name)), ok, "{name}");
    }
    match q.can_own("org.freedesktop") {
        Decision::Deny(d) => assert_eq!(d.rule.unwrap().line, 2),
        Decision::Allow => unreachable!(),
    }
}

#[test]
fn a_match_everything_rule_drops_the_rules_before_it() {
    // dbus-daemon drops <allow send_destination="a"/> because a later send rule has no
    // type, path, interface, member, error or destination, even though it only applies to
    // broadcasts: a message to "a" is then denied.
    let p = default_rules("<allow send_destination=\"a\"/><deny send_broadcast=\"true\"/>");
    assert!(!allowed(p.can_send(&call("a", "i.j", "M"), &["a"], false)));
    assert_eq!(p.rule_counts().0, 1);
    // Rules of other kinds stay.
    let q = default_rules(
        "<allow own=\"x\"/><allow receive_sender=\"a\"/><deny send_destination=\"*\" min_fds=\"1\"/>",
    );
    assert!(allowed(q.can_own("x")));
    assert!(allowed(q.can_receive(
        &signal("i.j", "S", None),
        &["a"],
        false,
        false
    )));
    // own="*" drops earlier own rules; own_prefix="*" is not a wildcard.
    let r = default_rules("<allow own=\"x\"/><deny own=\"*\"/>");
    assert_eq!(r.rule_counts().2, 1);
    let s = default_rules("<allow own=\"x\"/><deny own_prefix=\"*\"/>");
    assert!(allowed(s.can_own("x")));
}

#[test]
fn log_rules_are_reported() {
    let p = default_rules(
        "<allow send_destination=\"*\" log=\"true\"/><allow send_destination=\"quiet\"/>",
    );
    assert_eq!(
        p.can_send_logged(&call("x", "i.j", "M"), &["x"], false),
        (Decision::Allow, true)
    );
    assert_eq!(
        p.can_send_logged(&call("quiet", "i.j", "M"), &["quiet"], false),
        (Decision::Allow, false)
    );
}

#[test]
fn message_type_of_errors_and_returns() {
    let p = default_rules("<allow send_type=\"method_return\" send_requested_reply=\"false\"/>");
    assert!(allowed(p.can_send(&reply(":1.1", false), &[":1.1"], false)));
    assert!(!allowed(p.can_send(
        &error(":1.1", "e.E", false),
        &[":1.1"],
        false
    )));
    let mut sig = signal("a.b", "S", None);
    sig.msg_type = MessageType::Error;
    assert!(!sig.is_broadcast());
}

#[test]
fn polkit_actions_come_from_the_deciding_rule() {
    let p = default_rules(
        "<allow send_destination=\"io.telaf.x\"/>\
         <allow send_destination=\"io.telaf.x\" send_interface=\"io.telaf.le_mcc\" \
                send_member=\"Start\" polkit_action=\"io.telaf.mcc.call\"/>\
         <deny send_destination=\"io.telaf.x\" send_interface=\"io.telaf.le_mcc\" \
               send_member=\"Reset\"/>",
    );
    let start = p.send_verdict(
        &call("io.telaf.x", "io.telaf.le_mcc", "Start"),
        &["io.telaf.x"],
        false,
    );
    assert_eq!(start.decision, Decision::Allow);
    assert_eq!(start.polkit_action, Some("io.telaf.mcc.call"));
    // Another member: the plain allow rule decides, no polkit.
    let stop = p.send_verdict(
        &call("io.telaf.x", "io.telaf.le_mcc", "Stop"),
        &["io.telaf.x"],
        false,
    );
    assert_eq!((stop.decision, stop.polkit_action), (Decision::Allow, None));
    // A refusal never asks polkit.
    let reset = p.send_verdict(
        &call("io.telaf.x", "io.telaf.le_mcc", "Reset"),
        &["io.telaf.x"],
        false,
    );
    assert!(!allowed(reset.decision) && reset.polkit_action.is_none());
    // A later allow rule without polkit_action wins over an earlier one with it.
    let q = default_rules(
        "<allow send_destination=\"a\" polkit_action=\"x.y\"/><allow send_destination=\"a\" send_interface=\"i.j\"/>",
    );
    assert_eq!(
        q.send_verdict(&call("a", "i.j", "M"), &["a"], false)
            .polkit_action,
        None
    );
    assert_eq!(
        q.send_verdict(&call("a", "i.k", "M"), &["a"], false)
            .polkit_action,
        Some("x.y")
    );
}

/// Messages of every kind the permissive shortcut must allow, as the full decision does.
fn probe_messages() -> Vec<telbus_policy::MessageFacts<'static>> {
    let mut all = vec![
        call("org.x.Svc", "org.x.I", "M"),
        signal("a.b", "S", None),
        signal("a.b", "S", Some(":1.2")),
    ];
    let mut reply = call("org.x.Svc", "org.x.I", "M");
    reply.msg_type = MessageType::MethodReturn;
    reply.is_reply = true;
    reply.requested_reply = false;
    all.push(reply.clone());
    reply.requested_reply = true;
    all.push(reply);
    let mut with_fds = call("org.x.Svc", "org.x.I", "M");
    with_fds.unix_fds = 3;
    all.push(with_fds);
    all
}

#[test]
fn a_permissive_policy_is_known_to_allow_everything() {
    // The session bus's default policy.
    let p = default_rules(
        "<allow send_destination=\"*\" eavesdrop=\"true\"/>\n\
         <allow eavesdrop=\"true\"/>\n\
         <allow own=\"*\"/>",
    );
    assert!(p.allows_every_send() && p.allows_every_receive());
    // The shortcut says what the full decision says, for every kind of message.
    for msg in probe_messages() {
        assert!(allowed(p.can_send(&msg, &RECEIVER, false)), "{msg:?}");
        assert!(allowed(p.can_send(&msg, &[], true)), "{msg:?}");
        assert!(
            allowed(p.can_receive(&msg, &[":1.2"], false, false)),
            "{msg:?}"
        );
        assert!(allowed(p.can_receive(&msg, &[], true, false)), "{msg:?}");
    }
}

#[test]
fn a_policy_that_can_refuse_is_asked_every_time() {
    let cases = [
        // A deny rule anywhere, even one that can never decide against this connection.
        "<allow send_destination=\"*\" eavesdrop=\"true\"/>\n<deny send_interface=\"org.x.Never\"/>",
        // An allow-all rule that does not cover unrequested replies.
        "<allow send_destination=\"*\"/>",
        // Rules that log, or want polkit, must be asked for their side effects.
        "<allow send_destination=\"*\" eavesdrop=\"true\" log=\"true\"/>",
        // Nothing that allows everything.
        "<allow send_interface=\"org.x.I\"/>",
    ];
    for rules in cases {
        let p = default_rules(rules);
        assert!(!p.allows_every_send(), "{rules}");
    }
    let p = default_rules("<allow eavesdrop=\"true\"/>\n<deny receive_interface=\"org.x.Never\"/>");
    assert!(!p.allows_every_receive());
    // Without an eavesdrop or receive_requested_reply="false", an allow-all receive rule does
    // not let unrequested replies in.
    let p = default_rules("<allow receive_sender=\"*\"/>");
    assert!(!p.allows_every_receive());
    let mut unrequested = call("org.x.Svc", "org.x.I", "M");
    unrequested.msg_type = MessageType::MethodReturn;
    unrequested.is_reply = true;
    unrequested.requested_reply = false;
    assert!(!allowed(p.can_receive(
        &unrequested,
        &[":1.2"],
        false,
        false
    )));
}
