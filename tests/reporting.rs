//! The reporting stream across lost connections: a subscriber that drops
//! its connection at random points and resumes with the EventCursor of the
//! last event it read receives every event exactly once (checked against a
//! subscriber that stayed connected); `ixnctl watch`, disconnected by the
//! server for falling behind, resumes and prints every event once; cursors
//! of an earlier run, older than what the server keeps, or malformed, are
//! refused with their codes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{server_error_of, write_config_with, Engine, LogOnPanic, Server, TempDir};
use ixn::client::{submit_request, Client};
use ixn_shard::proto::frame::Frame;
use ixn_shard::proto::{attr, msg_type, ClientType, ErrorCode};
use ixn_shard::{kv, Value};

/// An event as both subscribers see it: its type and attributes, without
/// the connection's numbering (EventSequence) and cursor.
fn canonical(f: &Frame) -> String {
    let attrs: Vec<String> = f
        .attrs
        .iter()
        .filter(|a| a.id != attr::EVENT_SEQUENCE && a.id != attr::EVENT_CURSOR)
        .map(|a| format!("{}={:?}", a.id, a.value))
        .collect();
    format!("{} {}", msg_type::name(f.msg_type), attrs.join(" "))
}

/// The shard numbers of a cursor `G:N0,N1,...`.
fn numbers(cursor: &str) -> (String, Vec<u64>) {
    let (g, rest) = cursor.split_once(':').expect("a cursor has a colon");
    (g.to_string(), rest.split(',').map(|n| n.parse().expect("a number")).collect())
}

/// What one subscriber received: each event once, by (shard, number).
#[derive(Default)]
struct Received {
    events: BTreeMap<(usize, u64), String>,
    last_cursor: Option<String>,
    numbers: Vec<u64>,
}

impl Received {
    /// Takes one reporting event: its cursor must move exactly one shard's
    /// number forward (so no event of that shard was skipped or repeated,
    /// the numbers' gaps aside), and the event must be new.
    fn take(&mut self, f: &Frame) {
        assert!(msg_type::is_reporting(f.msg_type), "not a reporting event: {f:?}");
        let cursor = f.get_str(attr::EVENT_CURSOR).expect("every reporting event has an EventCursor").to_string();
        let (_, now) = numbers(&cursor);
        if self.numbers.is_empty() {
            self.numbers = vec![0; now.len()];
        }
        let moved: Vec<usize> = (0..now.len()).filter(|&s| now[s] != self.numbers[s]).collect();
        assert_eq!(moved.len(), 1, "cursor {cursor} after {:?} moves one shard", self.numbers);
        let s = moved[0];
        assert!(now[s] > self.numbers[s], "cursor {cursor} goes back from {:?}", self.numbers);
        let before = self.events.insert((s, now[s]), canonical(f));
        assert!(before.is_none(), "event {s}/{} received twice: {f:?}", now[s]);
        self.numbers = now;
        self.last_cursor = Some(cursor);
    }

    /// Reads events until none comes for `quiet`.
    fn drain(&mut self, c: &mut Client, quiet: Duration) {
        while let Some(f) = c.next_event(quiet).unwrap() {
            self.take(&f);
        }
    }
}

/// Reads every event on `c`, on a thread of its own, until `done` is set
/// and then nothing came for 1.5 s.
fn read_until_done(mut c: Client, done: Arc<AtomicBool>) -> std::thread::JoinHandle<Received> {
    std::thread::spawn(move || {
        let mut got = Received::default();
        loop {
            // Seen before the wait, so the last wait is a whole quiet time.
            let ending = done.load(Ordering::Relaxed);
            let quiet = if ending { 1500 } else { 100 };
            match c.next_event(Duration::from_millis(quiet)).unwrap() {
                Some(f) => got.take(&f),
                None if ending => return got,
                None => {}
            }
        }
    })
}

/// Submits, changes and stops interactions on `ms`'s shard (ids are
/// generated there) until `stop`, at most `cycles` times.
fn load(mut ms: Client, cycles: u64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut n = 0u64;
        while n < cycles && !stop.load(Ordering::Relaxed) {
            let id =
                ms.submit(submit_request("default", "inbound", "chat", 0, kv![("n", Value::Int(n as i64))])).unwrap();
            ms.change(&id, kv![("step", Value::Int(1))], vec![]).unwrap();
            ms.stop(&id, Some("done")).unwrap();
            n += 1;
            // Spread over a few seconds, so the drops fall during the load.
            std::thread::sleep(Duration::from_millis(2));
        }
        n
    })
}

