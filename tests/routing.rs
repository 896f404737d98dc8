//! Routing over TCP with two shards: RequestPull in global view order,
//! concurrent routing clients, routing locks (timeout, holder, connection
//! close), the pull hold, the workflow (`next` queues), workbins, queue
//! depth and the refusals of the new requests.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    check_submission_order, engines, ids_of, interactions_of, media_conns, server_error_of, two_cores, write_config,
    write_config_with, Engine, LogOnPanic, Server, TempDir,
};
use ixn::client::{submit_request, Client};
use ixn_shard::id::{decode, owner_of};
use ixn_shard::kv;
use ixn_shard::proto::frame::Frame;
use ixn_shard::proto::{attr, msg_type, ClientType, ErrorCode, Request};
use ixn_shard::{KvList, Value};

const TENANT: &str = "default";
const BY_PRIORITY: &str = "inbound-by-priority";

fn router(s: &Server, name: &str) -> Client {
    s.client_as(ClientType::RoutingEngine, name)
}

fn pull_request(view: &str, count: u32) -> Request {
    Request::Pull { tenant: TENANT.into(), view: view.into(), count }
}

/// EventPulledInteractions for a pull that must succeed.
fn pull_frame(c: &mut Client, view: &str, count: u32) -> Frame {
    let f = c.call(&pull_request(view, count)).unwrap_or_else(|e| panic!("pull {count} from '{view}': {e}"));
    assert_eq!(f.msg_type, msg_type::EVENT_PULLED_INTERACTIONS, "answer to a pull: {f:?}");
    let n = interactions_of(&f).len();
    assert_eq!(f.get_int(attr::COUNT), Some(n as i64), "Count is the number of interactions: {f:?}");
    assert!(n <= count as usize, "a pull of {count} returned {n}");
    f
}

fn pull(c: &mut Client, view: &str, count: u32) -> Vec<String> {
    ids_of(&pull_frame(c, view, count))
}

fn str_of<'a>(l: &'a KvList, key: &str) -> Option<&'a str> {
    l.get(key).and_then(Value::as_str)
}

fn int_of(l: &KvList, key: &str) -> Option<i64> {
    l.get(key).and_then(Value::as_int)
}

#[derive(Debug, Default, Clone)]
struct Depth {
    interactions: i64,
    locked: i64,
    views: HashMap<String, i64>,
}

/// RequestGetQueueDepth, by queue name.
fn depth(c: &mut Client) -> HashMap<String, Depth> {
    let f = c.call(&Request::GetQueueDepth { tenant: TENANT.into() }).expect("queue depth");
    assert_eq!(f.msg_type, msg_type::EVENT_QUEUE_DEPTH);
    let mut out = HashMap::new();
    for a in f.attrs.iter().filter(|a| a.id == attr::QUEUE_DEPTH) {
        let l = a.value.as_list().expect("QueueDepth is a list");
        let views = l
            .get("views")
            .and_then(Value::as_list)
            .expect("views")
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_int().expect("view count")))
            .collect();
        let d = Depth {
            interactions: int_of(l, "interactions").expect("interactions"),
            locked: int_of(l, "locked").expect("locked"),
            views,
        };
        out.insert(str_of(l, "queue").expect("queue").to_string(), d);
    }
    out
}

/// Submits `priorities.len()` interactions to `inbound`, one at a time (each
/// after the previous ack), round robin over `conns`; property `n` = index.
/// Returns the ids in the order their acks came back.
fn submit_all(conns: &mut [(Client, u16)], priorities: &[i64]) -> Vec<String> {
    let k = conns.len();
    priorities
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            conns[i % k].0.submit(submit_request(TENANT, "inbound", "chat", p, kv![("n", i as i64)])).expect("submit")
        })
        .collect()
}

fn assert_both_shards(ids: &[String]) {
    let owners: HashSet<u16> = ids.iter().map(|id| owner_of(id, 2)).collect();
    assert_eq!(owners.len(), 2, "ids land on both shards: {ids:?}");
}

