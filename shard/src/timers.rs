//! The shard's one timer table: every deadline its parts keep (routing
//! locks, pulls waiting for an interaction, invitations and handling,
//! login sessions), in deadline order, each under the key of what it ends.
//!
//! One table, so that a tick takes what is due in one pass, in deadline
//! order whatever its kind, and the executor can ask when the next one is
//! due instead of ticking on. Keyed, so that moving or ending a deadline is
//! one call that cannot leave a stale entry behind (the audit checks each
//! entry against its owner).

use std::collections::BTreeSet;

use ahash::AHashMap;

use crate::agent::AgentRef;
use crate::interaction::Millis;
use crate::store::Slot;

/// What a deadline ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// A routing lock on the interaction at this slot (`routing-timeout`).
    Lock(Slot),
    /// A pull (this coordinator op) waiting for an interaction answers with
    /// none (`pull-hold-timeout`).
    Pull(u64),
    /// The invitation (`delivering-timeout`) or the handling
    /// (`handling-timeout`) of the interaction at this slot.
    Link(Slot),
    /// The login session of an agent whose last desktop left
    /// (`login-session-timeout`).
    LoginSession(AgentRef),
}

#[derive(Debug, Default)]
pub(crate) struct Timers {
    by_deadline: BTreeSet<(Millis, Timer)>,
    deadline_of: AHashMap<Timer, Millis>,
}

impl Timers {
    /// Sets `timer` to end at `deadline`, replacing its earlier deadline.
    pub(crate) fn set(&mut self, timer: Timer, deadline: Millis) {
        if let Some(old) = self.deadline_of.insert(timer, deadline) {
            self.by_deadline.remove(&(old, timer));
        }
        self.by_deadline.insert((deadline, timer));
    }

    /// Ends `timer` without it firing; returns the deadline it had.
    pub(crate) fn cancel(&mut self, timer: Timer) -> Option<Millis> {
        let deadline = self.deadline_of.remove(&timer)?;
        let removed = self.by_deadline.remove(&(deadline, timer));
        debug_assert!(removed, "{timer:?} in one index of the timer table only");
        Some(deadline)
    }

    /// The deadline of `timer`, if it is set.
    pub(crate) fn deadline(&self, timer: Timer) -> Option<Millis> {
        self.deadline_of.get(&timer).copied()
    }

    /// The earliest deadline set.
    pub(crate) fn next(&self) -> Option<Millis> {
        self.by_deadline.first().map(|&(d, _)| d)
    }

    /// Takes the earliest timer due at `now_ms`, if any.
    pub(crate) fn pop_due(&mut self, now_ms: Millis) -> Option<Timer> {
        let &(deadline, timer) = self.by_deadline.first()?;
        if deadline > now_ms {
            return None;
        }
        self.by_deadline.pop_first();
        self.deadline_of.remove(&timer);
        Some(timer)
    }

    /// Every timer set, with its deadline (the audit).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Timer, Millis)> + '_ {
        self.by_deadline.iter().map(|&(d, t)| (t, d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_deadline_order_once_and_move_when_set_again() {
        let mut t = Timers::default();
        t.set(Timer::Link(3), 30);
        t.set(Timer::Lock(1), 10);
        t.set(Timer::Pull(7), 20);
        t.set(Timer::Link(3), 5); // moved earlier
        assert_eq!(t.iter().count(), 3);
        assert_eq!(t.next(), Some(5));
        assert_eq!(t.pop_due(4), None);
        assert_eq!(t.pop_due(25), Some(Timer::Link(3)));
        assert_eq!(t.cancel(Timer::Lock(1)), Some(10));
        assert_eq!(t.cancel(Timer::Lock(1)), None);
        assert_eq!(t.pop_due(25), Some(Timer::Pull(7)));
        assert_eq!(t.pop_due(1000), None);
        assert_eq!(t.iter().count(), 0);
        assert_eq!(t.next(), None);
    }
}
