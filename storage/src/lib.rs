//! ixn's durable cache of live interactions.
//!
//! The in-memory shards are authoritative while the server runs; this crate
//! keeps the database copy that a restart loads back. Writes go to batched
//! writer threads (plain std threads, one ODBC connection each) that
//! coalesce the ops of a batch by interaction id, group-commit the batch in
//! one transaction using array parameters, then tell each shard which of
//! its writes are durable. ODBC never runs on an executor thread.
//!
//! ```text
//! executor threads ──submit──▶ crossbeam channel per writer (by id hash)
//!                                   │
//!                      ixn-db-writer-N: take ≤ batch_max (waiting up to
//!                      commit_delay for more when caught up), coalesce,
//!                      DELETEs, INSERTs (upserts on SQLite and
//!                      PostgreSQL), COMMIT
//!                                   │
//!                 CompletionSink (per shard) ◀── (token, ok) for every op
//! ```
//!
//! `ok = false` means the database did not apply the write; a write whose
//! outcome is unknown is answered only once the writer has resolved it
//! (reconnecting and applying its batch again), and a row the database
//! refuses fails alone (the batch is split around it).
//!
//! See docs/storage.md for the schema, the log message ids, the measured
//! figures behind the defaults and the driver facts they rest on.

mod coalesce_impl;
mod conn;
mod event_statements;
pub mod events;
mod faults;
mod json_rows;
mod load;
pub mod log_reader;
pub mod logger;
mod records;
mod schema;
mod statements;
pub mod stats;
mod write_gate;
mod writer;
mod writing;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use ixn_shard::interaction::InteractionRecord;
pub use ixn_shard::machine::StoreOp;

pub use events::{EventFilter, EventLogSetup, EventRow};
pub use faults::Faults;
pub use log_reader::{LogRange, LogReader};
pub use logger::{EventLog, LoggerConfig, Outbox, Shipper};
pub use writer::{WriterHandle, Writers, DEFAULT_SHUTDOWN_LIMIT};
pub(crate) use writing::Writing;

/// The coalescing rules of a writer batch, exposed for tests and tools.
pub mod coalesce {
    pub use crate::coalesce_impl::{Coalescer, Plan};
}

