//! org.freedesktop.DBus.Debug.Stats: counters of the bus and of each connection, with
//! dbus-daemon's keys, for tools that watch a bus's health.

use std::collections::HashMap;

use zbus::wire::Variant as Value;

use crate::ConnId;
use crate::bus::{Bus, unique_name};
use crate::driver::DriverError;

/// When the bus started, for the `StartTime` key (seconds since the Unix epoch): tools show
/// the bus's uptime from it. Not one of dbus-daemon's keys; clients ignore keys they do not know.
static START_TIME: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Note the bus's start time (called once by the daemon as it starts).
pub fn mark_start() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let _ = START_TIME.set(now);
}

/// Highest values seen since the bus started.
#[derive(Default)]
pub struct Peaks {
    pub match_rules: usize,
    pub match_rules_per_connection: usize,
    pub bus_names: usize,
    pub bus_names_per_connection: usize,
}

impl Bus {
    /// Note new totals after a match rule or a name was added.
    pub fn note_peaks(&mut self, conn: ConnId) {
        let rules = self.matches.rule_count(conn);
        let names = self.names.claims_of(conn);
        let total_rules = self.matches.total_rules();
        let total_names = self.names.names().count();
        let p = &mut self.peaks;
        p.match_rules = p.match_rules.max(total_rules);
        p.match_rules_per_connection = p.match_rules_per_connection.max(rules);
        p.bus_names = p.bus_names.max(total_names);
        p.bus_names_per_connection = p.bus_names_per_connection.max(names);
        if let Some(peer) = self.peers.get_mut(&conn) {
            peer.stats.peak_match_rules = peer.stats.peak_match_rules.max(rules);
            peer.stats.peak_names = peer.stats.peak_names.max(names);
        }
    }

    fn next_stats_serial(&mut self) -> u32 {
        self.stats_serial = self.stats_serial.wrapping_add(1);
        self.stats_serial
    }

    pub fn get_stats(&mut self) -> HashMap<&'static str, Value<'static>> {
        let serial = self.next_stats_serial();
        let incomplete = self.census.incomplete() as usize;
        let active = self.census.completed() as usize;
        let u = |n: usize| Value::from(n.min(u32::MAX as usize) as u32);
        HashMap::from([
            ("Serial", Value::from(serial)),
            (
                "StartTime",
                Value::from(START_TIME.get().copied().unwrap_or(0)),
            ),
            ("ActiveConnections", u(active)),
            ("IncompleteConnections", u(incomplete)),
            ("MatchRules", u(self.matches.total_rules())),
            ("PeakMatchRules", u(self.peaks.match_rules)),
            (
                "PeakMatchRulesPerConnection",
                u(self.peaks.match_rules_per_connection),
            ),
            ("BusNames", u(self.names.names().count())),
            ("PeakBusNames", u(self.peaks.bus_names)),
            (
                "PeakBusNamesPerConnection",
                u(self.peaks.bus_names_per_connection),
            ),
            ("Users", Value::from(self.user_stats())),
        ])
    }

    /// `Users` (telbus's own key): for each uid with a connection or something queued, what
    /// waits for delivery to its connections (`QueuedBytes`, `QueuedFDs`, `QueuedMessages`),
    /// what it sent that waits (`SentBytes`, `SentFDs`, `SentMessages`), how many users hold
    /// part of its quota (`Senders`), its `Connections`, and what those hold in all: `Names`
    /// owned or queued for, `MatchRules`, and `PendingReplies` (calls waiting for a reply).
    fn user_stats(&self) -> HashMap<u32, HashMap<&'static str, u32>> {
        let u = |n: usize| n.min(u32::MAX as usize) as u32;
        let mut users: HashMap<u32, HashMap<&'static str, u32>> = HashMap::new();
        for peer in self.peers.values() {
            *users
                .entry(peer.quota_user())
                .or_default()
                .entry("Connections")
                .or_default() += 1;
        }
        // The totals the per-user limits use, so that what GetStats shows is what they test.
        for (&uid, figures) in users.iter_mut() {
            figures.insert("Names", u(self.census.names_of(uid)));
            figures.insert("MatchRules", u(self.census.rules_of(uid)));
        }
        for (uid, n) in self.replies.users() {
            users.entry(uid).or_default().insert("PendingReplies", u(n));
        }
        for (uid, f) in self.quotas.figures() {
            if uid == crate::quota::BUS_ACTOR {
                continue;
            }
            users.entry(uid).or_default().extend([
                ("QueuedBytes", u(f.queued.bytes)),
                ("QueuedFDs", u(f.queued.fds)),
                ("QueuedMessages", u(f.queued.messages)),
                ("SentBytes", u(f.sent.bytes)),
                ("SentFDs", u(f.sent.fds)),
                ("SentMessages", u(f.sent.messages)),
                ("Senders", u(f.actors)),
            ]);
        }
        for figures in users.values_mut() {
            for key in [
                "Connections",
                "QueuedBytes",
                "QueuedFDs",
                "QueuedMessages",
                "SentBytes",
                "SentFDs",
                "SentMessages",
                "Senders",
                "Names",
                "MatchRules",
                "PendingReplies",
            ] {
                figures.entry(key).or_insert(0);
            }
        }
        users
    }

    pub fn get_connection_stats(
        &mut self,
        name: &str,
    ) -> Result<HashMap<&'static str, Value<'static>>, DriverError> {
        let Some(id) = self.resolve_conn(name) else {
            return Err(DriverError {
                name: crate::driver::NAME_HAS_NO_OWNER,
                text: format!("Could not get statistics of name '{name}': no such name"),
            });
        };
        let serial = self.next_stats_serial();
        let rules = self.matches.rule_count(id);
        let names = self.names.claims_of(id);
        let peer = &self.peers[&id];
        let u = |n: usize| Value::from(n.min(u32::MAX as usize) as u32);
        Ok(HashMap::from([
            ("Serial", Value::from(serial)),
            ("UniqueName", Value::from(unique_name(id))),
            ("MatchRules", u(rules)),
            ("PeakMatchRules", u(peer.stats.peak_match_rules)),
            ("BusNames", u(names)),
            ("PeakBusNames", u(peer.stats.peak_names)),
            // As in dbus-daemon, a message the connection sent counts as incoming until it has
            // been written to its recipients (max_incoming_bytes holds the sender back).
            ("IncomingMessages", u(peer.in_flight.messages)),
            (
                "IncomingBytes",
                u(peer.inbuf.pending().len() + peer.in_flight.bytes),
            ),
            ("IncomingFDs", u(peer.inbuf.fds.len() + peer.in_flight.fds)),
            ("PeakIncomingBytes", u(peer.inbuf.capacity())),
            ("PeakIncomingFDs", u(peer.inbuf.fds.len())),
            ("OutgoingMessages", u(peer.out.len())),
            ("OutgoingBytes", u(peer.out.bytes)),
            ("OutgoingFDs", u(peer.out.fds)),
            ("PeakOutgoingBytes", u(peer.stats.peak_out_bytes)),
            ("PeakOutgoingFDs", u(peer.stats.peak_out_fds)),
        ]))
    }

    pub fn get_all_match_rules(&self) -> HashMap<String, Vec<String>> {
        let mut all = HashMap::new();
        for peer in self.peers.values() {
            let rules: Vec<String> = self
                .matches
                .rules_of(peer.id)
                .map(|r| r.to_string())
                .collect();
            if peer.is_active() {
                all.insert(unique_name(peer.id), rules);
            }
        }
        all
    }
}
