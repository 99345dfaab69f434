//! Per-user quotas on what waits in the bus for delivery.
//!
//! Every message queued to a connection is charged to the *receiving* connection's user, on
//! behalf of the *sending* user (the actor), until it is written. Each user has a budget of
//! bytes and file descriptors (`<limit name="max_queued_bytes_per_user">` and
//! `max_queued_unix_fds_per_user`). As in dbus-broker, an actor gets a fair share of what is
//! left of the receiver's budget: after a charge, what remains must be at least as much as the
//! actor holds, times the number of actors holding something. One user filling its share
//! therefore leaves room for every other user, however much it sends.
//!
//! The hot path is two hash lookups and a few integer adds per queued message.

use crate::ConnId;

/// The actor of messages the bus itself sends, and of copies for monitors: charged to the
/// receiver, never refused by the fair-share rule (the per-connection limits still apply).
pub const BUS_ACTOR: u32 = u32::MAX;
/// The user that anonymous connections are accounted as.
pub const ANONYMOUS: u32 = u32::MAX - 1;

/// What one queued message costs, remembered until it is written (or dropped).
#[derive(Clone, Copy, Debug)]
pub struct Charge {
    /// The connection whose message this is, for its max_incoming_* (0: none).
    pub sender: ConnId,
    /// The user it is charged for as actor ([`BUS_ACTOR`] for the bus).
    pub actor: u32,
    pub bytes: u32,
    pub fds: u32,
}

impl Charge {
    /// Bytes not charged to anyone (SASL replies).
    pub const NONE: Charge = Charge {
        sender: 0,
        actor: BUS_ACTOR,
        bytes: 0,
        fds: 0,
    };
}

/// Bytes, descriptors and messages waiting in the bus.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub bytes: usize,
    pub fds: usize,
    pub messages: usize,
}

impl Usage {
    pub fn add(&mut self, bytes: usize, fds: usize) {
        self.bytes += bytes;
        self.fds += fds;
        self.messages += 1;
    }

    pub fn add_usage(&mut self, other: &Usage) {
        self.bytes += other.bytes;
        self.fds += other.fds;
        self.messages += other.messages;
    }

    pub fn sub_usage(&mut self, other: &Usage) {
        self.bytes = self.bytes.saturating_sub(other.bytes);
        self.fds = self.fds.saturating_sub(other.fds);
        self.messages = self.messages.saturating_sub(other.messages);
    }

    fn is_empty(&self) -> bool {
        self.messages == 0
    }
}

/// How much one user may have waiting for its connections.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub bytes: usize,
    pub fds: usize,
}

/// Which part of the budget a charge would overrun.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exceeded {
    Bytes,
    Fds,
}

/// Looked up for every queued message: see [`telbus_broker::IdMap`].
type UidMap<V> = telbus_broker::IdMap<u32, V>;

#[derive(Default)]
struct Account {
    /// Waiting for delivery to this user's connections, in all.
    received: Usage,
    /// The part of `received` each sending user holds.
    by_actor: UidMap<Usage>,
    /// How many of `by_actor` are users (not the bus itself): the fair share divides by it,
    /// for every queued message, so it is kept rather than counted.
    user_actors: usize,
    /// This user's messages waiting for delivery to anyone.
    sent: Usage,
}

impl Account {
    fn is_empty(&self) -> bool {
        self.received.is_empty() && self.sent.is_empty()
    }
}

/// Every user's account.
#[derive(Default)]
pub struct UserQuotas {
    accounts: UidMap<Account>,
}

/// One user's figures, for Debug.Stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserFigures {
    /// Waiting for delivery to the user's connections.
    pub queued: Usage,
    /// The user's own messages waiting for delivery.
    pub sent: Usage,
    /// How many users hold part of its budget.
    pub actors: usize,
}

impl UserQuotas {
    /// Charge a message of `bytes` and `fds` from `actor` to `receiver`'s budget, unless it
    /// would take the actor past its fair share of what is left.
    pub fn charge(
        &mut self,
        receiver: u32,
        actor: u32,
        bytes: usize,
        fds: usize,
        budget: Budget,
    ) -> Result<(), Exceeded> {
        let account = self.accounts.entry(receiver).or_default();
        let held = account.by_actor.entry(actor).or_default();
        let user_actor = actor != BUS_ACTOR;
        if user_actor {
            let actors = account.user_actors + usize::from(held.is_empty());
            if !fair(
                budget.bytes,
                account.received.bytes,
                held.bytes,
                bytes,
                actors,
            ) {
                return Err(Exceeded::Bytes);
            }
            if fds > 0 && !fair(budget.fds, account.received.fds, held.fds, fds, actors) {
                return Err(Exceeded::Fds);
            }
            if held.is_empty() {
                account.user_actors += 1;
            }
        }
        held.add(bytes, fds);
        account.received.add(bytes, fds);
        self.accounts.entry(actor).or_default().sent.add(bytes, fds);
        Ok(())
    }

