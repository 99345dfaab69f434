//! The name registry: who owns each well-known name, and who waits in its queue.
//!
//! It only keeps the state and says what changed; the bus driver turns the changes into the
//! NameOwnerChanged, NameLost and NameAcquired signals.

use std::collections::{BTreeMap, VecDeque};

use crate::ConnId;

/// RequestName flags of the specification.
pub const ALLOW_REPLACEMENT: u32 = 0x1;
pub const REPLACE_EXISTING: u32 = 0x2;
pub const DO_NOT_QUEUE: u32 = 0x4;

/// RequestName replies.
pub const PRIMARY_OWNER: u32 = 1;
pub const IN_QUEUE: u32 = 2;
pub const EXISTS: u32 = 3;
pub const ALREADY_OWNER: u32 = 4;

/// ReleaseName replies.
pub const RELEASED: u32 = 1;
pub const NON_EXISTENT: u32 = 2;
pub const NOT_OWNER: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Claim {
    conn: ConnId,
    flags: u32,
}

/// The primary owner of a name is the head of its queue.
#[derive(Default)]
struct NameEntry {
    queue: VecDeque<Claim>,
}

/// A change of primary owner: `old` lost the name, `new` got it.
#[derive(Debug, PartialEq, Eq)]
pub struct OwnerChange {
    pub name: String,
    pub old: Option<ConnId>,
    pub new: Option<ConnId>,
}

#[derive(Default)]
pub struct NameRegistry {
    /// Sorted, so that ListNames answers in a stable order.
    names: BTreeMap<String, NameEntry>,
    /// Names each connection owns or waits for, for disconnects and for policy checks.
    by_conn: telbus_broker::IdMap<ConnId, Vec<String>>,
    /// Changes with every request, release and departure: policy decisions remembered for a
    /// pair of connections (which may depend on their names) hold while it stays the same.
    generation: u64,
}

impl NameRegistry {
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn owner(&self, name: &str) -> Option<ConnId> {
        self.names
            .get(name)
            .and_then(|e| e.queue.front())
            .map(|c| c.conn)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.keys().map(String::as_str)
    }

    /// The connections in a name's queue, the primary owner first.
    pub fn queue(&self, name: &str) -> Option<Vec<ConnId>> {
        self.names
            .get(name)
            .map(|e| e.queue.iter().map(|c| c.conn).collect())
    }

    /// Names `conn` is primary owner of.
    pub fn owned_by(&self, conn: ConnId) -> impl Iterator<Item = &str> {
        self.by_conn
            .get(&conn)
            .into_iter()
            .flatten()
            .filter(move |n| self.owner(n) == Some(conn))
            .map(String::as_str)
    }

