//! Writer-thread behaviour: completions, failures and retries, refused
//! writes, shutdown.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use ixn_storage::{
    sqlite_connection_string, CompletionSink, Faults, Storage, StorageConfig, StoreOp, WriteRequest, Writers,
};

fn start_sqlite(tag: &str, shards: usize) -> (TempDir, String, Writers, Vec<Arc<Collect>>) {
    init_logs();
    let dir = TempDir::new(tag);
    let cs = sqlite_connection_string(&dir.0.join("ixn.db"));
    let storage = Storage::open(StorageConfig { create_schema: true, ..StorageConfig::new(cs.clone()) }).unwrap();
    let sinks: Vec<Arc<Collect>> = (0..shards).map(|_| Collect::new()).collect();
    let writers = storage.start(sinks.iter().map(|s| s.clone() as Arc<dyn CompletionSink>).collect()).unwrap();
    (dir, cs, writers, sinks)
}

fn live_ids(cs: &str) -> Vec<String> {
    let mut ids: Vec<String> =
        Storage::open(StorageConfig::new(cs)).unwrap().load_live().unwrap().into_iter().map(|r| r.id).collect();
    ids.sort();
    ids
}

#[test]
fn completions_go_to_the_submitting_shard() {
    let (_dir, cs, writers, sinks) = start_sqlite("shards", 3);
    let h = writers.handle();
    for t in 0..300u64 {
        let shard = (t % 3) as u16;
        h.submit(WriteRequest {
            shard,
            token: t,
            op: StoreOp::Insert(Box::new(record(&format!("0002s{t:010}"), 0))),
            log: Vec::new(),
        });
    }
    for (i, s) in sinks.iter().enumerate() {
        let done = s.wait(100, 30);
        assert_eq!(done.len(), 100);
        assert!(done.iter().all(|(t, ok)| *ok && (t % 3) as usize == i));
    }
    writers.shutdown();
    assert_eq!(live_ids(&cs).len(), 300);
}

#[test]
fn writes_to_a_missing_table_fail_and_the_writer_recovers() {
    let (_dir, cs, writers, sinks) = start_sqlite("fail", 1);
    let h = writers.handle();
    h.submit(WriteRequest { shard: 0, token: 1, op: StoreOp::Insert(Box::new(record("0003ok1", 0))), log: Vec::new() });
    assert!(sinks[0].wait(1, 30)[&1]);

    // Take the table away: the database is there and refuses every write,
    // so each one fails (the database did not apply it).
    run_sql(&cs, "ALTER TABLE interactions RENAME TO interactions_away", false);
    h.submit(WriteRequest {
        shard: 0,
        token: 2,
        op: StoreOp::Insert(Box::new(record("0003lost", 0))),
        log: Vec::new(),
    });
    h.submit(WriteRequest { shard: 0, token: 3, op: StoreOp::Delete("0003ok1".into()), log: Vec::new() });
    let done = sinks[0].wait(3, 30);
    assert!(!done[&2]);
    assert!(!done[&3]);

    // Put it back: the same writer goes on.
    run_sql(&cs, "ALTER TABLE interactions_away RENAME TO interactions", false);
    h.submit(WriteRequest { shard: 0, token: 4, op: StoreOp::Insert(Box::new(record("0003ok2", 0))), log: Vec::new() });
    assert!(sinks[0].wait(4, 30)[&4]);
    writers.shutdown();
    assert_eq!(live_ids(&cs), vec!["0003ok1".to_string(), "0003ok2".to_string()]);
}

#[test]
fn a_retry_replaces_rows_an_earlier_attempt_may_have_committed() {
    // The row is already there (as after a commit whose answer was lost):
    // the first attempt fails on the primary key, the retry deletes first.
    let (_dir, cs, writers, sinks) = start_sqlite("ambiguous", 1);
    run_sql(&cs, "INSERT INTO interactions (id, priority, version) VALUES ('0004dup', 1, 0)", false);
    let h = writers.handle();
    let mut r = record("0004dup", 3);
    r.queue = "after retry".into();
    h.submit(WriteRequest { shard: 0, token: 1, op: StoreOp::Insert(Box::new(r.clone())), log: Vec::new() });
    assert!(sinks[0].wait(1, 30)[&1]);
    writers.shutdown();
    let loaded = Storage::open(StorageConfig::new(cs)).unwrap().load_live().unwrap();
    assert_eq!(loaded, vec![r]);
}