    /// Messages `actor` had charged to `receiver` were written or dropped.
    ///
    /// Accounts that drop to nothing are kept (they are few: one per user, and per user that
    /// sent to it): a queue that fills and drains on every turn would otherwise remove and
    /// insert them each time.
    pub fn release(&mut self, receiver: u32, actor: u32, usage: &Usage) {
        if let Some(account) = self.accounts.get_mut(&receiver) {
            account.received.sub_usage(usage);
            if let Some(held) = account.by_actor.get_mut(&actor) {
                let was_empty = held.is_empty();
                held.sub_usage(usage);
                if held.is_empty() && !was_empty && actor != BUS_ACTOR {
                    account.user_actors -= 1;
                }
            }
        }
        if let Some(account) = self.accounts.get_mut(&actor) {
            account.sent.sub_usage(usage);
        }
    }

    /// The users that have something waiting, to or from them.
    pub fn figures(&self) -> impl Iterator<Item = (u32, UserFigures)> + '_ {
        self.accounts
            .iter()
            .filter(|(_, a)| !a.is_empty())
            .map(|(uid, a)| {
                (
                    *uid,
                    UserFigures {
                        queued: a.received,
                        sent: a.sent,
                        actors: a.by_actor.values().filter(|u| !u.is_empty()).count(),
                    },
                )
            })
    }
}

/// dbus-broker's fair-share rule: after taking `charge` more, the receiver's remaining budget
/// must be at least the actor's holding times the number of actors.
fn fair(budget: usize, used: usize, held: usize, charge: usize, actors: usize) -> bool {
    let Some(remaining) = budget.checked_sub(used + charge) else {
        return false;
    };
    (held + charge).saturating_mul(actors.max(1)) <= remaining
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Budget = Budget {
        bytes: 1000,
        fds: 10,
    };

    #[test]
    fn one_actor_gets_half_the_budget() {
        let mut q = UserQuotas::default();
        let mut taken = 0;
        while q.charge(7, 100, 10, 0, BUDGET).is_ok() {
            taken += 10;
        }
        assert_eq!(taken, 500);
        assert_eq!(q.charge(7, 100, 10, 0, BUDGET), Err(Exceeded::Bytes));
    }

    #[test]
    fn a_greedy_actor_leaves_room_for_another() {
        let mut q = UserQuotas::default();
        while q.charge(7, 100, 10, 0, BUDGET).is_ok() {}
        // A second user still gets a share of what is left.
        let mut second = 0;
        while q.charge(7, 200, 10, 0, BUDGET).is_ok() {
            second += 10;
        }
        assert!(second >= 100, "second user got {second} bytes");
        // The bus itself is never refused by the fair-share rule.
        assert!(q.charge(7, BUS_ACTOR, 10, 0, BUDGET).is_ok());
    }

    #[test]
    fn releasing_everything_forgets_the_users() {
        let mut q = UserQuotas::default();
        q.charge(7, 100, 10, 1, BUDGET).unwrap();
        q.charge(7, 100, 20, 0, BUDGET).unwrap();
        let figures: std::collections::HashMap<u32, UserFigures> = q.figures().collect();
        assert_eq!(
            figures[&7].queued,
            Usage {
                bytes: 30,
                fds: 1,
                messages: 2
            }
        );
        assert_eq!(figures[&100].sent.bytes, 30);
        q.release(
            7,
            100,
            &Usage {
                bytes: 30,
                fds: 1,
                messages: 2,
            },
        );
        assert_eq!(q.figures().count(), 0);
    }

    #[test]
    fn descriptors_have_their_own_budget() {
        let mut q = UserQuotas::default();
        let mut fds = 0;
        while q.charge(7, 100, 1, 1, BUDGET).is_ok() {
            fds += 1;
        }
        assert_eq!(fds, 5);
        assert_eq!(q.charge(7, 100, 1, 1, BUDGET), Err(Exceeded::Fds));
        assert!(q.charge(7, 100, 1, 0, BUDGET).is_ok());
    }
}