#[test]
fn a_subscriber_that_drops_and_resumes_receives_every_event_once() {
    let dir = TempDir::new("reporting-resume");
    let cfg = write_config_with(&dir.0, &Engine::Sqlite, common::two_cores(), "", "");
    let server = Server::start(&cfg);
    let _log = LogOnPanic(&server);
    let mut reference = server.client_as(ClientType::ReportingEngine, "reference");
    reference.subscribe(None).unwrap();
    let mut resumer = server.client_as(ClientType::ReportingEngine, "resumer");
    resumer.subscribe(None).unwrap();
    let mut by_resumer = Received::default();
    // The reference reads everything, on its own thread, until the load
    // ended and nothing came for 1.5 s.
    let done = Arc::new(AtomicBool::new(false));
    let reference = read_until_done(reference, done.clone());

    let stop = Arc::new(AtomicBool::new(false));
    // One media server on each shard, so both shards make events.
    let loaders: Vec<_> =
        common::media_conns(&server, 2).into_iter().take(2).map(|(ms, _)| load(ms, 1500, stop.clone())).collect();
    // Some pseudo-random points: read a few events, then drop the
    // connection with whatever is on its way, and resume.
    // A fresh seed each run (printed: the output shows on failure).
    let seed = std::env::var("IXN_RESUME_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("drop points from seed {seed} (IXN_RESUME_SEED={seed} replays them)");
    let mut rng = seed;
    let mut drops = 0;
    let t = Instant::now();
    while drops < 12 {
        assert!(t.elapsed() < Duration::from_secs(60), "12 drops took a minute");
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Reads for 20 to 400 ms, then drops wherever it is.
        let reading = Instant::now();
        let span = Duration::from_millis(20 + rng % 380);
        let mut reads = 0;
        while reading.elapsed() < span {
            match resumer.next_event(Duration::from_millis(50)).unwrap() {
                Some(f) => {
                    by_resumer.take(&f);
                    reads += 1;
                }
                None => continue,
            }
        }
        eprintln!("{:?}: drop {drops} after {reads} events, cursor {:?}", t.elapsed(), by_resumer.last_cursor);
        // Dropped without unsubscribing: events queued for it are lost.
        drop(resumer);
        drops += 1;
        resumer = server.client_as(ClientType::ReportingEngine, "resumer");
        if let Err(e) = resumer.subscribe_after(None, by_resumer.last_cursor.as_deref()) {
            panic!("resuming after {:?}: {e}", by_resumer.last_cursor);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let cycles: u64 = loaders.into_iter().map(|l| l.join().unwrap()).sum();
    done.store(true, Ordering::Relaxed);
    by_resumer.drain(&mut resumer, Duration::from_millis(1500));
    let by_reference = reference.join().unwrap();

    assert!(cycles > 20, "the load made only {cycles} cycles");
    // The reference saw every event since it subscribed, which was before
    // the resumer did; from the resumer's first event on, both saw the same.
    let first = *by_resumer.events.keys().next().expect("the resumer received events");
    assert!(by_resumer.numbers.iter().all(|&n| n > 0), "events of every shard: {:?}", by_resumer.numbers);
    let first_per_shard: Vec<u64> =
        (0..2).map(|s| by_resumer.events.keys().filter(|k| k.0 == s).map(|k| k.1).min().unwrap_or(u64::MAX)).collect();
    let expected: BTreeMap<_, _> =
        by_reference.events.iter().filter(|(k, _)| k.1 >= first_per_shard[k.0]).map(|(k, v)| (*k, v.clone())).collect();
    let missing: BTreeSet<_> = expected.keys().filter(|k| !by_resumer.events.contains_key(k)).collect();
    let extra: BTreeSet<_> = by_resumer.events.keys().filter(|k| !expected.contains_key(k)).collect();
    assert!(
        missing.is_empty(),
        "{} events missed after resuming, first {:?} (first received {first:?})",
        missing.len(),
        missing.iter().next()
    );
    assert!(extra.is_empty(), "{} events the reference never saw: {:?}", extra.len(), extra.iter().next());
    for (k, v) in &expected {
        assert_eq!(&by_resumer.events[k], v, "event {k:?} differs");
    }
    // Every cycle's five events reached both (submitted, placed, changed, stopped... per interaction).
    assert!(expected.len() as u64 >= cycles * 3, "{} events for {cycles} cycles", expected.len());
    eprintln!("{drops} drops, {cycles} cycles, {} events compared in {:?}", expected.len(), t.elapsed());
}

#[test]
fn cursors_that_cannot_be_resumed_are_refused() {
    let dir = TempDir::new("reporting-cursors");
    let cfg = write_config_with(&dir.0, &Engine::Sqlite, "0", "reporting-replay-events = 10\n", "");
    let mut server = Server::start(&cfg);
    let mut r = server.client_as(ClientType::ReportingEngine, "r");
    r.subscribe(None).unwrap();
    let mut ms = server.media_server();
    let id = ms.submit(submit_request("default", "inbound", "chat", 0, kv![])).unwrap();
    let first = r.wait_event(msg_type::EVENT_INTERACTION_SUBMITTED, Duration::from_secs(5)).unwrap().unwrap();
    let cursor = first.get_str(attr::EVENT_CURSOR).unwrap().to_string();
    // Resuming right away works, with nothing lost.
    let mut again = server.client_as(ClientType::ReportingEngine, "again");
    again.subscribe_after(None, Some(&cursor)).unwrap();
    let placed = again.wait_event(msg_type::EVENT_PLACED_IN_QUEUE, Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(placed.get_str(attr::INTERACTION_ID), Some(id.as_str()));
    drop(again);
    // Eleven more events: the one after the cursor is no longer kept.
    for _ in 0..4 {
        let id = ms.submit(submit_request("default", "inbound", "chat", 0, kv![])).unwrap();
        ms.stop(&id, None).unwrap();
    }
    let mut late = server.client_as(ClientType::ReportingEngine, "late");
    let e = server_error_of(late.subscribe_after(None, Some(&cursor)));
    assert_eq!(e.code, ErrorCode::CursorExpired, "{e:?}");
    // Not subscribed by the refusal: a plain subscription works.
    late.subscribe(None).unwrap();
    let (g, n) = numbers(&cursor);
    assert_eq!(n.len(), 1);
    let mut bad = server.client_as(ClientType::ReportingEngine, "bad");
    for text in ["nonsense".to_string(), "x:1".into(), format!("{g}:"), format!("{g}:1,2")] {
        let e = server_error_of(bad.subscribe_after(None, Some(&text)));
        assert_eq!(e.code, ErrorCode::InvalidValue, "{text}: {e:?}");
    }
    // A cursor of an earlier run of the server.
    server.terminate();
    let server = Server::start(&cfg);
    let mut after = server.client_as(ClientType::ReportingEngine, "after");
    let e = server_error_of(after.subscribe_after(None, Some(&format!("{g}:0"))));
    assert_eq!(e.code, ErrorCode::CursorExpired, "{e:?}");
}

/// `ixnctl watch` that falls behind is disconnected by the server (it was
/// frozen while events piled up past a small `max-output-buffer`), resumes
/// after the last event it printed, and in the end has printed every event
/// a steady subscriber received, each once.
#[test]
fn ixnctl_watch_disconnected_for_falling_behind_resumes_without_loss() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = TempDir::new("reporting-ixnctl");
    let cfg =
        write_config_with(&dir.0, &Engine::Sqlite, "0", "", "max-frame-size = 65536\nmax-output-buffer = 65536\n");
    let server = Server::start(&cfg);
    let _log = LogOnPanic(&server);
    let mut reference = server.client_as(ClientType::ReportingEngine, "reference");
    reference.subscribe(None).unwrap();
    // The reference reads all the time, on its own thread.
    let done = Arc::new(AtomicBool::new(false));
    let reference = read_until_done(reference, done.clone());
    let mut watch = Command::new(env!("CARGO_BIN_EXE_ixnctl"))
        .args(["--server", server.addr.as_str(), "--name", "watcher", "--json", "watch"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ixnctl starts");
    let pid = watch.id().to_string();
    let lines = {
        let out = watch.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let mut ms = server.media_server();
    let cycle = |ms: &mut Client, n: i64| {
        let id = ms.submit(submit_request("default", "inbound", "chat", 0, kv![("n", Value::Int(n))])).unwrap();
        ms.stop(&id, Some("done")).unwrap();
    };
    // The watcher is subscribed once it prints an event.
    let mut first = None;
    for n in 0..100 {
        cycle(&mut ms, n);
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
            first = Some(line);
            break;
        }
    }
    let first = first.expect("ixnctl watch prints events");
    // Frozen, it reads nothing while events of about 20 KB each pile up,
    // far more than the kernel's socket buffers and the 64 KiB the server
    // may hold for it.
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let big = ms.submit(submit_request("default", "inbound", "chat", 0, kv![])).unwrap();
    for n in 0..800 {
        let blob = format!("{n}{}", "x".repeat(20_000));
        ms.change(&big, kv![("blob", Value::Str(blob))], vec![]).unwrap();
    }
    ms.stop(&big, None).unwrap();
    common::eventually("the server closes the frozen watcher", Duration::from_secs(20), || {
        let log = server.log();
        if log.lines().any(|l| l.contains("msg_id=1022") && l.contains("\"watcher\"")) {
            Ok(())
        } else {
            Err("no 1022 for the watcher yet".to_string())
        }
    });
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    for n in 1000..1100 {
        cycle(&mut ms, n);
    }
    done.store(true, Ordering::Relaxed);
    let by_reference = reference.join().unwrap();
    let first_seq = {
        let j: serde_json::Value = serde_json::from_str(&first).expect("a JSON line");
        numbers(j["cursor"].as_str().expect("a cursor")).1[0]
    };
    let want = by_reference.events.keys().filter(|k| k.1 >= first_seq).count();
    // Every event the reference received, printed once by the watcher.
    let mut printed = vec![first];
    let t = Instant::now();
    while printed.len() < want && t.elapsed() < Duration::from_secs(60) {
        if let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
            printed.push(line);
        }
    }
    let _ = Command::new("kill").args(["-KILL", &pid]).status();
    let _ = watch.wait();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut watch.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("resuming"), "the watcher did not resume: {stderr}");
    let mut cursors = BTreeSet::new();
    for line in &printed {
        let j: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let c = j["cursor"].as_str().expect("every printed event has its cursor").to_string();
        assert!(cursors.insert(c.clone()), "event at cursor {c} printed twice");
    }
    let reference_cursors: BTreeSet<u64> = by_reference.events.keys().map(|&(_, seq)| seq).collect();
    // From the watcher's first event on, the same events.
    let printed_seqs: BTreeSet<u64> = cursors.iter().map(|c| numbers(c).1[0]).collect();
    let from = *printed_seqs.iter().next().unwrap();
    let reference_cursors: BTreeSet<u64> = reference_cursors.into_iter().filter(|&n| n >= from).collect();
    assert_eq!(printed_seqs, reference_cursors, "the watcher printed other events than the reference received");
    eprintln!("{} events printed once each across the watcher's disconnection; stderr: {stderr}", printed.len());
}

/// What a Stat Server keeps from the stream: queue depths and logged-in
/// agents' readiness, from the EventReportingState it asked for and every
/// event after it (as docs/protocol.md 7.34 says to apply them).
#[derive(Default, Debug)]
struct Stat {
    complete: bool,
    depth: BTreeMap<String, i64>,
    located: BTreeMap<String, String>,
    agents: BTreeMap<String, BTreeMap<String, bool>>,
}

impl Stat {
    fn take(&mut self, f: &Frame) {
        if f.msg_type == msg_type::EVENT_REPORTING_STATE {
            assert!(!self.complete, "state after the state ended");
            for a in &f.attrs {
                let Value::List(l) = &a.value else { continue };
                let s = |k: &str| l.get(k).and_then(Value::as_str).unwrap().to_string();
                if a.id == attr::QUEUE_DEPTH {
                    self.depth.insert(s("queue"), l.get("interactions").and_then(Value::as_int).unwrap());
                } else if a.id == attr::AGENT_STATE {
                    let Some(Value::List(media)) = l.get("media") else { panic!("media in {l:?}") };
                    let ready = media
                        .iter()
                        .map(|(m, v)| {
                            let Value::List(e) = v else { panic!() };
                            (m.to_string(), e.get("ready").and_then(Value::as_int) == Some(1))
                        })
                        .collect();
                    self.agents.insert(s("agent_id"), ready);
                }
            }
            self.complete = f.get_str(attr::EVENT_CURSOR).is_some();
            return;
        }
        assert!(self.complete, "{} before the state ended", msg_type::name(f.msg_type));
        let s = |id| f.get_str(id).map(str::to_string);
        if let Some(id) = s(attr::INTERACTION_ID) {
            let mut out_of = |said: Option<String>| {
                if let Some(q) = self.located.remove(&id).or(said) {
                    *self.depth.get_mut(&q).unwrap() -= 1;
                }
            };
            match f.msg_type {
                msg_type::EVENT_PLACED_IN_QUEUE => {
                    out_of(s(attr::FROM_QUEUE));
                    let q = s(attr::QUEUE).unwrap();
                    *self.depth.get_mut(&q).unwrap() += 1;
                    self.located.insert(id, q);
                }
                msg_type::EVENT_PLACED_IN_WORKBIN => out_of(s(attr::FROM_QUEUE)),
                msg_type::EVENT_PROCESSING_STOPPED => out_of(s(attr::QUEUE)),
                _ => {}
            }
            return;
        }
        let agent = s(attr::AGENT_ID).unwrap();
        match f.msg_type {
            msg_type::EVENT_AGENT_LOGIN => {
                let Some(Value::List(media)) = f.get(attr::MEDIA_LIST) else { panic!() };
                self.agents.insert(agent, media.iter().map(|(m, _)| (m.to_string(), false)).collect());
            }
            msg_type::EVENT_AGENT_LOGOUT => {
                self.agents.remove(&agent);
            }
            t @ (msg_type::EVENT_READY_FOR_MEDIA | msg_type::EVENT_NOT_READY_FOR_MEDIA) => {
                let m = s(attr::MEDIA_TYPE).unwrap();
                *self.agents.get_mut(&agent).unwrap().get_mut(&m).unwrap() = t == msg_type::EVENT_READY_FOR_MEDIA;
            }
            _ => {}
        }
    }
}

#[test]
fn a_subscription_with_the_state_first_stays_exact_under_load() {
    let dir = TempDir::new("reporting-state");
    let cfg = write_config_with(&dir.0, &Engine::Sqlite, common::two_cores(), "", "");
    let server = Server::start(&cfg);
    let _log = LogOnPanic(&server);
    // A first subscriber: from here on the server keeps the state from
    // the events, through everything below.
    let mut early = server.client_as(ClientType::ReportingEngine, "early");
    early.subscribe(None).unwrap();
    // Some state before: agents logged in (two of them ready for email),
    // interactions waiting in both queues.
    let mut desks: Vec<Client> = (1..=4)
        .map(|i| {
            let mut d = server.client_as(ClientType::AgentDesktop, &format!("desk{i}"));
            d.login(&format!("agent{i}"), &format!("place{i}"), &[]).unwrap();
            d
        })
        .collect();
    for d in &mut desks[..2] {
        d.set_ready(None, Some("email"), true, None).unwrap();
    }
    let mut ms = server.media_server();
    for i in 0..30 {
        let queue = if i % 3 == 0 { "done" } else { "inbound" };
        ms.submit(submit_request("default", queue, "sms", 0, kv![])).unwrap();
    }
    // Changes go on while the subscription is set up and after.
    let stop = Arc::new(AtomicBool::new(false));
    let (stop2, mut loader) = (stop.clone(), server.media_server());
    let load = std::thread::spawn(move || {
        let mut n = 0;
        while !stop2.load(Ordering::Relaxed) {
            let id = loader.submit(submit_request("default", "inbound", "sms", 0, kv![])).unwrap();
            if n % 2 == 0 {
                loader.place(&id, "done").unwrap();
            }
            if n % 3 == 0 {
                loader.stop(&id, None).unwrap();
            }
            n += 1;
        }
        n
    });
    let mut flipper = desks.pop().unwrap();
    let flip = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut ready = false;
            while !stop.load(Ordering::Relaxed) {
                ready = !ready;
                flipper.set_ready(None, Some("chat"), ready, None).unwrap();
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut sub = server.client_as(ClientType::ReportingEngine, "stat");
    sub.subscribe_with_state(None).unwrap();
    let mut stat = Stat::default();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if let Some(f) = sub.next_event(Duration::from_millis(50)).unwrap() {
            stat.take(&f);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let cycles = load.join().unwrap();
    flip.join().unwrap();
    while let Some(f) = sub.next_event(Duration::from_millis(1500)).unwrap() {
        stat.take(&f);
    }
    assert!(stat.complete, "the state arrived");
    assert!(cycles > 50, "the load ran: {cycles}");
    let truth: BTreeMap<String, i64> = ms
        .queue_depth()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l.get("queue").and_then(Value::as_str).unwrap().to_string(),
                l.get("interactions").and_then(Value::as_int).unwrap(),
            )
        })
        .collect();
    assert_eq!(stat.depth, truth, "queue depths from the state and the events");
    let agents = ms.agent_state(None).unwrap();
    let logged_in: BTreeMap<String, BTreeMap<String, bool>> = agents
        .iter()
        .filter(|l| l.get("state").and_then(Value::as_str) != Some("logged-out"))
        .map(|l| {
            let Some(Value::List(media)) = l.get("media") else { panic!() };
            let ready = media
                .iter()
                .map(|(m, v)| {
                    let Value::List(e) = v else { panic!() };
                    (m.to_string(), e.get("ready").and_then(Value::as_int) == Some(1))
                })
                .collect();
            (l.get("agent_id").and_then(Value::as_str).unwrap().to_string(), ready)
        })
        .collect();
    assert_eq!(stat.agents, logged_in, "agents from the state and the events");
    eprintln!("state then {cycles} load cycles: depths {truth:?}");
}
