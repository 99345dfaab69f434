//! Access checks the router and the driver ask before they act: who may connect, own a name,
//! send, receive and eavesdrop. The decisions come from the configuration's `<policy>` rules,
//! compiled by telbus-policy into per-connection tables when the connection authenticates;
//! this module only gathers the facts about a message and words the refusals as dbus-daemon
//! does, with the rule that decided.

use telbus_policy::{Decision, Denial, MessageFacts, MessageType, PeerIdentity, PeerPolicy};
use tracing::info;
use zbus::message::Type;

use crate::ConnId;
use crate::bus::{Bus, DRIVER, unique_name};
use crate::wire::Route;

fn message_type(t: Type) -> MessageType {
    match t {
        Type::MethodCall => MessageType::MethodCall,
        Type::MethodReturn => MessageType::MethodReturn,
        Type::Error => MessageType::Error,
        Type::Signal => MessageType::Signal,
    }
}

fn type_name(t: Type) -> &'static str {
    match t {
        Type::MethodCall => "method_call",
        Type::MethodReturn => "method_return",
        Type::Error => "error",
        Type::Signal => "signal",
    }
}

/// The facts about a message that policy rules test.
fn facts<'m>(route: &Route<'m>, requested_reply: bool) -> MessageFacts<'m> {
    MessageFacts {
        msg_type: message_type(route.msg_type),
        interface: route.interface,
        member: route.member,
        path: route.path,
        error_name: route.error_name,
        destination: route.destination,
        is_reply: route.reply_serial.is_some(),
        requested_reply,
        unix_fds: route.unix_fds,
    }
}

/// A decision as the broadcast path keeps it: Err with the rule that refused.
fn refusal_text(decision: Decision) -> Result<(), String> {
    match decision {
        Decision::Allow => Ok(()),
        Decision::Deny(denial) => Err(rule_text(&denial)),
    }
}

fn rule_text(denial: &Denial) -> String {
    match &denial.rule {
        Some(origin) => format!(
            " (denied by the rule at {}:{})",
            origin.file.display(),
            origin.line
        ),
        None => " (denied by default)".to_string(),
    }
}

impl Bus {
    /// The policy of a connection that just authenticated, from its credentials.
    pub fn policy_for(&self, uid: u32, gids: &[u32]) -> PeerPolicy {
        self.policy.for_peer(&PeerIdentity {
            uid,
            gids: gids.to_vec(),
            at_console: false,
        })
    }

    /// May `uid` connect at all (`<allow user=…>`, and the session bus's own-user default)?
    pub fn allows_user(&self, uid: u32, gids: &[u32]) -> bool {
        matches!(
            self.policy.allows_user(uid, gids, self.bus_uid),
            Decision::Allow
        )
    }

    /// Call `f` with the names send_destination / receive_sender rules test for a connection:
    /// its unique name, and as in dbus-daemon, the names it waits for in a queue as well as
    /// those it owns; with none when `needed` is false (the rules test no names). Decisions
    /// run for every message and every recipient of a broadcast, so the names of a connection
    /// with few (most have only their unique name) are gathered on the stack.
    fn with_names<R>(&self, conn: ConnId, needed: bool, f: impl FnOnce(&[&str]) -> R) -> R {
        const ON_STACK: usize = 4;
        if !needed {
            return f(&[]);
        }
        let unique = self.peers.get(&conn).map(|p| p.unique.as_str());
        let names = self.names.claimed_by(conn).chain(unique);
        if self.names.claims_of(conn) < ON_STACK {
            let mut array = [""; ON_STACK];
            let mut count = 0;
            for name in names {
                array[count] = name;
                count += 1;
            }
            f(&array[..count])
        } else {
            f(&names.collect::<Vec<_>>())
        }
    }

    /// None if `from` may own `name`; otherwise the text that says which rule refused it.
    pub fn check_own(&self, from: ConnId, name: &str) -> Option<String> {
        let peer = self.peers.get(&from)?;
        match peer.policy.as_ref()?.can_own(name) {
            Decision::Allow => None,
            Decision::Deny(denial) => {
                let text = rule_text(&denial);
                info!(
                    "{} ({}) may not own {name}{text}",
                    peer.unique,
                    peer.loginfo()
                );
                Some(text)
            }
        }
    }

