//! The Event Logger end to end: with `[logger-settings]` on, every
//! reporting event is stored in the event log's tables once, with the key
//! the stream numbers it by, and the log holds exactly what a subscriber
//! received; an event log database that is unavailable for a while under
//! load loses nothing (the outbox holds the events, then drains); and a
//! server killed with SIGKILL under load leaves a log in which every
//! acknowledged submission and stop is present once and each
//! interaction's events are in order.
//!
//! The log's tables are read back over a connection of their own
//! (`read_event_log`), not through the server.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{two_cores, write_config_with, Engine, LogOnPanic, Server, TempDir};
use ixn::client::submit_request;
use ixn_shard::proto::frame::Frame;
use ixn_shard::proto::{attr, msg_type, ClientType};
use ixn_shard::KvList;
use ixn_storage::events::Col;
use ixn_storage::logger::read_event_log;
use ixn_storage::EventRow;

const AGENTS: usize = 4;

fn tenant() -> String {
    let mut t = String::from(
        r#"
[[tenant]]
name = "default"
media-types = { chat = true }

[[tenant.business-process]]
name = "default"

[[tenant.business-process.queue]]
name = "inbound"
strategy = "longest-idle"
"#,
    );
    for i in 0..AGENTS {
        t.push_str(&format!("\n[[tenant.agent]]\nlogin-id = \"a{i}\"\ncapacity = {{ chat = 2 }}\n"));
        t.push_str(&format!("\n[[tenant.place]]\nname = \"p{i}\"\n"));
    }
    t
}

/// A configuration with the event log on; `log_db`: its own SQLite file
/// (else the main database).
fn config(dir: &TempDir, log_db: Option<&std::path::Path>) -> std::path::PathBuf {
    let mut logger = String::from("[logger-settings]\nstoring-timeout = 50\nbatch-size = 200\n");
    if let Some(p) = log_db {
        logger.push_str(&format!("connection-string = \"{}\"\n", sqlite_cs(p)));
    }
    write_config_with(&dir.0, &Engine::Sqlite, two_cores(), "", &format!("{logger}{}", tenant()))
}

fn sqlite_cs(p: &std::path::Path) -> String {
    ixn_storage::sqlite_connection_string(p)
}

fn main_cs(dir: &TempDir) -> String {
    ixn_storage::sqlite_connection_string(&dir.0.join("data").join("ixn.db"))
}

/// Every row of both event log tables, in key order.
fn log_rows(cs: &str) -> Vec<EventRow> {
    let mut rows = read_event_log(cs, false).unwrap();
    rows.extend(read_event_log(cs, true).unwrap());
    rows.sort_by_key(EventRow::key);
    rows
}

/// Waits until the log has stopped growing for a while; returns it.
fn settled_log(cs: &str, at_least: usize) -> Vec<EventRow> {
    let mut last = usize::MAX;
    let mut quiet = Instant::now();
    let started = Instant::now();
    loop {
        let rows = log_rows(cs);
        if rows.len() != last {
            last = rows.len();
            quiet = Instant::now();
        }
        if rows.len() >= at_least && quiet.elapsed() > Duration::from_millis(700) {
            return rows;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the event log holds {} rows, expected {at_least}",
            rows.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Events waiting in the main database's outbox.
fn outbox_count(cs: &str) -> i64 {
    use odbc_api::Cursor;
    let env = odbc_api::environment().unwrap();
    let main = env.connect_with_connection_string(cs, Default::default()).unwrap();
    let mut cursor = main.execute("SELECT COUNT(*) FROM ixn_event_outbox", (), None).unwrap().unwrap();
    let mut row = cursor.next_row().unwrap().unwrap();
    let mut n = odbc_api::Nullable::<i64>::null();
    row.get_data(1, &mut n).unwrap();
    n.into_opt().unwrap_or(0)
}

/// Acknowledged work of the load.
#[derive(Default)]
struct Acked {
    submitted: BTreeSet<String>,
    stopped: BTreeSet<String>,
}

/// Agents that accept and stop what they are offered, and a media server
/// submitting, until `stop`. Returns what was acknowledged.
fn run_load(s: &Server, stop: Arc<AtomicBool>) -> (Arc<Mutex<Acked>>, Vec<std::thread::JoinHandle<()>>) {
    let acked = Arc::new(Mutex::new(Acked::default()));
    let mut threads = Vec::new();
    for i in 0..AGENTS {
        let mut d = s.client_as(ClientType::AgentDesktop, &format!("desk{i}"));
        d.login(&format!("a{i}"), &format!("p{i}"), &[]).unwrap();
        d.ready().unwrap();
        let (stop, acked) = (stop.clone(), acked.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok(Some(f)) = d.wait_event(msg_type::EVENT_INVITE, Duration::from_millis(200)) else { continue };
                let id = f.get_str(attr::INTERACTION_ID).unwrap().to_string();
                let ticket = f.get_int(attr::TICKET).map(|t| t as u64);
                if d.accept(&id, ticket).is_err() {
                    continue;
                }
                if d.stop(&id, Some("done")).is_ok() {
                    acked.lock().unwrap().stopped.insert(id);
                }
            }
        }));
    }
    let mut ms = s.media_server();
    let (stop2, acked2) = (stop.clone(), acked.clone());
    threads.push(std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            match ms.submit(submit_request("default", "inbound", "chat", 0, KvList::new())) {
                Ok(id) => {
                    acked2.lock().unwrap().submitted.insert(id);
                }
                Err(_) => return,
            }
        }
    }));
    (acked, threads)
}

