//! The management listener against a running server: metrics that follow
//! what clients do, health and readiness, bad HTTP input refused without
//! harm, and the dashboard in a real headless Chromium (driven over the
//! DevTools protocol): it loads, shows a queue's depth change as an
//! interaction is submitted, and logs no console error.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, two_cores, write_config, Engine, Server, TempDir};
use ixn::client::submit_request;
use ixn_shard::kv;
use ixn_shard::proto::ClientType;
use serde_json::{json, Value};

/// One HTTP exchange: `request` as sent; (status, body).
fn http_raw(addr: &str, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the management listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn get(addr: &str, path: &str) -> (u16, String) {
    http_raw(addr, format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
}

/// The sum of every sample of `name` whose labels include all of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn start(dir: &TempDir) -> (Server, String) {
    let config = write_config(&dir.0, &Engine::Sqlite, two_cores(), "");
    let server = Server::start(&config);
    let management = server.management.clone().expect("the management listener is on by default");
    (server, management)
}

#[test]
fn metrics_health_and_readiness_follow_the_server() {
    let dir = TempDir::new("mgmt-metrics");
    let (mut server, m) = start(&dir);
    assert_eq!(get(&m, "/health"), (200, "alive\n".to_string()));
    assert_eq!(get(&m, "/ready"), (200, "ready\n".to_string()));

    let mut media = server.media_server();
    for _ in 0..3 {
        media.submit(submit_request("default", "inbound", "chat", 0, kv![("lang", "en")])).expect("submit");
    }
    let text = get(&m, "/metrics").1;
    assert_eq!(metric(&text, "ixn_requests_total", &["type=\"RequestSubmit\""]), 3.0, "{text}");
    assert_eq!(metric(&text, "ixn_request_duration_seconds_count", &["type=\"RequestSubmit\""]), 3.0);
    assert_eq!(metric(&text, "ixn_request_duration_seconds_bucket", &["type=\"RequestSubmit\"", "le=\"+Inf\""]), 3.0);
    assert_eq!(metric(&text, "ixn_queue_interactions", &["queue=\"inbound\"", "state=\"waiting\""]), 3.0);
    assert_eq!(metric(&text, "ixn_view_interactions", &["view=\"inbound-by-priority\""]), 3.0);
    assert_eq!(metric(&text, "ixn_interactions", &[]), 3.0);
    assert!(metric(&text, "ixn_writer_writes_total", &[]) >= 3.0, "{text}");
    assert!(metric(&text, "ixn_writer_commit_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(metric(&text, "ixn_shard_up", &[]), 2.0);
    assert!(metric(&text, "ixn_connections", &[]) >= 1.0);
    std::thread::sleep(Duration::from_millis(20));
    assert!(metric(&get(&m, "/metrics").1, "ixn_queue_oldest_waiting_seconds", &["queue=\"inbound\""]) > 0.0);

    // A ready agent with chat capacity 3 is offered all three (the queue's
    // built-in strategy): they are locked, it is busy.
    let mut desktop = server.client_as(ClientType::AgentDesktop, "desk");
    desktop.login("agent1", "place1", &[("chat", 3)]).expect("login");
    desktop.ready().expect("ready");
    eventually("the three interactions offered", Duration::from_secs(10), || {
        let text = get(&m, "/metrics").1;
        let locked = metric(&text, "ixn_queue_interactions", &["queue=\"inbound\"", "state=\"locked\""]);
        let busy = metric(&text, "ixn_agents", &["state=\"busy\""]);
        let logged = metric(&text, "ixn_agents", &["state=\"logged_in\""]);
        let waiting = metric(&text, "ixn_queue_oldest_waiting_seconds", &["queue=\"inbound\""]);
        if (locked, busy, logged, waiting) == (3.0, 1.0, 1.0, 0.0) {
            Ok(())
        } else {
            Err(format!("locked {locked}, busy {busy}, logged in {logged}, oldest waiting {waiting}"))
        }
    });
    let text = get(&m, "/metrics").1;
    assert_eq!(metric(&text, "ixn_locks", &[]), 3.0);
    assert_eq!(metric(&text, "ixn_agents", &["state=\"ready\""]), 1.0);

    // Errors are counted by code (34: unknown interaction).
    assert!(media.get("0NOSUCHID0000000").is_err());
    assert_eq!(metric(&get(&m, "/metrics").1, "ixn_errors_total", &["code=\"34\""]), 1.0);

    // The dashboard's JSON adds the shards up.
    let state: Value = serde_json::from_str(&get(&m, "/api/state").1).expect("JSON");
    let inbound = state["queues"].as_array().unwrap().iter().find(|q| q["queue"] == "inbound").unwrap().clone();
    assert_eq!((inbound["waiting"].as_u64(), inbound["locked"].as_u64()), (Some(0), Some(3)));
    assert_eq!(state["agents"][0]["busy"], 1);
    assert_eq!(state["ready"], true);
    server.terminate();
}

#[test]
fn bad_http_requests_are_refused_and_change_nothing() {
    let dir = TempDir::new("mgmt-bad");
    let (mut server, m) = start(&dir);
    assert_eq!(get(&m, "/nowhere").0, 404);
    assert_eq!(http_raw(&m, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").0, 405);
    assert_eq!(http_raw(&m, b"hello there\r\n\r\n").0, 400);
    assert_eq!(http_raw(&m, b"GET / HTTP/1.1 extra\r\n\r\n").0, 400);
    let mut big = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 9000));
    big.extend(b"\r\n\r\n");
    assert_eq!(http_raw(&m, &big).0, 431);
    let (status, body) = http_raw(&m, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, ""));

    // Connections that send nothing hold one of the 16 slots each; past
    // them a request is answered 503 at once, and the slots come back.
    let idle: Vec<TcpStream> = (0..16).map(|_| TcpStream::connect(&m).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    assert_eq!(get(&m, "/health").0, 503);
    assert!(t.elapsed() < Duration::from_secs(3), "the 503 came after {:?}", t.elapsed());
    drop(idle);
    eventually("the slots back", Duration::from_secs(10), || match get(&m, "/health").0 {
        200 => Ok(()),
        s => Err(format!("status {s}")),
    });
    // The client port never noticed.
    server.client().ping().expect("ping");
    assert_eq!(get(&m, "/ready").0, 200);
    server.terminate();
}

#[test]
fn the_management_listener_can_be_off_and_a_bad_address_is_refused() {
    let dir = TempDir::new("mgmt-off");
    let config = write_config(&dir.0, &Engine::Sqlite, "0", "");
    let text =
        std::fs::read_to_string(&config).unwrap().replace("[server]\n", "[server]\nmanagement-listen = \"off\"\n");
    std::fs::write(&config, text).unwrap();
    let mut server = Server::start(&config);
    assert_eq!(server.management, None);
    server.terminate();

    let text = std::fs::read_to_string(&config).unwrap().replace("\"off\"", "\"nowhere\"");
    std::fs::write(&config, text).unwrap();
    let err = Server::try_start(&config).err().expect("a bad address is refused");
    assert!(err.contains("neither \"off\" nor an address"), "{err}");
}

// ----- the dashboard in a browser -------------------------------------------

/// The Chromium to drive: `IXN_CHROMIUM`, or the first of the usual names
/// on PATH. .ci/setup installs Debian's `chromium`.
fn chromium() -> PathBuf {
    if let Ok(p) = std::env::var("IXN_CHROMIUM") {
        return PathBuf::from(p);
    }
    for name in ["chromium", "chromium-browser", "google-chrome", "headless_shell"] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("no Chromium found: run .ci/setup (it installs Debian's chromium) or set IXN_CHROMIUM");
}

struct Browser {
    child: Child,
    _profile: TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a headless Chromium; returns it and its DevTools port.
fn start_browser() -> (Browser, u16) {
    let profile = TempDir::new("chromium");
    let child = Command::new(chromium())
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"])
        .arg("--remote-debugging-port=0")
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let port_file = profile.0.join("DevToolsActivePort");
    let port = eventually("chromium's DevTools port", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&port_file).map_err(|e| e.to_string())?;
        text.lines().next().and_then(|l| l.trim().parse::<u16>().ok()).ok_or_else(|| "not yet".to_string())
    });
    (Browser { child, _profile: profile }, port)
}

/// A minimal WebSocket client (RFC 6455: masked text frames out, whole
/// or fragmented frames in) for the DevTools protocol.
struct DevTools {
    sock: TcpStream,
    next_id: u64,
    /// Every event received so far (messages without an id).
    events: Vec<Value>,
}

impl DevTools {
    fn connect(port: u16, path: &str) -> DevTools {
        let mut sock = TcpStream::connect(("127.0.0.1", port)).expect("connect to DevTools");
        sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: aXhuLWRhc2hib2FyZC10ZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        sock.write_all(req.as_bytes()).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            sock.read_exact(&mut byte).expect("the upgrade answer");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "no websocket upgrade: {head}");
        DevTools { sock, next_id: 1, events: Vec::new() }
    }

    fn send_text(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend((n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend((n as u64).to_be_bytes());
            }
        }
        let mask = [0x1b, 0x7e, 0x42, 0x99];
        frame.extend(mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.sock.write_all(&frame).unwrap();
    }

    /// The next whole text message.
    fn read_message(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let mut h = [0u8; 2];
            self.sock.read_exact(&mut h).expect("a websocket frame");
            let (fin, opcode) = (h[0] & 0x80 != 0, h[0] & 0x0f);
            let len = match h[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.sock.read_exact(&mut b).unwrap();
                    u16::from_be_bytes(b) as usize
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.sock.read_exact(&mut b).unwrap();
                    u64::from_be_bytes(b) as usize
                }
                n => n as usize,
            };
            let mut payload = vec![0u8; len];
            self.sock.read_exact(&mut payload).unwrap();
            match opcode {
                0x8 => panic!("DevTools closed the websocket"),
                0x9 | 0xa => continue,
                _ => message.extend(payload),
            }
            if fin {
                return String::from_utf8(message).expect("UTF-8 text");
            }
        }
    }

    /// Calls a DevTools method; keeps the events that arrive meanwhile.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send_text(&json!({"id": id, "method": method, "params": params}).to_string());
        loop {
            let msg: Value = serde_json::from_str(&self.read_message()).expect("DevTools JSON");
            if msg["id"].as_u64() == Some(id) {
                assert!(msg.get("error").is_none(), "{method} failed: {msg}");
                return msg["result"].clone();
            }
            if msg.get("method").is_some() {
                self.events.push(msg);
            }
        }
    }

    /// Evaluates `expression` in the page; its value.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true}));
        r["result"]["value"].clone()
    }

    /// Console errors, uncaught exceptions and error log entries so far.
    fn errors(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| {
                let p = &e["params"];
                match e["method"].as_str() {
                    Some("Runtime.exceptionThrown") => true,
                    Some("Runtime.consoleAPICalled") => matches!(p["type"].as_str(), Some("error" | "assert")),
                    Some("Log.entryAdded") => p["entry"]["level"] == "error",
                    _ => false,
                }
            })
            .map(Value::to_string)
            .collect()
    }
}