/// Stable numeric ids of the operator log messages this crate writes (the
/// `msg_id` field). docs/storage.md lists them with their meaning.
pub mod msg_id {
    /// New database connection opened (connection ID: N).
    pub const CONNECTION_OPENED: u32 = 27126;
    /// Checking database integrity (connection ID: N).
    pub const CHECKING_INTEGRITY: u32 = 27113;
    /// Database integrity checked: schema version and columns are as expected.
    pub const INTEGRITY_OK: u32 = 27114;
    /// Database schema created from the embedded script.
    pub const SCHEMA_CREATED: u32 = 27140;
    /// SQLite allows one writer: number-of-database-connections forced to 1.
    pub const SQLITE_ONE_WRITER: u32 = 27141;
    /// Database writer started.
    pub const WRITER_STARTED: u32 = 27142;
    /// Database writer stopped.
    pub const WRITER_STOPPED: u32 = 27143;
    /// An attempt of a batch failed (connection lost, outcome unknown); it
    /// is rolled back and retried on a new connection after a backoff;
    /// its answers wait. Rate-limited while the failure lasts.
    pub const BATCH_FAILED: u32 = 27144;
    /// A writer stopped at the shutdown limit without reaching the
    /// database: its batch is left unanswered, writes queued behind it are
    /// answered as failed.
    pub const BATCH_ABANDONED: u32 = 27145;
    /// A batch committed after earlier attempts had failed.
    pub const BATCH_RECOVERED: u32 = 27146;
    /// Opening a database connection failed.
    pub const CONNECTION_FAILED: u32 = 27147;
    /// A write was refused before reaching the database (a field too long,
    /// a NUL character, the writers shut down).
    pub const WRITE_REFUSED: u32 = 27148;
    /// Live interactions loaded from the database.
    pub const LOADED: u32 = 27149;
    /// A database connection was closed.
    pub const CONNECTION_CLOSED: u32 = 27150;
    /// A COMMIT failed or its reply was lost: the batch's outcome is
    /// unknown; its answers wait until it is applied again.
    pub const OUTCOME_UNKNOWN: u32 = 27151;
    /// The database refused a write (a data error while it is reachable):
    /// that write fails, the rest of its batch commits.
    pub const WRITE_REFUSED_BY_DATABASE: u32 = 27152;
    /// A write refused when applied again had been committed by an attempt
    /// whose reply was lost (read back): it succeeds.
    pub const WRITE_FOUND_COMMITTED: u32 = 27153;
    /// A writer did not stop within the shutdown limit (blocked in a
    /// database call); shutdown goes on without it.
    pub const WRITER_NOT_STOPPED: u32 = 27154;
    /// The event log is checked and ready: how many events wait in the
    /// outbox, where they are shipped.
    pub const EVENT_LOG_READY: u32 = 27155;
    /// The event logger could not ship a batch (the event log's database
    /// is unreachable or refused it); the events stay in the outbox and it
    /// retries. Rate-limited while it lasts.
    pub const EVENT_LOG_FAILED: u32 = 27156;
    /// The event logger ships again after failed attempts.
    pub const EVENT_LOG_RECOVERED: u32 = 27157;
    /// The outbox holds more than max-queue-size events (every 30 s while
    /// it does).
    pub const EVENT_LOG_BEHIND: u32 = 27158;
    /// The event logger stopped (what it shipped, what is left for the
    /// next start).
    pub const EVENT_LOG_STOPPED: u32 = 27159;
    /// The event log was read back for a subscriber resuming with a cursor
    /// of an earlier run (how many events).
    pub const EVENT_LOG_READ: u32 = 27160;
    /// Reading the event log back for a resuming subscriber failed, or it
    /// holds more than a resume may send: the subscription is refused (56).
    pub const EVENT_LOG_READ_FAILED: u32 = 27161;
    /// An idle writer's check of its connection failed: it reconnects.
    pub const PROBE_FAILED: u32 = 27162;
}

/// Storage settings (the DAP's `connection-string` and the server's
/// `number-of-database-connections`).
#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// Any ODBC connection string (`DSN=...` or `Driver=...;...`).
    pub connection_string: String,
    /// Writer threads, one connection each (vendor default 5). SQLite takes
    /// one writer at a time, so it forces 1 and logs that.
    pub writers: usize,
    /// Most ops per transaction (default 1000).
    pub batch_max: usize,
    /// Create the tables from storage/sql/<engine>/isdb.sql when the
    /// database has none (the embedded SQLite default; SQLite and
    /// PostgreSQL only).
    pub create_schema: bool,
    /// `None`: the engine's measured default (see [`Engine::default_strategy`]).
    pub insert_strategy: Option<InsertStrategy>,
    /// How long a writer waits, after the first write of a batch that
    /// found nothing queued behind it, for more before it commits (fewer
    /// commits at low load, each such write later by up to this much; a
    /// writer kept busy by the load never waits). Zero (the default):
    /// whatever is queued at once.
    pub commit_delay: Duration,
}

impl StorageConfig {
    /// Defaults for a connection string: 5 writers, 1000 ops per batch, no
    /// schema creation, the engine's insert strategy.
    pub fn new(connection_string: impl Into<String>) -> Self {
        StorageConfig {
            connection_string: connection_string.into(),
            writers: 5,
            batch_max: 1000,
            create_schema: false,
            insert_strategy: None,
            commit_delay: Duration::ZERO,
        }
    }
}