/// Explains a difference between two id lists (time, sequence and shard of
/// each id, to tell ordering bugs from ties).
fn explain(got: &[String], want: &[String], prio: &HashMap<String, i64>) -> String {
    let show = |id: &String| {
        let p = decode(id).map(|p| format!("t={} seq={}", p.time_ms, p.seq)).unwrap_or_default();
        format!("{id} (prio {:?}, shard {}, {p})", prio.get(id), owner_of(id, 2))
    };
    let mut s = String::new();
    for i in 0..got.len().max(want.len()) {
        let (g, w) = (got.get(i), want.get(i));
        if g != w {
            s.push_str(&format!(
                "  at {i}: got {} want {}\n",
                g.map(show).unwrap_or("-".into()),
                w.map(show).unwrap_or("-".into())
            ));
        }
    }
    s
}

fn ping(c: &mut Client) {
    c.ping().expect("the connection still works");
}

// ----- 1. global view order ---------------------------------------------------

#[test]
fn pulls_follow_the_global_view_order() {
    for engine in engines("routing-order") {
        global_order(&engine);
    }
}

fn global_order(engine: &Engine) {
    let dir = TempDir::new("routing-order");
    let server = Server::start(&write_config(&dir.0, engine, two_cores(), ""));
    let _log = LogOnPanic(&server);
    let mut conns = media_conns(&server, 4);
    let priorities: Vec<i64> = (0..60).map(|i| [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7][i % 14]).collect();
    let ids = submit_all(&mut conns, &priorities);
    assert_both_shards(&ids);
    let prio: HashMap<String, i64> = ids.iter().cloned().zip(priorities.iter().copied()).collect();

    // The single sorted list: priority descending, then submission order
    // (a stable sort of the ack order).
    let mut expected = ids.clone();
    expected.sort_by_key(|id| std::cmp::Reverse(prio[id]));

    let mut r = router(&server, "router-1");
    let mut got = Vec::new();
    for count in [1u32, 2, 7, 3, 11, 5, 13, 1, 20, 4].iter().cycle() {
        let f = pull_frame(&mut r, BY_PRIORITY, *count);
        let left = expected.len() - got.len();
        let list = interactions_of(&f);
        assert_eq!(list.len(), (*count as usize).min(left), "a pull of {count} with {left} left, alone");
        for l in &list {
            assert_eq!(str_of(l, "queue"), Some("inbound"), "{l:?}");
            assert_eq!(str_of(l, "locked_by"), Some("router-1"), "{l:?}");
            let id = str_of(l, "id").unwrap();
            assert_eq!(int_of(l, "priority"), Some(prio[id]), "{l:?}");
            let n = ids.iter().position(|x| x == id).unwrap() as i64;
            assert_eq!(l.get("properties").and_then(Value::as_list).and_then(|p| p.get("n")), Some(&Value::Int(n)));
        }
        if list.is_empty() {
            break;
        }
        got.extend(ids_of(&f));
    }
    // The single sorted list: priority, then ack order (docs/protocol.md 7.8).
    check_submission_order(&got, &expected, |id| prio[id]).unwrap_or_else(|e| {
        panic!(
            "pulls concatenated must be the view's single sorted list (priority DESC, then submission order): {e}\n{}",
            explain(&got, &expected, &prio)
        )
    });
    let d = depth(&mut r);
    assert_eq!((d["inbound"].interactions, d["inbound"].locked), (60, 60), "{d:?}");
    assert_eq!(d["inbound"].views[BY_PRIORITY], 0, "{d:?}");

    // The implicit view `done`: submission order, whatever the order of the
    // moves. The holder of the routing locks moves them.
    let chosen: Vec<String> = ids.iter().step_by(3).cloned().collect();
    let mut move_order = chosen.clone();
    move_order.reverse();
    move_order.swap(1, 5);
    move_order.swap(0, 12);
    for id in &move_order {
        r.call(&Request::PlaceInQueue { id: id.clone(), queue: Some("done".into()) })
            .unwrap_or_else(|e| panic!("the lock holder moves {id} to done: {e}"));
    }
    let d = depth(&mut r);
    assert_eq!((d["inbound"].interactions, d["inbound"].locked), (40, 40), "{d:?}");
    assert_eq!((d["done"].interactions, d["done"].locked, d["done"].views["done"]), (20, 0, 20), "{d:?}");

    let mut r2 = router(&server, "router-2");
    let mut got = Vec::new();
    for count in [3u32, 1, 6, 4, 9] {
        let part = pull(&mut r2, "done", count);
        if part.is_empty() {
            break;
        }
        got.extend(part);
    }
    check_submission_order(&got, &chosen, |_| 0).unwrap_or_else(|e| {
        panic!("the implicit view `done` is FIFO by submission order: {e}\n{}", explain(&got, &chosen, &prio))
    });
    // The order the server fixes is the same for a search.
    let f = r2
        .call(&Request::FindInteractions { tenant: None, condition: "queue = 'done'".into(), limit: 100 })
        .expect("find");
    assert_eq!(ids_of(&f), got, "a search of `done` lists them in the order the view gave");
    assert!(pull(&mut r2, "done", 5).is_empty());
    assert!(pull(&mut r2, BY_PRIORITY, 5).is_empty(), "router-1 still holds the rest");
}

