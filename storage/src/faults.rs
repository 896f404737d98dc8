//! Faults the writers can be made to meet on purpose, for tests: a COMMIT
//! whose reply is lost, a COMMIT that fails, connection attempts that
//! fail; and a hold that lets
//! a test queue many writes into one batch.
//!
//! Off unless [`crate::Storage::inject_faults`] was called. A writer then
//! asks the injector once per batch, per COMMIT and per connection attempt;
//! without one, the cost is a test of a `None` per batch.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Faults for the writers to meet, set from a test while they run.
#[derive(Debug, Default)]
pub struct Faults {
    lost_commit_replies: AtomicU32,
    failing_commits: AtomicU32,
    failing_connects: AtomicU32,
    unreachable: AtomicBool,
    connects_failed: AtomicU64,
    commit_replies_lost: AtomicU64,
    failed_attempts: AtomicU64,
    held: Mutex<bool>,
    released: Condvar,
}

impl Faults {
    pub fn new() -> Arc<Faults> {
        Arc::new(Faults::default())
    }

    /// The next `n` COMMITs take effect in the database, but the writer is
    /// told they failed, as when the connection drops before the reply
    /// arrives.
    pub fn lose_commit_replies(&self, n: u32) {
        self.lost_commit_replies.store(n, Ordering::SeqCst);
    }

    /// The next `n` COMMITs fail: the writer rolls back instead and is
    /// told COMMIT failed, so it cannot know the outcome either.
    pub fn fail_commits(&self, n: u32) {
        self.failing_commits.store(n, Ordering::SeqCst);
    }

    /// The next `n` connection attempts of the writers fail.
    pub fn fail_connects(&self, n: u32) {
        self.failing_connects.store(n, Ordering::SeqCst);
    }

    /// While `true`, every connection attempt of the writers fails: the
    /// database cannot be reached.
    pub fn set_unreachable(&self, on: bool) {
        self.unreachable.store(on, Ordering::SeqCst);
    }

    /// While `true`, a writer that has received a write waits before it
    /// takes the rest of its batch: writes submitted meanwhile all go into
    /// that one batch when the hold ends.
    pub fn hold_batches(&self, on: bool) {
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = on;
        self.released.notify_all();
    }

    /// Attempts of a batch that failed so far, whatever the cause (an
    /// injected fault or a real one), counted while the injector is set.
    pub fn failed_attempts(&self) -> u64 {
        self.failed_attempts.load(Ordering::SeqCst)
    }

    /// Connection attempts this injector failed so far.
    pub fn connects_failed(&self) -> u64 {
        self.connects_failed.load(Ordering::SeqCst)
    }

    /// COMMIT replies this injector lost so far.
    pub fn commit_replies_lost(&self) -> u64 {
        self.commit_replies_lost.load(Ordering::SeqCst)
    }

    /// Whether the reply of the COMMIT that just succeeded is to be lost.
    pub(crate) fn lose_commit_reply(&self) -> bool {
        let lose = take_one(&self.lost_commit_replies);
        if lose {
            self.commit_replies_lost.fetch_add(1, Ordering::SeqCst);
        }
        lose
    }

    pub(crate) fn wait_while_held(&self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while *held {
            held = self.released.wait(held).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub(crate) fn note_failed_attempt(&self) {
        self.failed_attempts.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether the COMMIT about to be sent is to fail instead.
    pub(crate) fn fail_commit(&self) -> bool {
        take_one(&self.failing_commits)
    }

    /// Whether this connection attempt is to fail.
    pub(crate) fn refuse_connect(&self) -> bool {
        let refuse = self.unreachable.load(Ordering::SeqCst) || take_one(&self.failing_connects);
        if refuse {
            self.connects_failed.fetch_add(1, Ordering::SeqCst);
        }
        refuse
    }
}

/// Takes one from a countdown; false when it is at zero.
fn take_one(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countdowns_and_outage() {
        let f = Faults::new();
        assert!(!f.lose_commit_reply() && !f.refuse_connect());
        f.lose_commit_replies(2);
        f.fail_connects(1);
        assert!(f.lose_commit_reply() && f.lose_commit_reply() && !f.lose_commit_reply());
        f.fail_commits(1);
        assert!(f.fail_commit() && !f.fail_commit());
        assert!(f.refuse_connect() && !f.refuse_connect());
        f.set_unreachable(true);
        assert!(f.refuse_connect() && f.refuse_connect());
        f.set_unreachable(false);
        assert!(!f.refuse_connect());
        assert_eq!((f.commit_replies_lost(), f.connects_failed()), (2, 3));
    }
}
