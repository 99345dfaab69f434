//! One connection's rules, indexed so that a decision looks at the few rules that can apply
//! instead of all of them.
//!
//! Send rules are filed by the destination they name (a name, a name prefix, or none), then
//! by interface and member; receive rules by sender, interface and member. For a message, the candidates are the
//! rules filed under "any" and under the names the other connection has, for the message's
//! interface (and member) or for any: a handful of hash lookups. The candidate lists hold rule
//! positions in ascending order; each is read from the end, down to the best match so far, and
//! the highest position that matches is the last rule in dbus-daemon's order, which decides.

use std::collections::HashMap;

/// The index's tables. Their keys come from the configuration, never from clients, so nobody
/// can fill them with colliding keys: foldhash, several times cheaper than std's SipHash on
/// short names, is safe here. (Lookups hash whatever name a message carries; that only costs
/// the hashing.)
type Map<V> = HashMap<String, V, foldhash::fast::RandomState>;
use std::sync::Arc;

use telbus_busconfig::{Origin, ReceiveRule, SendRule};

use crate::matching::{has_name_prefix, name_prefixes};

/// A rule with its verdict and origin.
#[derive(Debug)]
pub(crate) struct Entry<R> {
    pub allow: bool,
    pub rule: R,
    pub origin: Origin,
}

/// Rules that name the same interface, by member.
#[derive(Default, Debug)]
struct Members {
    any_member: Vec<u32>,
    by_member: Map<Vec<u32>>,
    /// Every rule here: a message without a member matches rules that name one.
    all: Vec<u32>,
}

/// Rules that name the same destination (or sender), by interface and member.
#[derive(Default, Debug)]
struct Bucket {
    any_interface: Vec<u32>,
    by_interface: Map<Members>,
    /// Deny rules that name an interface: they also apply to messages without one.
    interface_denials: Vec<u32>,
}

impl Bucket {
    fn add(&mut self, position: u32, allow: bool, interface: Option<&str>, member: Option<&str>) {
        let Some(interface) = interface else {
            self.any_interface.push(position);
            return;
        };
        let members = self.by_interface.entry(interface.to_string()).or_default();
        match member {
            Some(member) => members
                .by_member
                .entry(member.to_string())
                .or_default()
                .push(position),
            None => members.any_member.push(position),
        }
        members.all.push(position);
        if !allow {
            self.interface_denials.push(position);
        }
    }

    /// Visit the candidate lists for a message with this interface and member.
    fn lists<'b>(
        &'b self,
        interface: Option<&str>,
        member: Option<&str>,
        visit: &mut impl FnMut(&'b [u32]),
    ) {
        visit(&self.any_interface);
        let Some(interface) = interface else {
            visit(&self.interface_denials);
            return;
        };
        let Some(members) = self.by_interface.get(interface) else {
            return;
        };
        match member {
            Some(member) => {
                visit(&members.any_member);
                if let Some(list) = members.by_member.get(member) {
                    visit(list);
                }
            }
            None => visit(&members.all),
        }
    }
}

/// Rules keyed by the name they test (destination or sender).
#[derive(Debug)]
pub(crate) struct NameIndex<R> {
    pub entries: Vec<Arc<Entry<R>>>,
    any_name: Bucket,
    by_name: Map<Bucket>,
    by_prefix: Map<Bucket>,
    /// Some name or prefix above starts with ':' (a unique name): asked for every recipient of
    /// a broadcast, so kept rather than searched for.
    unique_keys: bool,
}

impl<R> Default for NameIndex<R> {
    fn default() -> Self {
        NameIndex {
            entries: Vec::new(),
            any_name: Bucket::default(),
            by_name: Map::default(),
            by_prefix: Map::default(),
            unique_keys: false,
        }
    }
}

/// How a rule names the other connection.
pub(crate) enum NameKey<'a> {
    Any,
    Name(&'a str),
    Prefix(&'a str),
}

/// What a message is, for choosing candidate rules.
pub(crate) struct Lookup<'a, 'n> {
    /// The other connection's names.
    pub names: &'n [&'a str],
    pub interface: Option<&'a str>,
    pub member: Option<&'a str>,
}

impl<R> NameIndex<R> {
    pub fn push(
        &mut self,
        entry: Arc<Entry<R>>,
        key: NameKey<'_>,
        interface: Option<&str>,
        member: Option<&str>,
    ) {
        let position = self.entries.len() as u32;
        let allow = entry.allow;
        self.entries.push(entry);
        if let NameKey::Name(name) | NameKey::Prefix(name) = key {
            self.unique_keys |= name.starts_with(':');
        }
        let bucket = match key {
            NameKey::Any => &mut self.any_name,
            NameKey::Name(name) => self.by_name.entry(name.to_string()).or_default(),
            NameKey::Prefix(prefix) => self.by_prefix.entry(prefix.to_string()).or_default(),
        };
        bucket.add(position, allow, interface, member);
    }

