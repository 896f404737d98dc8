//! The events a write carries, when its COMMIT's outcome is unknown: they
//! are stored once each, whether they go straight into the event log's
//! tables (the event log is the main database) or into the outbox (the
//! event log is another database). The retry after a lost COMMIT reply
//! must not store a second copy, nor lose the first.

mod common;

use std::sync::Arc;

use common::*;
use ixn_shard::catalog::{Catalog, Tenant};
use ixn_shard::event::{Event, Location, Subject, What};
use ixn_shard::interaction::IxId;
use ixn_shard::report::Published;
use ixn_shard::versioned::Versioned;
use ixn_storage::{
    sqlite_connection_string, CompletionSink, Faults, LoggerConfig, Storage, StorageConfig, StoreOp, WriteRequest,
};

fn catalog() -> Arc<Versioned<Catalog>> {
    let mut t = Tenant::new("default");
    t.add_media("chat", true).unwrap();
    t.add_process("bp", &["inbound"]).unwrap();
    Arc::new(Versioned::new(Arc::new(Catalog::new(vec![t], true).unwrap())))
}

/// The two events of a submission of `id`, numbered `seq` and `seq + 1`.
fn submitted(id: &str, seq: u64) -> Vec<Arc<Published>> {
    let event = |what| Event {
        time: 7,
        tenant: 0,
        subject: Subject::Interaction { id: IxId::new(id), media: 0, at: Location::Queue(0) },
        what,
    };
    vec![
        Arc::new(Published { shard: 0, seq, event: event(What::Submitted) }),
        Arc::new(Published { shard: 0, seq: seq + 1, event: event(What::PlacedInQueue { from: None }) }),
    ]
}

/// Every (generation, shard, seq) key of `table`, sorted.
fn keys(cs: &str, table: &str) -> Vec<(i64, i64, i64)> {
    use odbc_api::{Cursor, Nullable};
    let env = odbc_api::environment().unwrap();
    let conn = env.connect_with_connection_string(cs, Default::default()).unwrap();
    let sql = format!("SELECT generation, shard, seq FROM {table} ORDER BY generation, shard, seq");
    let mut cursor = conn.execute(&sql, (), None).unwrap().unwrap();
    let mut out = Vec::new();
    while let Some(mut row) = cursor.next_row().unwrap() {
        let mut k = [0i64; 3];
        for (i, v) in k.iter_mut().enumerate() {
            let mut n = Nullable::<i64>::null();
            row.get_data(i as u16 + 1, &mut n).unwrap();
            *v = n.into_opt().unwrap();
        }
        out.push((k[0], k[1], k[2]));
    }
    out
}

/// Writes with events in batches whose COMMIT replies are lost (and one
/// COMMIT that fails), then checks where the events are: `direct` the
/// event log's tables in the main database, else the outbox.
fn events_stored_once(direct: bool) {
    init_logs();
    let dir = TempDir::new(if direct { "events-direct" } else { "events-outbox" });
    let cs = sqlite_connection_string(&dir.0.join("ixn.db"));
    let log_cs = sqlite_connection_string(&dir.0.join("eventlog.db"));
    let cfg = StorageConfig {
        create_schema: true,
        writers: 1,
        commit_delay: std::time::Duration::ZERO,
        ..StorageConfig::new(&cs)
    };
    let mut storage = Storage::open(cfg).unwrap();
    let log_cfg = LoggerConfig {
        connection_string: (!direct).then(|| log_cs.clone()),
        create_schema: true,
        ..LoggerConfig::new()
    };
    let log = storage.enable_event_log(log_cfg, catalog(), 42).unwrap();
    assert_eq!(log.is_direct(), direct);
    let faults = Faults::new();
    storage.inject_faults(faults.clone());
    let sink = Collect::new();
    let writers = storage.start(vec![sink.clone() as Arc<dyn CompletionSink>]).unwrap();
    let mut token = 0u64;
    let mut submit_round = |n: usize| {
        for _ in 0..n {
            let id = format!("ix{token:04}");
            let log = submitted(&id, token * 2 + 1);
            let op = StoreOp::Insert(Box::new(record(&id, 0)));
            writers.handle().submit(WriteRequest { shard: 0, token, op, log });
            token += 1;
        }
        token
    };
    // A batch whose COMMIT lands with its reply lost, then one whose
    // COMMIT fails, then one with nothing wrong.
    faults.hold_batches(true);
    let mut total = submit_round(40);
    faults.lose_commit_replies(1);
    faults.hold_batches(false);
    sink.wait(total as usize, 60);
    faults.hold_batches(true);
    total = submit_round(40);
    faults.fail_commits(1);
    faults.hold_batches(false);
    sink.wait(total as usize, 60);
    total = submit_round(20);
    let done = sink.wait(total as usize, 60);
    assert!(done.iter().all(|(_, ok)| *ok), "every write succeeds in the end: {done:?}");
    assert!(faults.commit_replies_lost() >= 1, "a COMMIT reply was lost");
    writers.shutdown();

    let want: Vec<(i64, i64, i64)> = (1..=total as i64 * 2).map(|s| (42, 0, s)).collect();
    let (stored, outbox) = if direct {
        let mut both = keys(&cs, "rpt_interaction");
        both.extend(keys(&cs, "rpt_agent"));
        both.sort();
        (both, keys(&cs, "ixn_event_outbox"))
    } else {
        (keys(&cs, "ixn_event_outbox"), keys(&log_cs, "rpt_interaction"))
    };
    let missing: Vec<_> = want.iter().filter(|k| !stored.contains(k)).collect();
    let mut twice = stored.clone();
    twice.dedup();
    assert!(
        missing.is_empty() && twice.len() == stored.len() && stored.len() == want.len(),
        "direct {direct}: {} events stored for {} made ({} keys twice); missing {missing:?}",
        stored.len(),
        want.len(),
        stored.len() - twice.len()
    );
    assert!(outbox.is_empty(), "direct {direct}: nothing in the other place: {} rows", outbox.len());
}

#[test]
fn events_in_the_main_database_are_stored_once_across_unknown_outcomes() {
    events_stored_once(true);
}

#[test]
fn events_in_the_outbox_are_stored_once_across_unknown_outcomes() {
    events_stored_once(false);
}