/// A subscriber's events, each with its key (the cursor's shard that
/// moved, and its number).
#[derive(Default)]
struct Stream {
    generation: i64,
    numbers: Vec<u64>,
    events: BTreeMap<(i64, i64, i64), Frame>,
}

impl Stream {
    fn take(&mut self, f: Frame) {
        let cursor = f.get_str(attr::EVENT_CURSOR).expect("a cursor").to_string();
        let (g, rest) = cursor.split_once(':').unwrap();
        let now: Vec<u64> = rest.split(',').map(|n| n.parse().unwrap()).collect();
        if self.numbers.is_empty() {
            self.numbers = vec![0; now.len()];
        }
        self.generation = g.parse().unwrap();
        let shard = (0..now.len()).find(|&s| now[s] != self.numbers[s]).expect("a shard moved");
        self.numbers = now;
        let key = (self.generation, shard as i64, self.numbers[shard] as i64);
        assert!(self.events.insert(key, f).is_none(), "event {key:?} received twice");
    }
}

/// Reads reporting events until `stop`, then until quiet.
fn subscribe(s: &Server, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Stream> {
    let mut sub = s.client_as(ClientType::ReportingEngine, "reporter");
    sub.subscribe(None).unwrap();
    std::thread::spawn(move || {
        let mut stream = Stream::default();
        let mut quiet_since: Option<Instant> = None;
        loop {
            match sub.next_event(Duration::from_millis(200)).unwrap() {
                Some(f) if msg_type::is_reporting(f.msg_type) => {
                    stream.take(f);
                    quiet_since = None;
                }
                Some(_) => {}
                None => {
                    if stop.load(Ordering::Relaxed) {
                        let q = *quiet_since.get_or_insert_with(Instant::now);
                        if q.elapsed() > Duration::from_secs(1) {
                            return stream;
                        }
                    }
                }
            }
        }
    })
}

/// The log holds exactly the events the subscriber received, each once,
/// attribute for attribute.
fn check_log_matches_stream(rows: &[EventRow], stream: &Stream) {
    let logged: BTreeMap<(i64, i64, i64), &EventRow> = rows.iter().map(|r| (r.key(), r)).collect();
    assert_eq!(logged.len(), rows.len(), "a key logged twice");
    let in_run: Vec<_> = logged.keys().filter(|k| k.0 == stream.generation).copied().collect();
    let sent: Vec<_> = stream.events.keys().copied().collect();
    let missing: Vec<_> = sent.iter().filter(|k| !logged.contains_key(k)).take(5).collect();
    let extra: Vec<_> = in_run.iter().filter(|k| !stream.events.contains_key(k)).take(5).collect();
    assert!(missing.is_empty() && extra.is_empty(), "sent, not logged: {missing:?}; logged, not sent: {extra:?}");
    for (key, f) in &stream.events {
        let r = logged[key];
        assert_eq!(r.event_type(), msg_type::name(f.msg_type), "{key:?}");
        assert_eq!(Some(r.event_time), f.get_int(attr::EVENT_TIME), "{key:?}");
        assert_eq!(r.interaction_id(), f.get_str(attr::INTERACTION_ID), "{key:?}");
        assert_eq!(r.text(Col::Agent), f.get_str(attr::AGENT_ID), "{key:?}");
        assert_eq!(r.ticket, f.get_int(attr::TICKET), "{key:?}");
    }
}

/// Each interaction's events, in key order, make one valid life:
/// submitted once and first, stopped at most once and last; each
/// acknowledged submission and stop is there.
fn check_lives(rows: &[EventRow], acked: &Acked) {
    let mut lives: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in rows {
        if let Some(id) = r.interaction_id() {
            lives.entry(id).or_default().push(r.event_type());
        }
    }
    for (id, life) in &lives {
        let count = |t: &str| life.iter().filter(|e| **e == t).count();
        assert_eq!(count("EventInteractionSubmitted"), 1, "{id}: {life:?}");
        assert_eq!(life[0], "EventInteractionSubmitted", "{id}: {life:?}");
        assert!(count("EventProcessingStopped") <= 1, "{id}: {life:?}");
        if count("EventProcessingStopped") == 1 {
            assert_eq!(*life.last().unwrap(), "EventProcessingStopped", "{id}: {life:?}");
        }
    }
    for id in &acked.submitted {
        assert!(lives.contains_key(id.as_str()), "acknowledged submission {id} is not in the event log");
    }
    for id in &acked.stopped {
        assert!(
            lives.get(id.as_str()).is_some_and(|l| l.last() == Some(&"EventProcessingStopped")),
            "acknowledged stop of {id} is not in the event log: {:?}",
            lives.get(id.as_str())
        );
    }
}

/// Runs a script of storage/sql on the database at `cs`.
fn run_script(cs: &str, script: &str) {
    let text =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("storage/sql").join(script))
            .unwrap();
    let env = odbc_api::environment().unwrap();
    let conn = env.connect_with_connection_string(cs, Default::default()).unwrap();
    let no_comments: Vec<&str> = text.lines().map(|l| l.split("--").next().unwrap()).collect();
    for stmt in no_comments.join("\n").split(';').map(str::trim).filter(|s| !s.is_empty()) {
        conn.execute(stmt, (), None).unwrap_or_else(|e| panic!("{script}: {stmt}: {e}"));
    }
}

