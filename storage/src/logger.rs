//! The Event Logger: where the events of committed changes are stored.
//!
//! When the event log is the main database (`[logger-settings]` without a
//! `connection-string` of another database), the writers insert every
//! change's events into `rpt_interaction` / `rpt_agent` in the same
//! transaction as the change (writer.rs, [`EventSink`]), and nothing
//! else is needed: an event is stored if and only if its change
//! committed. This thread then only ships what an earlier run left in the
//! outbox (a run that logged to another database, or one killed before it
//! shipped), and ends.
//!
//! When the event log is another database, every change's events are
//! written to `ixn_event_outbox` in the main database in the same
//! transaction as the change, and this thread, `ixn-event-logger`, moves
//! them in batches to `rpt_interaction` and `rpt_agent` there and deletes
//! them from the outbox: it inserts and commits in the event log, then
//! deletes and commits in the main one. A crash between the two leaves
//! shipped rows in the outbox; the next batch after a start or a failure
//! deletes each key in the event log before inserting it, so a row is
//! never stored twice. (Leftovers in the main database itself move in one
//! transaction: insert and delete.)
//!
//! While the event log's database is down the outbox grows (the writers
//! never wait for the event log) and nothing is lost: the thread retries
//! with a backoff and logs the outage, rate-limited. The outbox is bounded
//! by `max-queue-size`: past it the server refuses new submissions (the
//! executors read [`Outbox::backlog`]), and this thread warns.
//!
//! [`EventSink`]: crate::event_statements::EventSink

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use odbc_api::{Connection, Cursor, CursorRow, Nullable};

use crate::conn::{self, diag};
use crate::event_statements::EventTable;
use crate::events::{Col, EventFilter, EventRow, Kind, AGENT_COLUMNS, ALL_COLUMNS, EVENT_COLUMNS};
use crate::write_gate::WriteGate;
use crate::Writing;
use crate::{msg_id, Engine, StorageError};

/// `[logger-settings]`.
#[derive(Clone, Debug)]
pub struct LoggerConfig {
    /// The event log's database; `None`: the main database.
    pub connection_string: Option<String>,
    /// Most events shipped per transaction (vendor default 500).
    pub batch_size: usize,
    /// How long events wait for a batch to fill before they are shipped
    /// anyway (vendor default 1000 ms).
    pub storing_timeout: Duration,
    /// The outbox's bound: with this many events waiting, new submissions
    /// are refused (error 52) and the server warns.
    pub max_queue_size: u64,
    /// Which events are logged.
    pub filter: EventFilter,
    /// Create the eldb tables when the event log's database has none (the
    /// embedded SQLite default).
    pub create_schema: bool,
}

impl LoggerConfig {
    pub fn new() -> Self {
        LoggerConfig {
            connection_string: None,
            batch_size: 500,
            storing_timeout: Duration::from_millis(1000),
            max_queue_size: 1_000_000,
            filter: EventFilter::default(),
            create_schema: false,
        }
    }
}

impl Default for LoggerConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// The outbox's counters, shared by the writers and the shipper: ready to
/// be read as metrics.
#[derive(Debug)]
pub struct Outbox {
    /// Events in the outbox, as far as this process knows (counted at
    /// start, then added by commits and taken off by shipments). Signed:
    /// a writer counts its events just after its commit, so the shipper
    /// may take them off first, for a moment below zero.
    backlog: AtomicI64,
    /// Events stored in the event log since the start (shipped from the
    /// outbox, or stored with their change).
    shipped: AtomicU64,
    /// Wakes the shipper after a commit added events.
    nudge: Sender<()>,
}

impl Outbox {
    /// A commit put `n` events in the outbox.
    pub(crate) fn added(&self, n: u64) {
        self.backlog.fetch_add(n as i64, Ordering::Relaxed);
        let _ = self.nudge.try_send(());
    }

    /// A commit stored `n` events in the event log itself (the event log
    /// is the main database): nothing waits.
    pub(crate) fn stored(&self, n: u64) {
        self.shipped.fetch_add(n, Ordering::Relaxed);
    }

