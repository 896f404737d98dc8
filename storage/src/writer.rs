//! Writer threads: batch, coalesce, group-commit, complete.

use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use ixn_shard::interaction::InteractionRecord;
use odbc_api::Connection;

use crate::coalesce_impl::Coalescer;
use crate::conn::{self, diag};
use crate::records::refuse_reason;
use crate::statements::{RowData, Statements};
use crate::{msg_id, CompletionSink, Engine, Faults, InsertStrategy, StorageError, StoreOp, WriteRequest};

/// Attempts of one batch: the first and up to 3 retries.
const MAX_ATTEMPTS: u32 = 4;

enum Msg {
    Write(WriteRequest),
    Stop,
}

/// What a writer thread needs, minus its channel.
pub(crate) struct Setup {
    pub connection_string: String,
    pub target: String,
    pub engine: Engine,
    pub strategy: InsertStrategy,
    pub writers: usize,
    pub batch_max: usize,
    pub first: (Connection<'static>, u64),
    pub faults: Option<Arc<Faults>>,
}

struct Shared {
    senders: Vec<Sender<Msg>>,
    sinks: Arc<[Arc<dyn CompletionSink>]>,
    /// Write-locked by shutdown to close submission: a submit either lands
    /// in a channel before the Stop, or sees `true` and fails at once.
    closed: RwLock<bool>,
}

/// Submits writes from any thread (executor threads included); never blocks.
#[derive(Clone)]
pub struct WriterHandle {
    shared: Arc<Shared>,
}

impl WriterHandle {
    /// Queues `req` on the writer that owns its interaction id (a stable
    /// hash), so every write of one interaction is applied in order.
    pub fn submit(&self, req: WriteRequest) {
        let w = writer_for(req.op.id(), self.shared.senders.len());
        let closed = self.shared.closed.read().unwrap_or_else(|e| e.into_inner());
        let refused = if *closed {
            Some(req)
        } else {
            match self.shared.senders[w].send(Msg::Write(req)) {
                Ok(()) => None,
                Err(e) => match e.into_inner() {
                    Msg::Write(req) => Some(req),
                    Msg::Stop => None,
                },
            }
        };
        drop(closed);
        if let Some(req) = refused {
            tracing::warn!(
                msg_id = msg_id::WRITE_REFUSED,
                interaction_id = req.op.id(),
                "Write for interaction {} refused: the database writers are shut down",
                req.op.id()
            );
            if let Some(sink) = self.shared.sinks.get(req.shard as usize) {
                sink.complete(&mut vec![(req.token, false)]);
            }
        }
    }

    /// Number of writer threads.
    pub fn writers(&self) -> usize {
        self.shared.senders.len()
    }
}

/// FNV-1a: stable across runs and builds, unlike std's hasher.
fn writer_for(id: &str, writers: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % writers.max(1) as u64) as usize
}

/// The running writer threads.
pub struct Writers {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Writers {
    pub fn handle(&self) -> WriterHandle {
        WriterHandle { shared: self.shared.clone() }
    }

