//! From a configuration's `<policy>` sections to per-connection rule sets, the way
//! dbus-daemon builds them.
//!
//! dbus-daemon files every rule under its context (default, mandatory, a uid, a gid,
//! at_console true or false), names resolved when the configuration is read. When a
//! connection has authenticated it gets, in this order: the default rules, the rules of each
//! of its groups, those of its uid, the at_console rules that fit it, the mandatory rules.
//! Then it drops every rule that comes before a rule of the same kind that matches
//! everything (`<deny own="*"/>`, `<allow send_type="*"/>`…): dbus-daemon calls this an
//! optimisation, but since such a rule can still carry `send_broadcast`, `min_fds` or
//! `eavesdrop` conditions it changes some answers, so telbus does the same.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use telbus_busconfig::{
    MAXIMUM_MESSAGE_UNIX_FDS, Origin, PolicyContext, PolicySection, ReceiveRule, RuleKind,
    SendRule, lookup_group, lookup_user,
};

use crate::index::{Entry, NameKey, PeerRules};
use crate::{Decision, PeerIdentity, PeerPolicy, PolicyError};

/// A per-connection rule, shared by every connection it applies to.
#[derive(Debug)]
enum Compiled {
    Send(Arc<Entry<SendRule>>),
    Receive(Arc<Entry<ReceiveRule>>),
    Own {
        allow: bool,
        name: String,
        prefix: bool,
        origin: Origin,
    },
}

impl Compiled {
    /// A rule that matches everything of its kind, before which dbus-daemon drops the rules of
    /// the same kind.
    fn matches_everything(&self) -> Option<Kind> {
        match self {
            Compiled::Send(e) => {
                let r = &e.rule;
                (r.msg_type.is_none()
                    && r.path.is_none()
                    && r.interface.is_none()
                    && r.member.is_none()
                    && r.error.is_none()
                    && r.destination.is_none())
                .then_some(Kind::Send)
            }
            Compiled::Receive(e) => {
                let r = &e.rule;
                (r.msg_type.is_none()
                    && r.path.is_none()
                    && r.interface.is_none()
                    && r.member.is_none()
                    && r.error.is_none()
                    && r.sender.is_none())
                .then_some(Kind::Receive)
            }
            Compiled::Own { name, prefix, .. } => (!prefix && name == "*").then_some(Kind::Own),
        }
    }

    /// An allow rule that matches everything of its kind (see `matches_everything`) and also
    /// lets through unrequested replies, any number of descriptors, broadcasts or not.
    fn allows_everything(&self) -> bool {
        let all_fds = |min: u32, max: u32| min == 0 && max >= MAXIMUM_MESSAGE_UNIX_FDS;
        self.matches_everything().is_some()
            && match self {
                Compiled::Send(e) => {
                    let r = &e.rule;
                    e.allow
                        && r.broadcast.is_none()
                        && all_fds(r.min_fds, r.max_fds)
                        && (r.eavesdrop || !r.requested_reply)
                }
                Compiled::Receive(e) => {
                    let r = &e.rule;
                    e.allow && all_fds(r.min_fds, r.max_fds) && (r.eavesdrop || !r.requested_reply)
                }
                Compiled::Own { .. } => false,
            }
    }

