//! Snapshots and search over TCP with two shards: a snapshot is a
//! consistent cut of every shard while writers run; find results, paging,
//! release, and snapshot locks.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{
    check_submission_order, engines, ids_of, interactions_of, media_conns, server_error_of, two_cores,
    write_config_with, Engine, LogOnPanic, Server, TempDir,
};
use ixn::client::{submit_request, Client, ClientError};
use ixn_shard::id::owner_of;
use ixn_shard::kv;
use ixn_shard::proto::frame::Frame;
use ixn_shard::proto::{attr, msg_type, ClientType, ErrorCode, Request};
use ixn_shard::{KvList, Value};

const TENANT: &str = "default";

fn int_of(l: &KvList, key: &str) -> Option<i64> {
    l.get(key).and_then(Value::as_int)
}

/// EventSnapshotTaken: (snapshot id, Count, Total).
fn take(c: &mut Client, condition: &str, lock: bool, limit: Option<u32>) -> (u64, i64, i64) {
    let f = c
        .call(&Request::TakeSnapshot { tenant: None, condition: condition.into(), lock, limit })
        .unwrap_or_else(|e| panic!("snapshot of '{condition}': {e}"));
    assert_eq!(f.msg_type, msg_type::EVENT_SNAPSHOT_TAKEN, "{f:?}");
    let id = f.get_int(attr::SNAPSHOT_ID).expect("SnapshotId");
    (id as u64, f.get_int(attr::COUNT).expect("Count"), f.get_int(attr::TOTAL).expect("Total"))
}

fn page(c: &mut Client, snapshot: u64, start: u32, count: u32) -> Result<Frame, ClientError> {
    c.call(&Request::GetSnapshotInteractions { snapshot, start, count })
}

/// Reads every entry of a snapshot of `n` entries in pages of `size`,
/// checking Start, Count and Total on each page.
fn read_all(c: &mut Client, snapshot: u64, n: i64, size: u32) -> Vec<KvList> {
    let mut all = Vec::new();
    loop {
        let start = all.len() as u32;
        let f = page(c, snapshot, start, size).unwrap_or_else(|e| panic!("page at {start} of {snapshot}: {e}"));
        assert_eq!(f.msg_type, msg_type::EVENT_SNAPSHOT_INTERACTIONS, "{f:?}");
        let items = interactions_of(&f);
        let want = (n - start as i64).clamp(0, size as i64);
        assert_eq!(items.len() as i64, want, "page at {start} of {n} by {size}");
        assert_eq!(f.get_int(attr::START), Some(start as i64));
        assert_eq!(f.get_int(attr::COUNT), Some(want));
        assert_eq!(f.get_int(attr::TOTAL), Some(n));
        if items.is_empty() {
            return all;
        }
        all.extend(items.into_iter().cloned());
    }
}

fn release(c: &mut Client, snapshot: u64) {
    let f = c.call(&Request::ReleaseSnapshot { snapshot }).expect("release");
    assert_eq!(f.msg_type, msg_type::EVENT_ACK);
}

/// Whether `values` is exactly {0, 1, ..., len-1}.
fn prefix_gap(values: &[i64]) -> Option<String> {
    let mut v = values.to_vec();
    v.sort_unstable();
    for (i, &x) in v.iter().enumerate() {
        if x != i as i64 {
            let missing: Vec<i64> = (0..=*v.last().unwrap()).filter(|k| !values.contains(k)).take(20).collect();
            return Some(format!(
                "{} values, max {}, first wrong at sorted position {i} ({x}); missing (first 20): {missing:?}",
                v.len(),
                v.last().unwrap()
            ));
        }
    }
    None
}

// ----- 7. consistent cut --------------------------------------------------------

#[test]
fn snapshots_are_consistent_cuts_while_writers_run() {
    for engine in engines("snapshot-cut") {
        consistent_cut(&engine);
    }
}