#[test]
fn the_dashboard_shows_a_queue_filling_in_a_real_browser() {
    let dir = TempDir::new("mgmt-dashboard");
    let (mut server, m) = start(&dir);
    let (_browser, port) = start_browser();
    let page = eventually("a page target", Duration::from_secs(20), || {
        let (_, body) = get(&format!("127.0.0.1:{port}"), "/json/list");
        let list: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        list.as_array()
            .and_then(|l| l.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .map(|u| u.split_once(&format!(":{port}")).map(|(_, path)| path.to_string()).unwrap())
            .ok_or_else(|| format!("no page yet: {body}"))
    });
    let mut dt = DevTools::connect(port, &page);
    dt.call("Runtime.enable", json!({}));
    dt.call("Log.enable", json!({}));
    dt.call("Page.enable", json!({}));
    dt.call("Page.navigate", json!({"url": format!("http://{m}/")}));

    let history = r#"(() => { const r = document.querySelector('tr[data-queue="default/inbound"]');
        return r ? r.dataset.history : null })()"#;
    let waiting = r#"(() => { const r = document.querySelector('tr[data-queue="default/inbound"] td.waiting');
        return r ? r.textContent : null })()"#;
    // Two polls of the empty queue first.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = dt.eval(history);
        if h.as_str().is_some_and(|h| h.split(',').count() >= 2) {
            assert!(h.as_str().unwrap().split(',').all(|d| d == "0"), "the queue starts empty: {h}");
            break;
        }
        assert!(Instant::now() < deadline, "the dashboard did not show the queue: {h}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(dt.eval("document.getElementById('status').textContent.startsWith('ready')"), json!(true));

    server.media_server().submit(submit_request("default", "inbound", "chat", 0, kv![])).expect("submit");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if dt.eval(waiting) == json!("1") {
            break;
        }
        assert!(Instant::now() < deadline, "the dashboard did not show the submitted interaction");
        std::thread::sleep(Duration::from_millis(200));
    }
    let h = dt.eval(history);
    let depths: Vec<&str> = h.as_str().unwrap().split(',').collect();
    assert_eq!(depths.first(), Some(&"0"), "{h}");
    assert_eq!(depths.last(), Some(&"1"), "{h}");
    // The other tables and the charts are there too.
    assert_eq!(dt.eval("document.querySelectorAll('#shards tbody tr').length"), json!(2));
    assert_eq!(dt.eval("document.querySelectorAll('#rate-chart polyline').length"), json!(1));
    let errors = dt.errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    server.terminate();
}