    /// Events waiting in the outbox.
    pub fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed).max(0) as u64
    }

    /// Events stored in the event log since the start (shipped from the
    /// outbox, or stored with their change).
    pub fn shipped(&self) -> u64 {
        self.shipped.load(Ordering::Relaxed)
    }

    fn took(&self, n: u64) {
        self.backlog.fetch_sub(n as i64, Ordering::Relaxed);
        self.shipped.fetch_add(n, Ordering::Relaxed);
    }
}

/// Where the shipper's connections go.
struct Target {
    connection_string: String,
    target: String,
    engine: Engine,
}

/// The event log, checked and ready to start.
pub struct EventLog {
    cfg: LoggerConfig,
    main: Target,
    /// `None`: the main database.
    log: Option<Target>,
    outbox: Arc<Outbox>,
    nudged: Receiver<()>,
    /// Taken around every write to the main database (SQLite: shared with
    /// the writer).
    gate: WriteGate,
}

impl EventLog {
    /// Checks the outbox in the main database (creating it where the main
    /// schema is created) and the eldb tables in the event log's, and
    /// counts what the outbox holds.
    pub(crate) fn open(
        cfg: LoggerConfig,
        main_conn: &Connection<'static>,
        main_cs: &str,
        main_target: &str,
        main_engine: &Engine,
        create_main: bool,
        gate: WriteGate,
    ) -> Result<EventLog, StorageError> {
        crate::schema::ensure_outbox(main_conn, main_engine, main_target, create_main)?;
        let log = match &cfg.connection_string {
            Some(cs) if cs != main_cs => {
                let target = conn::describe_target(cs);
                let (c, _) = conn::connect_log(cs, &target)?;
                let dbms = c.database_management_system_name().map_err(|e| {
                    StorageError::new(format!(
                        "could not ask the event log database at {target} for its name: {}",
                        diag(&e)
                    ))
                })?;
                let engine = Engine::from_dbms_name(&dbms);
                crate::schema::ensure_eldb(&c, &engine, &target, cfg.create_schema)?;
                Some(Target { connection_string: cs.clone(), target, engine })
            }
            _ => {
                crate::schema::ensure_eldb(main_conn, main_engine, main_target, cfg.create_schema || create_main)?;
                None
            }
        };
        let waiting = count_outbox(main_conn).map_err(|d| {
            StorageError::new(format!("could not count the events in ixn_event_outbox at {main_target}: {d}"))
        })?;
        let (nudge, nudged) = crossbeam_channel::bounded(1);
        let outbox = Arc::new(Outbox { backlog: AtomicI64::new(waiting as i64), shipped: AtomicU64::new(0), nudge });
        match &log {
            Some(l) => tracing::info!(
                msg_id = msg_id::EVENT_LOG_READY,
                waiting,
                target = l.target.as_str(),
                "Event log ready: {waiting} event(s) waiting in the outbox, shipping to {}",
                l.target
            ),
            None => tracing::info!(
                msg_id = msg_id::EVENT_LOG_READY,
                waiting,
                target = main_target,
                "Event log ready: events are stored in the main database with their changes; {waiting} event(s) \
                 an earlier run left in the outbox are shipped first"
            ),
        }
        let main = Target {
            connection_string: main_cs.to_string(),
            target: main_target.to_string(),
            engine: main_engine.clone(),
        };
        Ok(EventLog { cfg, main, log, outbox, nudged, gate })
    }

    /// Whether the event log is the main database, whose writers store
    /// the events themselves (the outbox then only holds what an earlier
    /// run left).
    pub fn is_direct(&self) -> bool {
        self.log.is_none()
    }

    /// Whether the thread ships what the outbox holds and ends when it is
    /// empty, without waiting for batches to fill: at shutdown (a
    /// deadline), and always when the writers store the events themselves
    /// (only an earlier run's leftovers are there).
    fn draining(&self, deadline: &Option<Instant>) -> bool {
        deadline.is_some() || self.is_direct()
    }

    /// The outbox's counters (for the writers and for metrics).
    pub fn outbox(&self) -> Arc<Outbox> {
        self.outbox.clone()
    }

    pub(crate) fn filter(&self) -> &EventFilter {
        &self.cfg.filter
    }

    /// Starts the shipper thread.
    pub fn start(self) -> Result<Shipper, StorageError> {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let outbox = self.outbox.clone();
        let t = std::thread::Builder::new()
            .name("ixn-event-logger".into())
            .spawn(move || self.run(stop_rx))
            .map_err(|e| StorageError::new(format!("could not start the event logger thread: {e}")))?;
        Ok(Shipper { thread: t, stop: stop_tx, outbox })
    }

