//! What the connection limits and timeouts need to know about all connections, kept up to date
//! as connections arrive, move on and leave, instead of counted by walking every connection:
//! the event loop asks for the next deadline on every turn, and every accept, Hello,
//! RequestName and AddMatch checks a limit, so a walk there cost time in proportion to the
//! connections open.

use std::collections::BTreeSet;
use std::time::Instant;

use telbus_broker::IdMap;

use crate::ConnId;
use crate::bus::Phase;

/// How many connections are in each stage (dbus-daemon's "incomplete" ones have not said
/// Hello yet; "completed" ones have), the completed ones per user, and the names and match
/// rules each user's connections hold.
#[derive(Default)]
pub struct Census {
    incomplete: u64,
    completed: u64,
    completed_per_uid: IdMap<u32, u64>,
    /// Names owned or queued for, per user (max_names_per_user).
    names_per_user: IdMap<u32, usize>,
    /// Match rules, per user (max_match_rules_per_user).
    rules_per_user: IdMap<u32, usize>,
}

impl Census {
    /// Connections that have not said Hello yet (max_incomplete_connections).
    pub fn incomplete(&self) -> u64 {
        self.incomplete
    }

    /// Connections that said Hello (max_completed_connections).
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Completed connections of one user (max_connections_per_user).
    pub fn completed_of(&self, uid: u32) -> u64 {
        self.completed_per_uid.get(&uid).copied().unwrap_or(0)
    }

    /// Names the connections of `user` own or wait for.
    pub fn names_of(&self, user: u32) -> usize {
        self.names_per_user.get(&user).copied().unwrap_or(0)
    }

    /// Match rules the connections of `user` hold.
    pub fn rules_of(&self, user: u32) -> usize {
        self.rules_per_user.get(&user).copied().unwrap_or(0)
    }

    /// One connection of `user` went from `before` names (owned or queued for) to `after`.
    pub fn names_changed(&mut self, user: u32, before: usize, after: usize) {
        change_total(&mut self.names_per_user, user, before, after);
    }

    /// One connection of `user` went from `before` match rules to `after`.
    pub fn rules_changed(&mut self, user: u32, before: usize, after: usize) {
        change_total(&mut self.rules_per_user, user, before, after);
    }

    /// A connection of user `uid` entered `phase` (from nothing: it was just accepted).
    pub fn enter(&mut self, phase: &Phase, uid: Option<u32>) {
        if is_completed(phase) {
            self.completed += 1;
            if let Some(uid) = uid {
                *self.completed_per_uid.entry(uid).or_default() += 1;
            }
        } else {
            self.incomplete += 1;
        }
    }

    /// A connection of user `uid` left `phase` (for another one, or for good).
    pub fn leave(&mut self, phase: &Phase, uid: Option<u32>) {
        if is_completed(phase) {
            self.completed -= 1;
            if let Some(uid) = uid
                && let Some(count) = self.completed_per_uid.get_mut(&uid)
            {
                *count -= 1;
                if *count == 0 {
                    self.completed_per_uid.remove(&uid);
                }
            }
        } else {
            self.incomplete -= 1;
        }
    }
}

/// `user`'s total, one of whose connections went from `before` to `after`.
fn change_total(totals: &mut IdMap<u32, usize>, user: u32, before: usize, after: usize) {
    if before == after {
        return;
    }
    let total = totals.entry(user).or_default();
    // The connection's `before` is part of the total.
    *total = *total - before + after;
    if *total == 0 {
        totals.remove(&user);
    }
}

fn is_completed(phase: &Phase) -> bool {
    matches!(phase, Phase::Active | Phase::Monitor)
}

/// One kind of deadline connections may have (authentication, descriptors that wait for their
/// message), in time order. Each connection keeps its own deadline in an `Option<Instant>`,
/// which [`Deadlines::set`] changes together with the order.
#[derive(Default)]
pub struct Deadlines {
    queue: BTreeSet<(Instant, ConnId)>,
}