/// Holds the write lock of the server's SQLite database (an uncommitted
/// write) until dropped: to the writers, the database is unavailable.
struct DatabaseHeld {
    stop: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DatabaseHeld {
    fn hold(db: &std::path::Path) -> DatabaseHeld {
        let cs = ixn_storage::sqlite_connection_string(db);
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let env = odbc_api::environment().unwrap();
            let conn = env.connect_with_connection_string(&cs, Default::default()).unwrap();
            conn.set_autocommit(false).unwrap();
            conn.execute("UPDATE ixn_schema SET version = version WHERE name = 'isdb'", (), None).unwrap();
            held_tx.send(()).unwrap();
            let _ = stop_rx.recv();
            conn.rollback().unwrap();
        });
        held_rx.recv().unwrap();
        DatabaseHeld { stop, thread: Some(thread) }
    }
}

impl Drop for DatabaseHeld {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn readiness_follows_the_database() {
    let dir = TempDir::new("mgmt-ready");
    let (mut server, m) = start(&dir);
    assert_eq!(get(&m, "/ready").0, 200);
    let held = DatabaseHeld::hold(&dir.0.join("data").join("ixn.db"));
    let addr = server.addr.clone();
    let submitter = std::thread::spawn(move || {
        let mut media = ixn::client::Client::connect_as(addr.as_str(), ClientType::MediaServer, "media", None).unwrap();
        media.submit(submit_request("default", "inbound", "chat", 0, kv![]))
    });
    let why = eventually("not ready while the database is held", Duration::from_secs(30), || match get(&m, "/ready") {
        (503, body) => Ok(body),
        (s, body) => Err(format!("{s} {body}")),
    });
    assert!(why.contains("database writer 0 is failing to commit"), "{why}");
    assert!(metric(&get(&m, "/metrics").1, "ixn_writer_failing", &[]) >= 1.0);
    assert_eq!(get(&m, "/health").0, 200, "alive all the same");
    drop(held);
    submitter.join().unwrap().expect("the submission is acknowledged once the database is back");
    eventually("ready again", Duration::from_secs(30), || match get(&m, "/ready").0 {
        200 => Ok(()),
        s => Err(format!("status {s}")),
    });
    assert!(metric(&get(&m, "/metrics").1, "ixn_writer_failed_attempts_total", &[]) >= 1.0);
    server.terminate();
}

/// Runs `sql` on the PostgreSQL database of `conn` but in the base
/// database (`IXN_TEST_PG`'s), as its owner.
fn pg_admin(sql: &str) {
    let base = std::env::var("IXN_TEST_PG").expect("IXN_TEST_PG");
    let env = odbc_api::environment().unwrap();
    let c = env.connect_with_connection_string(&base, Default::default()).expect("connect to the base database");
    c.execute(sql, (), None).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[test]
fn readiness_follows_a_postgresql_outage_without_writes() {
    // The idle writers' probe sees the database go and come back: no
    // write is needed for /ready to tell.
    let Some(Engine::Postgres(conn)) = common::engines("mgmt-pg-ready").into_iter().nth(1) else {
        return;
    };
    let db = conn
        .split(';')
        .find_map(|kv| kv.trim().strip_prefix("Database="))
        .expect("Database= in the connection string")
        .to_string();
    let dir = TempDir::new("mgmt-pg-ready");
    let config = write_config(&dir.0, &Engine::Postgres(conn), two_cores(), "");
    let mut server = Server::start(&config);
    let m = server.management.clone().unwrap();
    assert_eq!(get(&m, "/ready").0, 200);
    pg_admin(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false"));
    pg_admin(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"));
    let why = eventually("not ready while the database refuses connections", Duration::from_secs(30), || {
        match get(&m, "/ready") {
            (503, body) => Ok(body),
            (s, body) => Err(format!("{s} {body}")),
        }
    });
    assert!(why.contains("is failing to commit"), "{why}");
    pg_admin(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"));
    eventually("ready again", Duration::from_secs(30), || match get(&m, "/ready") {
        (200, _) => Ok(()),
        (s, body) => Err(format!("{s} {body}")),
    });
    let mut media = server.media_server();
    media.submit(submit_request("default", "inbound", "chat", 0, kv![])).expect("writes go on");
    server.terminate();
}
