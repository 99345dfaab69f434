//! Access decisions with dbus-daemon's `<policy>` semantics, compiled for the hot path.
//!
//! ```no_run
//! # use std::path::Path;
//! use telbus_policy::{MessageFacts, MessageType, PeerIdentity, Policy};
//!
//! let config = telbus_busconfig::load(Path::new("/usr/share/dbus-1/system.conf")).unwrap();
//! let policy = Policy::compile(&config.policies).unwrap();
//! // When a connection authenticates:
//! assert!(policy.allows_user(1000, &[1000], 0).is_allowed());
//! let peer = policy.for_peer(&PeerIdentity { uid: 1000, gids: vec![1000], at_console: false });
//! // For each message it sends (the receiver owns org.freedesktop.login1 and :1.5):
//! let call = MessageFacts {
//!     msg_type: MessageType::MethodCall,
//!     interface: Some("org.freedesktop.login1.Manager"),
//!     member: Some("ListSessions"),
//!     path: Some("/org/freedesktop/login1"),
//!     error_name: None,
//!     destination: Some("org.freedesktop.login1"),
//!     is_reply: false,
//!     requested_reply: false,
//!     unix_fds: 0,
//! };
//! let verdict = peer.can_send(&call, &["org.freedesktop.login1", ":1.5"], false);
//! ```
//!
//! # API
//!
//! - [`Policy::compile`]`(&config.policies)`: once per configuration (and on reload).
//! - [`Policy::allows_user`]`(uid, gids, bus_uid)`: may this user connect?
//! - [`Policy::for_peer`]`(&`[`PeerIdentity`]`)` → [`PeerPolicy`]: the rules for one
//!   connection, chosen once when it authenticates; cheap to clone, shared by connections with
//!   the same credentials.
//! - [`PeerPolicy::can_own`], [`PeerPolicy::can_send`], [`PeerPolicy::can_receive`] →
//!   [`Decision`]: `Allow`, or `Deny` with the rule that decided ([`Denial`]).
//!   [`PeerPolicy::can_send_logged`] also says whether the deciding rule has `log="true"`;
//!   [`PeerPolicy::send_verdict`] also gives the polkit action it requires, if any.
//! - [`unix_user_is_at_console`]: dbus-daemon's idea of at_console, for [`PeerIdentity`].
//!
//! # Semantics (dbus-daemon 1.14's)
//!
//! - A connection's rules are, in order: the default context, its groups' (in the order of
//!   [`PeerIdentity::gids`]), its user's, the at_console="true" or "false" rules that fit it,
//!   the mandatory context. Every rule that precedes a rule of the same kind matching
//!   everything is dropped (dbus-daemon's "optimisation", which can change answers).
//! - The last rule that matches decides; when none matches, the answer is no — for sending,
//!   receiving and owning alike. (The session bus allows everything because session.conf
//!   says so; the system bus denies calls and ownership because system.conf says so.)
//! - `send_destination` matches when the receiving connection owns the name or is queued for
//!   it; its unique name counts. `send_destination_prefix` and `own_prefix` match a name and
//!   the names below it (`a.b` matches `a.b` and `a.b.c`, not `a.bc`). Messages to the bus
//!   itself (and activation, where there is no receiver yet) test the DESTINATION field.
//!   `receive_sender` works the same way on the sending connection's names, and is
//!   "org.freedesktop.DBus" for messages from the bus.
//! - Path, member and error name only rule a message out when it has the field and it
//!   differs. A message without an interface escapes allow rules that name one but not deny
//!   rules.
//! - Replies (messages with a reply serial): allow rules apply only to requested replies
//!   unless they say `send_requested_reply="false"` (or `eavesdrop="true"`); deny rules only
//!   to unrequested ones unless they say `…_requested_reply="true"`.
//! - Eavesdropping (receiving a copy of a message addressed to another connection): only
//!   receive allow rules with `eavesdrop="true"` allow it; receive deny rules with
//!   `eavesdrop="true"` apply only to it.
//! - A broadcast is a signal without a destination (`send_broadcast`). `min_fds`/`max_fds`
//!   bound the number of fds the message carries.
//! - Connecting: see [`Policy::allows_user`].
//! - telbus's own `polkit_action="…"` on an `<allow send_…>` rule: when that rule decides,
//!   the answer is "allow, if polkit authorizes the action for the sender"
//!   ([`SendVerdict::polkit_action`]); the broker asks polkit.
//!
//! # Cost
//!
//! Choosing a connection's rules walks the configuration once per distinct set of
//! credentials (the result is cached). A decision then looks up the other connection's names
//! and the message's interface and member in hash tables and tests only the rules filed
//! there, newest first, stopping at the first that matches.

pub mod bindings;
mod compile;
mod index;
mod matching;

use std::sync::Arc;

pub use compile::Policy;
pub use telbus_busconfig::MessageKind as MessageType;
use telbus_busconfig::{Origin, ReceiveRule, SendRule};

use crate::index::{Entry, Lookup, PeerRules};
use crate::matching::{receive_rule_matches, send_rule_matches};

/// The bus driver's name, which messages from the bus carry as their sender.
const BUS_NAME: &str = "org.freedesktop.DBus";