#[test]
fn the_event_log_holds_what_the_stream_sent_once_each() {
    for engine in common::engines("eventlog") {
        stream_and_log_agree(&engine);
    }
}

/// With the event log in the main database (moved by the database itself).
fn stream_and_log_agree(engine: &Engine) {
    let dir = TempDir::new("eventlog-stream");
    let (cfg, cs) = match engine {
        Engine::Sqlite => (config(&dir, None), main_cs(&dir)),
        Engine::Postgres(cs) => {
            run_script(cs, "postgresql/isdb_outbox.sql");
            run_script(cs, "postgresql/eldb.sql");
            let logger = "[logger-settings]\nstoring-timeout = 50\nbatch-size = 200\n";
            (write_config_with(&dir.0, engine, two_cores(), "", &format!("{logger}{}", tenant())), cs.clone())
        }
    };
    let server = Server::start(&cfg);
    let _log = LogOnPanic(&server);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = subscribe(&server, stop.clone());
    let (acked, threads) = run_load(&server, stop.clone());
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    threads.into_iter().for_each(|t| t.join().unwrap());
    let stream = reader.join().unwrap();
    let rows = settled_log(&cs, stream.events.len());
    let acked = acked.lock().unwrap();
    assert!(acked.stopped.len() > 20, "the load did some cycles: {}", acked.stopped.len());
    check_log_matches_stream(&rows, &stream);
    check_lives(&rows, &acked);
    let agent_events = rows.iter().filter(|r| r.is_agent_event()).count();
    assert!(agent_events >= AGENTS * 2, "logins and ready states are logged: {agent_events}");
    assert_eq!(outbox_count(&cs), 0, "the outbox drained");
    eprintln!(
        "{engine:?}: {} events logged ({agent_events} agent events), {} submitted, {} stopped",
        rows.len(),
        acked.submitted.len(),
        acked.stopped.len()
    );
}

