//! Wake-ups: a one-thread notifier for tasks of one executor, and the
//! inboxes through which other threads (storage writers, the management
//! listener, the credential verifier, reloads) hand a shard their items.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Poll, Waker};

use atomic_waker::AtomicWaker;
use crossbeam_queue::SegQueue;
use ixn_storage::CompletionSink;

/// Wakes one waiting task of the same executor. `notify` before `wait`
/// is remembered, so no wake-up is lost.
#[derive(Default)]
pub struct LocalNotify {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl LocalNotify {
    pub fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.set.replace(false) {
                return Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// Items for one shard from other threads (storage completions, scrapes,
/// credential checks, reloads): pushed from any thread, taken by one task
/// of the shard. Lock-free: a segmented queue and an atomic waker; a waker
/// fired from a plain thread wakes a parked executor.
pub struct Inbox<T> {
    queue: SegQueue<T>,
    waker: AtomicWaker,
}

impl<T> Default for Inbox<T> {
    fn default() -> Self {
        Inbox { queue: SegQueue::new(), waker: AtomicWaker::new() }
    }
}

impl<T> Inbox<T> {
    pub fn push(&self, item: T) {
        self.queue.push(item);
        self.waker.wake();
    }

    /// Pushes them all, then wakes the shard once.
    pub fn push_all(&self, items: impl IntoIterator<Item = T>) {
        for item in items {
            self.queue.push(item);
        }
        self.waker.wake();
    }

    /// Waits until at least one item is queued, then takes them all.
    pub async fn take(&self, into: &mut Vec<T>) {
        poll_fn(|cx| {
            if self.queue.is_empty() {
                self.waker.register(cx.waker());
                // Re-check: a push between the check and the register would
                // otherwise be missed.
                if self.queue.is_empty() {
                    return Poll::Pending;
                }
            }
            while let Some(item) = self.queue.pop() {
                into.push(item);
            }
            Poll::Ready(())
        })
        .await
    }
}

/// Storage completions for one shard: writer threads push, the shard's
/// completion task drains.
pub type CompletionInbox = Inbox<(u64, bool)>;

impl CompletionSink for CompletionInbox {
    fn complete(&self, done: &mut Vec<(u64, bool)>) {
        super::faults::writer_point();
        self.push_all(done.drain(..));
    }
}

/// Shared handle, as the storage crate wants it.
pub fn inbox() -> Arc<CompletionInbox> {
    Arc::new(CompletionInbox::default())
}
