//! The writers' statements find their rows by the primary key, however many
//! rows (live or dead) the table holds: a plan that scans the table makes
//! every batch cost in proportion to it. Checked with EXPLAIN on PostgreSQL
//! when IXN_TEST_PG names one, and on SQLite with EXPLAIN QUERY PLAN.

mod common;

use std::sync::Arc;

use common::*;
use ixn_storage::{
    sqlite_connection_string, CompletionSink, Engine, InsertStrategy, Storage, StorageConfig, StoreOp, WriteRequest,
};

/// The lines of the plan of `sql` with its one parameter set to `param`
/// (an SQL literal).
fn plan(connection_string: &str, explain: &str, sql: &str, param: &str) -> Vec<String> {
    let env = odbc_api::environment().unwrap();
    let conn = env.connect_with_connection_string(connection_string, Default::default()).unwrap();
    let text = format!("{explain} {}", sql.replacen('?', param, 1));
    let mut cursor = conn.execute(&text, (), None).unwrap_or_else(|e| panic!("{text}: {e}")).expect("a plan");
    let cols = odbc_api::ResultSetMetadata::num_result_cols(&mut cursor).unwrap() as u16;
    let mut lines = Vec::new();
    while let Some(mut row) = odbc_api::Cursor::next_row(&mut cursor).unwrap() {
        let mut line = Vec::new();
        for c in 1..=cols {
            let mut buf = Vec::new();
            row.get_text(c, &mut buf).unwrap();
            line.push(String::from_utf8_lossy(&buf).into_owned());
        }
        lines.push(line.join(" "));
    }
    lines
}

#[test]
fn postgres_json_delete_looks_up_the_primary_key() {
    init_logs();
    let Some(cs) = pg_connection_string() else { return };
    let cs = pg_private_db(&cs, "ixn_storage_plans");
    run_script(&cs, "postgresql/isdb.sql", false);
    // A few thousand rows with statistics, as a running server's table has:
    // with them PostgreSQL prefers to scan the table for `id IN (SELECT
    // <set-returning function>)`, whose size it guesses at 100 rows.
    run_sql(
        &cs,
        "INSERT INTO interactions (id, priority, version, properties) \
         SELECT 'ix' || g, 0, 0, repeat('x', 200) FROM generate_series(1, 5000) g; \
         ANALYZE interactions",
        false,
    );
    let sql = Engine::Postgres.json_delete_sql().unwrap();
    let lines = plan(&cs, "EXPLAIN", sql, "'[\"ix5\",\"ix7\"]'");
    let all = lines.join("\n");
    assert!(all.contains("interactions_pkey"), "not looked up in the primary key:\n{all}");
    assert!(!all.contains("Seq Scan on interactions"), "scans the table:\n{all}");
    run_script(&cs, "postgresql/isdb_drop.sql", false);
}

#[test]
fn sqlite_json_delete_looks_up_the_primary_key() {
    let dir = TempDir::new("plans");
    let cs = sqlite_connection_string(&dir.0.join("ixn.db"));
    run_script(&cs, "sqlite/isdb.sql", false);
    let sql = Engine::Sqlite.json_delete_sql().unwrap();
    let lines = plan(&cs, "EXPLAIN QUERY PLAN", sql, "'[\"ix5\",\"ix7\"]'");
    let all = lines.join("\n");
    assert!(all.contains("USING INDEX") || all.contains("PRIMARY KEY"), "not looked up by its key:\n{all}");
    assert!(!all.contains("SCAN interactions"), "scans the table:\n{all}");
}

/// (scans, rows deleted) of the interactions table, as PostgreSQL's
/// statistics have them (a session's reach them when it ends).
fn table_stats(cs: &str) -> (i64, i64) {
    let env = odbc_api::environment().unwrap();
    let conn = env.connect_with_connection_string(cs, Default::default()).unwrap();
    let sql = "SELECT seq_scan, n_tup_del FROM pg_stat_user_tables WHERE relname = 'interactions'";
    let mut cursor = conn.execute(sql, (), None).unwrap().expect("a row");
    let mut row = odbc_api::Cursor::next_row(&mut cursor).unwrap().expect("the table's statistics");
    let (mut scans, mut deleted) = (0i64, 0i64);
    row.get_data(1, &mut scans).unwrap();
    row.get_data(2, &mut deleted).unwrap();
    (scans, deleted)
}

#[test]
fn postgres_writers_never_scan_the_table() {
    // The writers prepare their statements while the table is empty, when
    // a scan is the cheapest plan, and PostgreSQL keeps that plan: the
    // writers' sessions must not let it scan once the table has grown.
    init_logs();
    let Some(cs) = pg_connection_string() else { return };
    let cs = pg_private_db(&cs, "ixn_storage_scans");
    for strategy in [InsertStrategy::Json, InsertStrategy::MultiRow, InsertStrategy::Array] {
        run_script(&cs, "postgresql/isdb_drop.sql", false);
        run_script(&cs, "postgresql/isdb.sql", false);
        let cfg = StorageConfig {
            connection_string: cs.clone(),
            writers: 1,
            batch_max: 100,
            create_schema: false,
            insert_strategy: Some(strategy),
            commit_delay: std::time::Duration::ZERO,
        };
        let storage = Storage::open(cfg).unwrap();
        let sink = Collect::new();
        let writers = storage.start(vec![sink.clone() as Arc<dyn CompletionSink>]).unwrap();
        let h = writers.handle();
        // Ten rounds of a thousand inserts, then their deletes in batches.
        let mut token = 0u64;
        let mut submit = |op: StoreOp| {
            token += 1;
            h.submit(WriteRequest { shard: 0, token, op, log: Vec::new() });
            token
        };
        let mut last = 0;
        for round in 0..10 {
            for i in 0..1000 {
                submit(StoreOp::Insert(Box::new(common::record(&format!("scan{round:02}{i:010}"), 0))));
            }
            for i in 0..1000 {
                last = submit(StoreOp::Delete(format!("scan{round:02}{i:010}")));
            }
        }
        let done = sink.wait(last as usize, 60);
        assert!(done.values().all(|ok| *ok), "{strategy:?}: every write committed");
        assert!(writers.shutdown(), "{strategy:?}: the writers stopped cleanly");
        let mut stats = table_stats(&cs);
        for _ in 0..100 {
            if stats.1 >= 10_000 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            stats = table_stats(&cs);
        }
        let (scans, deleted) = stats;
        assert_eq!(deleted, 10_000, "{strategy:?}: the writers' statistics arrived");
        // Opening the storage reads the table once (checking its schema).
        assert!(scans <= 1, "{strategy:?}: the table was scanned {scans} times");
    }
    run_script(&cs, "postgresql/isdb_drop.sql", false);
}