    /// Writers finish every write queued before this call, commit, complete,
    /// then exit; joins their threads. Writes submitted later complete at
    /// once with ok=false.
    pub fn shutdown(self) {
        {
            let mut closed = self.shared.closed.write().unwrap_or_else(|e| e.into_inner());
            *closed = true;
            for s in &self.shared.senders {
                let _ = s.send(Msg::Stop);
            }
        }
        for t in self.threads {
            if t.join().is_err() {
                tracing::error!("a database writer thread panicked");
            }
        }
    }
}

pub(crate) fn start(setup: Setup, sinks: Vec<Arc<dyn CompletionSink>>) -> Result<Writers, StorageError> {
    let Setup { connection_string, target, engine, strategy, writers, batch_max, first, faults } = setup;
    // Connect every writer here, so a database that refuses connections
    // fails the start instead of the first writes.
    let mut conns = vec![first];
    for _ in 1..writers {
        conns.push(conn::connect(&connection_string, &target)?);
    }
    let sinks: Arc<[Arc<dyn CompletionSink>]> = sinks.into();
    let mut senders = Vec::with_capacity(writers);
    let mut threads = Vec::with_capacity(writers);
    for (n, (c, id)) in conns.into_iter().enumerate() {
        let (tx, rx) = crossbeam_channel::unbounded();
        senders.push(tx);
        let w = Writer {
            n,
            rx,
            sinks: sinks.clone(),
            connection_string: connection_string.clone(),
            target: target.clone(),
            engine: engine.clone(),
            strategy,
            batch_max,
            batch: Batch::default(),
            stopping: false,
            faults: faults.clone(),
        };
        let t = std::thread::Builder::new()
            .name(format!("ixn-db-writer-{n}"))
            .spawn(move || w.run(c, id))
            .map_err(|e| StorageError::new(format!("could not start a database writer thread: {e}")))?;
        threads.push(t);
    }
    Ok(Writers { shared: Arc::new(Shared { senders, sinks, closed: RwLock::new(false) }), threads })
}

#[derive(Default)]
struct Batch {
    coalescer: Coalescer,
    /// (shard, token, ok) of every op in the batch, in arrival order.
    tokens: Vec<(u16, u64, bool)>,
    /// Attempts made so far.
    attempts: u32,
    first_error: Option<String>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

struct Writer {
    n: usize,
    rx: Receiver<Msg>,
    sinks: Arc<[Arc<dyn CompletionSink>]>,
    connection_string: String,
    target: String,
    engine: Engine,
    strategy: InsertStrategy,
    batch_max: usize,
    batch: Batch,
    stopping: bool,
    faults: Option<Arc<Faults>>,
}

enum SessionEnd {
    /// Stop received and everything before it done.
    Stopped,
    /// The connection is suspect: reconnect.
    Reconnect,
}

impl Writer {
    fn run(mut self, first: Connection<'static>, first_id: u64) {
        tracing::info!(
            msg_id = msg_id::WRITER_STARTED,
            writer = self.n,
            connection_id = first_id,
            engine = %self.engine,
            strategy = self.strategy.name(),
            batch_max = self.batch_max,
            "Database writer {} started (connection ID: {first_id}, {} inserts, up to {} writes per transaction)",
            self.n,
            self.strategy.name(),
            self.batch_max
        );
        let mut conn = Some((first, first_id));
        loop {
            let (c, id) = match conn.take() {
                Some(c) => c,
                None => match self.reconnect() {
                    Some(c) => c,
                    None => break,
                },
            };
            let end = self.session(&c);
            // Roll back whatever a failed attempt left open before closing.
            let _ = c.rollback();
            drop(c);
            conn::log_closed(id);
            if let SessionEnd::Stopped = end {
                break;
            }
        }
        // Anything queued after the Stop (there should be nothing, see
        // `Shared::closed`) is answered rather than dropped.
        while let Ok(msg) = self.rx.try_recv() {
            if let Msg::Write(req) = msg {
                self.batch.tokens.push((req.shard, req.token, false));
            }
        }
        self.complete_all(false);
        tracing::info!(msg_id = msg_id::WRITER_STOPPED, writer = self.n, "Database writer {} stopped", self.n);
    }

    /// A new connection after a failure; `None` once stopped with nothing
    /// left to write. Each failed connect counts as an attempt of the batch.
    fn reconnect(&mut self) -> Option<(Connection<'static>, u64)> {
        loop {
            if self.batch.is_empty() && !self.gather() {
                return None;
            }
            if self.faults.as_ref().is_some_and(|f| f.refuse_connect()) {
                self.attempt_failed("injected: the connection attempt failed".to_string());
                continue;
            }
            match conn::connect(&self.connection_string, &self.target) {
                Ok(c) => return Some(c),
                Err(e) => self.attempt_failed(e.message),
            }
        }
    }