// ----- 2. concurrent routing clients ------------------------------------------

#[test]
fn concurrent_routers_never_share_an_interaction() {
    for engine in engines("routing-race") {
        concurrent_routers(&engine);
    }
}

fn concurrent_routers(engine: &Engine) {
    const N: usize = 300;
    let dir = TempDir::new("routing-race");
    let server = Server::start(&write_config(&dir.0, engine, two_cores(), ""));
    let _log = LogOnPanic(&server);
    let mut conns = media_conns(&server, 4);
    // Distinct priorities (7919 is prime to 300), so the view order is the
    // priority order alone.
    let priorities: Vec<i64> = (0..N).map(|i| ((i * 7919) % N) as i64).collect();
    let ids = submit_all(&mut conns, &priorities);
    assert_both_shards(&ids);
    let rank: HashMap<String, i64> = ids.iter().cloned().zip(priorities.iter().map(|p| N as i64 - p)).collect();

    let taken = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..2u32 {
        let mut r = router(&server, &format!("router-{t}"));
        let (taken, stop) = (taken.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut pulls: Vec<(u32, Vec<String>)> = Vec::new();
            let mut i = 0u32;
            while taken.load(Ordering::SeqCst) < N && !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let count = 1 + (i + t) % 4 + t;
                let got = pull(&mut r, BY_PRIORITY, count);
                taken.fetch_add(got.len(), Ordering::SeqCst);
                pulls.push((count, got));
                i += 1;
            }
            (r, pulls)
        }));
    }
    let results: Vec<_> = threads.into_iter().map(|h| h.join().expect("router thread")).collect();
    stop.store(true, Ordering::SeqCst);

    let mut seen: HashMap<String, usize> = HashMap::new();
    for (t, (_, pulls)) in results.iter().enumerate() {
        let mut last_rank = i64::MIN;
        for (count, got) in pulls {
            assert!(got.len() <= *count as usize);
            for id in got {
                if let Some(other) = seen.insert(id.clone(), t) {
                    panic!("{id} pulled twice: by router-{other} and router-{t}");
                }
                // Nothing comes back (no timeout, no unlock), so what one
                // router takes goes strictly forward in the view order.
                let r = *rank.get(id).unwrap_or_else(|| panic!("pulled an unknown id {id}"));
                assert!(r > last_rank, "router-{t} got {id} (rank {r}) after rank {last_rank}");
                last_rank = r;
            }
        }
    }
    let missing: Vec<&String> = ids.iter().filter(|id| !seen.contains_key(*id)).collect();
    assert!(missing.is_empty(), "never pulled: {missing:?}");
    assert_eq!(seen.len(), N);
    let per: Vec<usize> = results.iter().map(|(_, p)| p.iter().map(|(_, g)| g.len()).sum()).collect();
    eprintln!(
        "routing-race: router pulls {:?}, interactions {:?}",
        results.iter().map(|(_, p)| p.len()).collect::<Vec<_>>(),
        per
    );
    // Both routers still connected: they hold every lock.
    let mut routers: Vec<Client> = results.into_iter().map(|(r, _)| r).collect();
    let r = &mut routers[0];
    let d = depth(r);
    assert_eq!((d["inbound"].interactions, d["inbound"].locked), (N as i64, N as i64), "{d:?}");
    assert!(pull(r, BY_PRIORITY, 10).is_empty());
}

