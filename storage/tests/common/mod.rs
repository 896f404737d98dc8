//! Helpers shared by the storage tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ixn_shard::{KvList, Value};
use ixn_storage::{CompletionSink, InteractionRecord};

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let p = std::env::temp_dir().join(format!("ixn-storage-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Collects completions; `wait` blocks until a number of them arrived.
#[derive(Default)]
pub struct Collect {
    done: Mutex<HashMap<u64, bool>>,
    cv: Condvar,
    calls: Mutex<usize>,
}

impl CompletionSink for Collect {
    fn complete(&self, done: &mut Vec<(u64, bool)>) {
        let mut m = self.done.lock().unwrap();
        for (t, ok) in done.drain(..) {
            assert!(m.insert(t, ok).is_none(), "token {t} completed twice");
        }
        *self.calls.lock().unwrap() += 1;
        self.cv.notify_all();
    }
}

impl Collect {
    pub fn new() -> Arc<Collect> {
        Arc::new(Collect::default())
    }

    /// How often the writers called `complete` (once per batch and shard).
    #[allow(dead_code)] // not every test file asks
    pub fn calls(&self) -> usize {
        *self.calls.lock().unwrap()
    }

    /// Waits until `n` tokens completed (panics after `secs`); returns them.
    pub fn wait(&self, n: usize, secs: u64) -> HashMap<u64, bool> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut m = self.done.lock().unwrap();
        while m.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "only {} of {n} completions after {secs} s", m.len());
            m = self.cv.wait_timeout(m, left).unwrap().0;
        }
        m.clone()
    }

    pub fn snapshot(&self) -> HashMap<u64, bool> {
        self.done.lock().unwrap().clone()
    }
}

/// A realistic record: five short string properties, some times unset.
pub fn record(id: &str, version: i64) -> InteractionRecord {
    let mut props = KvList::new();
    props.push("Subject", Value::Str(format!("Order {id} question")));
    props.push("FromAddress", Value::Str("customer@example.com".into()));
    props.push("Lang", Value::Str("en".into()));
    props.push("Channel", Value::Str("web".into()));
    props.push("Segment", Value::Str("gold".into()));
    InteractionRecord {
        id: id.to_string(),
        tenant: "Environment".into(),
        media_type: "chat".into(),
        interaction_type: "Inbound".into(),
        interaction_subtype: "InboundNew".into(),
        queue: "Chat inbound".into(),
        priority: 5,
        submitted_by: "chat-server-1".into(),
        received_at: Some(1_760_000_000_000 + version),
        submitted_at: Some(1_760_000_000_123),
        placed_in_queue_at: Some(1_760_000_000_124),
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

/// A record using every kind of value: non-ASCII text, every time set,
/// nested lists, binary, large integers, empty strings; handled by agent7.
pub fn rich_record(id: &str, big_props: usize) -> InteractionRecord {
    let mut r = record(id, 7);
    r.queue = "Müller – Warteschlange ✓".into();
    // Quotes, a backslash and control characters: escaped in JSON.
    r.interaction_subtype = "say \"hi\" \\ tab\t bell\u{7}".into();
    r.submitted_by = "".into();
    r.priority = -3;
    r.moved_to_queue_at = Some(1);
    r.delivered_at = Some(i64::MAX);
    r.assigned_at = Some(i64::MIN + 1);
    r.held_at = Some(0);
    r.completed_at = Some(1_760_000_009_999);
    r.submit_order = Some(LARGE_SUBMIT_ORDER);
    r.assigned_to = Some("agent7".into());
    let mut inner = KvList::new();
    inner.push("n", Value::Int(-42));
    inner.push("b", Value::Bin(vec![0, 1, 2, 255, 0]));
    let mut props = r.properties.unpack();
    props.push("Nested", Value::List(inner));
    props.push("Big", Value::Str("x".repeat(big_props)));
    props.push("Émoji", Value::Str("😀 ünïcödé".into()));
    r.properties = (&props).into();
    r
}

/// A submit order near the top of the i64 range: lost by anything that
/// narrows it to 32 bits.
pub const LARGE_SUBMIT_ORDER: i64 = 0x7fff_ffff_ffff_0000;

/// A realistic submit order: microseconds since 2024-01-01 (UTC) at epoch
/// millisecond `ms`, shifted left 13 bits, plus the shard's sequence `seq`.
/// Above 2^58 for a time in 2025 and later, so an odd `seq` makes a value
/// that an f64 cannot hold exactly.
pub fn submit_order(ms: i64, seq: i64) -> i64 {
    const EPOCH_2024_US: i64 = 1_704_067_200_000_000;
    ((ms * 1000 - EPOCH_2024_US) << 13) + seq
}

/// A record in a workbin owned by `owner` (`queue` names the workbin), or,
/// with `None`, in a queue.
pub fn workbin_record(id: &str, version: i64, owner: Option<&str>) -> InteractionRecord {
    let mut r = record(id, version);
    if let Some(owner) = owner {
        r.queue = "Chat workbin".into();
        r.workbin_owner = Some(owner.to_string());
    }
    r
}

/// A record handled by agent `agent` (`assigned_to`), or, with `None`, by
/// nobody.
pub fn assigned_record(id: &str, version: i64, agent: Option<&str>) -> InteractionRecord {
    let mut r = record(id, version);
    r.assigned_at = agent.map(|_| 1_760_000_000_200 + version);
    r.assigned_to = agent.map(str::to_string);
    r
}

/// The PostgreSQL connection string to test against: `IXN_TEST_PG`. When
/// `CI` is set it must be there (the test fails); otherwise `None` skips.
pub fn pg_connection_string() -> Option<String> {
    match std::env::var("IXN_TEST_PG") {
        Ok(s) if !s.trim().is_empty() => Some(s),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!("CI is set but IXN_TEST_PG is not: start PostgreSQL with `.ci/pg start` and export IXN_TEST_PG=<its output>");
            }
            eprintln!("IXN_TEST_PG is not set: skipping the PostgreSQL test (`export IXN_TEST_PG=$(.ci/pg start)`)");
            None
        }
    }
}

