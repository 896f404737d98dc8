//! Writes whose outcome is unknown (a COMMIT whose reply was lost, a
//! database that went away) are answered only once resolved, with ok=true;
//! a row the database refuses fails alone while the rest of its batch
//! commits. ok=false means the database did not apply the write.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use common::*;
use ixn_storage::{
    sqlite_connection_string, CompletionSink, Faults, InsertStrategy, InteractionRecord, Storage, StorageConfig,
    StoreOp, WriteRequest, Writers,
};

const STRATEGIES: [InsertStrategy; 3] = [InsertStrategy::MultiRow, InsertStrategy::Array, InsertStrategy::Json];

/// One writer with a fault injector, and what it has committed so far.
struct Rig {
    cs: String,
    writers: Writers,
    sink: Arc<Collect>,
    faults: Arc<Faults>,
    next_token: u64,
    /// The rows the table must hold once every write so far is answered.
    expected: BTreeMap<String, InteractionRecord>,
    /// Every write's token, with whether it must succeed.
    outcomes: HashMap<u64, bool>,
}

impl Rig {
    fn start(cs: &str, strategy: InsertStrategy) -> Rig {
        init_logs();
        let cfg = StorageConfig {
            create_schema: true,
            writers: 1,
            insert_strategy: Some(strategy),
            commit_delay: std::time::Duration::ZERO,
            ..StorageConfig::new(cs)
        };
        let mut storage = Storage::open(cfg).unwrap();
        let faults = Faults::new();
        storage.inject_faults(faults.clone());
        let sink = Collect::new();
        let writers = storage.start(vec![sink.clone() as Arc<dyn CompletionSink>]).unwrap();
        Rig {
            cs: cs.to_string(),
            writers,
            sink,
            faults,
            next_token: 0,
            expected: BTreeMap::new(),
            outcomes: HashMap::new(),
        }
    }

    /// Submits `op`; `ok` says whether it must succeed (if it must not,
    /// the table keeps what it had for the id).
    fn submit(&mut self, op: StoreOp, ok: bool) {
        let token = self.next_token;
        self.next_token += 1;
        if ok {
            match &op {
                StoreOp::Insert(r) | StoreOp::Upsert(r) => {
                    self.expected.insert(r.id.clone(), (**r).clone());
                }
                StoreOp::Delete(id) => {
                    self.expected.remove(id);
                }
                StoreOp::Log(_) => {}
            }
        }
        self.outcomes.insert(token, ok);
        self.writers.handle().submit(WriteRequest { shard: 0, token, op, log: Vec::new() });
    }

    /// Ten committed rows, s0..s9.
    fn seed(&mut self, tag: &str) {
        for i in 0..10 {
            self.submit(StoreOp::Insert(Box::new(record(&format!("{tag}s{i}"), 0))), true);
        }
        self.wait_all();
    }

    /// Many writes of every kind, all meant to succeed: inserts, upserts
    /// of seeded rows, deletes of seeded rows, an insert then an upsert
    /// of one id, an insert then a delete of another.
    fn mixed_batch(&mut self, tag: &str, inserts: usize) {
        for i in 0..inserts {
            self.submit(StoreOp::Insert(Box::new(record(&format!("{tag}n{i:04}"), 0))), true);
        }
        for i in 0..4 {
            let mut r = record(&format!("{tag}s{i}"), 1);
            r.queue = "Zürich après-midi".into();
            self.submit(StoreOp::Upsert(Box::new(r)), true);
        }
        for i in 4..7 {
            self.submit(StoreOp::Delete(format!("{tag}s{i}")), true);
        }
        self.submit(StoreOp::Insert(Box::new(record(&format!("{tag}iu"), 0))), true);
        self.submit(StoreOp::Upsert(Box::new(record(&format!("{tag}iu"), 1))), true);
        self.submit(StoreOp::Insert(Box::new(record(&format!("{tag}id"), 0))), true);
        self.submit(StoreOp::Delete(format!("{tag}id")), true);
    }

    /// Waits for every write so far and checks each one's ok.
    fn wait_all(&self) {
        let done = self.sink.wait(self.outcomes.len(), 60);
        let wrong: BTreeMap<u64, bool> =
            done.iter().filter(|(t, ok)| self.outcomes.get(t) != Some(ok)).map(|(t, ok)| (*t, *ok)).collect();
        assert!(wrong.is_empty(), "writes answered otherwise than expected (token: ok): {wrong:?}");
    }

    /// Tokens answered so far that are not among `before`.
    fn answered_since(&self, before: usize) -> Vec<(u64, bool)> {
        let mut v: Vec<(u64, bool)> = self.sink.snapshot().into_iter().filter(|(t, _)| *t as usize >= before).collect();
        v.sort();
        v
    }