fn consistent_cut(engine: &Engine) {
    let dir = TempDir::new("snapshot-cut");
    let cfg = write_config_with(&dir.0, engine, two_cores(), "max-interactions-per-snapshot = 100000\n", "");
    let server = Server::start(&cfg);
    let _log = LogOnPanic(&server);
    let conns = media_conns(&server, 2);
    let stop = Arc::new(AtomicBool::new(false));
    let (to_mover, moves) = mpsc::channel::<(i64, String)>();

    // The submitter: seq = 0, 1, 2, ... one at a time, alternating over
    // connections on both shards; each acknowledged id goes to the mover.
    let submitter = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut conns = conns;
            let mut ids = Vec::new();
            let mut seq = 0i64;
            while !stop.load(Ordering::SeqCst) {
                let k = seq as usize % conns.len();
                let id = conns[k]
                    .0
                    .submit(submit_request(TENANT, "inbound", "chat", seq % 3, kv![("seq", seq)]))
                    .expect("submit");
                to_mover.send((seq, id.clone())).unwrap();
                ids.push(id);
                seq += 1;
            }
            ids
        })
    };
    // The mover: places each in `done`, in seq order, one at a time.
    let mover = {
        let mut c = server.client_as(ClientType::MediaServer, "mover");
        std::thread::spawn(move || {
            let mut moved = Vec::new();
            for (seq, id) in moves {
                c.call(&Request::PlaceInQueue { id: id.clone(), queue: Some("done".into()) })
                    .unwrap_or_else(|e| panic!("move seq {seq} ({id}): {e}"));
                moved.push(seq);
            }
            moved
        })
    };

    let mut c = server.client_as(ClientType::ReportingEngine, "snapshots");
    let t0 = Instant::now();
    let (mut cuts, mut done_cuts, mut largest, mut largest_done) = (0, 0, 0usize, 0usize);
    let mut sizes = Vec::new();
    let mut i = 0;
    while t0.elapsed() < Duration::from_secs(3) {
        let done = i % 2 == 1;
        i += 1;
        let condition = if done { "queue = 'done'" } else { "seq >= 0" };
        let (snap, count, total) = take(&mut c, condition, false, None);
        assert_eq!(count, total, "nothing held back below max-interactions-per-snapshot");
        let entries = read_all(&mut c, snap, count, 1000);
        release(&mut c, snap);
        let seqs: Vec<i64> = entries
            .iter()
            .map(|l| {
                assert_eq!(int_of(l, "gone"), None, "nothing is stopped: {l:?}");
                let p = l.get("properties").and_then(Value::as_list).expect("properties");
                p.get("seq").and_then(Value::as_int).expect("seq")
            })
            .collect();
        let distinct: HashSet<&String> = entries
            .iter()
            .map(|l| match l.get("id") {
                Some(Value::Str(s)) => s,
                other => panic!("id: {other:?}"),
            })
            .collect();
        assert_eq!(distinct.len(), entries.len(), "an interaction twice in one snapshot");
        if let Some(gap) = prefix_gap(&seqs) {
            panic!(
                "snapshot {snap} of '{condition}' (#{i} at {:?}) is not a prefix of the {} order: {gap}",
                t0.elapsed(),
                if done { "move" } else { "submission" }
            );
        }
        if done {
            done_cuts += 1;
            largest_done = largest_done.max(seqs.len());
        } else {
            cuts += 1;
            largest = largest.max(seqs.len());
        }
        sizes.push(seqs.len());
    }
    stop.store(true, Ordering::SeqCst);
    let ids = submitter.join().expect("submitter");
    let moved = mover.join().expect("mover");
    eprintln!(
        "snapshot-cut: {} submitted, {} moved, {cuts} + {done_cuts} snapshots, largest {largest} / {largest_done}",
        ids.len(),
        moved.len()
    );
    assert_both(&ids);
    assert_eq!(moved, (0..ids.len() as i64).collect::<Vec<_>>());
    assert!(cuts >= 3 && done_cuts >= 3, "too few snapshots: {cuts} + {done_cuts}");
    assert!(largest >= 20 && largest_done >= 10, "the writers barely ran: {largest} / {largest_done}; {sizes:?}");

    // Quiet now: a snapshot holds everything.
    let (snap, count, total) = take(&mut c, "seq >= 0", false, None);
    assert_eq!((count, total), (ids.len() as i64, ids.len() as i64));
    let got: Vec<String> = read_all(&mut c, snap, count, 777).iter().map(id_of).collect();
    let want: HashSet<&String> = ids.iter().collect();
    assert_eq!(got.iter().collect::<HashSet<_>>(), want);
}

fn id_of(l: &KvList) -> String {
    l.get("id").and_then(Value::as_str).expect("id").to_string()
}

fn assert_both(ids: &[String]) {
    let owners: HashSet<u16> = ids.iter().map(|id| owner_of(id, 2)).collect();
    assert_eq!(owners.len(), 2, "ids on both shards");
}

// ----- find, paging, release, locks ----------------------------------------------

#[test]
fn find_paging_release_and_snapshot_locks() {
    for engine in engines("snapshot-find") {
        find_and_snapshots(&engine);
    }
}

fn find(c: &mut Client, condition: &str, limit: u32) -> (Vec<String>, i64, i64) {
    let f = c
        .call(&Request::FindInteractions { tenant: None, condition: condition.into(), limit })
        .unwrap_or_else(|e| panic!("find '{condition}': {e}"));
    assert_eq!(f.msg_type, msg_type::EVENT_INTERACTIONS_FOUND, "{f:?}");
    let ids = ids_of(&f);
    assert_eq!(f.get_int(attr::COUNT), Some(ids.len() as i64));
    (ids, f.get_int(attr::COUNT).unwrap(), f.get_int(attr::TOTAL).expect("Total"))
}