#[test]
fn an_oversized_field_fails_only_its_own_write() {
    let (_dir, cs, writers, sinks) = start_sqlite("refuse", 1);
    let h = writers.handle();
    let mut bad = record("0005bad", 0);
    bad.queue = "q".repeat(256);
    h.submit(WriteRequest {
        shard: 0,
        token: 1,
        op: StoreOp::Insert(Box::new(record("0005good", 0))),
        log: Vec::new(),
    });
    h.submit(WriteRequest { shard: 0, token: 2, op: StoreOp::Insert(Box::new(bad)), log: Vec::new() });
    h.submit(WriteRequest { shard: 0, token: 3, op: StoreOp::Delete("x".repeat(65)), log: Vec::new() });
    // workbin_owner is held to 255 bytes like the other names.
    let bad_owner = workbin_record("0005badowner", 0, Some(&"w".repeat(256)));
    h.submit(WriteRequest { shard: 0, token: 4, op: StoreOp::Insert(Box::new(bad_owner)), log: Vec::new() });
    let owner_255 = workbin_record("0005owner255", 0, Some(&"w".repeat(255)));
    h.submit(WriteRequest { shard: 0, token: 5, op: StoreOp::Insert(Box::new(owner_255)), log: Vec::new() });
    // So is assigned_to.
    let bad_agent = assigned_record("0005badagent", 0, Some(&"a".repeat(256)));
    h.submit(WriteRequest { shard: 0, token: 6, op: StoreOp::Insert(Box::new(bad_agent)), log: Vec::new() });
    let agent_255 = assigned_record("0005agent255", 0, Some(&"a".repeat(255)));
    h.submit(WriteRequest { shard: 0, token: 7, op: StoreOp::Insert(Box::new(agent_255)), log: Vec::new() });
    let done = sinks[0].wait(7, 30);
    assert_eq!(
        (done[&1], done[&2], done[&3], done[&4], done[&5], done[&6], done[&7]),
        (true, false, false, false, true, false, true)
    );
    writers.shutdown();
    assert_eq!(live_ids(&cs), vec!["0005agent255".to_string(), "0005good".to_string(), "0005owner255".to_string()]);
}

#[test]
fn shutdown_finishes_queued_writes_and_refuses_later_ones() {
    let (_dir, cs, writers, sinks) = start_sqlite("shutdown", 1);
    let h = writers.handle();
    for t in 0..5000u64 {
        h.submit(WriteRequest {
            shard: 0,
            token: t,
            op: StoreOp::Insert(Box::new(record(&format!("0006{t:012}"), 0))),
            log: Vec::new(),
        });
    }
    writers.shutdown();
    // Every write queued before shutdown is complete when it returns.
    let done = sinks[0].snapshot();
    assert_eq!(done.len(), 5000);
    assert!(done.values().all(|&ok| ok));
    h.submit(WriteRequest {
        shard: 0,
        token: 9999,
        op: StoreOp::Insert(Box::new(record("0006late", 0))),
        log: Vec::new(),
    });
    assert_eq!(sinks[0].snapshot().get(&9999), Some(&false), "answered at once with ok=false");
    assert_eq!(live_ids(&cs).len(), 5000);
}