    /// Checks, while the writers run, that the table holds the expected
    /// ids with their versions and queues (`Storage::open` would wait for
    /// the writers' sessions on PostgreSQL).
    fn check_rows(&self) {
        let want: BTreeMap<String, (i64, String)> =
            self.expected.iter().map(|(id, r)| (id.clone(), (r.version, r.queue.clone()))).collect();
        assert_eq!(id_version_queue(&self.cs), want);
    }

    fn shutdown_and_check(self) {
        self.writers.shutdown();
        assert_rows(&self.cs, &self.expected);
    }
}

fn assert_rows(cs: &str, expected: &BTreeMap<String, InteractionRecord>) {
    let got: BTreeMap<String, InteractionRecord> = Storage::open(StorageConfig::new(cs))
        .unwrap()
        .load_live()
        .unwrap()
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let missing: Vec<&String> = expected.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<&String> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "rows missing: {missing:?}; rows not expected: {extra:?}");
    for (id, r) in expected {
        assert_eq!(&got[id], r, "row {id}");
    }
}

/// id -> (version, queue) of every row, read with plain SQL.
fn id_version_queue(cs: &str) -> BTreeMap<String, (i64, String)> {
    use odbc_api::{Cursor, Nullable};
    let env = odbc_api::environment().unwrap();
    let conn = env.connect_with_connection_string(cs, Default::default()).unwrap();
    let mut cursor = conn.execute("SELECT id, version, queue FROM interactions", (), None).unwrap().unwrap();
    let mut out = BTreeMap::new();
    while let Some(mut row) = cursor.next_row().unwrap() {
        let (mut id, mut queue, mut version) = (Vec::new(), Vec::new(), Nullable::<i64>::null());
        row.get_text(1, &mut id).unwrap();
        row.get_data(2, &mut version).unwrap();
        row.get_text(3, &mut queue).unwrap();
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
        out.insert(text(id), (version.into_opt().unwrap(), text(queue)));
    }
    out
}

fn sqlite_db(tag: &str) -> (TempDir, String) {
    let dir = TempDir::new(tag);
    let cs = sqlite_connection_string(&dir.0.join("ixn.db"));
    (dir, cs)
}

// ----- unknown outcomes ----------------------------------------------------

/// A batch's COMMIT lands but its reply is lost, and the database then
/// cannot be reached for a while: nothing is answered meanwhile (the
/// writes are in the database, and the state machine would undo a
/// "failed" one in memory only); once it can, every write is answered ok.
fn lost_commit_reply_then_outage(cs: &str, strategy: InsertStrategy, tag: &str) {
    let mut rig = Rig::start(cs, strategy);
    rig.seed(tag);
    let before = rig.outcomes.len();
    rig.faults.hold_batches(true);
    rig.mixed_batch(tag, 300);
    rig.faults.lose_commit_replies(1);
    rig.faults.set_unreachable(true);
    rig.faults.hold_batches(false);
    wait_until(60, "the writer keeps trying to reconnect, or it answered", || {
        rig.faults.connects_failed() >= 5 || !rig.answered_since(before).is_empty()
    });
    assert_eq!(rig.faults.commit_replies_lost(), 1);
    let answered = rig.answered_since(before);
    assert!(answered.is_empty(), "{strategy:?}: answered while the database could not be reached: {answered:?}");
    // The COMMIT did land: "failed" would have been a lie.
    rig.check_rows();
    rig.faults.set_unreachable(false);
    rig.wait_all();
    // The writer goes on.
    rig.mixed_batch(&format!("{tag}b"), 5);
    rig.wait_all();
    rig.shutdown_and_check();
}

#[test]
fn sqlite_a_lost_commit_reply_is_answered_ok_once_the_database_is_back() {
    for (n, strategy) in STRATEGIES.into_iter().enumerate() {
        let (_dir, cs) = sqlite_db("lostreply");
        lost_commit_reply_then_outage(&cs, strategy, &format!("00{n}"));
    }
}

#[test]
fn postgres_a_lost_commit_reply_is_answered_ok_once_the_database_is_back() {
    let Some(cs) = pg_connection_string() else { return };
    let cs = pg_private_db(&cs, "ixn_storage_lostreply");
    for (n, strategy) in STRATEGIES.into_iter().enumerate() {
        run_sql(&cs, "DELETE FROM interactions", true);
        lost_commit_reply_then_outage(&cs, strategy, &format!("01{n}"));
    }
}

