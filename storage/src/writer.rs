//! Writer threads: batch, coalesce, group-commit, complete.
//!
//! Every write is answered exactly once through its shard's
//! [`CompletionSink`]: ok=true once the database holds it, ok=false only when
//! the database definitely did not apply it (the state machine then undoes
//! it in memory). A write whose outcome is unknown (the connection dropped
//! during or after COMMIT, the database went away) is not answered until
//! the writer has resolved it: it reconnects, with a bounded backoff, and
//! applies the batch again, which is idempotent; a row the database refuses
//! is isolated by splitting the batch, so only its own writes fail.

use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use ixn_shard::interaction::InteractionRecord;
use odbc_api::Connection;

use crate::coalesce_impl::Coalescer;
use crate::conn::{self, diag};
use crate::events::{EventLogSetup, EventRow};
use crate::load::read_one;
use crate::logger::Outbox;
use crate::records::refuse_reason;
use crate::statements::{RowData, Statements};
use crate::stats::WriterStats;
use crate::write_gate::WriteGate;
use crate::{msg_id, CompletionSink, Engine, Faults, InsertStrategy, StorageError, StoreOp, WriteRequest};

/// Waits between attempts of a batch the database does not take: 50, 200,
/// 800 ms, then 1 s for as long as it lasts.
fn backoff(failures: u32) -> Duration {
    let exp = 2 * failures.clamp(1, 4) - 2;
    Duration::from_millis((50u64 << exp).min(1000))
}

/// Failures of one batch logged one by one; past them, one line per
/// [`FAILURE_LOG_INTERVAL`] while it lasts.
const FAILURES_LOGGED: u32 = 4;
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// How long [`Writers::shutdown`] gives the writers.
pub const DEFAULT_SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);

/// After the shutdown limit, how long to wait for writers to notice.
const ABANDON_GRACE: Duration = Duration::from_secs(1);

enum Msg {
    Write(WriteRequest),
    Stop,
}

/// How long an idle writer waits before it checks its connection with
/// [`PROBE`]: a broken connection or a database gone shows (in the
/// writer's counters, and so in the server's readiness) without a write.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);
const PROBE: &str = "SELECT 1";

/// What `gather` came back with.
#[derive(Debug, PartialEq, Eq)]
enum Gathered {
    /// Writes to commit.
    Batch,
    /// A stop: nothing more comes.
    Stopped,
    /// Nothing arrived within the idle time.
    Idle,
}

/// What a writer thread needs, minus its channel.
pub(crate) struct Setup {
    pub connection_string: String,
    pub target: String,
    pub engine: Engine,
    pub strategy: InsertStrategy,
    pub writers: usize,
    pub batch_max: usize,
    pub commit_delay: Duration,
    pub first: (Connection<'static>, u64),
    pub faults: Option<Arc<Faults>>,
    /// With the event log on: how to make event rows, and the outbox's
    /// counters (each commit adds its events and wakes the shipper).
    pub log: Option<(Arc<EventLogSetup>, Arc<Outbox>)>,
    /// Taken from the first write of an attempt to its COMMIT.
    pub gate: WriteGate,
}

struct Shared {
    senders: Vec<Sender<Msg>>,
    sinks: Arc<[Arc<dyn CompletionSink>]>,
    /// Write-locked by shutdown to close submission: a submit either lands
    /// in a channel before the Stop, or sees `true` and fails at once.
    closed: RwLock<bool>,
    /// Each writer's counters, in writer order.
    stats: Vec<Arc<WriterStats>>,
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

    /// Each writer's counters, in writer order.
    pub fn stats(&self) -> &[Arc<WriterStats>] {
        &self.shared.stats
    }

    /// Writes queued for each writer and not yet taken into a batch.
    pub fn queued(&self) -> Vec<usize> {
        self.shared.senders.iter().map(Sender::len).collect()
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
    /// Dropped to tell the writers to stop trying (see `shutdown_within`).
    abandon: Sender<()>,
}

impl Writers {
    pub fn handle(&self) -> WriterHandle {
        WriterHandle { shared: self.shared.clone() }
    }