/// How a batch's rows are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertStrategy {
    /// One single-row statement executed with an array of parameter sets.
    Array,
    /// `INSERT ... VALUES (..),(..)` statements prepared for 256, 64, 8 and
    /// 1 rows (`DELETE ... WHERE id IN (..)` likewise), each executed with
    /// one parameter set, as often as the batch needs.
    MultiRow,
    /// The whole batch in one statement of one JSON parameter that the
    /// database expands, changed rows updated in place (SQLite and
    /// PostgreSQL only; see `json_rows.rs`).
    Json,
}

impl InsertStrategy {
    pub fn name(self) -> &'static str {
        match self {
            InsertStrategy::Array => "array",
            InsertStrategy::MultiRow => "multirow",
            InsertStrategy::Json => "json",
        }
    }

    /// Parses `array`, `multirow` or `json` (as `ixn-perf` and configuration spell them).
    pub fn parse(s: &str) -> Option<InsertStrategy> {
        match s.to_ascii_lowercase().as_str() {
            "array" => Some(InsertStrategy::Array),
            "multirow" | "multi-row" => Some(InsertStrategy::MultiRow),
            "json" => Some(InsertStrategy::Json),
            _ => None,
        }
    }
}

/// The database engine, detected from the driver's SQL_DBMS_NAME.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
    MsSql,
    Oracle,
    MariaDb,
    Other(String),
}

impl Engine {
    /// Maps an SQL_DBMS_NAME to an engine.
    pub fn from_dbms_name(name: &str) -> Engine {
        let l = name.to_ascii_lowercase();
        if l.contains("sqlite") {
            Engine::Sqlite
        } else if l.contains("postgres") {
            Engine::Postgres
        } else if l.contains("sql server") {
            Engine::MsSql
        } else if l.contains("oracle") {
            Engine::Oracle
        } else if l.contains("mariadb") || l.contains("mysql") {
            Engine::MariaDb
        } else {
            Engine::Other(name.to_string())
        }
    }

    /// Text put before every writing statement (INSERT, DELETE) the writers
    /// and the event log prepare, so that the engine's ODBC driver compiles
    /// it once, at SQLPrepare, not again at every SQLExecute.
    ///
    /// The SQLite ODBC driver (sqliteodbc) keeps the compiled form only of
    /// the statements it takes for queries: those that begin with SELECT,
    /// PRAGMA, EXPLAIN or WITH. Any other statement it compiles from its
    /// text on every execution (and on every parameter set of an array),
    /// which profiled as most of the writer's time. A common table
    /// expression that nothing reads makes an INSERT or DELETE begin with
    /// WITH, and SQLite runs it exactly as without. `ixn-perf storage
    /// --op upsert` measured 1.6 to 1.8 times the rows per second with
    /// multi-row statements and 6 times with parameter arrays
    /// (docs/storage.md).
    pub fn compile_once_prefix(&self) -> &'static str {
        match self {
            Engine::Sqlite => "WITH ixn_compiled_once AS (SELECT 1) ",
            _ => "",
        }
    }

    /// The `json` strategy's DELETE as this engine is sent it, with its one
    /// parameter (a JSON array of ids); `None` where the strategy is not
    /// available. For tests and tools that look at its plan.
    pub fn json_delete_sql(&self) -> Option<&'static str> {
        match self {
            Engine::Sqlite => Some(json_rows::delete_sql(json_rows::Dialect::Sqlite)),
            Engine::Postgres => Some(json_rows::delete_sql(json_rows::Dialect::Postgres)),
            _ => None,
        }
    }

    /// Folder of this engine's scripts under storage/sql/.
    pub fn script_dir(&self) -> &str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgresql",
            Engine::MsSql => "mssql",
            Engine::Oracle => "oracle",
            Engine::MariaDb => "mariadb",
            Engine::Other(_) => "<engine>",
        }
    }

    /// The faster strategy as measured with `ixn-perf storage` (figures in
    /// docs/storage.md): SQLite multirow (json is about 40 % slower there:
    /// SQLite 3.40 extracts each column from the row's JSON text apart),
    /// PostgreSQL json (jsonb expands the batch once; 6-12 % ahead of
    /// multirow, one statement per batch); Array where nothing was measured.
    pub fn default_strategy(&self) -> InsertStrategy {
        match self {
            Engine::Sqlite => InsertStrategy::MultiRow,
            Engine::Postgres => InsertStrategy::Json,
            _ => InsertStrategy::Array,
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Engine::Sqlite => f.write_str("SQLite"),
            Engine::Postgres => f.write_str("PostgreSQL"),
            Engine::MsSql => f.write_str("Microsoft SQL Server"),
            Engine::Oracle => f.write_str("Oracle"),
            Engine::MariaDb => f.write_str("MariaDB"),
            Engine::Other(n) => f.write_str(n),
        }
    }
}