/// Holds the write lock of a SQLite database (an uncommitted write) until
/// dropped: to writers, the database is unavailable.
struct SqliteLock {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SqliteLock {
    fn hold(cs: String) -> SqliteLock {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let env = odbc_api::environment().unwrap();
            let conn = env.connect_with_connection_string(&cs, Default::default()).unwrap();
            conn.set_autocommit(false).unwrap();
            conn.execute("DELETE FROM rpt_schema WHERE name = 'no such row'", (), None).unwrap();
            // A write that deletes nothing may take no lock: update a row.
            conn.execute("UPDATE rpt_schema SET version = version WHERE name = 'eldb'", (), None).unwrap();
            tx.send(()).unwrap();
            while !s2.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            conn.rollback().unwrap();
        });
        rx.recv().unwrap();
        SqliteLock { stop, thread: Some(thread) }
    }
}

impl Drop for SqliteLock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Seconds the event log is unavailable (`IXN_TEST_OUTAGE_SECS`, default 60).
fn outage() -> Duration {
    Duration::from_secs(std::env::var("IXN_TEST_OUTAGE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60))
}

#[test]
fn an_event_log_outage_under_load_loses_nothing() {
    let dir = TempDir::new("eventlog-outage");
    let log_db = dir.0.join("eventlog.db");
    let server = Server::start(&config(&dir, Some(&log_db)));
    let _log = LogOnPanic(&server);
    let log_cs = sqlite_cs(&log_db);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = subscribe(&server, stop.clone());
    let (acked, threads) = run_load(&server, stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    let down = SqliteLock::hold(log_cs.clone());
    let before = log_rows(&log_cs).len();
    let cycles_before = acked.lock().unwrap().stopped.len();
    let outage = outage();
    std::thread::sleep(outage);
    let cycles_during = acked.lock().unwrap().stopped.len() - cycles_before;
    let during = log_rows(&log_cs).len();
    let waiting = outbox_count(&main_cs(&dir));
    drop(down);
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    threads.into_iter().for_each(|t| t.join().unwrap());
    let stream = reader.join().unwrap();
    let rows = settled_log(&log_cs, stream.events.len());
    assert_eq!(during, before, "nothing reached the event log while it was unavailable");
    assert!(cycles_during > 10, "the load went on during the outage: {cycles_during} cycles");
    check_log_matches_stream(&rows, &stream);
    check_lives(&rows, &acked.lock().unwrap());
    assert!(waiting > 100, "the outbox held the events during the outage: {waiting}");
    assert_eq!(outbox_count(&main_cs(&dir)), 0, "the outbox drained");
    eprintln!(
        "outage of {} s: {cycles_during} cycles during it, {waiting} events waiting in the outbox at its end; {} \
         events logged in the end, {before} before it",
        outage.as_secs(),
        rows.len()
    );
}

#[test]
fn a_server_killed_under_load_loses_and_repeats_no_logged_event() {
    killed_under_load(true);
    killed_under_load(false);
}

/// `own_database`: the event log in a SQLite file of its own (through the
/// outbox), else in the main database (stored with each change).
fn killed_under_load(own_database: bool) {
    let dir = TempDir::new("eventlog-kill9");
    let log_db = dir.0.join("eventlog.db");
    let cfg = config(&dir, own_database.then_some(log_db.as_path()));
    let log_cs = if own_database { sqlite_cs(&log_db) } else { main_cs(&dir) };
    let mut server = Server::start(&cfg);
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, threads) = run_load(&server, stop.clone());
    std::thread::sleep(Duration::from_millis(2500));
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    threads.into_iter().for_each(|t| {
        let _ = t.join();
    });
    // The restart ships what the outbox kept.
    let server = Server::start(&cfg);
    let _log = LogOnPanic(&server);
    let acked = acked.lock().unwrap();
    let rows = settled_log(&log_cs, acked.submitted.len());
    let keys: BTreeSet<_> = rows.iter().map(EventRow::key).collect();
    assert_eq!(keys.len(), rows.len(), "a key stored twice");
    check_lives(&rows, &acked);
    assert_eq!(outbox_count(&main_cs(&dir)), 0, "the outbox drained after the restart");
    eprintln!(
        "killed under load (event log in its own database: {own_database}): {} submitted and {} stopped \
         acknowledged; {} events logged",
        acked.submitted.len(),
        acked.stopped.len(),
        rows.len()
    );
}

/// With the event log in the main database, a change's events are in the
/// log's tables when the change is acknowledged (stored in its
/// transaction, not left in the outbox for the shipper), and what an
/// earlier run left in the outbox is shipped at start without waiting
/// for storing-timeout.
#[test]
fn in_the_main_database_events_are_stored_with_their_change() {
    let dir = TempDir::new("eventlog-direct");
    let log_db = dir.0.join("eventlog.db");
    // A long storing-timeout: nothing in this test may wait for it.
    let logger = |to: Option<&std::path::Path>| {
        let mut l = String::from("[logger-settings]\nstoring-timeout = 60000\nbatch-size = 500\n");
        if let Some(p) = to {
            l.push_str(&format!("connection-string = \"{}\"\n", sqlite_cs(p)));
        }
        write_config_with(&dir.0, &Engine::Sqlite, two_cores(), "", &format!("{l}{}", tenant()))
    };
    let submit =
        |ms: &mut ixn::client::Client| ms.submit(submit_request("default", "inbound", "chat", 0, KvList::new()));
    // A run logging to another database, killed before its shipper ran:
    // its events stay in the main database's outbox.
    let mut earlier = Server::start(&logger(Some(&log_db)));
    let mut ms = earlier.media_server();
    let left: Vec<String> = (0..5).map(|_| submit(&mut ms).unwrap()).collect();
    drop(ms);
    earlier.kill9();
    let cs = main_cs(&dir);
    let waiting = outbox_count(&cs);
    assert!(waiting >= 10, "the earlier run's events wait in the outbox: {waiting}");

    let server = Server::start(&logger(None));
    let _log = LogOnPanic(&server);
    let mut ms = server.media_server();
    for _ in 0..20 {
        let id = submit(&mut ms).unwrap();
        let logged = read_event_log(&cs, false).unwrap();
        let of_it: Vec<&EventRow> = logged.iter().filter(|r| r.interaction_id() == Some(id.as_str())).collect();
        assert!(!of_it.is_empty(), "{id}: acknowledged, and its events are not in the event log");
    }
    let started = Instant::now();
    loop {
        let logged = read_event_log(&cs, false).unwrap();
        let shipped = left.iter().all(|id| logged.iter().any(|r| r.interaction_id() == Some(id.as_str())));
        if shipped && outbox_count(&cs) == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "what the earlier run left in the outbox is not shipped: {} waiting",
            outbox_count(&cs)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rows = log_rows(&cs);
    let keys: BTreeSet<_> = rows.iter().map(EventRow::key).collect();
    assert_eq!(keys.len(), rows.len(), "a key stored twice");
}

#[test]
fn submissions_are_refused_while_the_outbox_is_full_and_taken_again_once_it_drains() {
    let dir = TempDir::new("eventlog-bound");
    let log_db = dir.0.join("eventlog.db");
    let logger = format!(
        "[logger-settings]\nstoring-timeout = 20\nbatch-size = 100\nmax-queue-size = 60\nconnection-string = \"{}\"\n",
        sqlite_cs(&log_db)
    );
    let cfg = write_config_with(&dir.0, &Engine::Sqlite, two_cores(), "", &format!("{logger}{}", tenant()));
    let server = Server::start(&cfg);
    let _log = LogOnPanic(&server);
    let mut ms = server.media_server();
    let submit =
        |ms: &mut ixn::client::Client| ms.submit(submit_request("default", "inbound", "chat", 0, KvList::new()));
    // Shipping works: what is submitted leaves the outbox.
    for _ in 0..10 {
        submit(&mut ms).unwrap();
    }
    let started = Instant::now();
    while outbox_count(&main_cs(&dir)) > 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "the outbox does not drain");
        std::thread::sleep(Duration::from_millis(20));
    }
    let down = SqliteLock::hold(sqlite_cs(&log_db));
    // Each submission puts 2 events in the outbox: at 60 it is full.
    let mut taken = 0;
    let refused = loop {
        match submit(&mut ms) {
            Ok(_) => taken += 1,
            Err(e) => break common::server_error_of::<()>(Err(e)),
        }
        assert!(taken <= 100, "submissions were never refused");
    };
    assert_eq!(refused.code, ixn_shard::proto::ErrorCode::Overloaded, "{refused:?}");
    assert!(refused.text.contains("event log is behind"), "{}", refused.text);
    assert!((25..=40).contains(&taken), "refused after {taken} submissions");
    assert!(outbox_count(&main_cs(&dir)) >= 60);
    // Other requests go on.
    ms.ping().unwrap();
    drop(down);
    let started = Instant::now();
    while submit(&mut ms).is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "submissions still refused after the log came back");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("refused after {taken} submissions; taken again {:?} after the log came back", started.elapsed());
}