    /// [`Writers::shutdown_within`] the [`DEFAULT_SHUTDOWN_LIMIT`] (10 s).
    pub fn shutdown(self) -> bool {
        self.shutdown_within(DEFAULT_SHUTDOWN_LIMIT)
    }

    /// Writers finish every write queued before this call, commit,
    /// complete, then exit; writes submitted later complete at once with
    /// ok=false. Returns true when all of that was done within `limit`.
    ///
    /// A writer that cannot reach the database keeps retrying only until
    /// `limit`: then it stops, leaving the batch it was resolving
    /// unanswered (its outcome is unknown: it may be committed) and
    /// answering ok=false the writes still queued behind it (never sent to
    /// the database). A writer blocked in a database call past `limit` +
    /// 1 s is left behind (logged, 27154); the process may exit under it.
    pub fn shutdown_within(self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        {
            let mut closed = self.shared.closed.write().unwrap_or_else(|e| e.into_inner());
            *closed = true;
            for s in &self.shared.senders {
                let _ = s.send(Msg::Stop);
            }
        }
        let mut finished = wait_finished(&self.threads, deadline);
        if !finished {
            drop(self.abandon);
            wait_finished(&self.threads, Instant::now() + ABANDON_GRACE);
        }
        for (n, t) in self.threads.into_iter().enumerate() {
            if !t.is_finished() {
                tracing::error!(
                    msg_id = msg_id::WRITER_NOT_STOPPED,
                    writer = n,
                    "Database writer {n} did not stop within the shutdown limit (it is blocked in a database call); \
                     not waiting for it: the batch it holds may or may not be committed and is not answered"
                );
                finished = false;
            } else if t.join().is_err() {
                tracing::error!("a database writer thread panicked");
                finished = false;
            }
        }
        finished
    }
}

/// True once every thread has ended, false at `deadline`.
fn wait_finished(threads: &[JoinHandle<()>], deadline: Instant) -> bool {
    loop {
        if threads.iter().all(JoinHandle::is_finished) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub(crate) fn start(setup: Setup, sinks: Vec<Arc<dyn CompletionSink>>) -> Result<Writers, StorageError> {
    let Setup {
        connection_string,
        target,
        engine,
        strategy,
        writers,
        batch_max,
        commit_delay,
        first,
        faults,
        log,
        gate,
    } = setup;
    // Connect every writer here, so a database that refuses connections
    // fails the start instead of the first writes.
    let mut conns = vec![first];
    for _ in 1..writers {
        conns.push(conn::connect(&connection_string, &target)?);
    }
    let sinks: Arc<[Arc<dyn CompletionSink>]> = sinks.into();
    let (abandon_tx, abandon_rx) = crossbeam_channel::bounded(0);
    let mut senders = Vec::with_capacity(writers);
    let mut threads = Vec::with_capacity(writers);
    let stats: Vec<Arc<WriterStats>> = (0..writers).map(|_| Arc::default()).collect();
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
            commit_delay,
            batch: Batch::default(),
            stopping: false,
            faults: faults.clone(),
            abandon: abandon_rx.clone(),
            log: log.clone(),
            catalog: log.as_ref().map(|(setup, _)| setup.catalog.cached()),
            stats: stats[n].clone(),
            gate: gate.clone(),
        };
        let t = std::thread::Builder::new()
            .name(format!("ixn-db-writer-{n}"))
            .spawn(move || w.run(c, id))
            .map_err(|e| StorageError::new(format!("could not start a database writer thread: {e}")))?;
        threads.push(t);
    }
    Ok(Writers {
        shared: Arc::new(Shared { senders, sinks, closed: RwLock::new(false), stats }),
        threads,
        abandon: abandon_tx,
    })
}

/// One op of the batch and where its answer goes.
struct Token {
    shard: u16,
    token: u64,
    /// Its coalescer entry, or [`REFUSED_BEFORE`].
    entry: u32,
}

/// The entry of a write refused before it reached the database.
const REFUSED_BEFORE: u32 = u32::MAX;

#[derive(Default)]
struct Batch {
    coalescer: Coalescer,
    /// Every op of the batch, in arrival order.
    tokens: Vec<Token>,
    /// The event log rows the batch's ops carry, with their entry: they
    /// go to the outbox in the same transaction as their entry's row.
    events: Vec<(u32, EventRow)>,
    /// Failed attempts in a row (connection lost, outcome unknown).
    failures: u32,
    /// When the first of them happened; when one was last logged.
    failing_since: Option<Instant>,
    last_logged: Option<Instant>,
    /// An attempt failed or was refused: rows the batch inserts may exist
    /// now, so every id is deleted before its insert.
    retried: bool,
    /// An attempt's COMMIT may have reached the database: a row refused
    /// later is read back before its writes are called failed.
    maybe_committed: bool,
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
    /// After a batch's first write, how long to wait for more.
    commit_delay: Duration,
    batch: Batch,
    stopping: bool,
    faults: Option<Arc<Faults>>,
    /// Disconnected when shutdown's limit has passed: stop retrying.
    abandon: Receiver<()>,
    log: Option<(Arc<EventLogSetup>, Arc<Outbox>)>,
    /// This writer's copy of the catalog that names events (event log on).
    catalog: Option<ixn_shard::versioned::Cached<ixn_shard::catalog::Catalog>>,
    stats: Arc<WriterStats>,
    gate: WriteGate,
}

enum SessionEnd {
    /// Stop received and everything before it done.
    Stopped,
    /// The connection is lost or suspect: reconnect.
    Reconnect,
    /// Shutdown's limit passed.
    Abandoned,
}

/// Why an attempt did not commit.
enum Failure {
    /// The connection is unusable, or the error passes by itself: nothing
    /// of the attempt is committed; try again on a new connection.
    Lost(String),
    /// COMMIT failed, or its reply was lost: the database may have applied
    /// the attempt.
    Unknown(String),
    /// The database is reachable and refused a statement: nothing of the
    /// attempt is committed, and one of its rows is refused.
    Refused(String),
}

/// Vectors a writer session reuses from attempt to attempt.
#[derive(Default)]
struct Scratch {
    data: RowData,
    deletes: Vec<&'static str>,
    inserts: Vec<&'static InteractionRecord>,
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
        let end = loop {
            let (c, id) = match conn.take() {
                Some(c) => c,
                None => match self.reconnect() {
                    Ok(c) => c,
                    Err(end) => break end,
                },
            };
            let end = self.session(&c);
            // Roll back whatever a failed attempt left open before closing.
            let _ = c.rollback();
            drop(c);
            conn::log_closed(id);
            match end {
                SessionEnd::Reconnect => continue,
                end => break end,
            }
        };
        self.finish(end);
        tracing::info!(msg_id = msg_id::WRITER_STOPPED, writer = self.n, "Database writer {} stopped", self.n);
    }