    /// Names `conn` owns or waits in the queue for: what dbus-daemon's send_destination and
    /// receive_sender rules look at.
    pub fn claimed_by(&self, conn: ConnId) -> impl Iterator<Item = &str> {
        self.by_conn
            .get(&conn)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// Names `conn` owns or is queued for (what max_names_per_connection counts).
    pub fn claims_of(&self, conn: ConnId) -> usize {
        self.by_conn.get(&conn).map_or(0, Vec::len)
    }

    fn is_queued(&self, name: &str, conn: ConnId) -> bool {
        self.names
            .get(name)
            .is_some_and(|e| e.queue.iter().any(|c| c.conn == conn))
    }

    /// RequestName, once the name and the caller's right to own it were checked.
    pub fn request(&mut self, name: &str, conn: ConnId, flags: u32) -> (u32, Option<OwnerChange>) {
        self.generation += 1;
        let was_queued = self.is_queued(name, conn);
        let entry = self.names.entry(name.to_string()).or_default();
        let claim = Claim { conn, flags };
        let Some(&primary) = entry.queue.front() else {
            entry.queue.push_back(claim);
            self.by_conn.entry(conn).or_default().push(name.to_string());
            let change = OwnerChange {
                name: name.to_string(),
                old: None,
                new: Some(conn),
            };
            return (PRIMARY_OWNER, Some(change));
        };
        if primary.conn == conn {
            entry.queue[0].flags = flags;
            return (ALREADY_OWNER, None);
        }
        let replace = flags & REPLACE_EXISTING != 0 && primary.flags & ALLOW_REPLACEMENT != 0;
        if replace {
            entry.queue.retain(|c| c.conn != conn);
            entry.queue.pop_front();
            entry.queue.push_front(claim);
            if primary.flags & DO_NOT_QUEUE == 0 {
                // The replaced owner waits at the head of the queue.
                entry.queue.insert(1, primary);
            } else {
                self.forget_claim(primary.conn, name);
            }
            if !was_queued {
                self.by_conn.entry(conn).or_default().push(name.to_string());
            }
            let change = OwnerChange {
                name: name.to_string(),
                old: Some(primary.conn),
                new: Some(conn),
            };
            return (PRIMARY_OWNER, Some(change));
        }
        if flags & DO_NOT_QUEUE != 0 {
            if was_queued {
                entry.queue.retain(|c| c.conn != conn);
                self.forget_claim(conn, name);
            }
            return (EXISTS, None);
        }
        match entry.queue.iter_mut().find(|c| c.conn == conn) {
            Some(existing) => existing.flags = flags,
            None => {
                // As in dbus-daemon, a claim that asked to replace waits right behind the
                // owner; any other joins the end of the queue.
                if flags & REPLACE_EXISTING != 0 {
                    entry.queue.insert(1, claim);
                } else {
                    entry.queue.push_back(claim);
                }
                self.by_conn.entry(conn).or_default().push(name.to_string());
            }
        }
        (IN_QUEUE, None)
    }

    fn forget_claim(&mut self, conn: ConnId, name: &str) {
        if let Some(list) = self.by_conn.get_mut(&conn) {
            list.retain(|n| n != name);
            if list.is_empty() {
                self.by_conn.remove(&conn);
            }
        }
    }

    /// ReleaseName, once the name was checked.
    pub fn release(&mut self, name: &str, conn: ConnId) -> (u32, Option<OwnerChange>) {
        self.generation += 1;
        let Some(entry) = self.names.get_mut(name) else {
            return (NON_EXISTENT, None);
        };
        let Some(pos) = entry.queue.iter().position(|c| c.conn == conn) else {
            return (NOT_OWNER, None);
        };
        entry.queue.remove(pos);
        let change = (pos == 0).then(|| OwnerChange {
            name: name.to_string(),
            old: Some(conn),
            new: entry.queue.front().map(|c| c.conn),
        });
        if entry.queue.is_empty() {
            self.names.remove(name);
        }
        self.forget_claim(conn, name);
        (RELEASED, change)
    }

    /// Drop every claim of a connection that went away.
    pub fn remove_connection(&mut self, conn: ConnId) -> Vec<OwnerChange> {
        self.generation += 1;
        let names = self.by_conn.get(&conn).cloned().unwrap_or_default();
        names
            .iter()
            .filter_map(|name| self.release(name, conn).1)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_requester_owns_and_the_rest_queue() {
        let mut r = NameRegistry::default();
        let (code, change) = r.request("a.b", 1, 0);
        assert_eq!(code, PRIMARY_OWNER);
        assert_eq!(change.unwrap().new, Some(1));
        assert_eq!(r.request("a.b", 1, 0).0, ALREADY_OWNER);
        assert_eq!(r.request("a.b", 2, 0).0, IN_QUEUE);
        assert_eq!(r.request("a.b", 3, DO_NOT_QUEUE).0, EXISTS);
        assert_eq!(r.queue("a.b").unwrap(), vec![1, 2]);
        assert_eq!(r.claims_of(3), 0);
    }

    #[test]
    fn replacement_needs_both_flags_and_requeues_the_old_owner() {
        let mut r = NameRegistry::default();
        r.request("a.b", 1, 0);
        // Owner did not allow replacement: the newcomer queues.
        assert_eq!(r.request("a.b", 2, REPLACE_EXISTING).0, IN_QUEUE);
        // Re-request updates the owner's flags.
        assert_eq!(r.request("a.b", 1, ALLOW_REPLACEMENT).0, ALREADY_OWNER);
        let (code, change) = r.request("a.b", 3, REPLACE_EXISTING);
        assert_eq!(code, PRIMARY_OWNER);
        assert_eq!(
            change.unwrap(),
            OwnerChange {
                name: "a.b".into(),
                old: Some(1),
                new: Some(3)
            }
        );
        assert_eq!(r.queue("a.b").unwrap(), vec![3, 1, 2]);
    }

    #[test]
    fn a_replaced_owner_that_would_not_queue_is_dropped() {
        let mut r = NameRegistry::default();
        r.request("a.b", 1, ALLOW_REPLACEMENT | DO_NOT_QUEUE);
        r.request("a.b", 2, REPLACE_EXISTING);
        assert_eq!(r.queue("a.b").unwrap(), vec![2]);
        assert_eq!(r.claims_of(1), 0);
    }

    #[test]
    fn release_passes_the_name_on() {
        let mut r = NameRegistry::default();
        r.request("a.b", 1, 0);
        r.request("a.b", 2, 0);
        assert_eq!(r.release("a.b", 3).0, NOT_OWNER);
        assert_eq!(r.release("x.y", 1).0, NON_EXISTENT);
        let (code, change) = r.release("a.b", 1);
        assert_eq!(code, RELEASED);
        assert_eq!(change.unwrap().new, Some(2));
        let (_, change) = r.release("a.b", 2);
        assert_eq!(change.unwrap().new, None);
        assert!(r.owner("a.b").is_none());
        assert_eq!(r.names().count(), 0);
    }

    #[test]
    fn releasing_a_queued_claim_changes_no_owner() {
        let mut r = NameRegistry::default();
        r.request("a.b", 1, 0);
        r.request("a.b", 2, 0);
        let (code, change) = r.release("a.b", 2);
        assert_eq!(code, RELEASED);
        assert!(change.is_none());
    }

    #[test]
    fn disconnect_releases_everything() {
        let mut r = NameRegistry::default();
        r.request("a.b", 1, 0);
        r.request("c.d", 1, 0);
        r.request("c.d", 2, 0);
        r.request("e.f", 2, 0);
        r.request("e.f", 1, 0);
        let changes = r.remove_connection(1);
        assert_eq!(changes.len(), 2);
        assert_eq!(r.owner("c.d"), Some(2));
        assert_eq!(r.queue("e.f").unwrap(), vec![2]);
        assert_eq!(r.owned_by(2).count(), 2);
        assert_eq!(r.claims_of(1), 0);
    }

    #[test]
    fn do_not_queue_removes_an_existing_queue_entry() {
        let mut r = NameRegistry::default();
        r.request("a.b", 1, 0);
        r.request("a.b", 2, 0);
        assert_eq!(r.request("a.b", 2, DO_NOT_QUEUE).0, EXISTS);
        assert_eq!(r.queue("a.b").unwrap(), vec![1]);
    }
}