    fn run(self, stop: Receiver<Instant>) {
        let mut state =
            ShipState { may_exist: true, failures: 0, last_logged: None, failing_since: None, warned: None };
        let mut deadline: Option<Instant> = None;
        loop {
            match self.session(&mut state, &stop, &mut deadline) {
                Ok(()) => break,
                Err(why) => {
                    state.failed(&why, &self.outbox);
                    state.check_backlog(&self.outbox, self.cfg.max_queue_size);
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let wait = backoff(state.failures);
                    match stop.recv_timeout(wait) {
                        Ok(d) => deadline = Some(d),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => {}
                    }
                }
            }
        }
        let left = self.outbox.backlog();
        if self.is_direct() && deadline.is_none() {
            tracing::info!(
                msg_id = msg_id::EVENT_LOG_STOPPED,
                shipped = self.outbox.shipped(),
                "Event logger stopped: the outbox is empty (what an earlier run left in it is shipped) and the \
                 writers store every event with its change"
            );
            return;
        }
        tracing::info!(
            msg_id = msg_id::EVENT_LOG_STOPPED,
            shipped = self.outbox.shipped(),
            left,
            "Event logger stopped: {} event(s) shipped, {left} left in the outbox for the next start",
            self.outbox.shipped()
        );
    }

    /// Ships over one pair of connections until stopped (Ok) or a failure.
    fn session(
        &self,
        st: &mut ShipState,
        stop: &Receiver<Instant>,
        deadline: &mut Option<Instant>,
    ) -> Result<(), String> {
        let (main, main_id) =
            conn::connect_quietly(&self.main.connection_string, &self.main.target).map_err(|e| e.message)?;
        let other = match &self.log {
            Some(l) => Some(conn::connect_log(&l.connection_string, &l.target).map_err(|e| e.message)?),
            None => None,
        };
        let result = self.ship_on(&main, other.as_ref().map(|(c, _)| c), st, stop, deadline);
        let _ = main.rollback();
        drop(main);
        conn::log_closed(main_id);
        if let Some((c, id)) = other {
            let _ = c.rollback();
            drop(c);
            conn::log_closed(id);
        }
        result
    }

    fn ship_on(
        &self,
        main: &Connection<'static>,
        other: Option<&Connection<'static>>,
        st: &mut ShipState,
        stop: &Receiver<Instant>,
        deadline: &mut Option<Instant>,
    ) -> Result<(), String> {
        if self.main.engine == Engine::Sqlite {
            // The shipper's commits in the main database (outbox rows
            // deleted, leftovers moved) need not reach the disk at once:
            // one a power failure loses puts its events back in the outbox,
            // and they are shipped again (the first batch after a start
            // deletes each key in the event log before inserting it). In
            // WAL mode the writer's next commit, synced, makes them durable
            // too. A sync per shipment held the database's write lock (and
            // the gate) as long as a writer's commit.
            main.execute("PRAGMA synchronous = OFF", (), None).map_err(|e| diag(&e))?;
        }
        main.set_autocommit(false).map_err(|e| diag(&e))?;
        let log_conn = other.unwrap_or(main);
        if other.is_some() {
            log_conn.set_autocommit(false).map_err(|e| diag(&e))?;
        }
        if other.is_none() && moves_in_database(&self.main.engine) {
            return self.move_in_database(main, st, stop, deadline);
        }
        let log_engine = self.log.as_ref().map_or(&self.main.engine, |l| &l.engine);
        let outbox_conn = Writing::new(main, &self.main.engine);
        let log_writing = Writing::new(log_conn, log_engine);
        let mut outbox = EventTable::new(outbox_conn, "ixn_event_outbox", &ALL_COLUMNS);
        let mut interactions = EventTable::new(log_writing, "rpt_interaction", &ALL_COLUMNS);
        let mut agents = EventTable::new(log_writing, "rpt_agent", &AGENT_COLUMNS);
        let select = select_sql(&self.main.engine, self.cfg.batch_size);
        loop {
            let rows = read_outbox(main, &select).map_err(|d| format!("reading the outbox: {d}"))?;
            // The reading transaction ends here: a long one would hold
            // SQLite's WAL and PostgreSQL's snapshot.
            main.commit().map_err(|e| diag(&e))?;
            if rows.is_empty() {
                if self.draining(deadline) {
                    return Ok(());
                }
                self.wait(stop, deadline);
                continue;
            }
            let keys: Vec<(i64, i64, i64)> = rows.iter().map(EventRow::key).collect();
            let (ag, ix): (Vec<&EventRow>, Vec<&EventRow>) = rows.iter().partition(|r| r.is_agent_event());
            if st.may_exist {
                let keys_of = |rows: &[&EventRow]| rows.iter().map(|r| r.key()).collect::<Vec<_>>();
                interactions.delete(&keys_of(&ix)).map_err(|e| diag(&e))?;
                agents.delete(&keys_of(&ag)).map_err(|e| diag(&e))?;
            }
            interactions.insert(&ix).map_err(|e| format!("storing events: {}", diag(&e)))?;
            agents.insert(&ag).map_err(|e| format!("storing events: {}", diag(&e)))?;
            if other.is_some() {
                log_conn.commit().map_err(|e| format!("committing to the event log: {}", diag(&e)))?;
            }
            // The main database's write, to its COMMIT, under the gate.
            let gate = self.gate.enter();
            outbox.delete(&keys).map_err(|e| format!("deleting shipped events from the outbox: {}", diag(&e)))?;
            main.commit().map_err(|e| format!("committing the outbox: {}", diag(&e)))?;
            drop(gate);
            st.shipped(rows.len() as u64, &self.outbox);
            st.check_backlog(&self.outbox, self.cfg.max_queue_size);
            if rows.len() < self.cfg.batch_size && !self.draining(deadline) {
                self.wait(stop, deadline);
            }
        }
    }

