//! A shard's counters and how the management listener reads them.
//!
//! The counters live on the shard's own thread in plain cells: counting a
//! request is an add, never a lock or an atomic. To read them, the
//! management thread posts an ask (a channel to answer on) into the shard's
//! [`MetricsInbox`], which wakes the shard; between two inputs the shard
//! copies its counters and its state machine's gauges into a
//! [`ShardReport`] and sends it back. A shard that does not answer within
//! the scrape's time limit is reported down.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use ixn_shard::gauges::Gauges;

use super::notify::Inbox;

/// Upper bounds (µs) of the request latency buckets; a last bucket takes
/// the rest.
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000,
];
const BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// Requests are counted by message type; types from here up (none is a
/// request) share the slot of type 0, reported as unknown.
const TYPE_SLOTS: usize = 128;

/// The bucket a latency falls in.
pub fn bucket_of(us: u64) -> usize {
    LATENCY_BOUNDS_US.iter().position(|&b| us <= b).unwrap_or(LATENCY_BOUNDS_US.len())
}

/// One request type's answers: how many, their latency from the frame's
/// arrival to its answer being queued for the socket, by bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    pub msg_type: u16,
    pub count: u64,
    pub buckets: [u64; BUCKETS],
    pub sum_us: u64,
}

/// A shard's counters; only its own thread touches them.
pub struct ShardStats {
    answered: [Cell<u64>; TYPE_SLOTS],
    latency: [[Cell<u64>; BUCKETS]; TYPE_SLOTS],
    latency_sum_us: [Cell<u64>; TYPE_SLOTS],
    errors: RefCell<BTreeMap<i64, u64>>,
    pub accepted: Cell<u64>,
    pub refused: Cell<u64>,
    pub closed: Cell<u64>,
}

impl Default for ShardStats {
    fn default() -> Self {
        ShardStats {
            answered: std::array::from_fn(|_| Cell::new(0)),
            latency: std::array::from_fn(|_| std::array::from_fn(|_| Cell::new(0))),
            latency_sum_us: std::array::from_fn(|_| Cell::new(0)),
            errors: RefCell::new(BTreeMap::new()),
            accepted: Cell::new(0),
            refused: Cell::new(0),
            closed: Cell::new(0),
        }
    }
}

fn bump(c: &Cell<u64>, by: u64) {
    c.set(c.get().wrapping_add(by));
}

impl ShardStats {
    /// A request of type `msg_type` was answered `us` microseconds after
    /// its frame arrived.
    pub fn answered(&self, msg_type: u16, us: u64) {
        let slot = if (msg_type as usize) < TYPE_SLOTS { msg_type as usize } else { 0 };
        bump(&self.answered[slot], 1);
        bump(&self.latency[slot][bucket_of(us)], 1);
        bump(&self.latency_sum_us[slot], us);
    }

    /// An EventError with `code` went to a client.
    pub fn error(&self, code: i64) {
        *self.errors.borrow_mut().entry(code).or_insert(0) += 1;
    }

    fn requests(&self) -> Vec<RequestCounts> {
        (0..TYPE_SLOTS)
            .filter(|&t| self.answered[t].get() > 0)
            .map(|t| RequestCounts {
                msg_type: t as u16,
                count: self.answered[t].get(),
                buckets: std::array::from_fn(|b| self.latency[t][b].get()),
                sum_us: self.latency_sum_us[t].get(),
            })
            .collect()
    }
}

/// What one shard answers a scrape with.
#[derive(Clone, Debug, Default)]
pub struct ShardReport {
    pub shard: u16,
    pub requests: Vec<RequestCounts>,
    /// EventErrors sent, by error code.
    pub errors: Vec<(i64, u64)>,
    pub connections: u64,
    pub sessions: u64,
    pub accepted: u64,
    pub refused: u64,
    pub closed: u64,
    /// Messages waiting in this shard's queue to each other shard.
    pub to_peers: Vec<(u16, u64)>,
    pub gauges: Gauges,
    /// How long the shard took to make this report (it serves nothing
    /// else meanwhile).
    pub took_us: u64,
}

impl ShardReport {
    /// The counters part of a report; the caller adds the rest.
    pub fn from_stats(shard: u16, stats: &ShardStats) -> ShardReport {
        ShardReport {
            shard,
            requests: stats.requests(),
            errors: stats.errors.borrow().iter().map(|(&c, &n)| (c, n)).collect(),
            accepted: stats.accepted.get(),
            refused: stats.refused.get(),
            closed: stats.closed.get(),
            ..ShardReport::default()
        }
    }
}

/// Asks for a shard's report (the channel to answer on), from the
/// management thread to the shard.
pub type MetricsInbox = Inbox<Sender<ShardReport>>;

/// Asks every shard for its report and waits up to `limit` for them all:
/// `None` for a shard that did not answer in time.
pub fn collect(inboxes: &[Arc<MetricsInbox>], limit: Duration) -> Vec<Option<ShardReport>> {
    let (tx, rx) = crossbeam_channel::bounded(inboxes.len());
    for inbox in inboxes {
        inbox.push(tx.clone());
    }
    drop(tx);
    let deadline = std::time::Instant::now() + limit;
    let mut reports: Vec<Option<ShardReport>> = vec![None; inboxes.len()];
    while reports.iter().any(Option::is_none) {
        match rx.recv_deadline(deadline) {
            Ok(r) => {
                let i = r.shard as usize;
                reports[i] = Some(r);
            }
            Err(_) => break,
        }
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_in_the_first_bucket_that_holds_them() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(50), 0);
        assert_eq!(bucket_of(51), 1);
        assert_eq!(bucket_of(5_000_000), 15);
        assert_eq!(bucket_of(5_000_001), 16);
    }

    #[test]
    fn answers_are_counted_by_type_and_unknown_types_share_slot_zero() {
        let s = ShardStats::default();
        s.answered(17, 120);
        s.answered(17, 40);
        s.answered(300, 7);
        s.error(41);
        s.error(41);
        let r = ShardReport::from_stats(0, &s);
        assert_eq!(r.requests.len(), 2);
        assert_eq!((r.requests[0].msg_type, r.requests[0].count), (0, 1));
        let submit = &r.requests[1];
        assert_eq!((submit.msg_type, submit.count, submit.sum_us), (17, 2, 160));
        assert_eq!(submit.buckets[0], 1);
        assert_eq!(submit.buckets[2], 1);
        assert_eq!(r.errors, vec![(41, 2)]);
    }
}
