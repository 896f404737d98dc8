//! Crash test (invariant 1): clients submit, change properties, move
//! interactions between queues (place in queue), put them in workbins and
//! stop them, in a loop; the server is killed with SIGKILL at a random
//! moment, restarted on the same data, and every acknowledged write is
//! there: each interaction is as its last acknowledged request left it, or
//! as a later request sent before the kill left it, and an acknowledged
//! stop never comes back.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{engines, two_cores, write_config, Engine, Server, TempDir};
use ixn::client::{submit_request, Client, ClientError};
use ixn_shard::proto::request::error_of;
use ixn_shard::proto::{attr, ClientType, ErrorCode, Request};
use ixn_shard::{kv, Value};

/// Where an interaction is, as the server reports it.
#[derive(Clone, Debug, PartialEq)]
enum Place {
    Queue(String),
    Workbin {
        workbin: String,
        owner: String,
    },
    /// Stopped: the server does not know it.
    Gone,
}

/// What a client can see of an interaction: its counter property and where
/// it is.
#[derive(Clone, Debug, PartialEq)]
struct State {
    counter: i64,
    place: Place,
}

/// What a client knows about one interaction: the state after each request
/// it sent about it, in order (the first: its submission), and how many of
/// those requests were acknowledged (they are answered in order).
#[derive(Clone, Debug)]
struct Known {
    states: Vec<State>,
    acked: usize,
}

#[test]
fn acknowledged_changes_survive_kill_9() {
    for engine in engines("crash") {
        let seed = std::env::var("IXN_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64);
        eprintln!("crash test seed {seed} (IXN_CRASH_SEED={seed} to replay the kill timing)");
        crash_rounds(&engine, seed);
    }
}

fn crash_rounds(engine: &Engine, mut seed: u64) {
    let dir = TempDir::new("crash");
    let cfg = write_config(&dir.0, engine, two_cores(), "");
    let known: Arc<Mutex<HashMap<String, Known>>> = Arc::default();
    for round in 0..3 {
        let mut server = Server::start(&cfg);
        verify(&server, &known, round);
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (addr, known, stop) = (server.addr.clone(), known.clone(), stop.clone());
                std::thread::spawn(move || load(&addr, w, &known, &stop))
            })
            .collect();
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let kill_after = Duration::from_millis(300 + (seed >> 33) % 1200);
        std::thread::sleep(kill_after);
        server.kill9();
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.join().unwrap();
        }
        let k = known.lock().unwrap();
        // Entries of earlier rounds were reset to one acknowledged state.
        let acked_requests: usize = k.values().map(|e| e.acked - 1).sum();
        let stops = k.values().filter(|e| e.acked > 1 && e.states[e.acked - 1].place == Place::Gone).count();
        eprintln!(
            "round {round}: killed after {kill_after:?}; {} interactions acknowledged so far; this round \
             {acked_requests} acknowledged requests after the submits, {stops} of them stops",
            k.len()
        );
        assert!(acked_requests > 0, "the load made progress before the kill");
    }
    let server = Server::start(&cfg);
    verify(&server, &known, 3);
    let k = known.lock().unwrap();
    let gone = k.values().filter(|e| e.states[0].place == Place::Gone).count();
    assert!(gone > 0, "some stops were acknowledged over the rounds");
}

/// The request a worker sends about one of its live interactions in round
/// `i`, with the state it leaves.
fn next_request(id: &str, i: i64, worker: usize, now: &State) -> (Request, State) {
    let mut next = now.clone();
    let req = match i % 10 {
        0..=4 => {
            next.counter += 1;
            Request::ChangeProperties { id: id.to_string(), changed: kv![("counter", next.counter)], deleted: vec![] }
        }
        5 | 6 => {
            let queue = if now.place == Place::Queue("inbound".into()) { "done" } else { "inbound" };
            next.place = Place::Queue(queue.to_string());
            Request::PlaceInQueue { id: id.to_string(), queue: Some(queue.to_string()) }
        }
        7 | 8 => {
            let owner = format!("agent{}", 1 + worker);
            next.place = Place::Workbin { workbin: "personal".into(), owner: owner.clone() };
            Request::PlaceInWorkbin { id: id.to_string(), workbin: "personal".into(), owner }
        }
        _ => {
            next.place = Place::Gone;
            Request::StopProcessing { id: id.to_string(), reason: Some("crash test".into()) }
        }
    };
    (req, next)
}

