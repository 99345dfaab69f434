//! The reply tracker: which method calls are waiting for a reply, so that only the callee can
//! answer, only once, and so that callers learn when the callee goes away or takes too long.

use std::collections::BTreeSet;
use std::time::Instant;

use telbus_broker::IdMap;

use crate::ConnId;

/// A call waiting for its reply: made by `caller` with `serial`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey {
    pub caller: ConnId,
    pub serial: u32,
}

type CallSet = std::collections::HashSet<CallKey, foldhash::fast::RandomState>;

struct Pending {
    callee: ConnId,
    /// The caller's user, whose max_replies_per_user this call counts against.
    caller_user: u32,
    deadline: Option<Instant>,
}

#[derive(Default)]
pub struct ReplyTracker {
    pending: IdMap<CallKey, Pending>,
    /// Calls each callee owes a reply to, for its disconnect.
    /// A set, not a list: a callee may owe thousands of replies, and each reply takes its call
    /// out. Kept when empty, until the callee disconnects, so that a caller and a callee
    /// calling back and forth do not allocate a set per call.
    by_callee: IdMap<ConnId, CallSet>,
    /// Calls each caller waits on, for max_replies_per_connection and its disconnect.
    by_caller: IdMap<ConnId, usize>,
    /// Calls each user's connections wait on, for max_replies_per_user.
    by_user: IdMap<u32, usize>,
    /// Deadlines, earliest first.
    deadlines: BTreeSet<(Instant, CallKey)>,
}

impl ReplyTracker {
    /// How many replies `caller` is waiting for.
    pub fn waiting(&self, caller: ConnId) -> usize {
        self.by_caller.get(&caller).copied().unwrap_or(0)
    }

    /// How many replies the connections of `user` are waiting for, in all.
    pub fn waiting_for_user(&self, user: u32) -> usize {
        self.by_user.get(&user).copied().unwrap_or(0)
    }