/// The answer to an access question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(Denial),
}

/// Why something was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The rule that decided; None when no rule applied (which refuses).
    pub rule: Option<Origin>,
    /// How many of the connection's rules matched the message, as dbus-daemon counts them in
    /// its "Rejected send message, N matched rules" texts (0 when none did).
    pub matched_rules: usize,
}

impl Decision {
    fn of(allow: bool, rule: Option<&Origin>, matched_rules: usize) -> Decision {
        if allow {
            Decision::Allow
        } else {
            Decision::Deny(Denial {
                rule: rule.cloned(),
                matched_rules,
            })
        }
    }

    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

/// A policy that cannot be compiled. (None can fail today: unknown users and groups are
/// ignored, as dbus-daemon ignores them. The type stays for configurations that might.)
#[derive(Debug)]
pub struct PolicyError(pub String);

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

/// Who a connection is, as far as choosing its rules goes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    /// u32::MAX: no Unix user (an anonymous connection).
    pub uid: u32,
    /// Its groups, in the order their rules should apply.
    pub gids: Vec<u32>,
    /// Logged in on a local seat (see [`unix_user_is_at_console`]).
    pub at_console: bool,
}

/// The facts about a message that rules test.
#[derive(Clone, Debug)]
pub struct MessageFacts<'a> {
    pub msg_type: MessageType,
    pub interface: Option<&'a str>,
    pub member: Option<&'a str>,
    pub path: Option<&'a str>,
    pub error_name: Option<&'a str>,
    /// The DESTINATION field. A signal without one is a broadcast.
    pub destination: Option<&'a str>,
    /// The message has a reply serial: the requested-reply rules apply.
    pub is_reply: bool,
    /// For a reply: the call it answers was waiting for it (dbus-daemon: only for replies
    /// from a connection to the connection that called it, not when eavesdropping; replies
    /// from the bus itself are always requested).
    pub requested_reply: bool,
    pub unix_fds: u32,
}

impl MessageFacts<'_> {
    /// A signal without a destination.
    pub fn is_broadcast(&self) -> bool {
        self.destination.is_none() && self.msg_type == MessageType::Signal
    }
}

/// A send decision with what the deciding rule adds to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendVerdict<'p> {
    pub decision: Decision,
    /// The deciding rule has `log="true"`.
    pub log: bool,
    /// An allowed message still needs polkit to authorize this action for the sender (the
    /// deciding rule's `polkit_action`, a telbus extension).
    pub polkit_action: Option<&'p str>,
}

/// One connection's rules: cheap to clone (an Arc), queried for every message.
#[derive(Clone, Debug)]
pub struct PeerPolicy {
    rules: Arc<PeerRules>,
}

impl PeerPolicy {
    /// May this connection own (or queue for) `name`?
    pub fn can_own(&self, name: &str) -> Decision {
        match self.rules.own.decide(name) {
            Some((allow, origin)) => Decision::of(*allow, Some(origin), 1),
            None => Decision::of(false, None, 0),
        }
    }

    /// May this connection send `msg` to the connection that owns or is queued for
    /// `receiver_names` (all of them, its unique name included)? With `receiver_is_driver`
    /// there is no receiving connection — the message is for the bus itself, or for a
    /// service that is yet to be activated — and destination rules test `msg.destination`.
    pub fn can_send(
        &self,
        msg: &MessageFacts<'_>,
        receiver_names: &[&str],
        receiver_is_driver: bool,
    ) -> Decision {
        self.can_send_logged(msg, receiver_names, receiver_is_driver)
            .0
    }

    /// [`can_send`](Self::can_send), and whether the deciding rule asked for the message to be
    /// logged (`log="true"`; dbus-daemon logs "Would reject message" for those it allows).
    pub fn can_send_logged(
        &self,
        msg: &MessageFacts<'_>,
        receiver_names: &[&str],
        receiver_is_driver: bool,
    ) -> (Decision, bool) {
        let verdict = self.send_verdict(msg, receiver_names, receiver_is_driver);
        (verdict.decision, verdict.log)
    }

