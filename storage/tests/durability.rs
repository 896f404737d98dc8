//! An acknowledged write survives `kill -9` of the writing process.
//!
//! The test runs itself again as a child process that writes as fast as it
//! can and prints `ack <id> <version>` after each completion (as the server
//! acknowledges after completion); the parent kills it with SIGKILL
//! mid-stream, then checks every acknowledged write is in the database.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use common::*;
use ixn_storage::{sqlite_connection_string, CompletionSink, Storage, StorageConfig, StoreOp, WriteRequest};

const CHILD_ENV: &str = "IXN_STORAGE_KILL9_CHILD";

/// Prints an ack line per completed write; tokens map to (id, version).
struct PrintAcks {
    ops: Mutex<HashMap<u64, (String, i64)>>,
}

impl CompletionSink for PrintAcks {
    fn complete(&self, done: &mut Vec<(u64, bool)>) {
        let ops = self.ops.lock().unwrap();
        let mut out = std::io::stdout().lock();
        for (token, ok) in done.drain(..) {
            if ok {
                let (id, v) = &ops[&token];
                writeln!(out, "ack {id} {v}").unwrap();
            }
        }
        out.flush().unwrap();
    }
}

/// The agent a row of `version` is handled by: nobody for the inserts
/// (version 0), then an agent for most upserts, so the killed stream
/// writes both NULL and text in assigned_to.
fn agent_of(version: i64) -> Option<String> {
    (version % 4 != 3 && version != 0).then(|| format!("agent{}", version % 10))
}

fn child(connection_string: &str) {
    let storage =
        Storage::open(StorageConfig { create_schema: true, ..StorageConfig::new(connection_string) }).unwrap();
    let sink = Arc::new(PrintAcks { ops: Mutex::new(HashMap::new()) });
    let writers = storage.start(vec![sink.clone() as Arc<dyn CompletionSink>]).unwrap();
    let h = writers.handle();
    let mut token = 0u64;
    for i in 0..10_000_000u64 {
        let mut ops = vec![StoreOp::Insert(Box::new(record(&format!("0007{i:012}"), 0)))];
        if i % 2 == 1 {
            let mut r = record(&format!("0007{:012}", i / 2), i as i64);
            r.assigned_to = agent_of(r.version);
            ops.push(StoreOp::Upsert(Box::new(r)));
        }
        for op in ops {
            token += 1;
            let (id, v) = match &op {
                StoreOp::Insert(r) | StoreOp::Upsert(r) => (r.id.clone(), r.version),
                StoreOp::Delete(id) | StoreOp::Log(id) => (id.clone(), -1),
            };
            sink.ops.lock().unwrap().insert(token, (id, v));
            h.submit(WriteRequest { shard: 0, token, op, log: Vec::new() });
        }
        if i % 256 == 0 {
            // Keep the queue short so acks keep flowing until the kill.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

#[test]
fn kill9_keeps_acknowledged_writes() {
    if let Ok(cs) = std::env::var(CHILD_ENV) {
        child(&cs);
        return;
    }
    let dir = TempDir::new("kill9");
    let cs = sqlite_connection_string(&dir.0.join("ixn.db"));
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "kill9_keeps_acknowledged_writes", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &cs)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
    let mut acked: HashMap<String, i64> = HashMap::new();
    let record_ack = |line: &str, acked: &mut HashMap<String, i64>| {
        if let Some(rest) = line.strip_prefix("ack ") {
            let (id, v) = rest.split_once(' ').unwrap();
            let v: i64 = v.parse().unwrap();
            let e = acked.entry(id.to_string()).or_insert(v);
            *e = (*e).max(v);
        }
    };
    let mut seen = 0;
    for line in lines.by_ref() {
        let line = line.unwrap();
        record_ack(&line, &mut acked);
        if line.starts_with("ack ") {
            seen += 1;
            if seen == 20_000 {
                break;
            }
        }
    }
    c.kill().unwrap(); // SIGKILL
                       // Acks printed before the kill are still in the pipe.
    for line in lines {
        record_ack(&line.unwrap(), &mut acked);
    }
    c.wait().unwrap();
    assert!(seen >= 20_000, "the child acknowledged only {seen} writes");

    let rows = Storage::open(StorageConfig::new(cs)).unwrap().load_live().unwrap();
    // Every row is whole: its agent is the one written with its version.
    let torn: Vec<_> = rows.iter().filter(|r| r.assigned_to != agent_of(r.version)).take(5).collect();
    assert!(torn.is_empty(), "rows whose assigned_to does not match their version: {torn:?}");
    assert!(rows.iter().any(|r| r.assigned_to.is_some()), "some rows have an agent");
    let live: HashMap<String, i64> = rows.into_iter().map(|r| (r.id, r.version)).collect();
    let mut missing = 0;
    let mut stale = 0;
    for (id, v) in &acked {
        match live.get(id) {
            None => missing += 1,
            Some(got) if got < v => stale += 1,
            Some(_) => {}
        }
    }
    assert_eq!(
        (missing, stale),
        (0, 0),
        "of {} acknowledged interactions, missing or older than acknowledged",
        acked.len()
    );
    eprintln!(
        "{} acknowledged interactions all present after kill -9 ({} rows in the database)",
        acked.len(),
        live.len()
    );
}