/// What went wrong, as a sentence an operator can act on.
#[derive(Debug)]
pub struct StorageError {
    pub message: String,
}

impl StorageError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        StorageError { message: message.into() }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StorageError {}

/// Where the storage layer reports finished writes.
///
/// Every write submitted completes exactly once, as `(token, ok)`:
/// `ok = true` when the database holds it, `ok = false` only when the
/// database definitely did not apply it. A write whose outcome is unknown
/// (a COMMIT whose reply was lost, a database gone away) is not completed
/// until the writer has resolved it, however long that takes, except that a
/// shutdown past its limit leaves it uncompleted (docs/storage.md, "What
/// an answer means").
pub trait CompletionSink: Send + Sync + 'static {
    /// Called on a writer thread after each transaction with (token, ok) for
    /// this sink's shard; drain the vec. Also called on the submitting
    /// thread, with ok=false, for a write submitted after
    /// [`Writers::shutdown`] began.
    fn complete(&self, done: &mut Vec<(u64, bool)>);
}

/// One write for the writer threads; `token` comes back in the completion.
#[derive(Debug)]
pub struct WriteRequest {
    pub shard: u16,
    pub token: u64,
    pub op: StoreOp,
    /// Events written to the event log's outbox in the same transaction
    /// (empty while the event log is off).
    pub log: Vec<std::sync::Arc<ixn_shard::report::Published>>,
}

/// The ODBC connection string of the embedded SQLite database at `path`.
///
/// WAL journal, `synchronous=FULL`: a commit is fsynced before the writer
/// completes its tokens, so an acknowledged write survives `kill -9` and a
/// power cut. Timeout is SQLite's busy timeout in ms.
///
/// The SQLite ODBC driver reads `Database=` verbatim up to the next `;`
/// (it does not understand `{...}` quoting), so `path` must not contain
/// `;`: [`Storage::open`] then fails naming the truncated path.
pub fn sqlite_connection_string(path: &Path) -> String {
    // StepAPI=1: the driver reads results row by row. Without it, it reads a
    // whole result into C heap memory first: loading a million interactions
    // at start then left the process about 450 MiB larger (measured with
    // bench/backlog-report.sh), and took longer.
    format!(
        "Driver=SQLite3;Database={};JournalMode=WAL;SyncPragma=FULL;Timeout=10000;StepAPI=1;",
        path.to_string_lossy()
    )
}

/// An open, validated database: the first connection, kept for loading and
/// then handed to the first writer.
pub struct Storage {
    cfg: StorageConfig,
    engine: Engine,
    strategy: InsertStrategy,
    writers: usize,
    target: String,
    conn: odbc_api::Connection<'static>,
    conn_id: u64,
    faults: Option<Arc<Faults>>,
    log: Option<(Arc<EventLogSetup>, Arc<Outbox>)>,
    /// Shared by the writer and the event log's shipper (SQLite).
    gate: write_gate::WriteGate,
}