impl Deadlines {
    /// Move `id`'s deadline, held in `slot`, to `at` (`None`: it has none any more).
    pub fn set(&mut self, id: ConnId, slot: &mut Option<Instant>, at: Option<Instant>) {
        if *slot == at {
            return;
        }
        if let Some(old) = *slot {
            self.queue.remove(&(old, id));
        }
        if let Some(at) = at {
            self.queue.insert((at, id));
        }
        *slot = at;
    }

    pub fn next(&self) -> Option<Instant> {
        self.queue.first().map(|&(at, _)| at)
    }

    /// The connections whose deadline is `now` or earlier, earliest first.
    pub fn expired(&self, now: Instant) -> Vec<ConnId> {
        self.queue
            .iter()
            .take_while(|&&(at, _)| at <= now)
            .map(|&(_, id)| id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn deadlines_come_in_time_order_and_follow_their_connection() {
        let start = Instant::now();
        let at = |ms| Some(start + Duration::from_millis(ms));
        let mut deadlines = Deadlines::default();
        let (mut one, mut two, mut three) = (None, None, None);
        deadlines.set(1, &mut one, at(30));
        deadlines.set(2, &mut two, at(10));
        deadlines.set(3, &mut three, at(20));
        assert_eq!(deadlines.next(), at(10));
        assert_eq!(deadlines.expired(start + Duration::from_millis(20)), [2, 3]);
        // Moved later, then cleared: the order follows, and nothing is left behind.
        deadlines.set(2, &mut two, at(40));
        assert_eq!(two, at(40));
        assert_eq!(deadlines.expired(start + Duration::from_millis(30)), [3, 1]);
        deadlines.set(3, &mut three, None);
        deadlines.set(1, &mut one, None);
        assert_eq!(deadlines.next(), at(40));
        deadlines.set(2, &mut two, None);
        assert_eq!(deadlines.next(), None);
        assert!(deadlines.expired(start + Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn the_census_counts_each_stage_and_each_user() {
        let mut census = Census::default();
        census.enter(&Phase::Unregistered, Some(1000));
        census.enter(&Phase::Unregistered, Some(1000));
        assert_eq!((census.incomplete(), census.completed()), (2, 0));
        // Hello: incomplete to completed.
        census.leave(&Phase::Unregistered, Some(1000));
        census.enter(&Phase::Active, Some(1000));
        census.leave(&Phase::Unregistered, Some(1000));
        census.enter(&Phase::Active, Some(1000));
        assert_eq!((census.incomplete(), census.completed()), (0, 2));
        assert_eq!(census.completed_of(1000), 2);
        assert_eq!(census.completed_of(0), 0);
        // A monitor is still a completed connection; leaving for good frees the user's count.
        census.leave(&Phase::Active, Some(1000));
        census.enter(&Phase::Monitor, Some(1000));
        census.leave(&Phase::Monitor, Some(1000));
        census.leave(&Phase::Active, Some(1000));
        assert_eq!((census.incomplete(), census.completed()), (0, 0));
        assert!(census.completed_per_uid.is_empty());
    }

    #[test]
    fn a_users_names_and_rules_are_the_sum_over_its_connections() {
        let mut census = Census::default();
        // Two connections of user 1000 take 2 and 3 names; one of user 0 takes 1.
        census.names_changed(1000, 0, 2);
        census.names_changed(1000, 0, 3);
        census.names_changed(0, 0, 1);
        assert_eq!((census.names_of(1000), census.names_of(0)), (5, 1));
        // One gives a name back, then the other leaves with its 3.
        census.names_changed(1000, 2, 1);
        census.names_changed(1000, 3, 0);
        assert_eq!(census.names_of(1000), 1);
        census.names_changed(1000, 1, 0);
        assert_eq!(census.names_of(1000), 0);
        assert!(!census.names_per_user.contains_key(&1000));
        // Rules are counted apart from names.
        census.rules_changed(1000, 0, 4);
        assert_eq!((census.rules_of(1000), census.names_of(1000)), (4, 0));
        census.rules_changed(1000, 4, 0);
        assert!(census.rules_per_user.is_empty());
    }
}