    /// After the last session: on a stop, the batch is empty and nothing is
    /// queued (see `Shared::closed`). After shutdown's limit, the batch in
    /// progress stays unanswered (it may be committed) and the writes
    /// queued behind it, never sent, are answered ok=false.
    fn finish(&mut self, end: SessionEnd) {
        let unresolved = self.batch.tokens.len();
        let mut never_sent: Vec<(u16, u64)> = Vec::new();
        while let Ok(msg) = self.rx.try_recv() {
            if let Msg::Write(req) = msg {
                never_sent.push((req.shard, req.token));
            }
        }
        if matches!(end, SessionEnd::Abandoned) && unresolved + never_sent.len() > 0 {
            tracing::error!(
                msg_id = msg_id::BATCH_ABANDONED,
                writer = self.n,
                ops = unresolved,
                queued = never_sent.len(),
                "Database writer {} stopped at the shutdown limit without reaching the database: a batch of \
                 {unresolved} writes is left unanswered (each may or may not be committed) and {} queued writes \
                 are answered as failed",
                self.n,
                never_sent.len()
            );
        }
        debug_assert!(matches!(end, SessionEnd::Abandoned) || unresolved == 0, "stopped with a batch");
        self.answer(never_sent.into_iter().map(|(shard, token)| (shard, token, false)));
    }