    /// Visit every list of rules that can apply: those filed under any name and under the
    /// other connection's names (and their prefixes). A list may be visited twice when two
    /// names share a prefix.
    fn candidates<'s>(&'s self, at: &Lookup<'_, '_>, visit: &mut impl FnMut(&'s [u32])) {
        self.any_name.lists(at.interface, at.member, visit);
        for name in at.names {
            if let Some(bucket) = self.by_name.get(*name) {
                bucket.lists(at.interface, at.member, visit);
            }
        }
        if !self.by_prefix.is_empty() {
            for name in at.names {
                for prefix in name_prefixes(name) {
                    if let Some(bucket) = self.by_prefix.get(prefix) {
                        bucket.lists(at.interface, at.member, visit);
                    }
                }
            }
        }
    }

    /// The last rule that `matches` accepts among those that can apply. Each candidate list
    /// is ascending, so it is read from the end and only down to the best match found so far.
    pub fn decide(
        &self,
        at: &Lookup<'_, '_>,
        matches: impl Fn(&Entry<R>) -> bool,
    ) -> Option<&Arc<Entry<R>>> {
        let mut best: Option<u32> = None;
        self.candidates(at, &mut |list| {
            for &position in list.iter().rev() {
                if best.is_some_and(|b| position <= b) {
                    break;
                }
                if matches(&self.entries[position as usize]) {
                    best = Some(position);
                    break;
                }
            }
        });
        best.map(|p| &self.entries[p as usize])
    }

    /// How many rules match in all, as dbus-daemon counts them in its denials (the rules that
    /// cannot apply do not match, so counting the candidates is enough).
    pub fn count_matches(&self, at: &Lookup<'_, '_>, matches: impl Fn(&Entry<R>) -> bool) -> usize {
        let mut positions = Vec::new();
        self.candidates(at, &mut |list| positions.extend_from_slice(list));
        positions.sort_unstable();
        positions.dedup();
        positions
            .into_iter()
            .filter(|p| matches(&self.entries[*p as usize]))
            .count()
    }

    /// How many rules a decision can look at, at most (the index's selectivity).
    pub fn candidate_count(&self, at: &Lookup<'_, '_>) -> usize {
        let mut count = 0;
        self.candidates(at, &mut |list| count += list.len());
        count
    }

    /// How many rules are filed (for tests of the index's shape).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether some name or prefix rules are filed under is (or starts) a unique name.
    pub fn has_unique_name_keys(&self) -> bool {
        self.unique_keys
    }

    /// How many distinct names and prefixes rules are filed under.
    pub fn keys(&self) -> usize {
        self.by_name.len() + self.by_prefix.len()
    }
}

/// Own rules: the verdict of the last one for a name, found by exact name, by the name's
/// prefixes, and among the `own="*"` rules.
#[derive(Default, Debug)]
pub(crate) struct OwnIndex {
    entries: Vec<(bool, Origin)>,
    exact: Map<u32>,
    prefix: Map<u32>,
    any: Option<u32>,
}

impl OwnIndex {
    pub fn push(&mut self, allow: bool, origin: Origin, name: &str, prefix: bool) {
        let position = self.entries.len() as u32;
        self.entries.push((allow, origin));
        // Later rules replace earlier ones with the same key: only the last can decide.
        if prefix {
            self.prefix.insert(name.to_string(), position);
        } else if name == "*" {
            self.any = Some(position);
        } else {
            self.exact.insert(name.to_string(), position);
        }
    }

    /// The rule that decides whether `name` may be owned, if any applies.
    pub fn decide(&self, name: &str) -> Option<&(bool, Origin)> {
        let mut best = self.any;
        let mut consider = |p: Option<&u32>| {
            if let Some(p) = p.copied()
                && best.is_none_or(|b| p > b)
            {
                best = Some(p);
            }
        };
        consider(self.exact.get(name));
        if !self.prefix.is_empty() {
            for prefix in name_prefixes(name) {
                debug_assert!(has_name_prefix(name, prefix));
                consider(self.prefix.get(prefix));
            }
        }
        best.map(|p| &self.entries[p as usize])
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Everything that applies to one connection.
#[derive(Default, Debug)]
pub(crate) struct PeerRules {
    pub send: NameIndex<SendRule>,
    pub receive: NameIndex<ReceiveRule>,
    pub own: OwnIndex,
    /// Every send decision is a plain Allow: no rule that refuses, logs or wants polkit, and
    /// one that allows everything (the session bus's rules), so the bus need not ask them.
    pub allows_every_send: bool,
    /// Every receive decision on a message addressed to this connection is Allow.
    pub allows_every_receive: bool,
}