    /// The event log in the main database, on an engine whose transaction
    /// sees one state of the outbox throughout: each batch moves inside
    /// the database, `INSERT ... SELECT` into both tables and a DELETE of
    /// the same keys (at most the oldest `batch-size`, bounded by the
    /// batch's last key), in one transaction. Nothing crosses the
    /// connection but the bound and the count.
    fn move_in_database(
        &self,
        main: &Connection<'static>,
        st: &mut ShipState,
        stop: &Receiver<Instant>,
        deadline: &mut Option<Instant>,
    ) -> Result<(), String> {
        let bound_sql = bound_sql(&self.main.engine, self.cfg.batch_size);
        let last_sql =
            "SELECT generation, shard, seq FROM ixn_event_outbox ORDER BY generation DESC, shard DESC, seq DESC";
        if self.main.engine == Engine::Postgres {
            // The INSERTs and the DELETE see one snapshot: an event that
            // commits meanwhile (another writer, a lower key) is neither
            // copied nor deleted, and goes with a later batch.
            main.execute("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ", (), None)
                .map_err(|e| diag(&e))?;
        }
        loop {
            // The batch's last key: the batch-size-th oldest, or the newest.
            let bound = match read_key(main, &bound_sql)? {
                Some(k) => Some(k),
                None => read_key(main, last_sql)?,
            };
            // The moving transaction starts with its first write (SQLite
            // then holds the write lock from the first statement on).
            main.commit().map_err(|e| diag(&e))?;
            let Some((g, s, q)) = bound else {
                if self.draining(deadline) {
                    return Ok(());
                }
                self.wait(stop, deadline);
                continue;
            };
            let upto = format!("(generation, shard, seq) <= ({g}, {s}, {q})");
            let gate = self.gate.enter();
            let cols = EVENT_COLUMNS.join(", ");
            let agent_cols: Vec<&str> = AGENT_COLUMNS.iter().map(|c| c.name()).collect();
            let agent_cols = agent_cols.join(", ");
            let statements = [
                format!(
                    "INSERT INTO rpt_interaction ({cols}) SELECT {cols} FROM ixn_event_outbox \
                     WHERE interaction_id IS NOT NULL AND {upto}"
                ),
                format!(
                    "INSERT INTO rpt_agent ({agent_cols}) SELECT {agent_cols} FROM ixn_event_outbox \
                     WHERE interaction_id IS NULL AND {upto}"
                ),
            ];
            for sql in &statements {
                main.execute(sql, (), None).map_err(|e| format!("storing events: {}", diag(&e)))?;
            }
            let mut del = main.preallocate().map_err(|e| diag(&e))?;
            del.execute(&format!("DELETE FROM ixn_event_outbox WHERE {upto}"), ())
                .map_err(|e| format!("deleting shipped events from the outbox: {}", diag(&e)))?;
            let moved = del.row_count().map_err(|e| diag(&e))?.unwrap_or(0);
            drop(del);
            main.commit().map_err(|e| format!("committing the event log: {}", diag(&e)))?;
            drop(gate);
            st.shipped(moved as u64, &self.outbox);
            st.check_backlog(&self.outbox, self.cfg.max_queue_size);
            if moved < self.cfg.batch_size && !self.draining(deadline) {
                self.wait(stop, deadline);
            }
        }
    }

