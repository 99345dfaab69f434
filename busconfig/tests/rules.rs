//! `<policy>` sections and `<allow>`/`<deny>` rules: what each attribute becomes, and which
//! combinations dbus-daemon refuses.

use std::path::Path;

use telbus_busconfig::{
    BusConfig, MessageKind, PolicyContext, ReceiveRule, RuleKind, SendRule, load_str,
};

fn policy(body: &str) -> Result<BusConfig, String> {
    load_str(
        &format!("<busconfig><listen>unix:tmpdir=/tmp</listen>\n{body}</busconfig>"),
        Path::new("/t/rules.conf"),
    )
    .map_err(|e| e.message)
}

fn rule(attributes: &str) -> Result<(bool, RuleKind), String> {
    let c = policy(&format!(
        "<policy context=\"default\"><allow {attributes}/></policy>"
    ))?;
    let r = &c.policies[0].rules[0];
    Ok((r.allow, r.kind.clone()))
}

fn send(attributes: &str) -> SendRule {
    match rule(attributes) {
        Ok((_, RuleKind::Send(s))) => s,
        other => panic!("{attributes}: {other:?}"),
    }
}

fn receive(attributes: &str) -> ReceiveRule {
    match rule(attributes) {
        Ok((_, RuleKind::Receive(r))) => r,
        other => panic!("{attributes}: {other:?}"),
    }
}

#[test]
fn send_attributes() {
    let s = send(
        "send_destination=\"org.a\" send_interface=\"org.a.I\" send_member=\"M\" send_path=\"/p\" \
         send_type=\"method_call\" send_broadcast=\"false\" send_requested_reply=\"false\" \
         eavesdrop=\"true\" min_fds=\"1\" max_fds=\"0x10\" log=\"true\"",
    );
    assert_eq!(s.destination.as_deref(), Some("org.a"));
    assert!(!s.destination_is_prefix);
    assert_eq!(s.interface.as_deref(), Some("org.a.I"));
    assert_eq!(s.member.as_deref(), Some("M"));
    assert_eq!(s.path.as_deref(), Some("/p"));
    assert_eq!(s.msg_type, Some(MessageKind::MethodCall));
    assert_eq!(s.broadcast, Some(false));
    assert!(!s.requested_reply && s.eavesdrop && s.log);
    assert_eq!((s.min_fds, s.max_fds), (1, 16));

    let s = send("send_destination_prefix=\"org.a\" send_error=\"org.a.Error\"");
    assert_eq!(s.destination.as_deref(), Some("org.a"));
    assert!(s.destination_is_prefix);
    assert_eq!(s.error.as_deref(), Some("org.a.Error"));
    assert_eq!(
        (s.min_fds, s.max_fds),
        (0, telbus_busconfig::MAXIMUM_MESSAGE_UNIX_FDS)
    );
    assert_eq!(s.broadcast, None);
    assert!(!s.log && !s.eavesdrop);
}

#[test]
fn a_star_is_a_wildcard_except_in_prefixes() {
    let s = send(
        "send_destination=\"*\" send_interface=\"*\" send_member=\"*\" send_path=\"*\" send_type=\"*\"",
    );
    assert_eq!(
        (s.destination, s.interface, s.member, s.path, s.msg_type),
        (None, None, None, None, None)
    );
    assert_eq!(
        send("send_destination_prefix=\"*\"").destination.as_deref(),
        Some("*")
    );
    let r = receive("receive_sender=\"*\" receive_error=\"*\" receive_type=\"*\"");
    assert_eq!((r.sender, r.error, r.msg_type), (None, None, None));
    assert_eq!(
        rule("own=\"*\"").unwrap().1,
        RuleKind::Own {
            name: "*".into(),
            prefix: false
        }
    );
    assert_eq!(
        rule("own_prefix=\"*\"").unwrap().1,
        RuleKind::Own {
            name: "*".into(),
            prefix: true
        }
    );
    // send_destination="*" is not a destination, so it goes with send_broadcast="true".
    assert_eq!(
        send("send_destination=\"*\" send_broadcast=\"true\"").broadcast,
        Some(true)
    );
}