/// Runs each statement of a script file under storage/sql on a connection
/// string (used to reset PostgreSQL between tests).
pub fn run_script(connection_string: &str, rel: &str, ignore_errors: bool) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql").join(rel);
    let script = std::fs::read_to_string(&path).unwrap();
    run_sql(connection_string, &script, ignore_errors);
}

pub fn run_sql(connection_string: &str, script: &str, ignore_errors: bool) {
    let env = odbc_api::environment().unwrap();
    let conn = env.connect_with_connection_string(connection_string, Default::default()).unwrap();
    let text: String = script.lines().map(|l| l.split("--").next().unwrap()).collect::<Vec<_>>().join("\n");
    for stmt in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        if let Err(e) = conn.execute(stmt, (), None) {
            assert!(ignore_errors, "{stmt}: {e}");
        }
    }
}

/// Initializes tracing output for a test (once), to see the log lines.
pub fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info").try_init();
    });
}

/// A database of its own on the PostgreSQL server of `cs` (created if
/// missing, tables dropped), so tests sharing IXN_TEST_PG do not collide.
pub fn pg_private_db(cs: &str, name: &str) -> String {
    run_sql(cs, &format!("CREATE DATABASE {name}"), true);
    let mut out = Vec::new();
    let mut replaced = false;
    for part in cs.split(';').filter(|p| !p.trim().is_empty()) {
        let key = part.split('=').next().unwrap_or("").trim().to_ascii_lowercase();
        if key == "database" || key == "dbname" {
            out.push(format!("Database={name}"));
            replaced = true;
        } else {
            out.push(part.to_string());
        }
    }
    if !replaced {
        out.push(format!("Database={name}"));
    }
    let private = out.join(";") + ";";
    run_script(&private, "postgresql/isdb_drop.sql", false);
    private
}

/// Runs one statement as is (a trigger body may hold `;`).
pub fn exec_one(connection_string: &str, stmt: &str) {
    let env = odbc_api::environment().unwrap();
    let conn = env.connect_with_connection_string(connection_string, Default::default()).unwrap();
    conn.execute(stmt, (), None).unwrap_or_else(|e| panic!("{stmt}: {e}"));
}

/// A database of its own in LATIN1 on the PostgreSQL server of `cs`,
/// created afresh (tables are made by `create_schema`): it refuses text
/// with characters Latin-1 lacks, as a database created for another
/// encoding does.
pub fn pg_latin1_db(cs: &str, name: &str) -> String {
    run_sql(cs, &format!("DROP DATABASE IF EXISTS {name}"), false);
    run_sql(
        cs,
        &format!("CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"),
        false,
    );
    pg_private_db(cs, name)
}

/// Waits until `cond` holds (panics with `what` after `secs`).
pub fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not so after {secs} s");
        std::thread::sleep(Duration::from_millis(5));
    }
}
