//! What the writer threads count for the management listener's metrics:
//! batches, writes, commit latency, batch sizes, failed attempts. Each
//! writer owns one [`WriterStats`] and is its only writer (relaxed atomic
//! adds, once per batch); a scrape reads them from another thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Upper bounds (µs) of the commit latency buckets; a last bucket takes
/// the rest.
pub const COMMIT_BOUNDS_US: [u64; 14] =
    [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 5_000_000];

/// Upper bounds of the batch size buckets (writes per committed batch).
pub const BATCH_BOUNDS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// A histogram with fixed bounds, filled from one thread, read from any.
#[derive(Debug)]
pub struct AtomicHistogram<const N: usize> {
    bounds: &'static [u64; N],
    /// One count per bound, then the count above the last bound.
    counts: [AtomicU64; N],
    over: AtomicU64,
    sum: AtomicU64,
}

impl<const N: usize> AtomicHistogram<N> {
    pub const fn new(bounds: &'static [u64; N]) -> Self {
        AtomicHistogram {
            bounds,
            counts: [const { AtomicU64::new(0) }; N],
            over: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    pub fn record(&self, value: u64) {
        match self.bounds.iter().position(|&b| value <= b) {
            Some(i) => self.counts[i].fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    pub fn bounds(&self) -> &'static [u64; N] {
        self.bounds
    }

    /// Counts per bucket (not cumulative; the last is above every bound)
    /// and the sum of the values recorded.
    pub fn read(&self) -> (Vec<u64>, u64) {
        let mut counts: Vec<u64> = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        counts.push(self.over.load(Ordering::Relaxed));
        (counts, self.sum.load(Ordering::Relaxed))
    }
}

/// One writer thread's counters.
#[derive(Debug)]
pub struct WriterStats {
    /// Batches committed.
    pub batches: AtomicU64,
    /// Writes committed (ok or refused by the database).
    pub writes: AtomicU64,
    /// Attempts that failed (connection lost, outcome unknown, refused).
    pub failed_attempts: AtomicU64,
    /// The batch in hand has failed and not yet committed: the database is
    /// not taking writes from this writer.
    pub failing: AtomicBool,
    /// Microseconds from a batch's first statement to its COMMIT's reply.
    pub commit_us: AtomicHistogram<14>,
    /// Writes per committed batch.
    pub batch_size: AtomicHistogram<11>,
}

impl Default for WriterStats {
    fn default() -> Self {
        WriterStats {
            batches: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            commit_us: AtomicHistogram::new(&COMMIT_BOUNDS_US),
            batch_size: AtomicHistogram::new(&BATCH_BOUNDS),
        }
    }
}

impl WriterStats {
    pub(crate) fn committed(&self, writes: usize, micros: u64) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(writes as u64, Ordering::Relaxed);
        self.commit_us.record(micros);
        self.batch_size.record(writes as u64);
        self.failing.store(false, Ordering::Relaxed);
    }

    /// An idle writer's probe passed.
    pub(crate) fn reachable(&self) {
        self.failing.store(false, Ordering::Relaxed);
    }

    pub(crate) fn attempt_failed(&self) {
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
        self.failing.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_lands_in_the_first_bucket_whose_bound_holds_it() {
        static B: [u64; 3] = [10, 100, 1000];
        let h = AtomicHistogram::new(&B);
        for v in [0, 10, 11, 100, 5000] {
            h.record(v);
        }
        let (counts, sum) = h.read();
        assert_eq!(counts, vec![2, 2, 0, 1]);
        assert_eq!(sum, 5121);
    }
}