/// A subscriber's view of the stream across runs: each event's key from
/// its cursor (the run, the shard whose number moved, that number).
#[derive(Default)]
struct Keys {
    generation: u64,
    numbers: Vec<u64>,
    got: Vec<(i64, i64, i64)>,
    last: Option<String>,
}

impl Keys {
    fn take(&mut self, f: &Frame) {
        let cursor = f.get_str(attr::EVENT_CURSOR).expect("a cursor").to_string();
        let (g, rest) = cursor.split_once(':').unwrap();
        let g: u64 = g.parse().unwrap();
        let now: Vec<u64> = rest.split(',').map(|n| n.parse().unwrap()).collect();
        if g != self.generation {
            self.generation = g;
            self.numbers.clear();
        }
        self.numbers.resize(now.len().max(self.numbers.len()), 0);
        let moved: Vec<usize> = (0..now.len()).filter(|&s| now[s] != self.numbers[s]).collect();
        assert_eq!(moved.len(), 1, "cursor {cursor} after {:?} moves one shard", self.numbers);
        let s = moved[0];
        assert!(now[s] > self.numbers[s], "cursor {cursor} goes back");
        self.numbers[s] = now[s];
        self.got.push((g as i64, s as i64, now[s] as i64));
        self.last = Some(cursor);
    }
}