/// PostgreSQL, no injected outage: the database refuses connections
/// (`ALLOW_CONNECTIONS false`) after a lost COMMIT reply, then the writer's
/// session is killed mid-stream while connections are refused again. No
/// write is answered before the database takes connections again; then
/// all are, ok.
#[test]
fn postgres_answers_wait_for_the_database_to_come_back() {
    let Some(admin) = pg_connection_string() else { return };
    let db = "ixn_storage_outage";
    let allow = |on: bool| run_sql(&admin, &format!("ALTER DATABASE {db} ALLOW_CONNECTIONS {on}"), false);
    // As a failed run may have left it.
    run_sql(&admin, &format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"), true);
    let cs = pg_private_db(&admin, db);
    let mut rig = Rig::start(&cs, InsertStrategy::MultiRow);
    rig.seed("02");

    // A lost COMMIT reply, then no connections.
    let before = rig.outcomes.len();
    rig.faults.hold_batches(true);
    rig.mixed_batch("02", 200);
    rig.faults.lose_commit_replies(1);
    allow(false);
    rig.faults.hold_batches(false);
    let failed = rig.faults.failed_attempts();
    wait_until(60, "the writer keeps failing to reconnect, or it answered", || {
        rig.faults.failed_attempts() >= failed + 5 || !rig.answered_since(before).is_empty()
    });
    let answered = rig.answered_since(before);
    assert!(answered.is_empty(), "answered while the database refused connections: {answered:?}");
    allow(true);
    rig.wait_all();

    // The writer's session is killed and connections are refused again.
    let before = rig.outcomes.len();
    allow(false);
    run_sql(
        &admin,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()"
        ),
        false,
    );
    let failed = rig.faults.failed_attempts();
    rig.mixed_batch("02k", 50);
    wait_until(60, "the writer keeps failing to reconnect, or it answered", || {
        rig.faults.failed_attempts() >= failed + 5 || !rig.answered_since(before).is_empty()
    });
    let answered = rig.answered_since(before);
    assert!(answered.is_empty(), "answered while the database refused connections: {answered:?}");
    allow(true);
    rig.wait_all();
    rig.shutdown_and_check();
}

// ----- refused rows --------------------------------------------------------

/// One batch of many writes holds writes the database refuses (`refuse`
/// makes a record it refuses): an insert, an upsert of a committed row,
/// and an insert followed by a refused upsert of the same id. Only those
/// fail; every other write of the batch commits, and the refused upsert's
/// row keeps what it had.
fn refused_rows_fail_alone(cs: &str, strategy: InsertStrategy, tag: &str, refuse: fn(&mut InteractionRecord)) {
    let mut rig = Rig::start(cs, strategy);
    rig.seed(tag);
    rig.faults.hold_batches(true);
    rig.mixed_batch(tag, 150);
    let mut bad = record(&format!("{tag}bad"), 0);
    refuse(&mut bad);
    rig.submit(StoreOp::Insert(Box::new(bad)), false);
    let mut bad_upsert = record(&format!("{tag}s8"), 1);
    refuse(&mut bad_upsert);
    rig.submit(StoreOp::Upsert(Box::new(bad_upsert)), false);
    // Both writes of one id in one batch: the row after the batch is the
    // refused one, so neither is applied.
    rig.submit(StoreOp::Insert(Box::new(record(&format!("{tag}then"), 0))), false);
    let mut bad_then = record(&format!("{tag}then"), 1);
    refuse(&mut bad_then);
    rig.submit(StoreOp::Upsert(Box::new(bad_then)), false);
    rig.mixed_batch(&format!("{tag}x"), 150);
    rig.faults.hold_batches(false);
    rig.wait_all();
    rig.check_rows();
    // The writer goes on.
    rig.mixed_batch(&format!("{tag}y"), 5);
    rig.wait_all();
    rig.shutdown_and_check();
}

const TRIGGER_QUEUE: &str = "refused by a trigger";

fn sqlite_refuses(r: &mut InteractionRecord) {
    r.queue = TRIGGER_QUEUE.into();
}

#[test]
fn sqlite_a_row_the_database_refuses_fails_alone() {
    for (n, strategy) in STRATEGIES.into_iter().enumerate() {
        let (_dir, cs) = sqlite_db("refused");
        drop(Storage::open(StorageConfig { create_schema: true, ..StorageConfig::new(cs.clone()) }).unwrap());
        for event in ["INSERT", "UPDATE"] {
            exec_one(
                &cs,
                &format!(
                    "CREATE TRIGGER refuse_{event} BEFORE {event} ON interactions WHEN NEW.queue = '{TRIGGER_QUEUE}' \
                     BEGIN SELECT RAISE(ABORT, 'this queue is refused'); END"
                ),
            );
        }
        refused_rows_fail_alone(&cs, strategy, &format!("03{n}"), sqlite_refuses);
    }
}