    /// A rule whose decision is more than a plain Allow: a deny, or an allow that logs or
    /// wants polkit.
    fn may_refuse(&self) -> bool {
        match self {
            Compiled::Send(e) => !e.allow || e.rule.log || e.rule.polkit_action.is_some(),
            Compiled::Receive(e) => !e.allow,
            Compiled::Own { .. } => false,
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Compiled::Send(_) => Kind::Send,
            Compiled::Receive(_) => Kind::Receive,
            Compiled::Own { .. } => Kind::Own,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Send,
    Receive,
    Own,
}

/// A connection rule (`<allow user="…"/>`, `<deny group="…"/>`), names resolved.
#[derive(Debug)]
struct ConnectionRule {
    allow: bool,
    /// None: any user (or any group).
    who: Who,
    origin: Origin,
}

#[derive(Debug)]
enum Who {
    AnyUser,
    AnyGroup,
    User(u32),
    Group(u32),
}

/// A configuration's `<policy>` sections, compiled. Cheap to query; build one per
/// configuration (and again on reload).
#[derive(Debug)]
pub struct Policy {
    default: Vec<Compiled>,
    mandatory: Vec<Compiled>,
    by_uid: HashMap<u32, Vec<Compiled>>,
    by_gid: HashMap<u32, Vec<Compiled>>,
    at_console: Vec<Compiled>,
    not_at_console: Vec<Compiled>,
    /// The default context's connection rules, then the mandatory context's.
    connection: Vec<ConnectionRule>,
    /// Rule sets already built: connections with the same credentials get the same.
    peers: Mutex<HashMap<PeerIdentity, PeerPolicy>>,
    /// Whether each uid seen has a user-database entry: looked up once per policy (a reload
    /// looks again), not on every connection (the lookup reads /etc/passwd).
    known_uids: Mutex<HashMap<u32, bool>>,
}

fn compile_rule(rule: &telbus_busconfig::Rule) -> Option<Compiled> {
    let origin = rule.origin.clone();
    let allow = rule.allow;
    Some(match &rule.kind {
        RuleKind::Send(send) => Compiled::Send(Arc::new(Entry {
            allow,
            rule: send.clone(),
            origin,
        })),
        RuleKind::Receive(receive) => Compiled::Receive(Arc::new(Entry {
            allow,
            rule: receive.clone(),
            origin,
        })),
        RuleKind::Own { name, prefix } => Compiled::Own {
            allow,
            name: name.clone(),
            prefix: *prefix,
            origin,
        },
        RuleKind::User(_) | RuleKind::Group(_) => return None,
    })
}

fn connection_rule(rule: &telbus_busconfig::Rule) -> Option<ConnectionRule> {
    let who = match &rule.kind {
        RuleKind::User(user) if user == "*" => Who::AnyUser,
        RuleKind::Group(group) if group == "*" => Who::AnyGroup,
        // Unknown users and groups: dbus-daemon drops the rule.
        RuleKind::User(user) => Who::User(lookup_user(user)?),
        RuleKind::Group(group) => Who::Group(lookup_group(group)?),
        _ => return None,
    };
    Some(ConnectionRule {
        allow: rule.allow,
        who,
        origin: rule.origin.clone(),
    })
}

impl Policy {
    /// Compile a configuration's sections (`BusConfig::policies`). Users and groups are
    /// resolved now; sections and rules naming ones the system does not know are ignored, as
    /// dbus-daemon ignores them (`<policy user="*">` is such a section: `*` is no user).
    pub fn compile(sections: &[PolicySection]) -> Result<Policy, PolicyError> {
        let mut policy = Policy {
            default: Vec::new(),
            mandatory: Vec::new(),
            by_uid: HashMap::new(),
            by_gid: HashMap::new(),
            at_console: Vec::new(),
            not_at_console: Vec::new(),
            connection: Vec::new(),
            peers: Mutex::new(HashMap::new()),
            known_uids: Mutex::new(HashMap::new()),
        };
        let mut mandatory_connection = Vec::new();
        for section in sections {
            let list = match &section.context {
                PolicyContext::Default => {
                    policy
                        .connection
                        .extend(section.rules.iter().filter_map(connection_rule));
                    &mut policy.default
                }
                PolicyContext::Mandatory => {
                    mandatory_connection.extend(section.rules.iter().filter_map(connection_rule));
                    &mut policy.mandatory
                }
                PolicyContext::User(user) => match lookup_user(user) {
                    Some(uid) => policy.by_uid.entry(uid).or_default(),
                    None => continue,
                },
                PolicyContext::Group(group) => match lookup_group(group) {
                    Some(gid) => policy.by_gid.entry(gid).or_default(),
                    None => continue,
                },
                PolicyContext::AtConsole(true) => &mut policy.at_console,
                PolicyContext::AtConsole(false) => &mut policy.not_at_console,
            };
            list.extend(section.rules.iter().filter_map(compile_rule));
        }
        policy.connection.extend(mandatory_connection);
        Ok(policy)
    }

    /// May a connection from `uid`, in groups `gids`, connect at all? dbus-daemon's rule:
    /// the bus's own user (`bus_uid`) may unless a rule says otherwise; then the default
    /// context's `<allow|deny user|group>` rules, then the mandatory context's; the last that
    /// applies decides. A uid the user database does not know is refused, as dbus-daemon
    /// refuses it (it cannot look up its groups).
    ///
    /// dbus-daemon takes the groups from the user database for this check; pass those, or the
    /// groups from the peer's credentials, which normally agree.
    pub fn allows_user(&self, uid: u32, gids: &[u32], bus_uid: u32) -> Decision {
        let known = *self
            .known_uids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(uid)
            .or_insert_with(|| telbus_busconfig::user_name(uid).is_some());
        if !known {
            return Decision::Deny(crate::Denial {
                rule: None,
                matched_rules: 0,
            });
        }
        let mut decided: (bool, Option<&Origin>) = (uid == bus_uid, None);
        for rule in &self.connection {
            let applies = match rule.who {
                Who::AnyUser | Who::AnyGroup => true,
                Who::User(id) => id == uid,
                Who::Group(id) => gids.contains(&id),
            };
            if applies {
                decided = (rule.allow, Some(&rule.origin));
            }
        }
        Decision::of(decided.0, decided.1, usize::from(decided.1.is_some()))
    }

    /// The rules for a connection with these credentials, indexed (and shared with other
    /// connections that have the same). `uid` u32::MAX stands for a connection without a Unix
    /// user (anonymous): it gets no user or at_console rules.
    pub fn for_peer(&self, peer: &PeerIdentity) -> PeerPolicy {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(policy) = peers.get(peer) {
            return policy.clone();
        }
        let policy = PeerPolicy {
            rules: Arc::new(self.build(peer)),
        };
        peers.insert(peer.clone(), policy.clone());
        policy
    }

    fn build(&self, peer: &PeerIdentity) -> PeerRules {
        let has_user = peer.uid != u32::MAX;
        let mut selected: Vec<&Compiled> = self.default.iter().collect();
        for gid in &peer.gids {
            if let Some(rules) = self.by_gid.get(gid) {
                selected.extend(rules);
            }
        }
        if has_user {
            if let Some(rules) = self.by_uid.get(&peer.uid) {
                selected.extend(rules);
            }
            let console = if peer.at_console {
                &self.at_console
            } else {
                &self.not_at_console
            };
            selected.extend(console);
        }
        selected.extend(&self.mandatory);

        // dbus-daemon drops every rule that precedes a match-everything rule of its kind.
        let mut start = [0usize; 3];
        for (position, rule) in selected.iter().enumerate() {
            if let Some(kind) = rule.matches_everything() {
                start[kind as usize] = position;
            }
        }

        let mut rules = PeerRules::default();
        // Per kind (send, receive): some kept rule allows everything / may refuse. Rules that
        // only ever allow everything decide the same for every message, so the bus need not
        // ask them (the session bus's policy then costs nothing per message).
        let mut allows_everything = [false; 3];
        let mut may_refuse = [false; 3];
        for (position, rule) in selected.iter().enumerate() {
            if position < start[rule.kind() as usize] {
                continue;
            }
            allows_everything[rule.kind() as usize] |= rule.allows_everything();
            may_refuse[rule.kind() as usize] |= rule.may_refuse();
            match rule {
                Compiled::Send(entry) => {
                    let key = match (&entry.rule.destination, entry.rule.destination_is_prefix) {
                        (None, _) => NameKey::Any,
                        (Some(name), false) => NameKey::Name(name),
                        (Some(prefix), true) => NameKey::Prefix(prefix),
                    };
                    let (interface, member) = (
                        entry.rule.interface.as_deref(),
                        entry.rule.member.as_deref(),
                    );
                    rules.send.push(entry.clone(), key, interface, member);
                }
                Compiled::Receive(entry) => {
                    let key = match &entry.rule.sender {
                        None => NameKey::Any,
                        Some(name) => NameKey::Name(name),
                    };
                    let (interface, member) = (
                        entry.rule.interface.as_deref(),
                        entry.rule.member.as_deref(),
                    );
                    rules.receive.push(entry.clone(), key, interface, member);
                }
                Compiled::Own {
                    allow,
                    name,
                    prefix,
                    origin,
                } => rules.own.push(*allow, origin.clone(), name, *prefix),
            }
        }
        let permissive =
            |kind: Kind| allows_everything[kind as usize] && !may_refuse[kind as usize];
        rules.allows_every_send = permissive(Kind::Send);
        rules.allows_every_receive = permissive(Kind::Receive);
        rules
    }

    /// How many rule sets are cached (one per distinct set of credentials seen).
    pub fn cached_peers(&self) -> usize {
        self.peers.lock().map_or(0, |p| p.len())
    }
}