/// PostgreSQL: a start waits until the writer sessions of a server still
/// on the database have ended (a killed server's backends may still finish
/// a COMMIT), and then opens.
#[test]
fn postgres_start_waits_for_the_previous_servers_writer_sessions() {
    use std::sync::atomic::{AtomicBool, Ordering};
    init_logs();
    let Some(cs) = pg_connection_string() else { return };
    let cs = pg_private_db(&cs, "ixn_storage_startlock");
    run_script(&cs, "postgresql/isdb_drop.sql", true);
    let first = Storage::open(StorageConfig { create_schema: true, ..StorageConfig::new(cs.clone()) }).unwrap();
    let sink = Collect::new();
    let writers = first.start(vec![sink.clone() as Arc<dyn CompletionSink>]).unwrap();
    // One committed write: the writer session (and its lock) is up.
    writers.handle().submit(WriteRequest {
        shard: 0,
        token: 1,
        op: StoreOp::Insert(Box::new(record("0009lock", 0))),
        log: Vec::new(),
    });
    assert_eq!(sink.wait(1, 30).get(&1), Some(&true));
    let released = Arc::new(AtomicBool::new(false));
    let second = {
        let (released, cs) = (released.clone(), cs.clone());
        std::thread::spawn(move || {
            let opened = Storage::open(StorageConfig::new(cs)).map(|s| s.load_live().unwrap().len());
            (opened.map_err(|e| e.message), released.load(Ordering::SeqCst))
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    released.store(true, Ordering::SeqCst);
    writers.shutdown();
    let (opened, after_release) = second.join().unwrap();
    assert_eq!(opened, Ok(1), "the second start opens and sees the first one's row");
    assert!(after_release, "the second start returned before the first server's writer sessions ended");
    run_script(&cs, "postgresql/isdb_drop.sql", true);
}

/// Both drivers cut text at a NUL (PostgreSQL cannot store one): such a
/// write is refused before the database instead of being stored cut.
#[test]
fn a_nul_in_text_is_refused_not_stored_cut() {
    let (_dir, cs, writers, sinks) = start_sqlite("nul", 1);
    let h = writers.handle();
    let mut subtype = record("0007subtype", 0);
    subtype.interaction_subtype = "Inbound\0New".into();
    let owner = workbin_record("0007owner", 0, Some("agent\0"));
    h.submit(WriteRequest { shard: 0, token: 1, op: StoreOp::Insert(Box::new(subtype)), log: Vec::new() });
    h.submit(WriteRequest { shard: 0, token: 2, op: StoreOp::Insert(Box::new(owner)), log: Vec::new() });
    h.submit(WriteRequest {
        shard: 0,
        token: 3,
        op: StoreOp::Insert(Box::new(record("0007good", 0))),
        log: Vec::new(),
    });
    h.submit(WriteRequest { shard: 0, token: 4, op: StoreOp::Delete("0007good\0".into()), log: Vec::new() });
    let done = sinks[0].wait(4, 30);
    assert_eq!((done[&1], done[&2], done[&3], done[&4]), (false, false, true, false));
    writers.shutdown();
    assert_eq!(live_ids(&cs), vec!["0007good".to_string()]);
}

#[test]
fn a_commit_delay_is_not_waited_when_writes_are_already_queued() {
    init_logs();
    let dir = TempDir::new("delay-busy");
    let cs = sqlite_connection_string(&dir.0.join("ixn.db"));
    let delay = Duration::from_secs(20);
    let cfg = StorageConfig { create_schema: true, commit_delay: delay, ..StorageConfig::new(cs.clone()) };
    let sink = Collect::new();
    let mut storage = Storage::open(cfg).unwrap();
    let faults = Faults::new();
    storage.inject_faults(faults.clone());
    let writers = storage.start(vec![sink.clone() as Arc<dyn CompletionSink>]).unwrap();
    let h = writers.handle();
    // The writer takes the first write and is held; four more queue up
    // behind it meanwhile, as under load.
    faults.hold_batches(true);
    let first = std::time::Instant::now();
    for t in 0..5u64 {
        let op = StoreOp::Insert(Box::new(record(&format!("0021b{t:010}"), 0)));
        h.submit(WriteRequest { shard: 0, token: t, op, log: Vec::new() });
    }
    std::thread::sleep(Duration::from_millis(100));
    faults.hold_batches(false);
    let done = sink.wait(5, 15);
    assert_eq!(done.len(), 5, "the queued writes waited for the commit delay");
    assert!(first.elapsed() < delay, "waited for the delay: {:?}", first.elapsed());
    assert!(done.values().all(|&ok| ok));
    assert_eq!(sink.calls(), 1, "the five writes were not one commit");
    assert!(writers.shutdown());
    assert_eq!(live_ids(&cs).len(), 5);
}

#[test]
fn a_commit_delay_gathers_writes_that_arrive_within_it_into_one_commit() {
    init_logs();
    let dir = TempDir::new("delay");
    let cs = sqlite_connection_string(&dir.0.join("ixn.db"));
    let delay = Duration::from_millis(400);
    let cfg = StorageConfig { create_schema: true, commit_delay: delay, ..StorageConfig::new(cs.clone()) };
    let sink = Collect::new();
    let writers = Storage::open(cfg).unwrap().start(vec![sink.clone() as Arc<dyn CompletionSink>]).unwrap();
    let h = writers.handle();
    let first = std::time::Instant::now();
    // Five writes 20 ms apart: all within the delay of the first.
    for t in 0..5u64 {
        let op = StoreOp::Insert(Box::new(record(&format!("0020d{t:010}"), 0)));
        h.submit(WriteRequest { shard: 0, token: t, op, log: Vec::new() });
        std::thread::sleep(Duration::from_millis(20));
    }
    let done = sink.wait(5, 30);
    assert!(first.elapsed() >= delay, "committed before the delay passed: {:?}", first.elapsed());
    assert!(done.values().all(|&ok| ok));
    assert_eq!(sink.calls(), 1, "the five writes were not one commit");
    // A shutdown does not wait for the delay: what is gathered commits.
    h.submit(WriteRequest {
        shard: 0,
        token: 9,
        op: StoreOp::Insert(Box::new(record("0020dlast", 0))),
        log: Vec::new(),
    });
    assert!(writers.shutdown());
    assert!(sink.wait(6, 1)[&9]);
    assert_eq!(live_ids(&cs).len(), 6);
}
