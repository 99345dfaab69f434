//! Which sections apply to whom, in which order; who may connect.

mod common;

use common::*;
use telbus_policy::{Decision, PeerIdentity};

#[test]
fn default_then_groups_then_user_then_console_then_mandatory() {
    let Some((nobody, nogroup)) = unprivileged() else {
        println!("note: skipped, no unprivileged account");
        return;
    };
    let p = policy(&format!(
        "<policy context=\"mandatory\"><deny own=\"m.locked\"/></policy>\
         <policy user=\"{nobody}\"><allow own=\"m.locked\"/><allow own=\"u.name\"/><deny own=\"g.name\"/></policy>\
         <policy group=\"{nogroup}\"><allow own=\"g.name\"/><allow own=\"u.name\"/><deny own=\"c.name\"/></policy>\
         <policy at_console=\"true\"><allow own=\"c.name\"/><deny own=\"u.name\"/></policy>\
         <policy at_console=\"false\"><allow own=\"n.name\"/></policy>\
         <policy context=\"default\"><allow own=\"m.locked\"/><deny own=\"u.name\"/><deny own=\"d.name\"/></policy>"
    ));
    let user = peer(&p, nobody, &[nogroup]);
    assert!(!allowed(user.can_own("m.locked")), "mandatory comes last");
    assert!(
        allowed(user.can_own("u.name")),
        "user after group and default"
    );
    assert!(!allowed(user.can_own("g.name")), "user after group");
    assert!(
        !allowed(user.can_own("c.name")),
        "group's deny; not at the console"
    );
    assert!(
        allowed(user.can_own("n.name")),
        "at_console=\"false\" applies to those not at the console"
    );
    assert!(!allowed(user.can_own("d.name")));

    let console = p.for_peer(&PeerIdentity {
        uid: nobody,
        gids: vec![nogroup],
        at_console: true,
    });
    assert!(allowed(console.can_own("c.name")), "console after group");
    assert!(!allowed(console.can_own("u.name")), "console after user");
    assert!(!allowed(console.can_own("n.name")));

    let root = peer(&p, 0, &[0]);
    assert!(!allowed(root.can_own("u.name")), "not this user's rules");
    assert!(!allowed(root.can_own("g.name")), "not in that group");

    let member_only = peer(&p, 0, &[0, nogroup]);
    assert!(
        allowed(member_only.can_own("g.name")),
        "a supplementary group counts"
    );

    // Sections for one uid, named differently, are the same list.
    let q = policy(
        "<policy user=\"root\"><allow own=\"a\"/></policy><policy user=\"0\"><deny own=\"a\"/></policy>",
    );
    assert!(!allowed(peer(&q, 0, &[0]).can_own("a")));
}

#[test]
fn groups_apply_in_the_order_given() {
    let Some((_, nogroup)) = unprivileged() else {
        return;
    };
    let p = policy(&format!(
        "<policy group=\"root\"><allow own=\"x\"/></policy><policy group=\"{nogroup}\"><deny own=\"x\"/></policy>"
    ));
    assert!(!allowed(peer(&p, 0, &[0, nogroup]).can_own("x")));
    assert!(allowed(peer(&p, 0, &[nogroup, 0]).can_own("x")));
}

#[test]
fn unknown_users_and_groups_are_ignored() {
    let p = policy(
        "<policy context=\"default\"><allow own=\"a\"/></policy>\
         <policy user=\"no-such-user-anywhere\"><deny own=\"a\"/></policy>\
         <policy user=\"*\"><deny own=\"a\"/></policy>\
         <policy group=\"*\"><deny own=\"a\"/></policy>\
         <policy user=\"4000000000\"><deny own=\"a\"/></policy>",
    );
    for uid in [0, 4_000_000_000] {
        assert!(allowed(peer(&p, uid, &[0]).can_own("a")), "{uid}");
    }
}

#[test]
fn anonymous_connections_get_no_user_or_console_rules() {
    let p = policy(
        "<policy context=\"default\"><allow own=\"d\"/></policy>\
         <policy at_console=\"false\"><allow own=\"c\"/></policy>",
    );
    let anonymous = p.for_peer(&PeerIdentity {
        uid: u32::MAX,
        gids: vec![],
        at_console: false,
    });
    assert!(allowed(anonymous.can_own("d")));
    assert!(!allowed(anonymous.can_own("c")));
}

#[test]
fn rule_sets_are_shared_by_connections_with_the_same_credentials() {
    let p = policy("<policy context=\"default\"><allow own=\"d\"/></policy>");
    for _ in 0..10 {
        peer(&p, 0, &[0]);
    }
    peer(&p, 0, &[0, 1]);
    assert_eq!(p.cached_peers(), 2);
}

#[test]
fn who_may_connect() {
    let Some((nobody, nogroup)) = unprivileged() else {
        return;
    };
    // No connection rules: only the bus's own user.
    let none = policy("<policy context=\"default\"><allow own=\"*\"/></policy>");
    assert!(allowed(none.allows_user(nobody, &[nogroup], nobody)));
    assert!(!allowed(none.allows_user(nobody, &[nogroup], 0)));
    assert!(allowed(none.allows_user(0, &[0], 0)));

    let everyone = policy("<policy context=\"default\"><allow user=\"*\"/></policy>");
    assert!(allowed(everyone.allows_user(nobody, &[nogroup], 0)));
    // A uid without an entry in the user database is refused, as dbus-daemon refuses it.
    assert!(!allowed(everyone.allows_user(4_000_000_000, &[], 0)));

    let by_group = policy(&format!(
        "<policy context=\"default\"><allow group=\"{nogroup}\"/></policy>\
         <policy context=\"mandatory\"><deny user=\"root\"/></policy>\
         <policy context=\"default\"><deny user=\"{nobody}\"/></policy>"
    ));
    // Default rules in order (the deny for nobody comes after the allow for its group),
    // then mandatory ones.
    assert!(!allowed(by_group.allows_user(nobody, &[nogroup], 0)));
    assert!(
        !allowed(by_group.allows_user(0, &[nogroup], 12345)),
        "mandatory deny for root"
    );
    match by_group.allows_user(0, &[0], 0) {
        Decision::Deny(d) => assert_eq!(d.rule.unwrap().line, 2),
        Decision::Allow => panic!("mandatory deny for root"),
    }

    // Connection rules elsewhere than default/mandatory do nothing.
    let console = policy("<policy at_console=\"true\"><allow user=\"*\"/></policy>");
    assert!(!allowed(console.allows_user(nobody, &[nogroup], 0)));
    // Rules naming unknown users are dropped.
    let unknown = policy(
        "<policy context=\"default\"><allow user=\"*\"/><deny user=\"no-such-user-anywhere\"/></policy>",
    );
    assert!(allowed(unknown.allows_user(nobody, &[nogroup], 0)));
}