    /// dbus-daemon's wording of a refused message, with the rule that refused it.
    fn rejected(
        &self,
        what: &str,
        from: ConnId,
        to: Option<ConnId>,
        route: &Route<'_>,
        requested_reply: bool,
        denial: &Denial,
    ) -> String {
        let who = |id: ConnId| {
            self.peers.get(&id).map_or_else(
                || unique_name(id),
                |p| format!("{}\" ({})", p.unique, p.loginfo()),
            )
        };
        let destination = match to {
            Some(id) => who(id),
            None => format!("{}\" (bus)", route.destination.unwrap_or(DRIVER)),
        };
        let text = format!(
            "Rejected {what} message, {} matched rules; type=\"{}\", sender=\"{}, interface=\"{}\" member=\"{}\" error name=\"{}\" requested_reply=\"{}\" destination=\"{}{}",
            denial.matched_rules,
            type_name(route.msg_type),
            who(from),
            route.interface.unwrap_or("(unset)"),
            route.member.unwrap_or("(unset)"),
            route.error_name.unwrap_or("(unset)"),
            requested_reply as u8,
            destination,
            rule_text(denial),
        );
        info!("{text}");
        text
    }

    /// Ok if `from` may send this message to `to` (None: the bus driver) and `to` may receive it;
    /// Ok(Some(action)) if the rule that allows it also wants polkit to authorize `action`
    /// for the sender (telbus's `polkit_action`).
    pub fn check_send(
        &self,
        from: ConnId,
        to: Option<ConnId>,
        route: &Route<'_>,
        is_reply: bool,
    ) -> Result<Option<String>, String> {
        let facts = facts(route, is_reply);
        // A permissive policy (the session bus's) allows everything: nothing to decide.
        let sender_policy = self
            .peers
            .get(&from)
            .and_then(|p| p.policy.as_ref())
            .filter(|p| !p.allows_every_send());
        let mut polkit_action = None;
        if let Some(policy) = sender_policy {
            let verdict = match to {
                Some(id) => self.with_names(id, policy.send_tests_names(), |names| {
                    policy.send_verdict(&facts, names, false)
                }),
                None => policy.send_verdict(&facts, &[], true),
            };
            if let Decision::Deny(denial) = verdict.decision {
                return Err(self.rejected("send", from, to, route, is_reply, &denial));
            }
            polkit_action = verdict.polkit_action.map(str::to_string);
        }
        let Some(to) = to else {
            return Ok(polkit_action);
        };
        if let Some(policy) = self.peers.get(&to).and_then(|p| p.policy.as_ref())
            && !policy.allows_every_receive()
        {
            let decision = self.with_names(from, policy.receive_tests_names(), |names| {
                policy.can_receive(&facts, names, false, false)
            });
            if let Decision::Deny(denial) = decision {
                return Err(self.rejected("receive", from, Some(to), route, is_reply, &denial));
            }
        }
        Ok(polkit_action)
    }

    /// Ok if `from` may send this message to `name`, which is about to be activated: the send
    /// rules are checked against the name alone, as dbus-daemon does before it starts anything.
    /// (The receive rules are checked once the service is there.)
    pub fn check_send_to_activatable(
        &self,
        from: ConnId,
        name: &str,
        route: &Route<'_>,
    ) -> Result<(), String> {
        let facts = facts(route, false);
        if let Some(policy) = self.peers.get(&from).and_then(|p| p.policy.as_ref())
            && let Decision::Deny(denial) = policy.can_send(&facts, &[name], false)
        {
            return Err(self.rejected("send", from, None, route, false, &denial));
        }
        Ok(())
    }

    /// Ok if the bus may pass a message from itself to `to`: the receive rules of `to` apply
    /// (a reply to a call it made is a requested reply).
    pub fn check_receive_from_driver(&self, to: ConnId, route: &Route<'_>) -> bool {
        let facts = facts(route, route.msg_type != Type::Signal);
        match self
            .peers
            .get(&to)
            .and_then(|p| p.policy.as_ref())
            .filter(|p| !p.allows_every_receive())
        {
            Some(policy) => matches!(
                policy.can_receive(&facts, &[DRIVER], true, false),
                Decision::Allow
            ),
            None => true,
        }
    }

    /// Ok if `to` may receive this broadcast (or eavesdropped copy) from `from`. `memo` keeps
    /// the decisions that are the same for many recipients of one message (see
    /// [`BroadcastVerdicts`]): a new one for each message.
    pub fn check_receive_broadcast(
        &self,
        from: ConnId,
        to: ConnId,
        route: &Route<'_>,
        eavesdropping: bool,
        memo: &mut BroadcastVerdicts,
    ) -> Result<(), String> {
        let facts = facts(route, false);
        if let Some(policy) = self.peers.get(&from).and_then(|p| p.policy.as_ref())
            && !policy.allows_every_send()
        {
            let decide = || {
                self.with_names(to, policy.send_tests_names(), |names| {
                    refusal_text(policy.can_send(&facts, names, false))
                })
            };
            // Rules that name no unique name cannot tell apart recipients without well-known
            // names: one decision serves them all.
            let same_for_all = !policy.send_tests_names()
                || (!policy.send_tests_unique_names() && self.names.claims_of(to) == 0);
            if same_for_all {
                memo.send_to_nameless.get_or_insert_with(decide).clone()?;
            } else {
                decide()?;
            }
        }
        if let Some(policy) = self.peers.get(&to).and_then(|p| p.policy.as_ref())
            && (eavesdropping || !policy.allows_every_receive())
        {
            let id = policy.rules_id();
            if let Some((_, verdict)) = memo.receive.iter().find(|(rules, _)| *rules == id) {
                return verdict.clone();
            }
            let decision = self.with_names(from, policy.receive_tests_names(), |names| {
                policy.can_receive(&facts, names, false, eavesdropping)
            });
            let verdict = refusal_text(decision);
            memo.receive.push((id, verdict.clone()));
            return verdict;
        }
        Ok(())
    }
}