    /// Waits for a batch to fill: until the writers have added a whole
    /// batch, or storing-timeout has passed, or a stop.
    fn wait(&self, stop: &Receiver<Instant>, deadline: &mut Option<Instant>) {
        let until = Instant::now() + self.cfg.storing_timeout;
        loop {
            if self.outbox.backlog() >= self.cfg.batch_size as u64 {
                return;
            }
            let now = Instant::now();
            if now >= until {
                return;
            }
            crossbeam_channel::select! {
                recv(stop) -> d => {
                    if let Ok(d) = d {
                        *deadline = Some(d);
                    }
                    return;
                }
                recv(self.nudged) -> _ => {}
                default(until - now) => return,
            }
        }
    }
}

/// What the shipper remembers across attempts.
struct ShipState {
    /// Rows of the next batch may be in the event log already (after a
    /// start, or a failure between the two commits): delete them first.
    may_exist: bool,
    failures: u32,
    failing_since: Option<Instant>,
    last_logged: Option<Instant>,
    /// When the outbox was last reported over max-queue-size.
    warned: Option<Instant>,
}

impl ShipState {
    fn failed(&mut self, why: &str, outbox: &Outbox) {
        self.may_exist = true;
        self.failures += 1;
        let now = Instant::now();
        let since = *self.failing_since.get_or_insert(now);
        if self.failures > 4 && self.last_logged.is_some_and(|t| now - t < Duration::from_secs(30)) {
            return;
        }
        self.last_logged = Some(now);
        let waiting = outbox.backlog();
        tracing::warn!(
            msg_id = msg_id::EVENT_LOG_FAILED,
            attempt = self.failures,
            failing_s = (now - since).as_secs(),
            waiting,
            "Event logger could not ship events (attempt {}, failing for {} s): {why}; {waiting} event(s) wait in \
             the outbox, none is lost; retrying",
            self.failures,
            (now - since).as_secs()
        );
    }

    fn shipped(&mut self, n: u64, outbox: &Outbox) {
        outbox.took(n);
        self.may_exist = false;
        if self.failures > 0 {
            let secs = self.failing_since.map_or(0, |t| t.elapsed().as_secs());
            tracing::info!(
                msg_id = msg_id::EVENT_LOG_RECOVERED,
                failures = self.failures,
                "Event logger is shipping again after {} failed attempts ({secs} s); {} event(s) wait in the outbox",
                self.failures,
                outbox.backlog()
            );
        }
        self.failures = 0;
        self.failing_since = None;
        self.last_logged = None;
    }

    fn check_backlog(&mut self, outbox: &Outbox, max: u64) {
        let waiting = outbox.backlog();
        if waiting < max {
            self.warned = None;
            return;
        }
        let now = Instant::now();
        if self.warned.is_some_and(|t| now - t < Duration::from_secs(30)) {
            return;
        }
        self.warned = Some(now);
        tracing::warn!(
            msg_id = msg_id::EVENT_LOG_BEHIND,
            waiting,
            max,
            "Event log outbox holds {waiting} events, max-queue-size is {max}: the event log falls behind; new \
             submissions are refused until it drains"
        );
    }
}

/// The shipper's waits between failed attempts: 100 ms doubling to 3.2 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100u64 << (failures.clamp(1, 6) - 1))
}

/// The running shipper.
pub struct Shipper {
    thread: JoinHandle<()>,
    stop: Sender<Instant>,
    outbox: Arc<Outbox>,
}