// ----- 3. routing locks -------------------------------------------------------

#[test]
fn routing_locks_time_out_belong_to_their_holder_and_end_with_the_connection() {
    // One engines() per server: each PostgreSQL database is fresh.
    for engine in engines("routing-timeout") {
        lock_timeout(&engine);
    }
    for engine in engines("routing-holder") {
        lock_holder_and_close(&engine);
    }
}

fn lock_timeout(engine: &Engine) {
    let dir = TempDir::new("routing-timeout");
    let cfg = write_config_with(&dir.0, engine, two_cores(), "routing-timeout = 1\n", "");
    let server = Server::start(&cfg);
    let _log = LogOnPanic(&server);
    let mut conns = media_conns(&server, 2);
    let ids = submit_all(&mut conns, &[50, 40, 30, 20, 10, 0]);
    assert_both_shards(&ids);
    let mut ra = router(&server, "router-a");
    let mut rb = router(&server, "router-b");

    // Both locks end 1 s after their pulls: not before the second pull was
    // sent + 1 s, not long after (ticks are 20 ms).
    let t0 = Instant::now();
    assert_eq!(pull(&mut ra, BY_PRIORITY, 1), vec![ids[0].clone()], "the head");
    // The second lock is taken after this (its pull is sent after it).
    let b_sent = Instant::now();
    assert_eq!(pull(&mut rb, BY_PRIORITY, 1), vec![ids[1].clone()], "another router gets the next one");
    let before_timeout = |c: &mut Client, at: Duration| {
        std::thread::sleep(at.saturating_sub(t0.elapsed()));
        let d = depth(c);
        // Only meaningful if the answer came before the locks could end.
        if t0.elapsed() < Duration::from_millis(950) {
            let i = &d["inbound"];
            assert_eq!((i.interactions, i.locked, i.views[BY_PRIORITY]), (6, 2, 4), "at {at:?}: {d:?}");
        } else {
            eprintln!("routing-timeout: depth at {at:?} answered after {:?}; not checked", t0.elapsed());
        }
    };
    before_timeout(&mut ra, Duration::ZERO);
    before_timeout(&mut ra, Duration::from_millis(500)); // half way: still held
                                                         // Both locks end by themselves once the routing-timeout has passed.
    common::eventually("both locks timed out", Duration::from_secs(5), || {
        let d = depth(&mut ra);
        let i = &d["inbound"];
        match (i.interactions, i.locked, i.views[BY_PRIORITY]) {
            (6, 0, 6) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    // The server counts whole milliseconds: up to one less than measured here.
    assert!(b_sent.elapsed() >= Duration::from_millis(999), "not before the routing-timeout");
    let mut rc = router(&server, "router-c");
    assert_eq!(pull(&mut rc, BY_PRIORITY, 6), ids, "back at their original places");
}

fn lock_holder_and_close(engine: &Engine) {
    // Default routing-timeout (12 hours): only the holder, an operator or
    // the end of the holder's connection can end these locks.
    let dir = TempDir::new("routing-holder");
    let server = Server::start(&write_config(&dir.0, engine, two_cores(), ""));
    let _log = LogOnPanic(&server);
    let mut conns = media_conns(&server, 2);
    let ids = submit_all(&mut conns, &[30, 20, 10, 0]);
    assert_both_shards(&ids);
    let mut ra = router(&server, "router-a");
    let mut rb = router(&server, "router-b");
    let mut desk = server.client_as(ClientType::AgentDesktop, "desk");
    let mut op = server.client();

    assert_eq!(pull(&mut ra, BY_PRIORITY, 2), ids[..2]);
    let place = |id: &String| Request::PlaceInQueue { id: id.clone(), queue: Some("done".into()) };
    for (who, c) in [("router-b", &mut rb), ("desk", &mut desk), ("media", &mut conns[0].0)] {
        for id in &ids[..2] {
            let e = server_error_of(c.call(&place(id)));
            assert_eq!(e.code, ErrorCode::InteractionLocked, "{who} moves {id} locked by router-a: {e}");
            assert!(e.text.contains("router-a"), "the text names the holder: {e}");
            let e = server_error_of(c.call(&Request::StopProcessing { id: id.clone(), reason: None }));
            assert_eq!(e.code, ErrorCode::InteractionLocked, "{who} stops {id} locked by router-a: {e}");
            let w = Request::PlaceInWorkbin { id: id.clone(), workbin: "personal".into(), owner: "agent1".into() };
            let e = server_error_of(c.call(&w));
            assert_eq!(e.code, ErrorCode::InteractionLocked, "{who} puts {id} in a workbin: {e}");
            ping(c);
        }
    }
    let f = rb.call(&Request::GetInteractionProperties { id: ids[0].clone() }).expect("reading a locked one is fine");
    assert_eq!(f.get_str(attr::QUEUE), Some("inbound"));

    // The holder may move it; the lock ends with the move.
    ra.call(&place(&ids[0])).expect("the holder moves its interaction");
    assert_eq!(op.get(&ids[0]).unwrap().get_str(attr::QUEUE), Some("done"));
    assert_eq!(pull(&mut ra, BY_PRIORITY, 1), ids[2..3]);
    // An operator may override a lock.
    assert_eq!(pull(&mut rb, BY_PRIORITY, 1), ids[3..4]);
    op.call(&place(&ids[3])).expect("an operator overrides a lock");
    let d = depth(&mut op);
    assert_eq!((d["inbound"].interactions, d["inbound"].locked), (2, 2), "router-a holds ids 1 and 2: {d:?}");
    assert_eq!(d["done"].interactions, 2, "{d:?}");

    // Closing router-a's connection ends its locks at once.
    drop(ra);
    let t = Instant::now();
    loop {
        let d = depth(&mut op);
        if d["inbound"].locked == 0 {
            assert_eq!(d["inbound"].views[BY_PRIORITY], 2, "{d:?}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(2), "locks still held 2 s after the holder closed: {d:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(t.elapsed() < Duration::from_millis(1000), "released only after {:?}", t.elapsed());
    assert_eq!(pull(&mut rb, BY_PRIORITY, 5), ids[1..3], "back in the view, in order");
}

// ----- 4. pull hold ---------------------------------------------------------------

#[test]
fn pull_hold_timeout() {
    for engine in engines("routing-nohold") {
        no_hold(&engine);
    }
    for engine in engines("routing-hold") {
        hold(&engine);
    }
}

fn no_hold(engine: &Engine) {
    let dir = TempDir::new("routing-nohold");
    let server = Server::start(&write_config(&dir.0, engine, two_cores(), ""));
    let _log = LogOnPanic(&server);
    let mut r = router(&server, "router");
    for view in [BY_PRIORITY, "done"] {
        let t = Instant::now();
        assert!(pull(&mut r, view, 10).is_empty());
        assert!(t.elapsed() < Duration::from_millis(500), "pull-hold-timeout 0 answers at once: {:?}", t.elapsed());
    }
}

fn hold(engine: &Engine) {
    let dir = TempDir::new("routing-hold");
    let cfg = write_config_with(&dir.0, engine, two_cores(), "pull-hold-timeout = 2\n", "");
    let server = Server::start(&cfg);
    let _log = LogOnPanic(&server);
    let conns = media_conns(&server, 2);
    let mut r = router(&server, "router");

    // Nothing comes: an empty answer after about 2 s.
    let t = Instant::now();
    assert!(pull(&mut r, BY_PRIORITY, 5).is_empty());
    let e = t.elapsed();
    assert!(e >= Duration::from_millis(1800) && e < Duration::from_millis(4000), "empty after {e:?}, not about 2 s");

    // Something comes 300 ms later, from each shard in turn: the waiting
    // pull gets it, well before the 2 s.
    let mut by_shard: Vec<Option<Client>> = vec![None, None];
    for (c, shard) in conns {
        by_shard[shard as usize].get_or_insert(c);
    }
    for (shard, c) in by_shard.into_iter().enumerate() {
        let mut c = c.expect("a connection on each shard");
        let submitter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let id = c.submit(submit_request(TENANT, "inbound", "chat", 1, KvList::new())).expect("submit");
            (c, id)
        });
        let t = Instant::now();
        let got = pull(&mut r, BY_PRIORITY, 5);
        let e = t.elapsed();
        let (_c, id) = submitter.join().unwrap();
        assert_eq!(owner_of(&id, 2), shard as u16);
        assert_eq!(got, vec![id], "the waiting pull gets the new interaction (shard {shard})");
        assert!(
            e >= Duration::from_millis(250) && e < Duration::from_millis(1500),
            "answered after {e:?}: expected soon after the submit at 300 ms"
        );
    }
    // A view that is not empty answers at once.
    let mut m = server.media_server();
    let id = m.submit(submit_request(TENANT, "inbound", "chat", 1, KvList::new())).unwrap();
    let t = Instant::now();
    assert_eq!(pull(&mut r, BY_PRIORITY, 5), vec![id]);
    assert!(t.elapsed() < Duration::from_millis(500), "{:?}", t.elapsed());
}

// ----- 5. workflow and workbins -------------------------------------------------

const WORKFLOW: &str = r#"
[[tenant]]
name = "default"
media-types = { chat = true, email = true }

[[tenant.workbin]]
name = "personal"
type = "agent"

[[tenant.workbin]]
name = "team"
type = "agent-group"

[[tenant.business-process]]
name = "default"

[[tenant.business-process.queue]]
name = "inbound"
next = "done"

[[tenant.business-process.queue.view]]
name = "inbound-by-priority"
order = "priority DESC"

[[tenant.business-process.queue]]
name = "done"
"#;

#[test]
fn workflow_next_queue_and_workbins() {
    for engine in engines("routing-workflow") {
        workflow(&engine);
    }
}

fn workbin_content(c: &mut Client, workbin: &str, owner: &str) -> Result<Frame, ixn::client::ClientError> {
    c.call(&Request::GetWorkbinContent { tenant: TENANT.into(), workbin: workbin.into(), owner: owner.into() })
}

fn workflow(engine: &Engine) {
    let dir = TempDir::new("routing-workflow");
    let server = Server::start(&write_config(&dir.0, engine, two_cores(), WORKFLOW));
    let _log = LogOnPanic(&server);
    let mut conns = media_conns(&server, 2);
    let ids = submit_all(&mut conns, &[5, 4, 3, 2, 1, 0]);
    assert_both_shards(&ids);
    let mut op = server.client();
    let d = depth(&mut op);
    assert_eq!((d["inbound"].interactions, d["inbound"].views[BY_PRIORITY]), (6, 6), "{d:?}");
    assert_eq!((d["done"].interactions, d["done"].views["done"]), (0, 0), "{d:?}");

    // No Queue: the workflow's next queue.
    for id in &ids[..4] {
        op.call(&Request::PlaceInQueue { id: id.clone(), queue: None }).unwrap_or_else(|e| panic!("{id} to next: {e}"));
        let f = op.get(id).unwrap();
        assert_eq!(f.get_str(attr::QUEUE), Some("done"), "inbound's next is done");
        assert_eq!(f.get_int(attr::VERSION), Some(1));
        let e = server_error_of(op.call(&Request::PlaceInQueue { id: id.clone(), queue: None }));
        assert_eq!(e.code, ErrorCode::UnknownQueue, "done has no next: {e}");
        assert!(e.text.contains("done"), "{e}");
        assert_eq!(op.get(id).unwrap().get_str(attr::QUEUE), Some("done"), "a refused move changes nothing");
    }
    let d = depth(&mut op);
    assert_eq!((d["inbound"].interactions, d["inbound"].views[BY_PRIORITY]), (2, 2), "{d:?}");
    assert_eq!((d["done"].interactions, d["done"].views["done"]), (4, 4), "{d:?}");

    // Workbins: out of every queue and view, listed per owner.
    let to_personal =
        |id: &String| Request::PlaceInWorkbin { id: id.clone(), workbin: "personal".into(), owner: "agent1".into() };
    op.call(&to_personal(&ids[4])).expect("place in workbin");
    let f = workbin_content(&mut op, "personal", "agent1").expect("workbin content");
    assert_eq!(f.msg_type, msg_type::EVENT_WORKBIN_CONTENT);
    assert_eq!(ids_of(&f), ids[4..5]);
    assert_eq!((f.get_int(attr::COUNT), f.get_int(attr::TOTAL)), (Some(1), Some(1)));
    let l = interactions_of(&f)[0];
    assert_eq!((str_of(l, "workbin"), str_of(l, "workbin_owner")), (Some("personal"), Some("agent1")), "{l:?}");
    assert_eq!(str_of(l, "queue"), None, "in a workbin, not a queue: {l:?}");
    let d = depth(&mut op);
    assert_eq!((d["inbound"].interactions, d["inbound"].views[BY_PRIORITY]), (1, 1), "{d:?}");
    assert_eq!(d["done"].interactions, 4, "{d:?}");

    op.call(&to_personal(&ids[5])).expect("place in workbin");
    let f = workbin_content(&mut op, "personal", "agent1").unwrap();
    check_submission_order(&ids_of(&f), &ids[4..6], |_| 0).expect("workbin content in submission order");
    assert!(ids_of(&workbin_content(&mut op, "personal", "agent2").unwrap()).is_empty(), "another owner's");
    assert!(ids_of(&workbin_content(&mut op, "team", "agent1").unwrap()).is_empty(), "another workbin");
    let e = server_error_of(workbin_content(&mut op, "nowhere", "agent1"));
    assert_eq!(e.code, ErrorCode::UnknownWorkbin, "{e}");
    let e = server_error_of(op.call(&Request::PlaceInWorkbin {
        id: ids[0].clone(),
        workbin: "nowhere".into(),
        owner: "agent1".into(),
    }));
    assert_eq!(e.code, ErrorCode::UnknownWorkbin, "{e}");
    let e = server_error_of(op.call(&Request::PlaceInQueue { id: ids[4].clone(), queue: None }));
    assert_eq!(e.code, ErrorCode::InvalidValue, "no next queue for an interaction in a workbin: {e}");

    let mut r = router(&server, "router");
    assert!(pull(&mut r, BY_PRIORITY, 10).is_empty(), "nothing left in inbound's view");
    let d = depth(&mut op);
    assert_eq!((d["inbound"].interactions, d["inbound"].locked, d["inbound"].views[BY_PRIORITY]), (0, 0, 0));

    // Back from the workbin to a queue.
    op.place(&ids[4], "inbound").expect("workbin to queue");
    assert_eq!(ids_of(&workbin_content(&mut op, "personal", "agent1").unwrap()), ids[5..6]);
    assert_eq!(pull(&mut r, BY_PRIORITY, 10), ids[4..5]);
}

// ----- 6. refusals --------------------------------------------------------------

#[test]
fn routing_requests_refuse_bad_input_and_the_connection_goes_on() {
    for engine in engines("routing-bad") {
        bad_input(&engine);
    }
}

fn bad_input(engine: &Engine) {
    let dir = TempDir::new("routing-bad");
    let server = Server::start(&write_config(&dir.0, engine, two_cores(), ""));
    let _log = LogOnPanic(&server);
    let mut m = server.media_server();
    let id = m.submit(submit_request(TENANT, "inbound", "chat", 1, KvList::new())).unwrap();
    let mut r = router(&server, "router");

    let e = server_error_of(r.call(&pull_request("nowhere", 1)));
    assert_eq!(e.code, ErrorCode::UnknownView, "{e}");
    assert!(e.text.contains("nowhere"), "{e}");
    ping(&mut r);
    let e = server_error_of(r.call(&Request::Pull { tenant: "nobody".into(), view: BY_PRIORITY.into(), count: 1 }));
    assert_eq!(e.code, ErrorCode::UnknownTenant, "{e}");
    ping(&mut r);

    let e = server_error_of(r.call(&Request::FindInteractions {
        tenant: None,
        condition: "priority == 5".into(),
        limit: 10,
    }));
    assert_eq!(e.code, ErrorCode::InvalidCondition, "{e}");
    assert!(e.text.contains("character 11"), "the text gives the position: {e}");
    ping(&mut r);
    let e = server_error_of(r.call(&Request::TakeSnapshot {
        tenant: None,
        condition: "lang = 'en' AND".into(),
        lock: false,
        limit: None,
    }));
    assert_eq!(e.code, ErrorCode::InvalidCondition, "{e}");
    assert!(e.text.contains("character"), "{e}");
    ping(&mut r);

    let e = server_error_of(r.call(&Request::GetSnapshotInteractions { snapshot: 12345, start: 0, count: 10 }));
    assert_eq!(e.code, ErrorCode::UnknownSnapshot, "{e}");
    let e = server_error_of(r.call(&Request::ReleaseSnapshot { snapshot: 12345 }));
    assert_eq!(e.code, ErrorCode::UnknownSnapshot, "{e}");
    ping(&mut r);

    for count in [0u32, 1001, 5000] {
        let e = server_error_of(r.call(&pull_request(BY_PRIORITY, count)));
        assert_eq!(e.code, ErrorCode::InvalidValue, "Count {count}: {e}");
        ping(&mut r);
    }
    let e = server_error_of(r.call(&Request::GetSnapshotInteractions { snapshot: 1, start: 0, count: 0 }));
    assert_eq!(e.code, ErrorCode::InvalidValue, "page Count 0: {e}");
    ping(&mut r);

    let mut desk = server.client_as(ClientType::AgentDesktop, "desk");
    let e = server_error_of(desk.call(&pull_request(BY_PRIORITY, 1)));
    assert_eq!(e.code, ErrorCode::NotPermitted, "{e}");
    ping(&mut desk);
    let e = server_error_of(m.call(&pull_request(BY_PRIORITY, 1)));
    assert_eq!(e.code, ErrorCode::NotPermitted, "a media server may not pull: {e}");
    ping(&mut m);

    // After all that, the router still pulls.
    assert_eq!(pull(&mut r, BY_PRIORITY, 10), vec![id]);
}

// ----- submission order of one sequential submitter across shards ------------

/// One client submits on a connection of shard 1, waits for the ack, then on
/// one of shard 0, and so on: each submission is sent after the previous one
/// was acknowledged, often within the same millisecond. Submission order is
/// ack order whatever the shard (docs/protocol.md 7.8), for a search and for
/// a pull, and still after a restart (the order is stored), on each engine.
#[test]
fn submission_order_is_ack_order_across_shards_and_restarts() {
    for engine in engines("routing-ack-order") {
        let dir = TempDir::new("routing-ack-order");
        let config = write_config(&dir.0, &engine, two_cores(), "");
        let mut server = Server::start(&config);
        let _log = LogOnPanic(&server);
        let conns = media_conns(&server, 2);
        let mut by_shard: Vec<Option<Client>> = vec![None, None];
        for (c, shard) in conns {
            by_shard[shard as usize].get_or_insert(c);
        }
        let mut pair: Vec<Client> = by_shard.into_iter().map(|c| c.expect("a connection on each shard")).collect();
        pair.reverse(); // shard 1 first
        let ids: Vec<String> = (0..400)
            .map(|i| pair[i % 2].submit(submit_request(TENANT, "done", "chat", 0, kv![("n", i as i64)])).unwrap())
            .collect();
        drop(pair);
        let prio: HashMap<String, i64> = ids.iter().map(|id| (id.clone(), 0)).collect();
        let found = |server: &Server| {
            let f = server
                .client()
                .call(&Request::FindInteractions { tenant: None, condition: "n >= 0".into(), limit: 1000 })
                .unwrap();
            ids_of(&f)
        };
        let got = found(&server);
        assert!(got == ids, "a find does not give ack order:\n{}", explain(&got, &ids, &prio));
        drop(_log);
        assert_eq!(server.terminate(), Some(0));
        let server = Server::start(&config);
        let _log = LogOnPanic(&server);
        let got = found(&server);
        assert!(got == ids, "after a restart, a find does not give ack order:\n{}", explain(&got, &ids, &prio));
        let mut r = router(&server, "router");
        let got = pull(&mut r, "done", 1000);
        assert!(got == ids, "the view `done` does not give ack order:\n{}", explain(&got, &ids, &prio));
    }
}