#[test]
fn a_subscriber_resumes_across_a_restart_from_the_event_log() {
    for engine in common::engines("eventlog_restart") {
        resume_across_a_restart(&engine);
    }
}

/// SQLite: the event log in a database of its own; PostgreSQL: in the
/// main database.
fn resume_across_a_restart(engine: &Engine) {
    let dir = TempDir::new("eventlog-restart");
    let log_db = dir.0.join("eventlog.db");
    let (cfg, log_cs) = match engine {
        Engine::Sqlite => (config(&dir, Some(&log_db)), sqlite_cs(&log_db)),
        Engine::Postgres(cs) => {
            run_script(cs, "postgresql/isdb_outbox.sql");
            run_script(cs, "postgresql/eldb.sql");
            let logger = "[logger-settings]\nstoring-timeout = 50\nbatch-size = 200\n";
            (write_config_with(&dir.0, engine, two_cores(), "", &format!("{logger}{}", tenant())), cs.clone())
        }
    };
    let mut server = Server::start(&cfg);
    // A subscriber reads for a while under load, then its connection
    // drops; the load goes on, and the server is killed.
    let mut sub = server.client_as(ClientType::ReportingEngine, "resumer");
    sub.subscribe(None).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (_, threads) = run_load(&server, stop.clone());
    let mut before = Keys::default();
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        if let Some(f) = sub.next_event(Duration::from_millis(50)).unwrap() {
            if msg_type::is_reporting(f.msg_type) {
                before.take(&f);
            }
        }
    }
    drop(sub);
    let cursor = before.last.clone().expect("the subscriber received events");
    std::thread::sleep(Duration::from_millis(700));
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    threads.into_iter().for_each(|t| {
        let _ = t.join();
    });
    // A new run, with its own load; the subscriber resumes with the cursor
    // of the last event it read in the earlier run.
    let server = Server::start(&cfg);
    let _log = LogOnPanic(&server);
    let stop = Arc::new(AtomicBool::new(false));
    let (_, threads) = run_load(&server, stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    let mut sub = server.client_as(ClientType::ReportingEngine, "resumer");
    sub.subscribe_after(None, Some(&cursor)).unwrap();
    // It goes on from the cursor it gave.
    let (g, nums) = cursor.split_once(':').unwrap();
    let mut after = Keys {
        generation: g.parse().unwrap(),
        numbers: nums.split(',').map(|n| n.parse().unwrap()).collect(),
        ..Keys::default()
    };
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        if let Some(f) = sub.next_event(Duration::from_millis(50)).unwrap() {
            if msg_type::is_reporting(f.msg_type) {
                after.take(&f);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    threads.into_iter().for_each(|t| t.join().unwrap());
    while let Some(f) = sub.next_event(Duration::from_millis(1500)).unwrap() {
        if msg_type::is_reporting(f.msg_type) {
            after.take(&f);
        }
    }
    // Everything the log holds after the cursor, each once, and nothing
    // the subscriber had read.
    let rows = settled_log(&log_cs, 1);
    let (g0, rest) = cursor.split_once(':').unwrap();
    let g0: i64 = g0.parse().unwrap();
    let c0: Vec<i64> = rest.split(',').map(|n| n.parse().unwrap()).collect();
    let later = |&(g, s, q): &(i64, i64, i64)| g > g0 || (g == g0 && q > c0.get(s as usize).copied().unwrap_or(0));
    let expected: Vec<(i64, i64, i64)> = rows.iter().map(EventRow::key).filter(later).collect();
    let mut got = after.got.clone();
    got.sort();
    let unique: BTreeSet<_> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "an event received twice after resuming");
    let missing: Vec<_> = expected.iter().filter(|k| !unique.contains(k)).take(5).collect();
    let extra: Vec<_> = got.iter().filter(|k| !later(k)).take(5).collect();
    assert!(missing.is_empty(), "logged after the cursor, not received: {missing:?} ({} expected)", expected.len());
    assert!(extra.is_empty(), "received again, though read before the restart: {extra:?}");
    let old_run = got.iter().filter(|k| k.0 == g0).count();
    assert!(old_run > 0, "the resume sent events of the earlier run");
    assert!(got.len() > old_run, "and then the new run's");
    eprintln!(
        "{engine:?}: read {} events, then resumed across a kill -9 and got {} ({old_run} of the earlier run from the \
         event log)",
        before.got.len(),
        got.len()
    );
}

/// A reload that adds a queue and an agent: the writers name the events of
/// the added objects (they take the reload's catalog before any shard can
/// make such an event), and the log says who and where by name.
#[test]
fn events_of_objects_a_reload_added_are_logged_by_name() {
    let dir = TempDir::new("eventlog-reload");
    let cfg = config(&dir, None);
    let mut s = Server::start(&cfg);
    let added = "\n[[tenant.business-process.queue]]\nname = \"vip\"\n\n\
                 [[tenant.agent]]\nlogin-id = \"late\"\ncapacity = { chat = 1 }\n\n\
                 [[tenant.place]]\nname = \"late-desk\"\n";
    let logger = "[logger-settings]\nstoring-timeout = 50\nbatch-size = 200\n";
    write_config_with(&dir.0, &Engine::Sqlite, two_cores(), "", &format!("{logger}{}{added}", tenant()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ixnctl"))
        .args(["reload", "--management", s.management.as_deref().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("queues: 1 added (vip)"), "{text}");

    let mut ms = s.media_server();
    let id = ms.submit(submit_request("default", "vip", "chat", 0, KvList::new())).expect("submit to the added queue");
    let mut desk = s.client_as(ClientType::AgentDesktop, "desk-late");
    desk.login("late", "late-desk", &[]).expect("the added agent logs in");
    let rows = settled_log(&main_cs(&dir), 3);
    let placed = rows
        .iter()
        .find(|r| r.text(Col::InteractionId) == Some(id.as_str()) && r.text(Col::Queue).is_some())
        .expect("an event of the submission");
    assert_eq!(placed.text(Col::Queue), Some("vip"));
    assert!(
        rows.iter().any(|r| r.text(Col::Agent) == Some("late") && r.text(Col::Place) == Some("late-desk")),
        "the added agent's login is logged by name"
    );
    s.terminate();
}
