//! ixn-perf: component benchmarks.
//!
//! `ixn-perf storage`: the storage ceiling. Drives the storage crate's
//! writer threads directly (no server, no network): N Insert ops of
//! realistic records (5 short string properties) submitted at once, then
//! measures committed rows per second and the per-batch commit cycle. The
//! server's durable submit rate is compared with this figure.
//!
//! `ixn-perf backlog`: a large backlog in the shard state machines, in
//! process: heap per queued interaction, pulls in view order, finds and a
//! snapshot of the whole backlog (see `backlog.rs`).
//!
//! `ixn-perf cycle`: whole cycles with agents in the shard state machines
//! alone, in process (see `cycle.rs`).
//!
//! `ixn-perf worst`: the longest step of the state machine for each of the
//! heaviest requests a client may send (see `worst.rs`).

mod backlog;
use ixn_perf::cycle;
mod worst;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use ixn_shard::{KvList, Value};
use ixn_storage::{
    sqlite_connection_string, CompletionSink, InsertStrategy, InteractionRecord, Storage, StorageConfig, StoreOp,
    WriteRequest,
};

/// Counts live heap bytes for `ixn-perf backlog` (mimalloc underneath, as
/// in the server).
#[global_allocator]
static GLOBAL: backlog::Counting = backlog::Counting;

#[derive(Parser)]
#[command(name = "ixn-perf", about = "ixn component benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Storage ceiling: committed rows/s through the batched ODBC writers.
    Storage(StorageArgs),
    /// A large backlog in the shard state machines, in process: heap per
    /// interaction, pulls in view order, finds, a snapshot of it all.
    Backlog(backlog::BacklogArgs),
    /// Whole cycles (submit, invite, accept, stop) in the shard state
    /// machines alone, in process: cost per cycle, messages and writes.
    Cycle(cycle::CycleArgs),
    /// The longest a shard is held by each of the heaviest requests a client
    /// may send (one shard, a large backlog, in process).
    Worst(worst::WorstArgs),
}

#[derive(clap::Args)]
struct StorageArgs {
    /// ODBC connection string of the database (its tables are created if
    /// missing and emptied before the run).
    #[arg(long, conflicts_with = "sqlite_dir")]
    connection_string: Option<String>,
    /// Directory for a fresh embedded SQLite database (default: a temporary
    /// directory, removed afterwards).
    #[arg(long)]
    sqlite_dir: Option<PathBuf>,
    /// SQLite synchronous mode (SyncPragma): FULL (the default string) or NORMAL, OFF.
    #[arg(long)]
    sqlite_sync: Option<String>,
    /// Insert ops to submit.
    #[arg(long, default_value_t = 200_000)]
    rows: usize,
    /// Most ops per transaction (batch_max).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Writer threads (number-of-database-connections; SQLite forces 1).
    #[arg(long, default_value_t = 5)]
    writers: usize,
    /// array, multirow or json (default: the engine's default).
    #[arg(long)]
    strategy: Option<String>,
    /// Op mix: insert (N inserts) or upsert (N inserts, then N upserts of
    /// the same rows, timed separately).
    #[arg(long, default_value = "insert")]
    op: String,
    /// Write the result as one JSON object to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    // Storage warnings and errors (failed batches, retries) go to stderr;
    // RUST_LOG overrides. The driver manager's ODBC-version notice is noise.
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,odbc_api=error".to_string());
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).try_init();
    let code = match cli.cmd {
        Cmd::Storage(a) => match storage(a) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("ixn-perf storage: {e}");
                1
            }
        },
        Cmd::Backlog(a) => match backlog::run(a) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("ixn-perf backlog: {e}");
                1
            }
        },
        Cmd::Cycle(a) => match cycle::run(a) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("ixn-perf cycle: {e}");
                1
            }
        },
        Cmd::Worst(a) => match worst::run(a) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("ixn-perf worst: {e}");
                1
            }
        },
    };
    std::process::exit(code);
}

/// Times every completion call: with the queue kept full, the interval
/// between two calls from one writer thread is one batch cycle (gather,
/// coalesce, execute, commit).
struct Timing {
    done: Mutex<Progress>,
}

struct Progress {
    ok: usize,
    failed: usize,
    /// Last completion time per writer thread (by name).
    last: Vec<(String, Instant)>,
    cycles: Vec<Duration>,
    finished: Option<Instant>,
    expect: usize,
}