impl Storage {
    /// Connects, detects the engine, creates the schema (if asked and the
    /// database has none) and validates it.
    pub fn open(cfg: StorageConfig) -> Result<Storage, StorageError> {
        let target = conn::describe_target(&cfg.connection_string);
        let (conn, conn_id) = conn::connect(&cfg.connection_string, &target)?;
        let dbms = conn.database_management_system_name().map_err(|e| {
            StorageError::new(format!("could not ask the database at {target} for its name: {}", conn::diag(&e)))
        })?;
        let engine = Engine::from_dbms_name(&dbms);
        schema::ensure(&conn, conn_id, &engine, &target, cfg.create_schema)?;
        if engine == Engine::Postgres {
            // Before loading: no transaction of a killed predecessor may
            // still commit behind our back.
            conn::wait_for_previous_writers(&conn, &target)?;
        }
        let mut writers = cfg.writers.max(1);
        if engine == Engine::Sqlite && writers != 1 {
            tracing::info!(
                msg_id = msg_id::SQLITE_ONE_WRITER,
                configured = writers,
                "SQLite takes one writer at a time: using 1 database writer instead of the {writers} configured"
            );
            writers = 1;
        }
        let strategy = cfg.insert_strategy.unwrap_or_else(|| engine.default_strategy());
        if strategy == InsertStrategy::Json && json_rows::Dialect::of(&engine).is_none() {
            return Err(StorageError::new(format!(
                "insert-strategy \"json\" is written for SQLite and PostgreSQL only, not {engine}: use \"array\" or \"multirow\""
            )));
        }
        let gate = write_gate::WriteGate::for_engine(&engine);
        Ok(Storage { cfg, engine, strategy, writers, target, conn, conn_id, faults: None, log: None, gate })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The insert strategy the writers will use.
    pub fn insert_strategy(&self) -> InsertStrategy {
        self.strategy
    }

    /// Number of writer threads [`Storage::start`] will run.
    pub fn writer_count(&self) -> usize {
        self.writers
    }

    /// Every row of the interactions table.
    pub fn load_live(&self) -> Result<Vec<InteractionRecord>, StorageError> {
        load::load_live(&self.conn, &self.target)
    }

    /// For tests: the writers [`Storage::start`] runs meet the faults set
    /// on `faults` (a lost COMMIT reply, failing connection attempts).
    pub fn inject_faults(&mut self, faults: Arc<Faults>) {
        self.faults = Some(faults);
    }

    /// Turns the event log on: checks the outbox here (creating it with
    /// the schema when this database's schema is created) and the eldb
    /// tables where `cfg` says, and makes the writers store every event of
    /// a write with it: in the event log's tables when they are in this
    /// database, else in the outbox. Start the returned log's shipper once
    /// the writers run.
    pub fn enable_event_log(
        &mut self,
        cfg: LoggerConfig,
        catalog: Arc<ixn_shard::versioned::Versioned<ixn_shard::catalog::Catalog>>,
        generation: u64,
    ) -> Result<EventLog, StorageError> {
        let log = EventLog::open(
            cfg,
            &self.conn,
            &self.cfg.connection_string,
            &self.target,
            &self.engine,
            self.cfg.create_schema,
            self.gate.clone(),
        )?;
        let setup = EventLogSetup { catalog, generation, filter: log.filter().clone(), direct: log.is_direct() };
        self.log = Some((Arc::new(setup), log.outbox()));
        Ok(log)
    }

    /// Starts the writer threads; `sinks[i]` receives completions for shard i.
    pub fn start(self, sinks: Vec<Arc<dyn CompletionSink>>) -> Result<Writers, StorageError> {
        writer::start(
            writer::Setup {
                connection_string: self.cfg.connection_string,
                target: self.target,
                engine: self.engine,
                strategy: self.strategy,
                writers: self.writers,
                batch_max: self.cfg.batch_max.max(1),
                commit_delay: self.cfg.commit_delay,
                first: (self.conn, self.conn_id),
                faults: self.faults,
                log: self.log,
                gate: self.gate,
            },
            sinks,
        )
    }
}