fn pull(c: &mut Client, count: u32) -> Vec<String> {
    let f = c.call(&Request::Pull { tenant: TENANT.into(), view: "inbound-by-priority".into(), count }).expect("pull");
    assert_eq!(f.msg_type, msg_type::EVENT_PULLED_INTERACTIONS);
    ids_of(&f)
}

fn locked_count(c: &mut Client) -> i64 {
    let f = c.call(&Request::GetQueueDepth { tenant: TENANT.into() }).expect("depth");
    f.attrs
        .iter()
        .filter(|a| a.id == attr::QUEUE_DEPTH)
        .map(|a| int_of(a.value.as_list().unwrap(), "locked").unwrap())
        .sum()
}

fn find_and_snapshots(engine: &Engine) {
    const N: usize = 40;
    const CAP: i64 = 25;
    let dir = TempDir::new("snapshot-find");
    let cfg = write_config_with(&dir.0, engine, two_cores(), &format!("max-interactions-per-snapshot = {CAP}\n"), "");
    let server = Server::start(&cfg);
    let _log = LogOnPanic(&server);
    let mut conns = media_conns(&server, 2);
    let k = conns.len();
    let ids: Vec<String> = (0..N)
        .map(|i| {
            let group = if i % 2 == 0 { "a" } else { "b" };
            let props = kv![("n", i as i64), ("group", group)];
            conns[i % k].0.submit(submit_request(TENANT, "inbound", "chat", (i % 4) as i64, props)).unwrap()
        })
        .collect();
    assert_both(&ids);
    let evens: Vec<String> = ids.iter().step_by(2).cloned().collect();
    let odds: Vec<String> = ids.iter().skip(1).step_by(2).cloned().collect();
    let mut c = server.client();

    // Find: submission order (ack order), Count and Total.
    let (order, count, total) = find(&mut c, "n >= 0", 100);
    assert_eq!((count, total), (N as i64, N as i64));
    check_submission_order(&order, &ids, |_| 0).expect("find answers in submission order");
    let (a, count, total) = find(&mut c, "group = 'a'", 100);
    assert_eq!((count, total), (20, 20));
    check_submission_order(&a, &evens, |_| 0).expect("find answers in submission order");
    assert_eq!(a, order.iter().filter(|id| evens.contains(id)).cloned().collect::<Vec<_>>());
    let (got, count, total) = find(&mut c, "group = 'a'", 5);
    assert_eq!((count, total), (5, 20), "Limit caps Count, not Total");
    assert_eq!(got, a[..5], "the first five in submission order");
    let (got, _, total) = find(&mut c, "n >= 10 AND n < 14 AND priority != 1", 100);
    assert_eq!(total, 3, "n = 13 has priority 1");
    check_submission_order(&got, &ids[10..13], |_| 0).expect("find order");
    let (got, _, total) = find(&mut c, "queue = 'done' OR nothing IS NOT NULL", 100);
    assert!(got.is_empty() && total == 0);

    // Paging: the snapshot holds the first CAP matches in submission order.
    let (snap, count, total) = take(&mut c, "n >= 0", false, None);
    assert_eq!((count, total), (CAP, N as i64), "max-interactions-per-snapshot caps a snapshot");
    let all: Vec<String> = read_all(&mut c, snap, count, 10).iter().map(id_of).collect();
    assert_eq!(all, order[..CAP as usize], "a snapshot keeps the first matches in submission order");
    let f = page(&mut c, snap, 20, 10).unwrap();
    assert_eq!(ids_of(&f), order[20..25]);
    assert_eq!(
        (f.get_int(attr::START), f.get_int(attr::COUNT), f.get_int(attr::TOTAL)),
        (Some(20), Some(5), Some(CAP))
    );
    let f = page(&mut c, snap, 1000, 10).unwrap();
    assert!(ids_of(&f).is_empty());
    assert_eq!((f.get_int(attr::COUNT), f.get_int(attr::TOTAL)), (Some(0), Some(CAP)));
    // Another connection does not see it.
    let mut other = server.client();
    let e = server_error_of(page(&mut other, snap, 0, 10));
    assert_eq!(e.code, ErrorCode::UnknownSnapshot, "{e}");
    // Release: then it is gone.
    release(&mut c, snap);
    let e = server_error_of(page(&mut c, snap, 0, 10));
    assert_eq!(e.code, ErrorCode::UnknownSnapshot, "{e}");
    let e = server_error_of(c.call(&Request::ReleaseSnapshot { snapshot: snap }));
    assert_eq!(e.code, ErrorCode::UnknownSnapshot, "{e}");
    let (snap, count, total) = take(&mut c, "n >= 0", false, Some(7));
    assert_eq!((count, total), (7, N as i64), "Limit");
    assert_eq!(read_all(&mut c, snap, 7, 3).iter().map(id_of).collect::<Vec<_>>(), order[..7]);
    release(&mut c, snap);

    // Lock = 1: the router does not get them until the snapshot is released.
    let mut holder = server.client_as(ClientType::ReportingEngine, "snap-holder");
    let (snap, count, _) = take(&mut holder, "group = 'b'", true, None);
    assert_eq!(count, 20);
    let entries = read_all(&mut holder, snap, 20, 100);
    let b: Vec<String> = entries.iter().map(id_of).collect();
    assert_eq!(b, order.iter().filter(|id| odds.contains(id)).cloned().collect::<Vec<_>>());
    for l in &entries {
        assert_eq!(l.get("locked_by").and_then(Value::as_str), Some("snap-holder"), "{l:?}");
    }
    assert_eq!(locked_count(&mut c), 20);
    let mut r = server.client_as(ClientType::RoutingEngine, "router");
    let got = pull(&mut r, 100);
    assert_eq!(got.iter().collect::<HashSet<_>>(), evens.iter().collect::<HashSet<_>>(), "only the unlocked ones");
    let mut media = server.media_server();
    let e = server_error_of(media.call(&Request::PlaceInQueue { id: odds[0].clone(), queue: Some("done".into()) }));
    assert_eq!(e.code, ErrorCode::InteractionLocked, "{e}");
    assert!(e.text.contains("snap-holder"), "{e}");
    // A locking snapshot takes only unlocked interactions; a plain one sees all.
    let (s2, count, total) = take(&mut c, "n >= 0", true, None);
    assert_eq!((count, total), (0, 0), "everything is locked by someone");
    release(&mut c, s2);
    let (s3, count, total) = take(&mut c, "group = 'b'", false, None);
    assert_eq!((count, total), (20, 20));
    release(&mut c, s3);
    assert!(pull(&mut r, 100).is_empty());
    release(&mut holder, snap);
    assert_eq!(locked_count(&mut c), 20, "the snapshot's locks end before the ack; the router's remain");
    let got = pull(&mut r, 100);
    assert_eq!(got.iter().collect::<HashSet<_>>(), odds.iter().collect::<HashSet<_>>(), "released: now pulled");

    // Closing the holder's connection ends its snapshot locks too.
    let mut m2 = server.media_server();
    let extra: Vec<String> = (0..4)
        .map(|i| m2.submit(submit_request(TENANT, "inbound", "chat", 0, kv![("late", i as i64)])).unwrap())
        .collect();
    let mut h2 = server.client_as(ClientType::ReportingEngine, "snap-holder-2");
    let (_, count, _) = take(&mut h2, "late >= 0", true, None);
    assert_eq!(count, 4);
    assert!(pull(&mut r, 10).is_empty());
    drop(h2);
    let t = Instant::now();
    let got = loop {
        let got = pull(&mut r, 10);
        if !got.is_empty() || t.elapsed() > Duration::from_secs(2) {
            break got;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(got, extra, "the snapshot locks ended with the connection");
}

/// RequestReleaseSnapshot of a locking snapshot answers once every shard has
/// ended its locks (docs/protocol.md 7.17): a client on another shard that
/// asks right after the ack never sees them locked.
#[test]
fn released_snapshot_locks_are_gone_when_the_ack_comes() {
    let dir = TempDir::new("snapshot-release");
    let server = Server::start(&write_config_with(&dir.0, &Engine::Sqlite, two_cores(), "", ""));
    let _log = LogOnPanic(&server);
    let mut conns = media_conns(&server, 2);
    let ids: Vec<String> = (0..20)
        .map(|i| conns[i % 2].0.submit(submit_request(TENANT, "inbound", "chat", 0, kv![("n", i as i64)])).unwrap())
        .collect();
    assert_both(&ids);
    let (mut holder, mut checker) = {
        let mut it = conns.into_iter();
        (it.next().unwrap(), it.next().unwrap())
    };
    assert_ne!(holder.1, checker.1, "holder and checker on different shards");
    let mut stale = Vec::new();
    for round in 0..300 {
        let (snap, count, _) = take(&mut holder.0, "n >= 0", true, None);
        assert_eq!(count, 20);
        release(&mut holder.0, snap);
        let locked = locked_count(&mut checker.0);
        if locked != 0 {
            stale.push((round, locked));
        }
    }
    assert!(stale.is_empty(), "after the release's ack, still locked (round, locked): {stale:?}");
}