    /// Takes the next batch: blocks for the first message, then whatever
    /// else is queued, up to batch_max ops. False when stopped and empty.
    fn gather(&mut self) -> bool {
        if self.stopping {
            return false;
        }
        match self.rx.recv() {
            Ok(Msg::Write(req)) => self.add(req),
            Ok(Msg::Stop) | Err(_) => {
                self.stopping = true;
                return false;
            }
        }
        if let Some(f) = &self.faults {
            f.wait_while_held();
        }
        while self.batch.tokens.len() < self.batch_max {
            match self.rx.try_recv() {
                Ok(Msg::Write(req)) => self.add(req),
                Ok(Msg::Stop) => {
                    self.stopping = true;
                    break;
                }
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
            }
        }
        true
    }

    fn add(&mut self, req: WriteRequest) {
        let refused = match &req.op {
            StoreOp::Insert(r) | StoreOp::Upsert(r) => refuse_reason(r),
            StoreOp::Delete(id) if id.is_empty() || id.len() > crate::records::MAX_ID => {
                Some(format!("interaction id of {} bytes", id.len()))
            }
            StoreOp::Delete(_) => None,
        };
        if let Some(why) = refused {
            tracing::warn!(
                msg_id = msg_id::WRITE_REFUSED,
                interaction_id = req.op.id(),
                "Write for interaction {} refused: {why}",
                req.op.id()
            );
            self.batch.tokens.push((req.shard, req.token, false));
            return;
        }
        self.batch.tokens.push((req.shard, req.token, true));
        self.batch.coalescer.push(req.op);
    }

    /// Writes batches over one connection until it fails or the writer stops.
    fn session(&mut self, conn: &Connection<'static>) -> SessionEnd {
        if self.engine == Engine::Postgres {
            if let Err(e) = conn::hold_writer_lock(conn) {
                // A safety net for the next start, not needed to write.
                tracing::warn!(writer = self.n, error = %diag(&e), "could not take the writer advisory lock");
            }
        }
        if let Err(e) = conn.set_autocommit(false) {
            self.attempt_failed(format!("could not turn autocommit off: {}", diag(&e)));
            return SessionEnd::Reconnect;
        }
        let mut stmts = Statements::new(conn, self.strategy, self.batch_max);
        let mut data = RowData::default();
        let mut deletes: Vec<&str> = Vec::new();
        let mut inserts: Vec<&InteractionRecord> = Vec::new();
        loop {
            if self.batch.is_empty() && !self.gather() {
                return SessionEnd::Stopped;
            }
            let started = Instant::now();
            let result = {
                // After a failed attempt the commit may have reached the
                // database anyway: delete before every insert then.
                let retry = self.batch.attempts > 0;
                let mut d: Vec<&str> = reuse(std::mem::take(&mut deletes));
                let mut i: Vec<&InteractionRecord> = reuse(std::mem::take(&mut inserts));
                self.batch.coalescer.plan_with(retry, &mut d, &mut i);
                let r = write(conn, &mut stmts, &mut data, &d, &i).map_err(|e| diag(&e)).and_then(|()| {
                    match self.faults.as_ref().is_some_and(|f| f.lose_commit_reply()) {
                        true => Err("injected: the reply to COMMIT was lost".to_string()),
                        false => Ok(()),
                    }
                });
                // Keep the vectors' storage for the next batch, without
                // keeping borrows of this one.
                deletes = reuse(d);
                inserts = reuse(i);
                r
            };
            match result {
                Ok(()) => {
                    if self.batch.attempts > 0 {
                        tracing::info!(
                            msg_id = msg_id::BATCH_RECOVERED,
                            writer = self.n,
                            attempts = self.batch.attempts + 1,
                            "Database writer {} committed a batch of {} writes on attempt {}",
                            self.n,
                            self.batch.tokens.len(),
                            self.batch.attempts + 1
                        );
                    }
                    tracing::trace!(
                        writer = self.n,
                        ops = self.batch.tokens.len(),
                        us = started.elapsed().as_micros() as u64,
                        "batch committed"
                    );
                    self.complete_all(true);
                }
                Err(e) => {
                    let _ = conn.rollback();
                    self.attempt_failed(e);
                    return SessionEnd::Reconnect;
                }
            }
        }
    }

