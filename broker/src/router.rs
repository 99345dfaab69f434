//! Routing: where each message a client sends goes, and the errors the sender gets when it
//! cannot go there.

use telbus_broker::match_rule::MatchMessage;
use tracing::{debug, warn};
use zbus::message::Type;

use crate::ConnId;
use crate::bus::{Bus, DRIVER, Phase, unique_name};
use crate::driver::{LIMITS_EXCEEDED, NAME_HAS_NO_OWNER, SERVICE_UNKNOWN};
use crate::replies::CallKey;
use crate::wire::{BusMessage, Route};

impl Bus {
    /// Route one message from a client.
    pub fn dispatch(&mut self, from: ConnId, msg: BusMessage) {
        let route = msg.route();
        let Some(peer) = self.peers.get(&from) else {
            return;
        };
        match peer.phase {
            Phase::Monitor => {
                self.doom(
                    from,
                    format!(
                        "monitors may not send messages (sent type={:?} interface={} member={})",
                        route.msg_type,
                        route.interface.unwrap_or("(unset)"),
                        route.member.unwrap_or("(unset)")
                    ),
                );
                return;
            }
            Phase::Unregistered if route.destination != Some(DRIVER) => {
                self.doom(from, "sent a message before Hello".into());
                return;
            }
            _ => {}
        }
        match route.destination {
            Some(DRIVER) if is_activation_failure(&route) => {
                // dbus-daemon fails the activation's callers at once and shows monitors the
                // signal afterwards (the test-monitor activation case checks that order).
                self.driver_call(from, &msg, &route);
                self.capture(&msg, from, None);
            }
            Some(DRIVER) => {
                // Monitors see every message before any check refuses it.
                self.capture(&msg, from, None);
                // As in dbus-daemon, a connection's Hello is never refused by policy.
                let is_hello = route.member == Some("Hello")
                    && self
                        .peers
                        .get(&from)
                        .is_some_and(|p| matches!(p.phase, Phase::Unregistered));
                if !is_hello && let Err(denied) = self.check_send(from, None, &route, false) {
                    self.send_error(from, &msg, crate::driver::ACCESS_DENIED, &denied);
                    return;
                }
                self.driver_call(from, &msg, &route)
            }
            Some(dest) => self.unicast(from, &msg, &route, dest),
            None => {
                self.capture(&msg, from, None);
                if route.msg_type == Type::Signal {
                    self.deliver_to_matches(from, &msg, &route, None);
                } else {
                    // A call without a destination is for the peer at the other end of a
                    // peer-to-peer connection; on a bus nobody takes it (as in dbus-daemon).
                    debug!("dropped a {:?} without destination", route.msg_type);
                }
            }
        }
    }

    /// A message for one name. As in dbus-daemon, any type of message (a signal too) to an
    /// unowned name starts its service, unless it has NO_AUTO_START.
    fn unicast(&mut self, from: ConnId, msg: &BusMessage, route: &Route<'_>, dest: &str) {
        let Some(target) = self.resolve_conn(dest) else {
            if !route.no_auto_start {
                // Errors for names nobody provides come from activation, as in dbus-daemon.
                if !dest.starts_with(':') && self.is_activatable(dest) {
                    self.activate_for(from, msg.clone(), dest);
                    return;
                }
            }
            self.capture(msg, from, None);
            let (name, text) = if route.no_auto_start {
                (NAME_HAS_NO_OWNER, format!("Name \"{dest}\" does not exist"))
            } else {
                (
                    SERVICE_UNKNOWN,
                    format!("The name {dest} was not provided by any .service files"),
                )
            };
            self.send_error(from, msg, name, &text);
            return;
        };
        // A monitor rule with destination= a unique name also matches a message sent to one
        // of that connection's well-known names.
        self.capture(msg, from, Some(target));
        self.deliver_unicast(from, target, msg, route);
    }