/// A character a LATIN1 database cannot hold (SQLSTATE 22P05): a real
/// value PostgreSQL refuses. (A NUL would not do: both drivers cut text at
/// a NUL instead, so the storage layer refuses it before the database.)
fn postgres_refuses(r: &mut InteractionRecord) {
    r.interaction_subtype = "Emoji 😀".into();
}

#[test]
fn postgres_a_row_the_database_refuses_fails_alone() {
    let Some(cs) = pg_connection_string() else { return };
    let cs = pg_latin1_db(&cs, "ixn_storage_refused");
    for (n, strategy) in STRATEGIES.into_iter().enumerate() {
        run_sql(&cs, "DELETE FROM interactions", true);
        refused_rows_fail_alone(&cs, strategy, &format!("04{n}"), postgres_refuses);
    }
}

// ----- read back -----------------------------------------------------------

/// After a COMMIT whose outcome is unknown, the database refuses a row
/// when the batch is applied again (a trigger added meanwhile stands for
/// any such refusal). The writer reads the row back: committed by the lost
/// attempt, its write succeeds; not there, it fails.
#[test]
fn sqlite_a_refused_row_is_read_back_after_an_unknown_outcome() {
    let (_dir, cs) = sqlite_db("readback");
    let mut rig = Rig::start(&cs, InsertStrategy::MultiRow);
    let refuse_id = |id: &str| {
        for (event, row) in [("INSERT", "NEW"), ("DELETE", "OLD")] {
            exec_one(
                &cs,
                &format!(
                    "CREATE TRIGGER refuse_{event}_{id} BEFORE {event} ON interactions WHEN {row}.id = '{id}' \
                     BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
                ),
            );
        }
    };
    for (phase, landed) in [("05a", true), ("05b", false)] {
        let failed = rig.faults.failed_attempts();
        rig.faults.hold_batches(true);
        rig.mixed_batch(phase, 20);
        let id = format!("{phase}u");
        // It succeeds only if the attempt whose outcome is unknown landed.
        rig.submit(StoreOp::Insert(Box::new(record(&id, 0))), landed);
        if landed {
            rig.faults.lose_commit_replies(1);
        } else {
            rig.faults.fail_commits(1);
        }
        rig.faults.set_unreachable(true);
        rig.faults.hold_batches(false);
        wait_until(60, "the writer fails to reconnect", || rig.faults.failed_attempts() >= failed + 2);
        refuse_id(&id);
        rig.faults.set_unreachable(false);
        rig.wait_all();
        rig.check_rows();
    }
    rig.shutdown_and_check();
}

// ----- shutdown ------------------------------------------------------------

/// The database cannot be reached after a COMMIT whose reply was lost:
/// shutdown still ends at its limit. The batch whose outcome is unknown is
/// not answered (it is in fact committed); writes queued behind it, never
/// sent, are answered failed and are not in the database.
#[test]
fn shutdown_ends_during_an_outage_and_leaves_unknown_writes_unanswered() {
    let (_dir, cs) = sqlite_db("stopoutage");
    let mut rig = Rig::start(&cs, InsertStrategy::MultiRow);
    rig.seed("06");
    let unknown_from = rig.outcomes.len();
    rig.faults.hold_batches(true);
    rig.mixed_batch("06", 20);
    rig.faults.lose_commit_replies(1);
    rig.faults.set_unreachable(true);
    rig.faults.hold_batches(false);
    wait_until(60, "the writer fails to reconnect", || rig.faults.connects_failed() >= 1);
    let queued_from = rig.outcomes.len();
    for i in 0..5 {
        rig.submit(StoreOp::Insert(Box::new(record(&format!("06q{i}"), 0))), false);
    }
    let Rig { writers, sink, expected, outcomes, .. } = rig;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(writers.shutdown_within(std::time::Duration::from_millis(300))));
    let finished = rx.recv_timeout(std::time::Duration::from_secs(30)).expect("shutdown ended");
    assert!(!finished, "shutdown says it could not finish everything");
    let answered = sink.snapshot();
    let unknown: Vec<u64> =
        (unknown_from..queued_from).map(|t| t as u64).filter(|t| answered.contains_key(t)).collect();
    assert!(unknown.is_empty(), "writes of unknown outcome were answered: {unknown:?}");
    for t in queued_from..outcomes.len() {
        assert_eq!(answered.get(&(t as u64)), Some(&false), "queued write {t}");
    }
    // The lost reply's COMMIT landed; the queued writes never went out.
    assert_rows(&cs, &expected);
}