/// The last message a connection sent to another connection that policy allowed outright
/// (no polkit), with everything the decision looked at: the receiver, the header fields rules
/// test, and the names of both (through the name registry's generation). A message that is the
/// same in all of these gets the same decision, so it is not asked again: a client calling
/// one method of one service over and over, and the service's replies, cost one decision.
/// Refusals are never remembered (each is logged and reported).
#[derive(Default)]
pub struct AllowedSend {
    to: Option<ConnId>,
    names_generation: u64,
    msg_type: Option<Type>,
    requested_reply: bool,
    has_reply_serial: bool,
    unix_fds: u32,
    path: Remembered,
    interface: Remembered,
    member: Remembered,
    error_name: Remembered,
}

/// A header field as remembered: its text kept in a buffer reused from message to message.
#[derive(Default)]
struct Remembered {
    present: bool,
    text: String,
}

impl Remembered {
    fn is(&self, value: Option<&str>) -> bool {
        match value {
            Some(v) => self.present && self.text == v,
            None => !self.present,
        }
    }

    fn set(&mut self, value: Option<&str>) {
        self.present = value.is_some();
        self.text.clear();
        self.text.push_str(value.unwrap_or_default());
    }
}

impl AllowedSend {
    fn covers(&self, to: ConnId, generation: u64, route: &Route<'_>, requested: bool) -> bool {
        self.to == Some(to)
            && self.names_generation == generation
            && self.msg_type == Some(route.msg_type)
            && self.requested_reply == requested
            && self.has_reply_serial == route.reply_serial.is_some()
            && self.unix_fds == route.unix_fds
            && self.member.is(route.member)
            && self.interface.is(route.interface)
            && self.path.is(route.path)
            && self.error_name.is(route.error_name)
    }

    fn remember(&mut self, to: ConnId, generation: u64, route: &Route<'_>, requested: bool) {
        self.to = Some(to);
        self.names_generation = generation;
        self.msg_type = Some(route.msg_type);
        self.requested_reply = requested;
        self.has_reply_serial = route.reply_serial.is_some();
        self.unix_fds = route.unix_fds;
        self.path.set(route.path);
        self.interface.set(route.interface);
        self.member.set(route.member);
        self.error_name.set(route.error_name);
    }
}

impl Bus {
    /// [`check_send`](Bus::check_send) for a message to a connection, remembering an outright
    /// Allow for the next message from `from` (see [`AllowedSend`]).
    pub fn check_send_to(
        &mut self,
        from: ConnId,
        to: ConnId,
        route: &Route<'_>,
        requested_reply: bool,
    ) -> Result<Option<String>, String> {
        let generation = self.names.generation();
        let Some(sender) = self.peers.get(&from) else {
            return Ok(None);
        };
        if sender
            .last_allowed
            .covers(to, generation, route, requested_reply)
        {
            return Ok(None);
        }
        // Permissive rules decide nothing: no need to remember.
        let worth_remembering = sender
            .policy
            .as_ref()
            .is_some_and(|p| !p.allows_every_send())
            || self
                .peers
                .get(&to)
                .and_then(|p| p.policy.as_ref())
                .is_some_and(|p| !p.allows_every_receive());
        let verdict = self.check_send(from, Some(to), route, requested_reply);
        if worth_remembering
            && matches!(verdict, Ok(None))
            && let Some(sender) = self.peers.get_mut(&from)
        {
            sender
                .last_allowed
                .remember(to, generation, route, requested_reply);
        }
        verdict
    }
}

/// Decisions on one broadcast (or eavesdropped message) that hold for many of its recipients:
/// the sender's send decision for recipients without well-known names (when its rules name no
/// unique name), and the receive decision of each distinct set of rules (connections with the
/// same credentials share theirs). A signal to many subscribers then costs a few decisions,
/// not two per subscriber.
#[derive(Default)]
pub struct BroadcastVerdicts {
    send_to_nameless: Option<Result<(), String>>,
    receive: Vec<(usize, Result<(), String>)>,
}