    /// Counts a failed attempt: logs it, backs off, or gives the batch up
    /// after the last attempt.
    fn attempt_failed(&mut self, error: String) {
        if let Some(f) = &self.faults {
            f.note_failed_attempt();
        }
        self.batch.attempts += 1;
        let attempt = self.batch.attempts;
        let ops = self.batch.tokens.len();
        if attempt >= MAX_ATTEMPTS {
            tracing::error!(
                msg_id = msg_id::BATCH_ABANDONED,
                writer = self.n,
                ops,
                attempts = attempt,
                first_error = self.batch.first_error.as_deref().unwrap_or(&error),
                "Database writer {} gave up a batch of {ops} writes after {attempt} attempts; \
                 they are reported as failed. Last error: {error}",
                self.n
            );
            self.complete_all(false);
            return;
        }
        let backoff = Duration::from_millis(50 << (2 * (attempt - 1))); // 50, 200, 800 ms
        tracing::warn!(
            msg_id = msg_id::BATCH_FAILED,
            writer = self.n,
            ops,
            attempt,
            "Database writer {} failed a batch of {ops} writes (attempt {attempt} of {MAX_ATTEMPTS}): {error}; \
             rolled back, reconnecting and retrying in {} ms",
            self.n,
            backoff.as_millis()
        );
        if self.batch.first_error.is_none() {
            self.batch.first_error = Some(error);
        }
        std::thread::sleep(backoff);
    }

    /// Completes every token of the batch (with its own ok, anded with
    /// `ok`) and clears the batch.
    fn complete_all(&mut self, ok: bool) {
        let mut per_shard: Vec<Vec<(u64, bool)>> = Vec::new();
        for &(shard, token, op_ok) in &self.batch.tokens {
            let s = shard as usize;
            if s >= self.sinks.len() {
                tracing::error!(shard, token, "completion for shard {shard}, which has no sink; dropped");
                continue;
            }
            if per_shard.len() <= s {
                per_shard.resize_with(s + 1, Vec::new);
            }
            per_shard[s].push((token, ok && op_ok));
        }
        for (s, mut done) in per_shard.into_iter().enumerate() {
            if !done.is_empty() {
                self.sinks[s].complete(&mut done);
            }
        }
        self.batch.tokens.clear();
        self.batch.coalescer.clear();
        self.batch.attempts = 0;
        self.batch.first_error = None;
    }
}

/// Reuses a vector's allocation for another element lifetime.
fn reuse<'b, T: ?Sized>(mut v: Vec<&T>) -> Vec<&'b T> {
    v.clear();
    v.into_iter().map(|_| unreachable!()).collect()
}

/// One attempt: DELETEs, INSERTs, COMMIT.
fn write(
    conn: &Connection<'static>,
    stmts: &mut Statements<'_>,
    data: &mut RowData,
    deletes: &[&str],
    inserts: &[&InteractionRecord],
) -> Result<(), odbc_api::Error> {
    if !deletes.is_empty() {
        stmts.delete(deletes)?;
    }
    if !inserts.is_empty() {
        data.prepare(inserts);
        stmts.insert(inserts, data)?;
    }
    conn.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_cross_threads() {
        fn send_sync<T: Send + Sync + Clone>() {}
        fn send<T: Send>() {}
        send_sync::<WriterHandle>();
        send::<Writers>();
        send::<crate::Storage>();
    }

    #[test]
    fn routing_is_stable_and_spread() {
        assert_eq!(writer_for("0001abcd", 5), writer_for("0001abcd", 5));
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(writer_for("a", 1000), (0xaf63_dc4c_8601_ec8cu64 % 1000) as usize);
        let mut counts = [0usize; 5];
        for i in 0..10_000 {
            counts[writer_for(&format!("0{i:015}"), 5)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 1500), "{counts:?}");
    }
}
