//! The wake-up watchdog: bounds how long a shard's executor can sleep
//! through a wake-up that the runtime lost.
//!
//! glommio 0.9.0 can put an executor to sleep while one of its tasks has
//! been woken and is waiting to run: its run loop parks whenever a round of
//! `run_task_queues` ran nothing, and a round runs nothing when the latency
//! ring already holds a completion at its first preemption check, e.g. the
//! preemption timer, expired while the thread was descheduled by other load
//! just after the reactor armed it. Tasks woken in that reactor pass (the
//! completion task, woken by a writer thread; the tasks whose timers just
//! fired) then sit in their queues while the executor sleeps, until some
//! timer still armed or some I/O completion wakes it. When none is left
//! (the pass fired them all; at start, in the shards' mesh join, there are
//! none), the shard stalls: every answer waits, and later completions do
//! not ring again because the inbox's waker was spent on the stranded wake.
//! docs/architecture.md, "Lost wake-ups", has the interleaving;
//! bench/start-stress.sh and bench/stall-stress.sh exercise it.
//!
//! So each shard runs a heartbeat task, in its own latency-sensitive queue,
//! that records a beat every `BEAT`; a plain thread checks every `CHECK`
//! and wakes the heartbeat task of any shard whose last beat is older than
//! `SILENT`. The wake rings the executor's eventfd (a latency-sensitive
//! task's wake always does), which makes it run its queues, the stranded
//! task included. A shard that is merely busy also gets these wakes; they
//! cost it a few queue operations.

use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use glommio::{Latency, Shares};

use super::msgid;

/// Period of each shard's heartbeat.
const BEAT: Duration = Duration::from_millis(20);
/// Period of the watchdog's checks.
const CHECK: Duration = Duration::from_millis(20);
/// A shard whose last beat is older than this is woken.
const SILENT: Duration = Duration::from_millis(60);

/// `last_beat_ms` before the first beat.
const NOT_STARTED: u64 = 0;
/// `last_beat_ms` once the shard's executor has ended.
const ENDED: u64 = u64::MAX;

/// One shard's heartbeat, shared between its executor and the watchdog.
struct Heartbeat {
    /// Milliseconds since the watchdog's epoch at the last beat (at least
    /// 1), or NOT_STARTED, or ENDED.
    last_beat_ms: AtomicU64,
    /// A waker of the heartbeat task, once it has run.
    waker: Mutex<Option<Waker>>,
}

/// The watchdog and every shard's heartbeat.
pub struct Watchdog {
    epoch: Instant,
    hearts: Vec<Arc<Heartbeat>>,
}

impl Watchdog {
    /// Starts the watchdog thread for `shards` shards. It ends once every
    /// shard's heartbeat has ended.
    pub fn start(shards: usize) -> Result<Arc<Watchdog>, String> {
        let watchdog = Arc::new(Watchdog {
            epoch: Instant::now(),
            hearts: (0..shards)
                .map(|_| Arc::new(Heartbeat { last_beat_ms: AtomicU64::new(NOT_STARTED), waker: Mutex::new(None) }))
                .collect(),
        });
        let w = watchdog.clone();
        std::thread::Builder::new()
            .name("ixn-watchdog".into())
            .spawn(move || w.watch())
            .map_err(|e| format!("cannot start the watchdog thread: {e}"))?;
        Ok(watchdog)
    }

    fn now_ms(&self) -> u64 {
        (self.epoch.elapsed().as_millis() as u64).max(1)
    }

    fn watch(&self) {
        loop {
            std::thread::sleep(CHECK);
            let now = self.now_ms();
            for (shard, heart) in self.hearts.iter().enumerate() {
                let last = heart.last_beat_ms.load(Ordering::SeqCst);
                if last == NOT_STARTED || last == ENDED || now.saturating_sub(last) <= SILENT.as_millis() as u64 {
                    continue;
                }
                if let Some(waker) = heart.waker.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                    waker.wake_by_ref();
                    tracing::debug!(
                        msg_id = msgid::WATCHDOG_WAKE,
                        shard,
                        silent_ms = now - last,
                        "shard woken by the wake-up watchdog"
                    );
                }
            }
            if self.hearts.iter().all(|h| h.last_beat_ms.load(Ordering::SeqCst) == ENDED) {
                return;
            }
        }
    }

    /// Starts shard `shard`'s heartbeat on the current executor. Call
    /// first thing on the shard's executor, before anything that waits.
    pub fn spawn_heartbeat(self: &Arc<Self>, shard: usize) {
        let queue = glommio::executor().create_task_queue(
            Shares::default(),
            // Latency-sensitive, so that a wake from the watchdog thread
            // always rings the executor's eventfd.
            Latency::Matters(BEAT),
            "ixn-heartbeat",
        );
        let watchdog = self.clone();
        glommio::spawn_local_into(async move { watchdog.beat(shard).await }, queue)
            .expect("the heartbeat queue was just created")
            .detach();
    }

    async fn beat(&self, shard: usize) {
        let heart = &self.hearts[shard];
        let _ended = Ended(heart);
        let waker = poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
        *heart.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(waker);
        loop {
            heart.last_beat_ms.store(self.now_ms(), Ordering::SeqCst);
            glommio::timer::sleep(BEAT).await;
        }
    }
}

/// Marks a heartbeat ended when its task is dropped with its executor.
struct Ended<'a>(&'a Heartbeat);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        self.0.last_beat_ms.store(ENDED, Ordering::SeqCst);
        self.0.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}