#[test]
fn requested_reply_defaults_to_the_rules_verdict() {
    assert!(send("send_type=\"method_return\"").requested_reply);
    let deny = policy("<policy context=\"default\"><deny send_type=\"method_return\"/><deny receive_type=\"error\"/></policy>").unwrap();
    match (
        &deny.policies[0].rules[0].kind,
        &deny.policies[0].rules[1].kind,
    ) {
        (RuleKind::Send(s), RuleKind::Receive(r)) => {
            assert!(!s.requested_reply && !r.requested_reply)
        }
        other => panic!("{other:?}"),
    }
    assert!(receive("receive_type=\"error\"").requested_reply);
    assert!(!receive("receive_requested_reply=\"false\"").requested_reply);
}

#[test]
fn eavesdrop_alone_is_a_receive_rule() {
    let r = receive("eavesdrop=\"true\"");
    assert!(r.eavesdrop);
    assert_eq!(r.sender, None);
    assert!(send("send_destination=\"*\" eavesdrop=\"true\"").eavesdrop);
    assert!(receive("receive_sender=\"a\" eavesdrop=\"true\"").eavesdrop);
}

#[test]
fn log_is_true_only_when_it_says_true() {
    assert!(!send("send_destination=\"a\" log=\"yes\"").log);
    assert!(send("send_destination=\"a\" log=\"true\"").log);
    assert!(rule("own=\"a\" log=\"true\"").is_ok());
}

#[test]
fn refused_combinations() {
    let cases = [
        ("", "Element <allow> must have one or more attributes"),
        (
            "log=\"true\"",
            "Element <allow> must have one or more attributes",
        ),
        (
            "min_fds=\"1\"",
            "Element <allow> must have one or more attributes",
        ),
        (
            "species=\"stoat\"",
            "Attribute \"species\" is invalid on <allow> element in this context",
        ),
        (
            "send_member=\"M\"",
            "if you specify a member you must specify an interface or a path",
        ),
        (
            "receive_member=\"M\"",
            "if you specify a member you must specify an interface or a path",
        ),
        (
            "own=\"a\" user=\"*\"",
            "own, own_prefix, user, group and the message-related attributes cannot be combined",
        ),
        ("own=\"a\" own_prefix=\"b\"", "cannot be combined"),
        ("own=\"a\" max_fds=\"1\"", "cannot be combined"),
        ("group=\"*\" eavesdrop=\"true\"", "cannot be combined"),
        (
            "send_type=\"signal\" receive_type=\"signal\"",
            "send and receive attributes cannot be combined",
        ),
        (
            "send_interface=\"a\" send_error=\"b\"",
            "send_error cannot be combined with send_member or send_interface",
        ),
        (
            "send_destination=\"a\" send_destination_prefix=\"b\"",
            "send_destination cannot be combined with send_destination_prefix",
        ),
        (
            "receive_interface=\"a\" receive_error=\"b\"",
            "receive_error cannot be combined with receive_member or receive_interface",
        ),
        ("send_type=\"bees\"", "Bad message type \"bees\""),
        ("receive_type=\"bees\"", "Bad message type \"bees\""),
        (
            "eavesdrop=\"yes\"",
            "Bad value \"yes\" for eavesdrop attribute, must be true or false",
        ),
        (
            "send_broadcast=\"yes\"",
            "Bad value \"yes\" for send_broadcast attribute, must be true or false",
        ),
        (
            "send_requested_reply=\"1\"",
            "for send_requested_reply attribute",
        ),
        (
            "receive_requested_reply=\"1\"",
            "for receive_requested_reply attribute",
        ),
        (
            "send_broadcast=\"true\" send_destination=\"a\"",
            "Rule with send_broadcast=\"true\" and send_destination=\"a\" cannot match anything",
        ),
        (
            "send_destination=\"a\" max_fds=\"33554433\"",
            "Bad value \"33554433\" for max_fds attribute, must be an integer in range 0 to 33554432 inclusive",
        ),
        (
            "receive_sender=\"a\" min_fds=\"-1\"",
            "Bad value \"-1\" for min_fds attribute",
        ),
        (
            "send_destination=\"a\" max_fds=\"many\"",
            "for max_fds attribute",
        ),
    ];
    for (attributes, message) in cases {
        let e = rule(attributes).expect_err(attributes);
        assert!(e.contains(message), "{attributes}: {e}");
    }
}