    /// [`can_send`](Self::can_send) with everything the deciding rule says: whether it asked
    /// for logging, and the polkit action it requires (telbus's `polkit_action`), if any.
    pub fn send_verdict(
        &self,
        msg: &MessageFacts<'_>,
        receiver_names: &[&str],
        receiver_is_driver: bool,
    ) -> SendVerdict<'_> {
        let destination: [&str; 1];
        let names = if receiver_is_driver {
            match msg.destination {
                Some(d) => {
                    destination = [d];
                    &destination[..]
                }
                None => &[][..],
            }
        } else {
            receiver_names
        };
        let at = Lookup {
            names,
            interface: msg.interface,
            member: msg.member,
        };
        let matches = |e: &Entry<SendRule>| send_rule_matches(&e.rule, e.allow, msg, names);
        match self.rules.send.decide(&at, matches) {
            Some(entry) if entry.allow => SendVerdict {
                decision: Decision::Allow,
                log: entry.rule.log,
                polkit_action: entry.rule.polkit_action.as_deref(),
            },
            Some(entry) => {
                // Refusals are rare: count the matches as dbus-daemon reports them.
                let count = self.rules.send.count_matches(&at, matches);
                SendVerdict {
                    decision: Decision::of(false, Some(&entry.origin), count),
                    log: entry.rule.log,
                    polkit_action: None,
                }
            }
            None => SendVerdict {
                decision: Decision::of(false, None, 0),
                log: false,
                polkit_action: None,
            },
        }
    }

    /// May this connection receive `msg` from the connection that owns or is queued for
    /// `sender_names` (its unique name included), or from the bus itself
    /// (`sender_is_driver`)? `eavesdropping`: the message is addressed to another connection
    /// (a monitor or eavesdropping match rule asked for a copy).
    pub fn can_receive(
        &self,
        msg: &MessageFacts<'_>,
        sender_names: &[&str],
        sender_is_driver: bool,
        eavesdropping: bool,
    ) -> Decision {
        let names = if sender_is_driver {
            &[BUS_NAME][..]
        } else {
            sender_names
        };
        let at = Lookup {
            names,
            interface: msg.interface,
            member: msg.member,
        };
        let matches = |e: &Entry<ReceiveRule>| {
            receive_rule_matches(&e.rule, e.allow, msg, names, eavesdropping)
        };
        match self.rules.receive.decide(&at, matches) {
            Some(entry) if entry.allow => Decision::Allow,
            Some(entry) => {
                let count = self.rules.receive.count_matches(&at, matches);
                Decision::of(false, Some(&entry.origin), count)
            }
            None => Decision::of(false, None, 0),
        }
    }

    /// Whether every send decision of this connection is a plain Allow (no deny rule, an
    /// allow-everything rule, none that logs or wants polkit): the session bus's policy. The
    /// bus then skips the decisions.
    pub fn allows_every_send(&self) -> bool {
        self.rules.allows_every_send
    }

    /// Whether this connection may receive any message addressed to it (eavesdropping aside),
    /// as on the session bus.
    pub fn allows_every_receive(&self) -> bool {
        self.rules.allows_every_receive
    }

    /// Whether this connection's send rules look at the receiving connection's names (some
    /// rule names a destination). When none does, a caller need not gather the names.
    pub fn send_tests_names(&self) -> bool {
        self.rules.send.keys() > 0
    }

    /// Whether some send rule names a unique name (`:1.42`), or a prefix one could have: when
    /// none does, every connection that owns no well-known name gets the same send decision,
    /// so a broadcast decides once for all of them.
    pub fn send_tests_unique_names(&self) -> bool {
        self.rules.send.has_unique_name_keys()
    }

    /// Identifies this connection's rules: connections with the same credentials share them
    /// (and so get the same receive decisions for the same message from the same sender).
    pub fn rules_id(&self) -> usize {
        Arc::as_ptr(&self.rules) as usize
    }

    /// Whether this connection's receive rules look at the sending connection's names.
    pub fn receive_tests_names(&self) -> bool {
        self.rules.receive.keys() > 0
    }

    /// How many send, receive and own rules apply to this connection.
    pub fn rule_counts(&self) -> (usize, usize, usize) {
        (
            self.rules.send.len(),
            self.rules.receive.len(),
            self.rules.own.len(),
        )
    }

    /// How many send rules a decision on `msg` may test at most (the rest cannot apply and
    /// are never looked at): a measure of the index, for tests and diagnostics.
    pub fn send_candidates(
        &self,
        msg: &MessageFacts<'_>,
        receiver_names: &[&str],
        receiver_is_driver: bool,
    ) -> usize {
        let destination: [&str; 1];
        let names = match (receiver_is_driver, msg.destination) {
            (false, _) => receiver_names,
            (true, Some(d)) => {
                destination = [d];
                &destination[..]
            }
            (true, None) => &[][..],
        };
        self.rules.send.candidate_count(&Lookup {
            names,
            interface: msg.interface,
            member: msg.member,
        })
    }

    /// How many distinct destination and sender names (and prefixes) the send and receive
    /// rules are filed under: the width of the index.
    pub fn index_keys(&self) -> (usize, usize) {
        (self.rules.send.keys(), self.rules.receive.keys())
    }
}

/// Whether `uid` is "at the console" as dbus-daemon decides it: with systemd-logind
/// (/run/systemd/seats exists), the user has a session on a seat (ONLINE_SEATS in
/// /run/systemd/users/UID is not empty); otherwise /var/run/console/USERNAME exists.
///
/// By hand: reading one logind state file is simpler than binding libsystemd.
pub fn unix_user_is_at_console(uid: u32) -> bool {
    if std::path::Path::new("/run/systemd/seats/").exists() {
        let state =
            std::fs::read_to_string(format!("/run/systemd/users/{uid}")).unwrap_or_default();
        return state
            .lines()
            .filter_map(|line| line.strip_prefix("ONLINE_SEATS="))
            .any(|seats| !seats.trim().is_empty());
    }
    match telbus_busconfig::user_name(uid) {
        Some(name) => std::path::Path::new("/var/run/console").join(name).exists(),
        None => false,
    }
}