impl CompletionSink for Timing {
    fn complete(&self, done: &mut Vec<(u64, bool)>) {
        let now = Instant::now();
        let mut p = self.done.lock().unwrap();
        for (_, ok) in done.drain(..) {
            if ok {
                p.ok += 1
            } else {
                p.failed += 1
            }
        }
        let name = std::thread::current().name().unwrap_or("?").to_string();
        match p.last.iter().position(|(n, _)| *n == name) {
            Some(i) => {
                let d = now - p.last[i].1;
                p.cycles.push(d);
                p.last[i].1 = now;
            }
            None => p.last.push((name, now)),
        }
        if p.ok + p.failed >= p.expect && p.finished.is_none() {
            p.finished = Some(now);
        }
    }
}

fn record(id: String, version: i64) -> InteractionRecord {
    let mut props = KvList::new();
    props.push("Subject", Value::Str(format!("Question about order {}", &id[id.len() - 6..])));
    props.push("FromAddress", Value::Str("customer@example.com".into()));
    props.push("Lang", Value::Str("en".into()));
    props.push("Channel", Value::Str("web".into()));
    props.push("Segment", Value::Str("gold".into()));
    InteractionRecord {
        id,
        tenant: "Environment".into(),
        media_type: "chat".into(),
        interaction_type: "Inbound".into(),
        interaction_subtype: "InboundNew".into(),
        queue: "Chat inbound".into(),
        priority: 5,
        submitted_by: "chat-server-1".into(),
        received_at: Some(1_760_000_000_000),
        submitted_at: Some(1_760_000_000_001),
        placed_in_queue_at: Some(1_760_000_000_002),
        moved_to_queue_at: None,
        delivered_at: None,
        assigned_at: None,
        held_at: None,
        completed_at: None,
        properties: (&props).into(),
        version,
        workbin_owner: None,
        submit_order: None,
        assigned_to: None,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn empty_table(connection_string: &str) -> Result<(), String> {
    let env = odbc_api::environment().map_err(|e| e.to_string())?;
    let conn = env.connect_with_connection_string(connection_string, Default::default()).map_err(|e| e.to_string())?;
    let dbms = conn.database_management_system_name().unwrap_or_default();
    let sql = if dbms.to_ascii_lowercase().contains("postgres") {
        "TRUNCATE TABLE interactions"
    } else {
        "DELETE FROM interactions"
    };
    conn.execute(sql, (), None).map_err(|e| e.to_string())?;
    Ok(())
}

struct Run {
    rows_per_sec: f64,
    seconds: f64,
    p50: f64,
    p99: f64,
    batches: usize,
}

/// Submits `ops` at once and waits for every completion.
fn run(storage: Storage, ops: Vec<StoreOp>) -> Result<Run, String> {
    let n = ops.len();
    let timing = Arc::new(Timing {
        done: Mutex::new(Progress {
            ok: 0,
            failed: 0,
            last: Vec::new(),
            cycles: Vec::new(),
            finished: None,
            expect: n,
        }),
    });
    let writers = storage.start(vec![timing.clone() as Arc<dyn CompletionSink>]).map_err(|e| e.message)?;
    let h = writers.handle();
    let started = Instant::now();
    {
        // Writers' first cycle is measured from the start.
        let mut p = timing.done.lock().unwrap();
        for w in 0..h.writers() {
            p.last.push((format!("ixn-db-writer-{w}"), started));
        }
    }
    for (token, op) in ops.into_iter().enumerate() {
        h.submit(WriteRequest { shard: 0, token: token as u64, op, log: Vec::new() });
    }
    writers.shutdown();
    let p = timing.done.lock().unwrap();
    if p.failed > 0 {
        return Err(format!("{} of {n} writes failed (see the log)", p.failed));
    }
    let secs = (p.finished.unwrap_or_else(Instant::now) - started).as_secs_f64();
    let mut cycles = p.cycles.clone();
    cycles.sort();
    Ok(Run {
        rows_per_sec: n as f64 / secs,
        seconds: secs,
        p50: percentile(&cycles, 0.50),
        p99: percentile(&cycles, 0.99),
        batches: cycles.len(),
    })
}

fn storage(a: StorageArgs) -> Result<(), String> {
    let strategy = match &a.strategy {
        None => None,
        Some(s) => {
            Some(InsertStrategy::parse(s).ok_or_else(|| format!("unknown strategy '{s}' (array, multirow or json)"))?)
        }
    };
    let mut tmp = None;
    let (connection_string, sqlite) = match (&a.connection_string, &a.sqlite_dir) {
        (Some(cs), _) => (cs.clone(), false),
        (None, dir) => {
            let dir = match dir {
                Some(d) => d.clone(),
                None => {
                    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
                    let d = std::env::temp_dir().join(format!("ixn-perf-{}-{nanos}", std::process::id()));
                    tmp = Some(d.clone());
                    d
                }
            };
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let db = dir.join("ixn.db");
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
            }
            let mut cs = sqlite_connection_string(&db);
            if let Some(sync) = &a.sqlite_sync {
                let (pre, post) = cs.split_once("SyncPragma=").ok_or("no SyncPragma in the SQLite string")?;
                let post = post.split_once(';').map(|(_, rest)| rest).unwrap_or("");
                cs = format!("{pre}SyncPragma={};{post}", sync.to_ascii_uppercase());
            }
            (cs, true)
        }
    };
    let cfg = StorageConfig {
        connection_string: connection_string.clone(),
        writers: a.writers,
        batch_max: a.batch,
        create_schema: true,
        insert_strategy: strategy,
        commit_delay: Duration::ZERO,
    };
    let storage = Storage::open(cfg.clone()).map_err(|e| e.message)?;
    empty_table(&connection_string)?;
    let engine = storage.engine().to_string();
    let strategy = storage.insert_strategy();
    let writers = storage.writer_count();
    let sync = if sqlite {
        connection_string.split("SyncPragma=").nth(1).and_then(|s| s.split(';').next()).map(str::to_string)
    } else {
        None
    };

    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() % 100_000_000;
    let ids: Vec<String> = (0..a.rows).map(|i| format!("P{stamp:08}{i:07}")).collect();
    let inserts: Vec<StoreOp> = ids.iter().map(|id| StoreOp::Insert(Box::new(record(id.clone(), 0)))).collect();
    let ins = run(storage, inserts)?;
    let upd = if a.op == "upsert" {
        let upserts: Vec<StoreOp> = ids.iter().map(|id| StoreOp::Upsert(Box::new(record(id.clone(), 1)))).collect();
        Some(run(Storage::open(cfg.clone()).map_err(|e| e.message)?, upserts)?)
    } else if a.op != "insert" {
        return Err(format!("unknown op '{}' (insert or upsert)", a.op));
    } else {
        None
    };
    // Restart cost: load every row back, as a server start does.
    let load_started = Instant::now();
    let loaded = Storage::open(StorageConfig { create_schema: false, ..cfg })
        .map_err(|e| e.message)?
        .load_live()
        .map_err(|e| e.message)?
        .len();
    let load_secs = load_started.elapsed().as_secs_f64();
    if let Some(d) = tmp {
        let _ = std::fs::remove_dir_all(d);
    }

    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let sync_txt = sync.as_deref().map(|s| format!(", SyncPragma={s}")).unwrap_or_default();
    println!(
        "storage ceiling: {engine}{sync_txt}, {} inserts, {writers} writer(s), batch {}, {}",
        a.rows,
        a.batch,
        strategy.name()
    );
    println!(
        "  inserts: {:.0} rows/s ({:.2} s), batch cycle p50 {:.2} ms, p99 {:.2} ms over {} batches",
        ins.rows_per_sec, ins.seconds, ins.p50, ins.p99, ins.batches
    );
    if let Some(u) = &upd {
        println!(
            "  upserts: {:.0} rows/s ({:.2} s), batch cycle p50 {:.2} ms, p99 {:.2} ms over {} batches",
            u.rows_per_sec, u.seconds, u.p50, u.p99, u.batches
        );
    }
    println!("  load_live: {loaded} rows in {load_secs:.2} s ({:.0} rows/s)", loaded as f64 / load_secs);
    println!("  cores: {cores}");
    if let Some(path) = a.json {
        let mut j = serde_json::json!({
            "bench": "storage",
            "engine": engine,
            "strategy": strategy.name(),
            "rows": a.rows,
            "batch": a.batch,
            "writers": writers,
            "rows_per_sec": ins.rows_per_sec,
            "seconds": ins.seconds,
            "p50_batch_commit_ms": ins.p50,
            "p99_batch_commit_ms": ins.p99,
            "batches": ins.batches,
            "cores": cores,
            "load_rows": loaded,
            "load_rows_per_sec": loaded as f64 / load_secs,
        });
        if let Some(s) = sync {
            j["sqlite_sync"] = serde_json::Value::String(s);
        }
        if let Some(u) = upd {
            j["upsert_rows_per_sec"] = serde_json::json!(u.rows_per_sec);
            j["upsert_p50_batch_commit_ms"] = serde_json::json!(u.p50);
            j["upsert_p99_batch_commit_ms"] = serde_json::json!(u.p99);
        }
        std::fs::write(&path, serde_json::to_string_pretty(&j).unwrap() + "\n")
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