#[test]
fn accepted_combinations() {
    for attributes in [
        "send_path=\"/x\" send_member=\"M\"",
        "receive_path=\"/x\" receive_member=\"M\"",
        "send_error=\"e\" send_destination=\"a\"",
        "send_type=\"error\" send_requested_reply=\"true\"",
        "max_fds=\"12 and more\" send_destination=\"a\"",
        "eavesdrop=\"false\"",
        "own_prefix=\"org\"",
        "user=\"*\"",
        "group=\"*\"",
    ] {
        assert!(
            rule(attributes).is_ok(),
            "{attributes}: {:?}",
            rule(attributes)
        );
    }
}

#[test]
fn contexts_and_unknown_users() {
    let c = policy(
        "<policy context=\"mandatory\"><deny own=\"a\"/></policy>\
         <policy user=\"root\"><allow own=\"b\"/></policy>\
         <policy user=\"0\"><allow own=\"b\"/></policy>\
         <policy group=\"root\"><allow own=\"c\"/></policy>\
         <policy at_console=\"false\"><allow own=\"d\"/></policy>\
         <policy user=\"no-such-user-here\"><allow user=\"*\"/></policy>\
         <policy group=\"*\"><allow own=\"e\"/></policy>\
         <policy context=\"default\"><allow user=\"no-such-user-here\"/><allow group=\"root\"/></policy>\
         <policy at_console=\"true\"><allow user=\"*\"/></policy>",
    )
    .unwrap();
    let contexts: Vec<PolicyContext> = c.policies.iter().map(|s| s.context.clone()).collect();
    assert_eq!(
        contexts,
        [
            PolicyContext::Mandatory,
            PolicyContext::User("root".into()),
            PolicyContext::User("0".into()),
            PolicyContext::Group("root".into()),
            PolicyContext::AtConsole(false),
            PolicyContext::User("no-such-user-here".into()),
            PolicyContext::Group("*".into()),
            PolicyContext::Default,
            PolicyContext::AtConsole(true),
        ]
    );
    // Rules are kept as written, with their lines.
    assert_eq!(c.policies[7].rules.len(), 2);
    assert_eq!(c.policies[0].origin.line, 2);
    // dbus-daemon warns about the unknown user (twice: a section, a rule) and the "*" group.
    let warnings: Vec<String> = c.warnings.iter().map(|w| w.message.clone()).collect();
    assert_eq!(
        warnings,
        [
            "Unknown username \"no-such-user-here\" in message bus configuration file",
            "Unknown group \"*\" in message bus configuration file",
            "Unknown username \"no-such-user-here\" on element <allow>",
        ]
    );
}

/// `polkit_action` is telbus's own attribute: on `<allow>` send rules only.
#[test]
fn polkit_action_on_allow_send_rules() {
    let s = send(
        "send_destination=\"io.telaf.x\" send_interface=\"io.telaf.le_mcc\" send_member=\"Start\" \
         polkit_action=\"io.telaf.mcc.call\"",
    );
    assert_eq!(s.polkit_action.as_deref(), Some("io.telaf.mcc.call"));
    assert_eq!(send("send_destination=\"a\"").polkit_action, None);

    let deny = policy(
        "<policy context=\"default\"><deny send_destination=\"a\" polkit_action=\"b\"/></policy>",
    )
    .expect_err("polkit_action on deny");
    assert!(
        deny.contains("\"polkit_action\" is only valid on <allow>"),
        "{deny}"
    );
    for (attributes, message) in [
        (
            "own=\"a\" polkit_action=\"b\"",
            "\"polkit_action\" is only valid on <allow>",
        ),
        (
            "receive_sender=\"a\" polkit_action=\"b\"",
            "\"polkit_action\" is only valid on <allow>",
        ),
        (
            "send_destination=\"a\" polkit_action=\"\"",
            "Bad value \"\" for polkit_action attribute",
        ),
        (
            "send_destination=\"a\" polkit_action=\"a b\"",
            "Bad value \"a b\" for polkit_action attribute",
        ),
    ] {
        let e = rule(attributes).expect_err(attributes);
        assert!(e.contains(message), "{attributes}: {e}");
    }
}
