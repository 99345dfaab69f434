//! Monitoring (org.freedesktop.DBus.Monitoring.BecomeMonitor): connections that receive a copy
//! of every message their rules match, whoever it is addressed to, and may send nothing.

use telbus_broker::match_rule::{MatchIndex, MatchMessage, MatchRule};
use tracing::{info, warn};
use zbus::Message;

use crate::ConnId;
use crate::bus::{Bus, DRIVER, Phase, unique_name};
use crate::driver::DriverError;
use crate::wire::BusMessage;

/// The rules of every monitor, indexed like ordinary match rules.
#[derive(Default)]
pub struct Monitors {
    rules: MatchIndex<ConnId>,
    count: usize,
}

impl Monitors {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl Bus {
    /// BecomeMonitor: `from` gives up its names and match rules and from now on receives copies.
    pub fn become_monitor(
        &mut self,
        from: ConnId,
        rules: &[String],
        flags: u32,
    ) -> Result<(), DriverError> {
        if flags != 0 {
            return Err(DriverError {
                name: crate::driver::INVALID_ARGS,
                text: format!("BecomeMonitor flags must be 0, not {flags}"),
            });
        }
        let mut parsed = Vec::with_capacity(rules.len().max(1));
        for text in rules {
            let rule = MatchRule::parse(text).map_err(|e| DriverError {
                name: "org.freedesktop.DBus.Error.MatchRuleInvalid",
                text: e.to_string(),
            })?;
            parsed.push(rule);
        }
        if parsed.is_empty() {
            parsed.push(MatchRule::parse("").expect("the empty rule matches everything"));
        }
        // Give up every name, then the unique name itself, as dbus-daemon does.
        let owned: Vec<String> = self.names.owned_by(from).map(str::to_string).collect();
        let claims = self.names.claims_of(from);
        for name in owned {
            let (_, change) = self.names.release(&name, from);
            if let Some(change) = change {
                self.announce_owner_change(change);
            }
        }
        let queued = self.names.remove_connection(from);
        self.count_claims(from, claims);
        debug_assert!(queued.is_empty(), "only queue entries were left");
        let me = unique_name(from);
        self.send_name_lost_of_unique(from, &me);
        self.emit_name_owner_changed(&me, Some(&me), None);
        let rules = self.matches.rule_count(from);
        self.matches.remove_owner(from);
        self.count_rules(from, rules);
        for rule in parsed {
            self.monitors.rules.add(from, rule);
        }
        self.monitors.count += 1;
        self.set_phase(from, Phase::Monitor);
        if let Some(peer) = self.peers.get(&from) {
            info!("{me} ({}) became a monitor", peer.loginfo());
        }
        Ok(())
    }

    fn send_name_lost_of_unique(&mut self, to: ConnId, name: &str) {
        match Message::signal(crate::driver::PATH, "org.freedesktop.DBus", "NameLost")
            .sender(DRIVER)
            .destination(name)
            .build(&(name,))
        {
            Ok(msg) => self.deliver_from_driver(to, msg),
            Err(e) => warn!("cannot build NameLost: {e}"),
        }
    }

    /// A connection went away: if it was a monitor, forget its rules.
    pub fn monitor_gone(&mut self, id: ConnId) {
        if self.monitors.rules.rule_count(id) > 0 {
            self.monitors.rules.remove_owner(id);
            self.monitors.count -= 1;
        }
    }

    /// Give monitors a copy of a message the bus is passing on. `from` is the sending
    /// connection (0 for the bus itself); `to` the connection it is addressed to, if any.
    pub fn capture(&mut self, msg: &BusMessage, from: ConnId, to: Option<ConnId>) {
        if self.monitors.is_empty() {
            return;
        }
        let route = msg.route();
        let sender = if from == 0 {
            DRIVER.to_string()
        } else {
            unique_name(from)
        };
        let owned: Vec<&str> = if from == 0 {
            Vec::new()
        } else {
            self.names.owned_by(from).collect()
        };
        let addressed_unique = to.map(unique_name);
        let addressed_names: Vec<&str> = to
            .map(|id| self.names.owned_by(id).collect())
            .unwrap_or_default();
        let query = MatchMessage {
            msg_type: route.msg_type,
            sender: Some(&sender),
            sender_names: &owned,
            destination: route.destination,
            addressed_unique: addressed_unique.as_deref(),
            addressed_names: &addressed_names,
            path: route.path,
            interface: route.interface,
            member: route.member,
            message: msg.data().bytes(),
        };
        let mut watchers = Vec::new();
        // Monitors see everything their rules match, whoever it is for.
        self.monitors
            .rules
            .recipients(&query, None, |id| watchers.push(id));
        for id in watchers {
            if id == from || Some(id) == to {
                continue;
            }
            if self.enqueue(id, msg).is_err() {
                warn!(
                    "monitor {} does not keep up; a message was not copied to it",
                    unique_name(id)
                );
            }
        }
    }
}