impl Shipper {
    /// Ships what the outbox holds until it is empty or `limit` has
    /// passed, then stops; what is left is shipped after the next start.
    pub fn shutdown_within(self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let _ = self.stop.send(deadline);
        while !self.thread.is_finished() {
            if Instant::now() >= deadline + Duration::from_secs(1) {
                tracing::warn!(
                    msg_id = msg_id::EVENT_LOG_STOPPED,
                    "Event logger did not stop within the shutdown limit (blocked in a database call); not waiting for it"
                );
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.thread.join();
        self.outbox.backlog() == 0
    }

    pub fn outbox(&self) -> Arc<Outbox> {
        self.outbox.clone()
    }
}

fn count_outbox(conn: &Connection<'static>) -> Result<u64, String> {
    let cursor = conn.execute("SELECT COUNT(*) FROM ixn_event_outbox", (), None).map_err(|e| diag(&e))?;
    let Some(mut cursor) = cursor else { return Ok(0) };
    let Some(mut row) = cursor.next_row().map_err(|e| diag(&e))? else { return Ok(0) };
    let mut v = Nullable::<i64>::null();
    row.get_data(1, &mut v).map_err(|e| diag(&e))?;
    Ok(v.into_opt().unwrap_or(0).max(0) as u64)
}

/// Whether a batch can move inside the main database: engines whose
/// transaction sees one state of the outbox from its first write to its
/// commit (SQLite: one writer at a time; PostgreSQL: the shipper's
/// transaction is REPEATABLE READ) and that compare row values.
fn moves_in_database(engine: &Engine) -> bool {
    matches!(engine, Engine::Sqlite | Engine::Postgres)
}

/// The key of the `n`-th oldest event of the outbox (none if fewer).
fn bound_sql(engine: &Engine, n: usize) -> String {
    let order = "ORDER BY generation, shard, seq";
    match engine {
        Engine::MsSql => format!(
            "SELECT generation, shard, seq FROM ixn_event_outbox {order} OFFSET {} ROWS FETCH NEXT 1 ROWS ONLY",
            n - 1
        ),
        Engine::Oracle => format!(
            "SELECT generation, shard, seq FROM ixn_event_outbox {order} OFFSET {} ROWS FETCH NEXT 1 ROWS ONLY",
            n - 1
        ),
        _ => format!("SELECT generation, shard, seq FROM ixn_event_outbox {order} LIMIT 1 OFFSET {}", n - 1),
    }
}

/// The first row of `sql`, a key.
fn read_key(conn: &Connection<'static>, sql: &str) -> Result<Option<(i64, i64, i64)>, String> {
    let Some(mut cursor) = conn.execute(sql, (), None).map_err(|e| diag(&e))? else { return Ok(None) };
    let Some(mut row) = cursor.next_row().map_err(|e| diag(&e))? else { return Ok(None) };
    let mut k = [0i64; 3];
    for (i, v) in k.iter_mut().enumerate() {
        let mut n = Nullable::<i64>::null();
        row.get_data(i as u16 + 1, &mut n).map_err(|e| diag(&e))?;
        *v = n.into_opt().unwrap_or(0);
    }
    Ok(Some((k[0], k[1], k[2])))
}

/// The oldest `n` events of the outbox, in key order.
fn select_sql(engine: &Engine, n: usize) -> String {
    first_rows_sql(engine, &ALL_COLUMNS, "ixn_event_outbox", None, n)
}

/// The SELECT of the first `n` rows of an event table in key order (that
/// meet `condition`, if given), in the engine's way of limiting rows.
pub(crate) fn first_rows_sql(engine: &Engine, cols: &[Col], table: &str, condition: Option<&str>, n: usize) -> String {
    let cols = cols.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ");
    let filter = condition.map(|c| format!(" WHERE {c}")).unwrap_or_default();
    let order = "ORDER BY generation, shard, seq";
    match engine {
        Engine::MsSql => format!("SELECT TOP {n} {cols} FROM {table}{filter} {order}"),
        Engine::Oracle => format!("SELECT {cols} FROM {table}{filter} {order} FETCH FIRST {n} ROWS ONLY"),
        _ => format!("SELECT {cols} FROM {table}{filter} {order} LIMIT {n}"),
    }
}

fn read_outbox(conn: &Connection<'static>, sql: &str) -> Result<Vec<EventRow>, String> {
    read_rows(conn, sql, &ALL_COLUMNS)
}

/// Every row `sql` (a SELECT of `cols`, in that order) gives.
pub(crate) fn read_rows(conn: &Connection<'_>, sql: &str, cols: &[Col]) -> Result<Vec<EventRow>, String> {
    let mut out = Vec::new();
    let Some(mut cursor) = conn.execute(sql, (), None).map_err(|e| diag(&e))? else { return Ok(out) };
    let mut buf = Vec::with_capacity(512);
    while let Some(mut row) = cursor.next_row().map_err(|e| diag(&e))? {
        out.push(read_row(&mut row, &mut buf, cols)?);
    }
    Ok(out)
}

/// One row of a SELECT of `cols` (in that order).
pub(crate) fn read_row(row: &mut CursorRow<'_>, buf: &mut Vec<u8>, cols: &[Col]) -> Result<EventRow, String> {
    let mut r = EventRow::keyed(0, 0, 0);
    for (i, &c) in cols.iter().enumerate() {
        let n = (i + 1) as u16;
        match c.kind() {
            Kind::Int | Kind::NullInt => {
                let mut v = Nullable::<i64>::null();
                row.get_data(n, &mut v).map_err(|e| format!("{}: {}", c.name(), diag(&e)))?;
                r.set_int(c, v.into_opt());
            }
            Kind::Text(_) | Kind::LongText => {
                buf.clear();
                let present = row.get_text(n, buf).map_err(|e| format!("{}: {}", c.name(), diag(&e)))?;
                let s = if present {
                    Some(std::str::from_utf8(buf).map_err(|_| format!("{} is not UTF-8 text", c.name()))?)
                } else {
                    None
                };
                if c == Col::Details {
                    r.details = s.map(Into::into);
                } else {
                    r.set_text(c, s);
                }
            }
        }
    }
    Ok(r)
}

/// Every row of an event log table (`rpt_interaction` or `rpt_agent`), in
/// key order: for checks and tools.
pub fn read_event_log(connection_string: &str, agents: bool) -> Result<Vec<EventRow>, StorageError> {
    let target = conn::describe_target(connection_string);
    let (c, _) = conn::connect(connection_string, &target)?;
    let (table, cols): (&str, &[Col]) =
        if agents { ("rpt_agent", &AGENT_COLUMNS) } else { ("rpt_interaction", &ALL_COLUMNS) };
    let names: Vec<&str> = cols.iter().map(|c| c.name()).collect();
    let sql = format!("SELECT {} FROM {table} ORDER BY generation, shard, seq", names.join(", "));
    read_rows(&c, &sql, cols).map_err(|d| StorageError::new(format!("could not read {table} at {target}: {d}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbox_is_read_oldest_first_in_batches() {
        let s = select_sql(&Engine::Sqlite, 500);
        assert!(s.starts_with("SELECT generation, shard, seq, event_time, event_type, tenant, interaction_id,"));
        assert!(s.ends_with("FROM ixn_event_outbox ORDER BY generation, shard, seq LIMIT 500"), "{s}");
        assert!(select_sql(&Engine::MsSql, 7).starts_with("SELECT TOP 7 generation"));
        assert!(select_sql(&Engine::Oracle, 7).ends_with("FETCH FIRST 7 ROWS ONLY"));
    }

    /// A writer counts its events just after its commit; the shipper may
    /// ship them first. The count must come out right either way (it
    /// stayed one too high when taking off clamped at zero).
    #[test]
    fn the_backlog_counts_right_when_events_are_shipped_before_they_are_counted() {
        let (nudge, _rx) = crossbeam_channel::bounded(1);
        let o = Outbox { backlog: AtomicI64::new(0), shipped: AtomicU64::new(0), nudge };
        o.took(3);
        assert_eq!(o.backlog(), 0, "never shown below zero");
        o.added(3);
        assert_eq!((o.backlog(), o.shipped()), (0, 3));
        o.added(5);
        o.took(2);
        assert_eq!(o.backlog(), 3);
    }

    #[test]
    fn backoff_is_bounded() {
        let ms: Vec<u128> = (0..9).map(|f| backoff(f).as_millis()).collect();
        assert_eq!(ms, vec![100, 100, 200, 400, 800, 1600, 3200, 3200, 3200]);
    }
}