    /// Each user with calls waiting, and how many.
    pub fn users(&self) -> impl Iterator<Item = (u32, usize)> + '_ {
        self.by_user.iter().map(|(u, n)| (*u, *n))
    }

    #[cfg(test)]
    pub fn total(&self) -> usize {
        self.pending.len()
    }

    pub fn expect(
        &mut self,
        key: CallKey,
        callee: ConnId,
        caller_user: u32,
        deadline: Option<Instant>,
    ) {
        let pending = Pending {
            callee,
            caller_user,
            deadline,
        };
        if let Some(old) = self.pending.insert(key, pending) {
            // A caller reused a serial while its first call is still pending: the new call
            // replaces it, as in dbus-daemon.
            self.unlink(key, &old);
        }
        self.by_callee.entry(callee).or_default().insert(key);
        *self.by_caller.entry(key.caller).or_default() += 1;
        *self.by_user.entry(caller_user).or_default() += 1;
        if let Some(at) = deadline {
            self.deadlines.insert((at, key));
        }
    }

    fn unlink(&mut self, key: CallKey, pending: &Pending) {
        if let Some(owed) = self.by_callee.get_mut(&pending.callee) {
            owed.remove(&key);
        }
        if let Some(n) = self.by_caller.get_mut(&key.caller) {
            *n -= 1;
            if *n == 0 {
                self.by_caller.remove(&key.caller);
            }
        }
        if let Some(n) = self.by_user.get_mut(&pending.caller_user) {
            *n -= 1;
            if *n == 0 {
                self.by_user.remove(&pending.caller_user);
            }
        }
        if let Some(at) = pending.deadline {
            self.deadlines.remove(&(at, key));
        }
    }

    /// A reply from `callee` to `key`: true (and forgotten) if it was expected from that callee.
    pub fn take(&mut self, key: CallKey, callee: ConnId) -> bool {
        match self.pending.get(&key) {
            Some(p) if p.callee == callee => {
                let p = self.pending.remove(&key).expect("present");
                self.unlink(key, &p);
                true
            }
            _ => false,
        }
    }

    /// The earliest deadline, for the event loop's timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Calls whose deadline passed, forgotten; each gets a NoReply error.
    pub fn expire(&mut self, now: Instant) -> Vec<CallKey> {
        let mut expired = Vec::new();
        while let Some(&(at, key)) = self.deadlines.first() {
            if at > now {
                break;
            }
            let p = self
                .pending
                .remove(&key)
                .expect("deadline of a pending call");
            self.unlink(key, &p);
            expired.push(key);
        }
        expired
    }

    /// A connection went away: calls it owed replies to (their callers get NoReply), and calls
    /// it was waiting on are forgotten.
    pub fn remove_connection(&mut self, conn: ConnId) -> Vec<CallKey> {
        // In the order the calls were made (each caller's serials grow), for the NoReply errors.
        let mut owed: Vec<CallKey> = self
            .by_callee
            .remove(&conn)
            .unwrap_or_default()
            .into_iter()
            .collect();
        owed.sort_unstable();
        for key in &owed {
            if let Some(p) = self.pending.remove(key) {
                self.unlink(*key, &p);
            }
        }
        if self.by_caller.contains_key(&conn) {
            let mine: Vec<CallKey> = self
                .pending
                .keys()
                .filter(|k| k.caller == conn)
                .copied()
                .collect();
            for key in mine {
                let p = self.pending.remove(&key).expect("present");
                self.unlink(key, &p);
            }
        }
        owed.into_iter().filter(|k| k.caller != conn).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The test callers' users: one per caller.
    const USER: u32 = 1000;

    fn key(caller: ConnId, serial: u32) -> CallKey {
        CallKey { caller, serial }
    }

    #[test]
    fn only_the_callee_answers_and_only_once() {
        let mut t = ReplyTracker::default();
        t.expect(key(1, 5), 2, USER + 1, None);
        assert_eq!(t.waiting(1), 1);
        assert!(!t.take(key(1, 5), 3));
        assert!(t.take(key(1, 5), 2));
        assert!(!t.take(key(1, 5), 2));
        assert_eq!(t.waiting(1), 0);
        assert_eq!(t.total(), 0);
    }

    #[test]
    fn a_callee_that_leaves_owes_no_replies() {
        let mut t = ReplyTracker::default();
        t.expect(key(1, 5), 2, USER + 1, None);
        t.expect(key(3, 9), 2, USER + 3, None);
        t.expect(key(2, 1), 1, USER + 2, None);
        let mut owed = t.remove_connection(2);
        owed.sort();
        assert_eq!(owed, vec![key(1, 5), key(3, 9)]);
        assert_eq!(t.total(), 0);
        assert_eq!(t.waiting(1), 0);
    }

    #[test]
    fn deadlines_expire_in_order() {
        let mut t = ReplyTracker::default();
        let now = Instant::now();
        t.expect(key(1, 1), 2, USER + 1, Some(now + Duration::from_secs(2)));
        t.expect(key(1, 2), 2, USER + 1, Some(now + Duration::from_secs(1)));
        t.expect(key(1, 3), 2, USER + 1, None);
        assert_eq!(t.next_deadline(), Some(now + Duration::from_secs(1)));
        assert_eq!(t.expire(now), vec![]);
        assert_eq!(
            t.expire(now + Duration::from_secs(3)),
            vec![key(1, 2), key(1, 1)]
        );
        assert_eq!(t.total(), 1);
        assert!(t.next_deadline().is_none());
    }

    #[test]
    fn a_users_calls_are_counted_over_its_connections() {
        let mut t = ReplyTracker::default();
        t.expect(key(1, 1), 9, USER, None);
        t.expect(key(2, 1), 9, USER, None);
        t.expect(key(2, 2), 3, USER, None);
        // A reused serial replaces the call: still one.
        t.expect(key(2, 2), 9, USER, None);
        t.expect(key(4, 1), 9, USER + 4, None);
        assert_eq!(t.waiting_for_user(USER), 3);
        assert!(t.take(key(1, 1), 9));
        assert_eq!(t.waiting_for_user(USER), 2);
        // The caller leaves: its calls are forgotten; the callee leaves: the others are.
        t.remove_connection(2);
        assert_eq!(t.waiting_for_user(USER), 0);
        assert_eq!(t.waiting_for_user(USER + 4), 1);
        t.remove_connection(9);
        assert_eq!(t.users().count(), 0);
    }
}