    /// Send a message to the connection it is addressed to, with the checks that apply.
    /// `route` is `msg`'s, read once by the caller.
    pub fn deliver_unicast(
        &mut self,
        from: ConnId,
        to: ConnId,
        msg: &BusMessage,
        route: &Route<'_>,
    ) {
        let is_reply = matches!(route.msg_type, Type::MethodReturn | Type::Error);
        if is_reply {
            let key = CallKey {
                caller: to,
                serial: route.reply_serial.unwrap_or(0),
            };
            if !self.replies.take(key, from) {
                // As in dbus-daemon, policy sees it as an unrequested reply, and a refusal is
                // reported to its sender (the system bus refuses them).
                if let Err(denied) = self.check_send(from, Some(to), route, false) {
                    self.send_error(from, msg, crate::driver::ACCESS_DENIED, &denied);
                    return;
                }
                debug!(
                    "{} sent a reply nobody asked for (reply serial {}); dropped",
                    unique_name(from),
                    key.serial
                );
                return;
            }
        }
        let expects_reply = route.msg_type == Type::MethodCall && !route.no_reply_expected;
        // The caller's user, looked up once, for max_replies_per_user.
        let mut caller_user = None;
        if expects_reply {
            let limit = self.config.limits.max_replies_per_connection;
            if self.replies.waiting(from) as u64 >= limit {
                self.send_error(
                    from,
                    msg,
                    LIMITS_EXCEEDED,
                    "The maximum number of pending replies per connection has been reached",
                );
                return;
            }
            let user = self
                .peers
                .get(&from)
                .map_or(crate::quota::BUS_ACTOR, |p| p.quota_user());
            let limit = self.config.limits.max_replies_per_user;
            if self.replies.waiting_for_user(user) as u64 >= limit {
                let text = format!(
                    "The maximum number of pending replies for UID {user} has been reached"
                );
                warn!(
                    "{text} (max_replies_per_user={limit}): a call from {} was refused",
                    unique_name(from)
                );
                self.send_error(from, msg, LIMITS_EXCEEDED, &text);
                return;
            }
            caller_user = Some(user);
        }
        if route.unix_fds > 0 && !self.peers.get(&to).is_some_and(|p| p.unix_fds) {
            self.send_error(
                from,
                msg,
                "org.freedesktop.DBus.Error.NotSupported",
                "Tried to send message with Unix file descriptors to a client that doesn't support that.",
            );
            return;
        }
        match self.check_send_to(from, to, route, is_reply) {
            Err(denied) => {
                self.send_error(from, msg, crate::driver::ACCESS_DENIED, &denied);
                return;
            }
            // Held (or refused) until polkit has authorized the action: see polkit.rs.
            Ok(Some(action)) if !self.polkit_allows(from, to, msg, &action) => return,
            Ok(_) => {}
        }
        if route.msg_type == Type::MethodCall
            && let Err(denied) = self.telaf_check_call(from, to, route)
        {
            self.send_error(from, msg, crate::driver::ACCESS_DENIED, &denied);
            return;
        }
        match self.enqueue(to, msg) {
            Ok(()) => {
                if let Some(user) = caller_user {
                    let deadline = self
                        .config
                        .limits
                        .reply_timeout
                        .map(|t| std::time::Instant::now() + t);
                    let key = CallKey {
                        caller: from,
                        serial: route.serial,
                    };
                    self.replies.expect(key, to, user, deadline);
                }
            }
            Err(full) => {
                let limit = full.limit();
                warn!(
                    "{} has {} bytes queued and does not read: a message from {} was refused ({limit})",
                    unique_name(to),
                    self.peers.get(&to).map_or(0, |p| p.out.bytes),
                    unique_name(from)
                );
                // A signal is dropped; the sender of anything else learns why.
                if route.msg_type != Type::Signal {
                    self.send_error(
                        from,
                        msg,
                        LIMITS_EXCEEDED,
                        &format!(
                            "The destination {} has too many messages queued ({limit})",
                            unique_name(to)
                        ),
                    );
                }
            }
        }
        // Eavesdroppers with an explicit rule get a copy too.
        self.deliver_to_matches(from, msg, route, Some(to));
    }

    /// Everyone whose match rules take this message (apart from its addressed recipient).
    fn deliver_to_matches(
        &mut self,
        from: ConnId,
        msg: &BusMessage,
        route: &Route<'_>,
        addressed: Option<ConnId>,
    ) {
        let recipients = self.match_recipients(Some(from), msg, route, addressed);
        let mut verdicts = crate::access::BroadcastVerdicts::default();
        for to in recipients {
            if Some(to) == addressed {
                continue;
            }
            let Some(peer) = self.peers.get(&to) else {
                continue;
            };
            if !peer.is_active() {
                continue;
            }
            if route.unix_fds > 0 && !peer.unix_fds {
                debug!("broadcast with fds not delivered to {}", unique_name(to));
                let text = format!(
                    "broadcast cannot be delivered to {} because it does not support receiving Unix fds",
                    unique_name(to)
                );
                self.capture_error(from, msg, "org.freedesktop.DBus.Error.NotSupported", &text);
                continue;
            }
            let eavesdropping = addressed.is_some();
            if let Err(denied) =
                self.check_receive_broadcast(from, to, route, eavesdropping, &mut verdicts)
            {
                self.capture_error(from, msg, crate::driver::ACCESS_DENIED, &denied);
                continue;
            }
            if self.enqueue(to, msg).is_err() {
                warn!(
                    "{} does not read its messages: a signal from {} was dropped",
                    unique_name(to),
                    unique_name(from)
                );
            }
        }
    }

