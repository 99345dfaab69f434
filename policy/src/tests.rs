use super::*;
use std::path::Path;

fn policy(xml: &str) -> Policy {
    let config = telbus_busconfig::load_str(&format!("<busconfig><listen>unix:tmpdir=/tmp</listen>{xml}</busconfig>"), Path::new("/t.conf")).unwrap();
    Policy::compile(&config.policies).unwrap()
}

fn peer(p: &Policy, uid: u32) -> PeerPolicy {
    p.for_peer(&PeerIdentity { uid, gids: vec![uid], at_console: false })
}

fn call<'a>(interface: &'a str, member: &'a str) -> MessageFacts<'a> {
    MessageFacts {
        msg_type: MessageType::MethodCall,
        interface: Some(interface),
        member: Some(member),
        path: Some("/"),
        error_name: None,
        destination: Some("org.x.Svc"),
        is_reply: false,
        requested_reply: false,
        unix_fds: 0,
    }
}

fn reply(requested: bool) -> MessageFacts<'static> {
    MessageFacts {
        msg_type: MessageType::MethodReturn,
        interface: None,
        member: None,
        path: None,
        error_name: None,
        destination: Some(":1.1"),
        is_reply: true,
        requested_reply: requested,
        unix_fds: 0,
    }
}

#[test]
fn nothing_matching_denies() {
    let p = peer(&policy(r#"<policy context="default"></policy>"#), 1000);
    assert!(!p.can_send(&call("org.x.I", "M"), &["org.x.Svc"], false).is_allowed());
    assert!(!p.can_own("org.x.Svc").is_allowed());
    match p.can_own("a.b") {
        Decision::Deny(d) => assert!(d.rule.is_none()),
        Decision::Allow => panic!(),
    }
}

#[test]
fn the_last_matching_rule_wins_and_is_named() {
    let p = peer(&policy(r#"<policy context="default">
        <allow send_destination="*"/>
        <deny send_destination="org.x.Svc" send_interface="org.x.I"/>
        <allow send_destination="org.x.Svc" send_interface="org.x.I" send_member="Open"/>
      </policy>"#), 1000);
    let names = ["org.x.Svc", ":1.4"];
    assert!(p.can_send(&call("org.x.I", "Open"), &names, false).is_allowed());
    match p.can_send(&call("org.x.I", "Close"), &names, false) {
        Decision::Deny(d) => {
            let o = d.rule.unwrap();
            assert_eq!(o.line, 3);
            assert_eq!(o.file.to_str(), Some("/t.conf"));
        }
        Decision::Allow => panic!("Close must be denied"),
    }
    assert!(p.can_send(&call("org.x.Other", "Close"), &names, false).is_allowed());
    assert!(p.can_send(&call("org.x.I", "Close"), &[":1.9"], false).is_allowed(), "another receiver");
}

#[test]
fn contexts_apply_in_dbus_daemon_order() {
    let p = policy(r#"
      <policy context="mandatory"><deny own="org.locked"/></policy>
      <policy user="0"><allow own="org.locked"/><allow own="org.root"/></policy>
      <policy context="default"><allow own="org.locked"/><deny own="org.root"/></policy>"#);
    let root = peer(&p, 0);
    let user = peer(&p, 1000);
    assert!(!root.can_own("org.locked").is_allowed(), "mandatory beats user");
    assert!(root.can_own("org.root").is_allowed(), "user beats default");
    assert!(!user.can_own("org.root").is_allowed());
    let group = p.for_peer(&PeerIdentity { uid: 5, gids: vec![0], at_console: false });
    assert!(!group.can_own("org.root").is_allowed(), "no group rule here");
}

#[test]
fn own_prefix_matches_whole_elements() {
    let p = peer(&policy(r#"<policy context="default"><allow own_prefix="org.x"/></policy>"#), 1);
    assert!(p.can_own("org.x").is_allowed());
    assert!(p.can_own("org.x.A").is_allowed());
    assert!(!p.can_own("org.xy").is_allowed());
}

#[test]
fn destination_prefix_and_driver_destinations() {
    let p = peer(&policy(r#"<policy context="default">
        <allow send_destination_prefix="com.example"/>
        <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
      </policy>"#), 1);
    assert!(p.can_send(&call("i.j", "M"), &["com.example.A", ":1.1"], false).is_allowed());
    assert!(!p.can_send(&call("i.j", "M"), &["com.examples", ":1.1"], false).is_allowed());
    let mut hello = call("org.freedesktop.DBus", "Hello");
    hello.destination = Some("org.freedesktop.DBus");
    assert!(p.can_send(&hello, &[], true).is_allowed());
}

#[test]
fn requested_replies_pass_unrequested_do_not() {
    let p = peer(&policy(r#"<policy context="default">
        <deny send_type="method_call"/>
        <allow send_type="method_return" send_requested_reply="true"/>
      </policy>"#), 1);
    assert!(p.can_send(&reply(true), &[":1.1"], false).is_allowed());
    assert!(!p.can_send(&reply(false), &[":1.1"], false).is_allowed());
    let open = peer(&policy(r#"<policy context="default"><allow send_requested_reply="false" send_type="method_return"/></policy>"#), 1);
    assert!(open.can_send(&reply(false), &[":1.1"], false).is_allowed());
}

#[test]
fn eavesdropping_needs_its_own_allow() {
    let p = peer(&policy(r#"<policy context="default"><allow receive_type="signal"/></policy>"#), 1);
    let mut sig = call("a.b", "S");
    sig.msg_type = MessageType::Signal;
    assert!(p.can_receive(&sig, &[":1.2"], false, false).is_allowed());
    assert!(!p.can_receive(&sig, &[":1.2"], false, true).is_allowed());
    let e = peer(&policy(r#"<policy context="default"><allow eavesdrop="true"/></policy>"#), 1);
    assert!(e.can_receive(&sig, &[":1.2"], false, true).is_allowed());
}

#[test]
fn messages_without_an_interface_escape_allow_rules_but_not_deny_rules() {
    let p = peer(&policy(r#"<policy context="default">
        <allow send_destination="*"/>
        <deny send_interface="org.secret" send_member="M"/>
      </policy>"#), 1);
    let mut m = call("x.y", "M");
    m.interface = None;
    assert!(!p.can_send(&m, &[":1.1"], false).is_allowed());
    let q = peer(&policy(r#"<policy context="default"><allow send_interface="org.x"/></policy>"#), 1);
    assert!(!q.can_send(&m, &[":1.1"], false).is_allowed());
}

#[test]
fn connection_rules() {
    let p = policy(r#"<policy context="default"><allow user="*"/></policy>"#);
    assert!(p.allows_user(1234, &[], 0).is_allowed());
    let q = policy(r#"<policy context="default"><allow own="*"/></policy>"#);
    assert!(q.allows_user(0, &[], 0).is_allowed(), "the bus's own user");
    assert!(!q.allows_user(1234, &[], 0).is_allowed());
    let r = policy(r#"<policy context="default"><allow user="*"/></policy><policy context="mandatory"><deny user="1234"/></policy>"#);
    assert!(!r.allows_user(1234, &[], 0).is_allowed());
}

#[test]
fn the_machines_system_bus_policy_decides_like_dbus_daemon() {
    let Some(path) = telbus_busconfig::default_config_path(telbus_busconfig::BusKind::System) else {
        eprintln!("skipped: no system.conf on this machine");
        return;
    };
    let config = telbus_busconfig::load(&path).unwrap();
    let p = Policy::compile(&config.policies).unwrap();
    let user = p.for_peer(&PeerIdentity { uid: 1000, gids: vec![1000], at_console: false });
    let mut hello = call("org.freedesktop.DBus", "Hello");
    hello.destination = Some("org.freedesktop.DBus");
    assert!(user.can_send(&hello, &[], true).is_allowed());
    assert!(!user.can_own("org.freedesktop.NetworkManager").is_allowed());
    assert!(!user.can_send(&call("org.example.Anything", "Do"), &["org.example.Svc", ":1.7"], false).is_allowed());
    assert!(p.allows_user(1000, &[1000], 0).is_allowed(), "system.conf lets every user connect");
}