/// Submits interactions and sends one request about an earlier one each
/// round, pipelined, until the server dies. Records what it sent and what
/// was acknowledged.
fn load(addr: &str, worker: usize, known: &Mutex<HashMap<String, Known>>, stop: &AtomicBool) {
    let Ok(mut c) = Client::connect_as(addr, ClientType::MediaServer, "crash", None) else { return };
    // This worker's interactions that are not stopped (nor being stopped).
    let mut mine: Vec<String> = Vec::new();
    let mut i = 0i64;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let sub = c.queue(&Request::Submit(Box::new(submit_request(
            "default",
            "inbound",
            "chat",
            0,
            kv![("counter", 0), ("w", worker as i64)],
        ))));
        let pick = (i as usize * 7) % mine.len().max(1);
        let other = mine.get(pick).cloned().map(|id| {
            let mut k = known.lock().unwrap();
            let e = k.get_mut(&id).unwrap();
            let (req, next) = next_request(&id, i, worker, e.states.last().unwrap());
            if next.place == Place::Gone {
                mine.swap_remove(pick);
            }
            e.states.push(next);
            let sent = e.states.len();
            (c.queue(&req), id, sent)
        });
        if c.flush().is_err() {
            return;
        }
        let expected = 1 + other.is_some() as usize;
        for _ in 0..expected {
            let f = match c.recv() {
                Ok(f) => f,
                Err(ClientError::Io(_)) => return, // killed
                Err(e) => panic!("{e}"),
            };
            if let Some(e) = error_of(&f) {
                panic!("request refused during the crash test: {e}");
            }
            if f.ref_id == sub {
                let id = f.get_str(attr::INTERACTION_ID).unwrap().to_string();
                let first = State { counter: 0, place: Place::Queue("inbound".into()) };
                known.lock().unwrap().insert(id.clone(), Known { states: vec![first], acked: 1 });
                mine.push(id);
            } else if let Some((r, id, sent)) = &other {
                assert_eq!(f.ref_id, *r);
                let mut k = known.lock().unwrap();
                let e = k.get_mut(id).unwrap();
                e.acked = e.acked.max(*sent);
            }
        }
    }
}

/// The state the server shows of `id`.
fn state_of(c: &mut Client, id: &str, round: usize) -> State {
    let f = match c.get(id) {
        Ok(f) => f,
        Err(ClientError::Server(e)) if e.code == ErrorCode::UnknownInteraction => {
            return State { counter: -1, place: Place::Gone };
        }
        Err(e) => panic!("round {round}: reading {id}: {e}"),
    };
    let counter = match f.get_list(attr::PROPERTIES).and_then(|p| p.get("counter")) {
        Some(Value::Int(n)) => *n,
        other => panic!("{id}: counter property missing: {other:?}"),
    };
    let place = match (f.get_str(attr::QUEUE), f.get_str(attr::WORKBIN), f.get_str(attr::WORKBIN_OWNER)) {
        (Some(q), None, None) => Place::Queue(q.to_string()),
        (None, Some(w), Some(o)) => Place::Workbin { workbin: w.to_string(), owner: o.to_string() },
        other => panic!("{id}: neither in a queue nor in a workbin: {other:?}"),
    };
    State { counter, place }
}

/// Every interaction is as its last acknowledged request left it, or as a
/// request sent later left it (a stopped one is gone only if its stop was
/// sent; an acknowledged stop stays gone).
fn verify(server: &Server, known: &Mutex<HashMap<String, Known>>, round: usize) {
    let mut c = server.client();
    let mut k = known.lock().unwrap();
    for (id, entry) in k.iter_mut() {
        let now = state_of(&mut c, id, round);
        let fits = |s: &State| match (&now.place, &s.place) {
            (Place::Gone, Place::Gone) => true,
            _ => *s == now,
        };
        assert!(
            entry.states[entry.acked - 1..].iter().any(fits),
            "round {round}: {id} is {now:?}; acknowledged up to {:?}, then sent {:?}",
            &entry.states[..entry.acked],
            &entry.states[entry.acked..]
        );
        // What survived is now the truth for the next round: nothing sent
        // before the kill may surface later. (It once did on PostgreSQL, a
        // killed server's COMMIT landing after the restart had loaded; a
        // start now waits for the old writer sessions, docs/storage.md.)
        *entry = Known { states: vec![now], acked: 1 };
    }
}