    /// The connections whose rules match a message from `from` (None: the bus driver).
    fn match_recipients(
        &self,
        from: Option<ConnId>,
        msg: &BusMessage,
        route: &Route<'_>,
        addressed: Option<ConnId>,
    ) -> Vec<ConnId> {
        // A message addressed to one connection reaches others only through eavesdropping
        // rules: without any, there is nobody to look for (nor names to gather), which is the
        // case for almost every unicast message and every Hello reply.
        if addressed.is_some() && !self.matches.has_eavesdropping_rules() {
            return Vec::new();
        }
        // The peers' own copies of their unique names: no formatting per message.
        let unique_of = |id: ConnId| self.peers.get(&id).map(|p| p.unique.as_str());
        let sender = from.map_or(Some(DRIVER), unique_of);
        let owned: Vec<&str> = from
            .map(|id| self.names.owned_by(id).collect())
            .unwrap_or_default();
        let addressed_unique = addressed.and_then(unique_of);
        let addressed_names: Vec<&str> = addressed
            .map(|id| self.names.owned_by(id).collect())
            .unwrap_or_default();
        let query = MatchMessage {
            msg_type: route.msg_type,
            sender,
            sender_names: &owned,
            destination: route.destination,
            addressed_unique,
            addressed_names: &addressed_names,
            path: route.path,
            interface: route.interface,
            member: route.member,
            message: msg.data().bytes(),
        };
        let mut out = Vec::new();
        self.matches
            .recipients(&query, addressed, |id| out.push(id));
        out
    }

    /// A message from the bus itself to one connection.
    pub fn deliver_from_driver(&mut self, to: ConnId, msg: zbus::Message) {
        let msg = BusMessage::from_zbus(msg);
        self.capture(&msg, 0, Some(to));
        self.deliver_from_driver_uncaptured(to, msg);
    }

    /// The same, for a message monitors were shown already.
    pub fn deliver_from_driver_uncaptured(&mut self, to: ConnId, msg: BusMessage) {
        let route = msg.route();
        if !self.check_receive_from_driver(to, &route) {
            debug!(
                "policy keeps a message from the bus from {}",
                unique_name(to)
            );
            let text = format!(
                "{} is not allowed to receive this message from the bus",
                unique_name(to)
            );
            self.capture_error(to, &msg, crate::driver::ACCESS_DENIED, &text);
            return;
        }
        if self.enqueue(to, &msg).is_err() {
            warn!(
                "{} does not read its messages: a message from the bus was dropped",
                unique_name(to)
            );
        }
        // Eavesdroppers get a copy.
        let recipients = self.match_recipients(None, &msg, &route, Some(to));
        for id in recipients {
            if id != to && self.check_receive_from_driver(id, &route) {
                let _ = self.enqueue(id, &msg);
            }
        }
    }

    /// A signal from the bus itself to everyone whose rules match it.
    pub fn broadcast_from_driver(&mut self, msg: zbus::Message) {
        let msg = BusMessage::from_zbus(msg);
        self.capture(&msg, 0, None);
        let route = msg.route();
        let recipients = self.match_recipients(None, &msg, &route, None);
        for id in recipients {
            if self.peers.get(&id).is_some_and(|p| p.is_active())
                && self.check_receive_from_driver(id, &route)
                && self.enqueue(id, &msg).is_err()
            {
                warn!(
                    "{} does not read its messages: a signal from the bus was dropped",
                    unique_name(id)
                );
            }
        }
    }
}

/// systemd's report that a unit it was asked to start failed.
fn is_activation_failure(route: &Route<'_>) -> bool {
    route.msg_type == Type::Signal
        && route.interface == Some("org.freedesktop.systemd1.Activator")
        && route.member == Some("ActivationFailure")
}