    /// A new connection after a failure, with backoff; `Err` once stopped
    /// with nothing left to write, or abandoned.
    fn reconnect(&mut self) -> Result<(Connection<'static>, u64), SessionEnd> {
        loop {
            // With nothing to write, an attempt to connect is the probe.
            if self.batch.is_empty() && self.gather() == Gathered::Stopped {
                return Err(SessionEnd::Stopped);
            }
            // Woken early when shutdown's limit passes.
            if let Err(RecvTimeoutError::Disconnected) = self.abandon.recv_timeout(backoff(self.batch.failures)) {
                return Err(SessionEnd::Abandoned);
            }
            if self.faults.as_ref().is_some_and(|f| f.refuse_connect()) {
                self.failed(Failure::Lost("injected: the connection attempt failed".to_string()));
                continue;
            }
            match conn::connect_quietly(&self.connection_string, &self.target) {
                Ok(c) => return Ok(c),
                Err(e) => self.failed(Failure::Lost(e.message)),
            }
        }
    }

    fn abandoned(&self) -> bool {
        matches!(self.abandon.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// Takes the next batch: blocks for the first message, then whatever
    /// else is queued, up to batch_max ops. With a commit delay, when the
    /// first write found nothing queued behind it (the writer had caught
    /// up), also what else arrives until the delay has passed since the
    /// first. False when stopped and empty.
    /// Gives up waiting for the first write after [`PROBE_EVERY`] (`Idle`).
    fn gather(&mut self) -> Gathered {
        if self.stopping {
            return Gathered::Stopped;
        }
        match self.rx.recv_timeout(PROBE_EVERY) {
            Ok(Msg::Write(req)) => self.add(req),
            Err(RecvTimeoutError::Timeout) => return Gathered::Idle,
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => {
                self.stopping = true;
                return Gathered::Stopped;
            }
        }
        if let Some(f) = &self.faults {
            f.wait_while_held();
        }
        // The delay only gathers what a lone write would otherwise commit
        // by itself (low load: one fsync and one wake-up per write). Writes
        // already queued mean the load keeps the writer busy: batches form
        // while each commit runs, and waiting would only cost throughput.
        let caught_up = self.rx.is_empty();
        let deadline = (caught_up && !self.commit_delay.is_zero()).then(|| Instant::now() + self.commit_delay);
        while self.batch.tokens.len() < self.batch_max {
            let next = match deadline {
                None => self.rx.try_recv().ok(),
                Some(d) => self.rx.recv_deadline(d).ok(),
            };
            match next {
                Some(Msg::Write(req)) => self.add(req),
                // A stop commits what is gathered at once.
                Some(Msg::Stop) => {
                    self.stopping = true;
                    break;
                }
                None => break,
            }
        }
        Gathered::Batch
    }

    /// An idle writer checks its connection; false: it is broken (the
    /// writer reconnects). Autocommit is off: the probe's transaction is
    /// ended at once, so it holds no snapshot (vacuum, checkpoints).
    fn probe(&mut self, conn: &Connection<'static>) -> bool {
        match conn.execute(PROBE, (), None).map(drop).and_then(|()| conn.rollback()) {
            Ok(()) => {
                self.idle_and_reachable();
                true
            }
            Err(e) => {
                self.stats.attempt_failed();
                tracing::warn!(
                    msg_id = msg_id::PROBE_FAILED,
                    writer = self.n,
                    "Database writer {} found its connection broken while idle ({}); reconnecting",
                    self.n,
                    diag(&e)
                );
                false
            }
        }
    }

    /// An idle writer's probe passed: the database takes its connection,
    /// and what failed while nothing was waiting is over.
    fn idle_and_reachable(&mut self) {
        debug_assert!(self.batch.is_empty());
        if self.batch.failures > 0 {
            tracing::info!(
                msg_id = msg_id::BATCH_RECOVERED,
                writer = self.n,
                ops = 0,
                failures = self.batch.failures,
                "Database writer {} reaches the database again after {} failed attempts",
                self.n,
                self.batch.failures
            );
        }
        self.batch = Batch::default();
        self.stats.reachable();
    }

    fn add(&mut self, req: WriteRequest) {
        let refused = match &req.op {
            StoreOp::Insert(r) | StoreOp::Upsert(r) => refuse_reason(r),
            StoreOp::Delete(id) => crate::records::refuse_id(id),
            // A key for routing only: never stored.
            StoreOp::Log(_) => None,
        };
        if let Some(why) = refused {
            tracing::warn!(
                msg_id = msg_id::WRITE_REFUSED,
                interaction_id = req.op.id(),
                "Write for interaction {} refused: {why}",
                req.op.id().escape_debug()
            );
            self.batch.tokens.push(Token { shard: req.shard, token: req.token, entry: REFUSED_BEFORE });
            return;
        }
        let entry = self.batch.coalescer.push(req.op) as u32;
        self.batch.tokens.push(Token { shard: req.shard, token: req.token, entry });
        if let (Some((setup, _)), Some(copy)) = (&self.log, &mut self.catalog) {
            let catalog = setup.catalog.refresh(copy);
            self.batch.events.extend(req.log.iter().filter_map(|p| setup.row(catalog, p)).map(|row| (entry, row)));
        }
    }

    /// Writes batches over one connection until it fails or the writer stops.
    fn session(&mut self, conn: &Connection<'static>) -> SessionEnd {
        if self.engine == Engine::Postgres {
            if let Err(e) = conn::hold_writer_lock(conn) {
                // A safety net for the next start, not needed to write.
                tracing::warn!(writer = self.n, error = %diag(&e), "could not take the writer advisory lock");
            }
            if let Err(e) = conn::no_table_scans(conn) {
                // Slower as the table grows, still correct.
                tracing::warn!(writer = self.n, error = %diag(&e), "could not turn table scans off");
            }
        }
        if let Err(e) = conn.set_autocommit(false) {
            self.failed(Failure::Lost(format!("could not turn autocommit off: {}", diag(&e))));
            return SessionEnd::Reconnect;
        }
        let direct_log = self.log.as_ref().is_some_and(|(setup, _)| setup.direct);
        let mut stmts = Statements::new(conn, &self.engine, self.strategy, self.batch_max, direct_log);
        let mut scratch = Scratch::default();
        loop {
            if self.abandoned() {
                return SessionEnd::Abandoned;
            }
            if self.batch.is_empty() {
                match self.gather() {
                    Gathered::Batch => {}
                    Gathered::Stopped => return SessionEnd::Stopped,
                    Gathered::Idle if self.probe(conn) => continue,
                    Gathered::Idle => return SessionEnd::Reconnect,
                }
            }
            let started = Instant::now();
            match self.commit_batch(conn, &mut stmts, &mut scratch) {
                Ok(()) => {
                    tracing::trace!(
                        writer = self.n,
                        ops = self.batch.tokens.len(),
                        us = started.elapsed().as_micros() as u64,
                        "batch committed"
                    );
                    self.stats.committed(self.batch.tokens.len(), started.elapsed().as_micros() as u64);
                    self.complete_batch();
                }
                Err(failure) => {
                    self.failed(failure);
                    return SessionEnd::Reconnect;
                }
            }
        }
    }

    /// Commits the batch: in one transaction, or, when the database
    /// refuses it, split until only the refused entries are left out.
    ///
    /// After a failure the same batch is applied again on a new connection,
    /// whether or not an earlier attempt committed: every statement writes
    /// a whole row (in place on SQLite and PostgreSQL; elsewhere an id is
    /// deleted before its insert on every retry) or deletes one, so
    /// applying twice leaves what applying once does. That
    /// is safe because no other write can reach these ids meanwhile: every
    /// write of an interaction goes to this one writer, in order, and this
    /// writer takes nothing new until the batch is resolved. (On
    /// PostgreSQL, a lost session's transaction may still be in flight: it
    /// holds its row and key locks, so the new attempt waits for it; if it
    /// then commits, the duplicate keys the new attempt meets are a
    /// refusal, which the split and the read-back below resolve.)
    fn commit_batch(
        &mut self,
        conn: &Connection<'static>,
        stmts: &mut Statements<'_>,
        scratch: &mut Scratch,
    ) -> Result<(), Failure> {
        let retried = self.batch.retried;
        match self.attempt(conn, stmts, scratch, None, retried) {
            Err(Failure::Refused(why)) => {
                self.batch.retried = true;
                // A refusal without deletes first may be an insert meeting
                // its own row, committed by an attempt whose reply was
                // lost: the whole batch is tried once more with them.
                self.isolate(conn, stmts, scratch, retried.then_some(why))
            }
            other => other,
        }
    }

    /// The database refused the batch: bisects it, committing each half it
    /// takes, down to the single entries it refuses. `refused`: the whole
    /// batch is known to be refused as it will be sent (deletes first).
    fn isolate(
        &mut self,
        conn: &Connection<'static>,
        stmts: &mut Statements<'_>,
        scratch: &mut Scratch,
        refused: Option<String>,
    ) -> Result<(), Failure> {
        let pending: Vec<u32> = (0..self.batch.coalescer.entries() as u32)
            .filter(|&e| !self.batch.coalescer.is_refused(e as usize))
            .collect();
        // Spans of `pending`, each with the refusal it is known to get, if
        // any.
        let mut spans: Vec<(usize, usize, Option<String>)> = vec![(0, pending.len(), refused)];
        while let Some((a, b, refusal)) = spans.pop() {
            let refusal = match refusal {
                Some(why) => why,
                None => match self.attempt(conn, stmts, scratch, Some(&pending[a..b]), true) {
                    Ok(()) => continue,
                    Err(Failure::Refused(why)) => why,
                    Err(other) => return Err(other),
                },
            };
            if b - a > 1 {
                let mid = (a + b) / 2;
                spans.push((mid, b, None));
                spans.push((a, mid, None));
            } else if b - a == 1 {
                self.refuse_entry(conn, pending[a] as usize, refusal)?;
            }
        }
        Ok(())
    }

    /// The database refused entry `e` alone: its writes fail, unless an
    /// earlier COMMIT whose reply was lost applied them (read back).
    fn refuse_entry(&mut self, conn: &Connection<'static>, e: usize, why: String) -> Result<(), Failure> {
        let (id, row) = self.batch.coalescer.entry(e);
        if self.batch.maybe_committed && self.batch.coalescer.changes_row(e) {
            match read_one(conn, id, &self.target) {
                Ok(stored) if stored.as_ref() == row => {
                    tracing::info!(
                        msg_id = msg_id::WRITE_FOUND_COMMITTED,
                        writer = self.n,
                        interaction_id = id,
                        "Database writer {} found the writes for interaction {id} committed by an attempt whose \
                         reply was lost (read back after the database refused them again: {why})",
                        self.n
                    );
                    return Ok(());
                }
                Ok(_) => {}
                Err(err) => return Err(Failure::Lost(err.message)),
            }
        }
        let writes = self.batch.tokens.iter().filter(|t| t.entry as usize == e).count();
        tracing::warn!(
            msg_id = msg_id::WRITE_REFUSED_BY_DATABASE,
            writer = self.n,
            interaction_id = id,
            writes,
            "Database refused the write for interaction {}: {why}; its {writes} write(s) in this batch fail, \
             the others are committed",
            id.escape_debug()
        );
        self.batch.coalescer.refuse(e);
        Ok(())
    }

    /// One transaction: DELETEs, INSERTs, COMMIT, for the batch's entries
    /// `only` names (all that are not refused when `None`).
    fn attempt(
        &self,
        conn: &Connection<'static>,
        stmts: &mut Statements<'_>,
        scratch: &mut Scratch,
        only: Option<&[u32]>,
        rows_may_exist: bool,
    ) -> Result<(), Failure> {
        // Held to the COMMIT or ROLLBACK (the end of this call).
        let _gate = self.gate.enter();
        let mut deletes: Vec<&str> = reuse(std::mem::take(&mut scratch.deletes));
        let mut inserts: Vec<&InteractionRecord> = reuse(std::mem::take(&mut scratch.inserts));
        self.batch.coalescer.plan_into(stmts.in_place, rows_may_exist, only, &mut deletes, &mut inserts);
        let mut executed = execute(stmts, &mut scratch.data, &deletes, &inserts);
        let mut empty = deletes.is_empty() && inserts.is_empty();
        if executed.is_ok() && !self.batch.events.is_empty() {
            let rows = self.events_of(only);
            empty &= rows.is_empty();
            executed = stmts.events.write(&rows, rows_may_exist);
        }
        // Keep the vectors' storage for the next attempt, without keeping
        // borrows of this batch.
        scratch.deletes = reuse(deletes);
        scratch.inserts = reuse(inserts);
        if let Err(e) = executed {
            return Err(self.classify(conn, &e));
        }
        if empty {
            return Ok(());
        }
        if self.faults.as_ref().is_some_and(|f| f.fail_commit()) {
            let _ = conn.rollback();
            return Err(Failure::Unknown("injected: COMMIT failed".to_string()));
        }
        if let Err(e) = conn.commit() {
            return Err(Failure::Unknown(diag(&e)));
        }
        if self.faults.as_ref().is_some_and(|f| f.lose_commit_reply()) {
            return Err(Failure::Unknown("injected: the reply to COMMIT was lost".to_string()));
        }
        Ok(())
    }

    /// The batch's event rows whose entries `only` names (all when
    /// `None`), leaving out refused entries.
    fn events_of(&self, only: Option<&[u32]>) -> Vec<&EventRow> {
        let c = &self.batch.coalescer;
        self.batch
            .events
            .iter()
            .filter(|(e, _)| !c.is_refused(*e as usize) && only.is_none_or(|o| o.contains(e)))
            .map(|(_, row)| row)
            .collect()
    }

    /// What a statement's error means; rolls the transaction back.
    fn classify(&self, conn: &Connection<'static>, e: &odbc_api::Error) -> Failure {
        let why = diag(e);
        if conn::is_transient(e, &self.engine) {
            let _ = conn.rollback();
            return Failure::Lost(why);
        }
        if conn.rollback().is_err() || !conn::reachable(conn, &self.engine) {
            return Failure::Lost(why);
        }
        Failure::Refused(why)
    }

    /// Counts a failed attempt and logs it (rate-limited while it lasts).
    fn failed(&mut self, failure: Failure) {
        self.stats.attempt_failed();
        if let Some(f) = &self.faults {
            f.note_failed_attempt();
        }
        let b = &mut self.batch;
        b.failures += 1;
        b.retried = true;
        let now = Instant::now();
        let since = *b.failing_since.get_or_insert(now);
        let ops = b.tokens.len();
        let (why, unknown) = match failure {
            Failure::Lost(why) | Failure::Refused(why) => (why, false),
            Failure::Unknown(why) => (why, true),
        };
        if unknown && !b.maybe_committed {
            b.maybe_committed = true;
            tracing::warn!(
                msg_id = msg_id::OUTCOME_UNKNOWN,
                writer = self.n,
                ops,
                "Database writer {} does not know whether a batch of {ops} writes was committed ({why}): \
                 their answers wait until it is applied again on a new connection",
                self.n
            );
        }
        let log = b.failures <= FAILURES_LOGGED || b.last_logged.is_none_or(|t| now - t >= FAILURE_LOG_INTERVAL);
        if !log {
            return;
        }
        b.last_logged = Some(now);
        let attempt = b.failures;
        let retry = backoff(b.failures);
        tracing::warn!(
            msg_id = msg_id::BATCH_FAILED,
            writer = self.n,
            ops,
            attempt,
            failing_s = (now - since).as_secs(),
            "Database writer {} failed a batch of {ops} writes (attempt {attempt}, failing for {} s): {why}; \
             their answers wait; reconnecting and retrying in {} ms",
            self.n,
            (now - since).as_secs(),
            retry.as_millis()
        );
    }

    /// Answers every op of the committed batch (ok unless refused) and
    /// clears it.
    fn complete_batch(&mut self) {
        let b = &self.batch;
        if b.failures > 0 {
            let secs = b.failing_since.map_or(0.0, |t| t.elapsed().as_secs_f64());
            tracing::info!(
                msg_id = msg_id::BATCH_RECOVERED,
                writer = self.n,
                ops = b.tokens.len(),
                failures = b.failures,
                "Database writer {} committed a batch of {} writes after {} failed attempts ({secs:.1} s)",
                self.n,
                b.tokens.len(),
                b.failures
            );
        }
        if let Some((setup, outbox)) = &self.log {
            let logged = b.events.iter().filter(|(e, _)| !b.coalescer.is_refused(*e as usize)).count() as u64;
            match (logged, setup.direct) {
                (0, _) => {}
                (n, true) => outbox.stored(n),
                (n, false) => outbox.added(n),
            }
        }
        self.answer(
            b.tokens
                .iter()
                .map(|t| (t.shard, t.token, t.entry != REFUSED_BEFORE && !b.coalescer.is_refused(t.entry as usize))),
        );
        self.batch.tokens.clear();
        self.batch.events.clear();
        self.batch.coalescer.clear();
        self.batch.failures = 0;
        self.batch.failing_since = None;
        self.batch.last_logged = None;
        self.batch.retried = false;
        self.batch.maybe_committed = false;
    }

    /// Calls each shard's sink once with its answers.
    fn answer(&self, answers: impl Iterator<Item = (u16, u64, bool)>) {
        let mut per_shard: Vec<Vec<(u64, bool)>> = Vec::new();
        for (shard, token, ok) in answers {
            let s = shard as usize;
            if s >= self.sinks.len() {
                tracing::error!(shard, token, "completion for shard {shard}, which has no sink; dropped");
                continue;
            }
            if per_shard.len() <= s {
                per_shard.resize_with(s + 1, Vec::new);
            }
            per_shard[s].push((token, ok));
        }
        for (s, mut done) in per_shard.into_iter().enumerate() {
            if !done.is_empty() {
                self.sinks[s].complete(&mut done);
            }
        }
    }
}

/// Reuses a vector's allocation for another element lifetime.
fn reuse<'b, T: ?Sized>(mut v: Vec<&T>) -> Vec<&'b T> {
    v.clear();
    v.into_iter().map(|_| unreachable!()).collect()
}

/// The statements of one attempt, before its COMMIT.
fn execute(
    stmts: &mut Statements<'_>,
    data: &mut RowData,
    deletes: &[&str],
    inserts: &[&InteractionRecord],
) -> Result<(), odbc_api::Error> {
    if let Some(json) = &mut stmts.json {
        // Deletes and upserts, each one statement (empty lists send none).
        return json.delete(deletes).and_then(|()| json.upsert(inserts));
    }
    if !deletes.is_empty() {
        stmts.delete(deletes)?;
    }
    if !inserts.is_empty() {
        data.prepare(inserts);
        stmts.insert(inserts, data)?;
    }
    Ok(())
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

    #[test]
    fn backoff_is_bounded() {
        let ms: Vec<u128> = (1..=6).map(|f| backoff(f).as_millis()).collect();
        assert_eq!(ms, vec![50, 200, 800, 1000, 1000, 1000]);
        assert_eq!(backoff(0).as_millis(), 50, "a failed connect before any attempt");
    }
}
