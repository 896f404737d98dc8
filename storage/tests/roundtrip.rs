//! Writes through the writer threads, then reads back with load_live, on
//! SQLite always and on PostgreSQL when IXN_TEST_PG names one.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use ixn_storage::{
    sqlite_connection_string, CompletionSink, Engine, InsertStrategy, InteractionRecord, Storage, StorageConfig,
    StoreOp, WriteRequest,
};

fn by_id(v: Vec<InteractionRecord>) -> BTreeMap<String, InteractionRecord> {
    v.into_iter().map(|r| (r.id.clone(), r)).collect()
}

/// Submits a scripted sequence over two shards and checks the result.
fn round_trip(connection_string: &str, create: bool, strategy: InsertStrategy, batch_max: usize, expect: Engine) {
    let cfg = StorageConfig {
        connection_string: connection_string.to_string(),
        writers: 3,
        batch_max,
        create_schema: create,
        insert_strategy: Some(strategy),
        commit_delay: std::time::Duration::ZERO,
    };
    let storage = Storage::open(cfg.clone()).unwrap();
    assert_eq!(storage.engine(), &expect);
    assert_eq!(storage.insert_strategy(), strategy);
    assert!(storage.load_live().unwrap().is_empty(), "a fresh database has no interactions");
    let shard0 = Collect::new();
    let shard1 = Collect::new();
    let writers = storage.start(vec![shard0.clone() as Arc<dyn CompletionSink>, shard1.clone()]).unwrap();
    let h = writers.handle();

    let mut expected: BTreeMap<String, InteractionRecord> = BTreeMap::new();
    let mut token = 0u64;
    let mut submit = |shard: u16, op: StoreOp| {
        token += 1;
        h.submit(WriteRequest { shard, token, op, log: Vec::new() });
    };
    // 600 plain inserts, spread over both shards; two in three have a
    // submit order and one in four an agent handling it, so one
    // statement's parameters mix NULL and values in those columns too.
    for i in 0..600 {
        let mut r = common::record(&format!("0001ins{i:09}"), 0);
        r.submit_order = (i % 3 != 0).then(|| submit_order(1_760_000_000_123, 2 * i + 1));
        r.assigned_to = (i % 4 == 1).then(|| format!("agent{}", i % 10));
        expected.insert(r.id.clone(), r.clone());
        submit((i % 2) as u16, StoreOp::Insert(Box::new(r)));
    }
    // Records with every kind of value, properties of many lengths (one
    // far above the batch buffer width) in one batch.
    for (i, big) in [0usize, 10, 300, 700, 5000, 40_000].into_iter().enumerate() {
        let r = rich_record(&format!("0001rich{i:08}"), big);
        expected.insert(r.id.clone(), r.clone());
        submit(0, StoreOp::Insert(Box::new(r)));
    }
    // Workbins: every third of 300 records is in one, so one statement's
    // parameters (multi-row slots, array rows) mix NULL and text in the
    // workbin_owner column; owners at the edges: non-ASCII, exactly 255
    // bytes (the limit), empty (kept as Some("") by SQLite and PostgreSQL).
    for i in 0..300 {
        let owner = (i % 3 == 0).then(|| format!("agent-{i}"));
        let r = workbin_record(&format!("0001wb{i:010}"), 0, owner.as_deref());
        expected.insert(r.id.clone(), r.clone());
        submit((i % 2) as u16, StoreOp::Insert(Box::new(r)));
    }
    let edge_owners = ["Agent Müller – Platz ✓".to_string(), "é".repeat(127) + "a", String::new()];
    for (i, owner) in edge_owners.iter().enumerate() {
        let mut r = rich_record(&format!("0001wbedge{i:06}"), 100);
        r.workbin_owner = Some(owner.clone());
        assert!(owner.len() <= 255);
        expected.insert(r.id.clone(), r.clone());
        submit(0, StoreOp::Insert(Box::new(r)));
    }
    // Agents handling interactions, at the same edges: non-ASCII, exactly
    // 255 bytes, empty (Some("") on SQLite and PostgreSQL), and None.
    let edge_agents = [Some("Agent Jürgen ✓".to_string()), Some("ä".repeat(127) + "z"), Some(String::new()), None];
    for (i, agent) in edge_agents.iter().enumerate() {
        let mut r = rich_record(&format!("0001asedge{i:06}"), 100);
        r.assigned_to = agent.clone();
        expected.insert(r.id.clone(), r.clone());
        submit(1, StoreOp::Insert(Box::new(r)));
    }
    // Upsert the first 100 twice (a third of them going from a submit
    // order to NULL, a third the other way); delete 100..150;
    // insert+delete some; upsert a row that was never inserted; delete one
    // that never was.
    for v in 1..=2 {
        for i in 0..100 {
            let mut r = common::record(&format!("0001ins{i:09}"), v);
            r.queue = format!("moved {v}");
            r.assigned_at = Some(1_760_000_100_000 + v);
            r.submit_order = ((i + v) % 3 != 0).then(|| submit_order(1_760_000_000_123, 2 * i + 1));
            // Some become handled, some stop being handled, some change agent.
            r.assigned_to = ((i + v) % 4 == 1 || i % 5 == 0).then(|| format!("agent{}", (i + v) % 10));
            expected.insert(r.id.clone(), r.clone());
            submit(1, StoreOp::Upsert(Box::new(r)));
        }
    }
    // Every workbin record flips: from a queue into a workbin, from a
    // workbin back to a queue (NULL again).
    for i in 0..300 {
        let owner = (i % 3 != 0).then(|| format!("group {i}"));
        let r = workbin_record(&format!("0001wb{i:010}"), 1, owner.as_deref());
        expected.insert(r.id.clone(), r.clone());
        submit(1, StoreOp::Upsert(Box::new(r)));
    }
    for i in 100..150 {
        let id = format!("0001ins{i:09}");
        expected.remove(&id);
        submit(0, StoreOp::Delete(id));
    }
    for i in 0..20 {
        let r = common::record(&format!("0001tmp{i:09}"), 0);
        let id = r.id.clone();
        submit(1, StoreOp::Insert(Box::new(r.clone())));
        submit(1, StoreOp::Upsert(Box::new(r)));
        submit(1, StoreOp::Delete(id));
    }
    let ghost = common::record("0001ghost00000001", 4);
    expected.insert(ghost.id.clone(), ghost.clone());
    submit(0, StoreOp::Upsert(Box::new(ghost)));
    submit(1, StoreOp::Delete("0001never0000001".into()));
    let total = token as usize;

    let mut done = shard0.wait(0, 1);
    done.extend(shard1.wait(0, 1));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while shard0.snapshot().len() + shard1.snapshot().len() < total {
        assert!(std::time::Instant::now() < deadline, "not every write completed");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (a, b) = (shard0.snapshot(), shard1.snapshot());
    assert_eq!(a.len() + b.len(), total);
    assert!(a.values().chain(b.values()).all(|&ok| ok), "every write succeeds");
    writers.shutdown();

    let loaded = by_id(Storage::open(StorageConfig { create_schema: false, ..cfg }).unwrap().load_live().unwrap());
    assert_eq!(loaded.len(), expected.len());
    for (id, want) in &expected {
        let got = loaded.get(id).unwrap_or_else(|| panic!("{id} missing"));
        assert_eq!(got, want, "{id} differs");
    }
}

/// The nullable columns (workbin_owner, submit_order, assigned_to): one
/// record in a workbin with a submit order near the top of the i64 range
/// and nobody handling it, and one in a queue without a submit order (NULL,
/// as in a row upgraded from version 1) handled by agent7, written, read
/// back, then swapped (the workbin one back to a queue, to NULL and handled
/// by agent7, the other into a workbin with a realistic submit order and
/// nobody handling it).
fn nullable_columns_round_trip(connection_string: &str, strategy: InsertStrategy) {
    let cfg =
        StorageConfig { insert_strategy: Some(strategy), create_schema: true, ..StorageConfig::new(connection_string) };
    let mut in_workbin = workbin_record("0008inworkbin", 0, Some("Agent Smith"));
    in_workbin.submit_order = Some(LARGE_SUBMIT_ORDER);
    assert_eq!(in_workbin.assigned_to, None);
    let mut in_queue = workbin_record("0008inqueue", 0, None);
    in_queue.assigned_to = Some("agent7".into());
    assert_eq!((&in_queue.workbin_owner, in_queue.submit_order), (&None, None));
    let mut moved_out = workbin_record("0008inworkbin", 1, None);
    moved_out.assigned_to = Some("agent7".into());
    let mut moved_in = workbin_record("0008inqueue", 1, Some("Support group"));
    moved_in.submit_order = Some(submit_order(1_760_000_000_123, 8191));
    assert_eq!(moved_in.assigned_to, None);
    let mut token = 0;
    for ops in [
        vec![StoreOp::Insert(Box::new(in_workbin.clone())), StoreOp::Insert(Box::new(in_queue.clone()))],
        vec![StoreOp::Upsert(Box::new(moved_out.clone())), StoreOp::Upsert(Box::new(moved_in.clone()))],
    ] {
        let expected = by_id(
            ops.iter()
                .map(|op| match op {
                    StoreOp::Insert(r) | StoreOp::Upsert(r) => (**r).clone(),
                    StoreOp::Delete(_) | StoreOp::Log(_) => unreachable!(),
                })
                .collect(),
        );
        let sink = Collect::new();
        let writers = Storage::open(cfg.clone()).unwrap().start(vec![sink.clone() as Arc<dyn CompletionSink>]).unwrap();
        let n = ops.len();
        for op in ops {
            token += 1;
            writers.handle().submit(WriteRequest { shard: 0, token, op, log: Vec::new() });
        }
        assert!(sink.wait(n, 30).values().all(|&ok| ok));
        writers.shutdown();
        let loaded = by_id(Storage::open(cfg.clone()).unwrap().load_live().unwrap());
        assert_eq!(loaded, expected);
        // Spelled out, so a NULL read back as Some("") cannot pass.
        let agents: Vec<(&str, Option<&str>)> =
            loaded.values().map(|r| (r.id.as_str(), r.assigned_to.as_deref())).collect();
        assert!(
            agents == [("0008inqueue", Some("agent7")), ("0008inworkbin", None)]
                || agents == [("0008inqueue", None), ("0008inworkbin", Some("agent7"))],
            "{agents:?}"
        );
    }
}

/// assigned_to alone: Some("agent7") and None in one statement, read back,
/// then flipped, then a delete; one writer per strategy.
fn assigned_to_round_trip(connection_string: &str, strategy: InsertStrategy) {
    let cfg =
        StorageConfig { insert_strategy: Some(strategy), create_schema: true, ..StorageConfig::new(connection_string) };
    let handled = assigned_record("0010handled", 0, Some("agent7"));
    let waiting = assigned_record("0010waiting", 0, None);
    let mut token = 0;
    // Each step: the ops, then (id, assigned_to) of every row after them.
    type Step<'a> = (Vec<StoreOp>, Vec<(&'a str, Option<&'a str>)>);
    let steps: Vec<Step> = vec![
        (
            vec![StoreOp::Insert(Box::new(handled.clone())), StoreOp::Insert(Box::new(waiting.clone()))],
            vec![("0010handled", Some("agent7")), ("0010waiting", None)],
        ),
        (
            vec![
                StoreOp::Upsert(Box::new(assigned_record("0010handled", 1, None))),
                StoreOp::Upsert(Box::new(assigned_record("0010waiting", 1, Some("agent7")))),
            ],
            vec![("0010handled", None), ("0010waiting", Some("agent7"))],
        ),
        (vec![StoreOp::Delete("0010waiting".into())], vec![("0010handled", None)]),
    ];
    for (ops, want) in steps {
        let sink = Collect::new();
        let writers = Storage::open(cfg.clone()).unwrap().start(vec![sink.clone() as Arc<dyn CompletionSink>]).unwrap();
        let n = ops.len();
        for op in ops {
            token += 1;
            writers.handle().submit(WriteRequest { shard: 0, token, op, log: Vec::new() });
        }
        assert!(sink.wait(n, 30).values().all(|&ok| ok));
        writers.shutdown();
        let loaded = by_id(Storage::open(cfg.clone()).unwrap().load_live().unwrap());
        let got: Vec<(&str, Option<&str>)> =
            loaded.values().map(|r| (r.id.as_str(), r.assigned_to.as_deref())).collect();
        assert_eq!(got, want);
    }
}

#[test]
fn sqlite_assigned_to_round_trip() {
    init_logs();
    for strategy in [InsertStrategy::Array, InsertStrategy::MultiRow, InsertStrategy::Json] {
        let dir = TempDir::new("rt-assigned");
        assigned_to_round_trip(&sqlite_connection_string(&dir.0.join("ixn.db")), strategy);
    }
}

#[test]
fn postgres_assigned_to_round_trip() {
    init_logs();
    let Some(cs) = pg_connection_string() else { return };
    let cs = pg_private_db(&cs, "ixn_storage_assigned");
    for strategy in [InsertStrategy::Array, InsertStrategy::MultiRow, InsertStrategy::Json] {
        run_script(&cs, "postgresql/isdb_drop.sql", false);
        assigned_to_round_trip(&cs, strategy);
    }
    run_script(&cs, "postgresql/isdb_drop.sql", false);
}

#[test]
fn sqlite_nullable_columns_round_trip() {
    init_logs();
    for strategy in [InsertStrategy::Array, InsertStrategy::MultiRow, InsertStrategy::Json] {
        let dir = TempDir::new("rt-workbin");
        nullable_columns_round_trip(&sqlite_connection_string(&dir.0.join("ixn.db")), strategy);
    }
}

#[test]
fn postgres_nullable_columns_round_trip() {
    init_logs();
    let Some(cs) = pg_connection_string() else { return };
    let cs = pg_private_db(&cs, "ixn_storage_workbin");
    for strategy in [InsertStrategy::Array, InsertStrategy::MultiRow, InsertStrategy::Json] {
        run_script(&cs, "postgresql/isdb_drop.sql", false);
        nullable_columns_round_trip(&cs, strategy);
    }
    run_script(&cs, "postgresql/isdb_drop.sql", false);
}

#[test]
fn sqlite_round_trip_array() {
    init_logs();
    let dir = TempDir::new("rt-array");
    round_trip(&sqlite_connection_string(&dir.0.join("ixn.db")), true, InsertStrategy::Array, 1000, Engine::Sqlite);
}

#[test]
fn sqlite_round_trip_multirow() {
    init_logs();
    let dir = TempDir::new("rt-multi");
    round_trip(&sqlite_connection_string(&dir.0.join("ixn.db")), true, InsertStrategy::MultiRow, 1000, Engine::Sqlite);
}

#[test]
fn sqlite_round_trip_json() {
    init_logs();
    let dir = TempDir::new("rt-json");
    round_trip(&sqlite_connection_string(&dir.0.join("ixn.db")), true, InsertStrategy::Json, 1000, Engine::Sqlite);
}

#[test]
fn sqlite_round_trip_small_batches() {
    // batch_max 7: every batch is split, multi-row uses only its 1-row
    // statements, and ops of one id land in different batches.
    let dir = TempDir::new("rt-small");
    round_trip(&sqlite_connection_string(&dir.0.join("ixn.db")), true, InsertStrategy::MultiRow, 7, Engine::Sqlite);
    let dir = TempDir::new("rt-small-a");
    round_trip(&sqlite_connection_string(&dir.0.join("ixn.db")), true, InsertStrategy::Array, 7, Engine::Sqlite);
    let dir = TempDir::new("rt-small-j");
    round_trip(&sqlite_connection_string(&dir.0.join("ixn.db")), true, InsertStrategy::Json, 7, Engine::Sqlite);
}

#[test]
fn sqlite_path_with_spaces_and_braces() {
    // The SQLite ODBC driver takes Database= verbatim up to the next `;`
    // (no `{...}` quoting), so data directories must not contain `;`.
    let dir = TempDir::new("rt-odd");
    let sub = dir.0.join("a b {c}");
    std::fs::create_dir_all(&sub).unwrap();
    let cs = sqlite_connection_string(&sub.join("ixn.db"));
    let s = Storage::open(StorageConfig { create_schema: true, ..StorageConfig::new(cs) }).unwrap();
    assert_eq!(s.engine(), &Engine::Sqlite);
    assert_eq!(s.writer_count(), 1, "SQLite forces one writer");
    assert!(sub.join("ixn.db").exists());
}

#[test]
fn postgres_round_trip() {
    init_logs();
    let Some(cs) = pg_connection_string() else { return };
    let cs = pg_private_db(&cs, "ixn_storage_roundtrip");
    for strategy in [InsertStrategy::Array, InsertStrategy::MultiRow, InsertStrategy::Json] {
        run_script(&cs, "postgresql/isdb_drop.sql", false);
        round_trip(&cs, true, strategy, 1000, Engine::Postgres);
    }
    // And on a schema created by the script rather than by ixn.
    run_script(&cs, "postgresql/isdb_drop.sql", false);
    run_script(&cs, "postgresql/isdb.sql", false);
    round_trip(&cs, false, InsertStrategy::MultiRow, 64, Engine::Postgres);
    let s = Storage::open(StorageConfig::new(cs.clone())).unwrap();
    assert_eq!(s.writer_count(), 5, "vendor default number-of-database-connections");
    drop(s);
    run_script(&cs, "postgresql/isdb_drop.sql", false);
}
