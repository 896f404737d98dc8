//! The process as a supervisor sees it: a panic on any thread ends it at
//! once with one log line and exit status 70 (invariant 8), and a restart
//! right after `kill -9` waits for the old listeners instead of failing.
//!
//! Panics are injected with the debug-build test facility of
//! `src/server/faults.rs` (`IXN_TEST_PANIC`, `IXN_TEST_PANIC_FILE`).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{two_cores, write_config, Engine, TempDir};
use ixn::client::Client;
use ixn_shard::proto::ClientType;

/// Exit status of a process ended by a panic (src/server/fatal.rs).
const PANIC_EXIT_STATUS: i32 = 70;

/// A server process started by these tests, with its stdout lines.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

impl Proc {
    fn spawn(config: &Path, env: &[(&str, &str)]) -> Proc {
        let log = config.parent().unwrap().join("server.log");
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ixn-server"))
            .arg("--config")
            .arg(config)
            .env("IXN_LOG", "info")
            // A backtrace on the panic line is opt-in; formatting one in a
            // debug build takes seconds, which the timing checks would see.
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn ixn-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines, log }
    }

    /// The address from the ready line, or None if the process printed no
    /// ready line within `timeout` (it exited, or hangs).
    fn ready(&self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = self.lines.recv_timeout(left).ok()?;
            if let Some(rest) = line.strip_prefix("ixn-server ready: listening on ") {
                return Some(rest.split(';').next().unwrap().to_string());
            }
        }
    }

    fn expect_ready(&self) -> String {
        self.ready(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("ixn-server did not start; log:\n{}", self.log_text()))
    }

    /// Waits for the process to end; None if it still runs after `timeout`.
    fn exit_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----- a panic ends the process ----------------------------------------------

/// Starts a 2-shard server told to panic at `site` once `trigger` exists.
fn armed_server(dir: &TempDir, site: &str) -> (Proc, PathBuf) {
    let cfg = write_config(&dir.0, &Engine::Sqlite, two_cores(), "");
    let trigger = dir.0.join("trigger");
    let p = Proc::spawn(&cfg, &[("IXN_TEST_PANIC", site), ("IXN_TEST_PANIC_FILE", trigger.to_str().unwrap())]);
    (p, trigger)
}

/// Registered connections until the log shows clients on both shards.
fn clients_on_both_shards(p: &Proc, addr: &str) -> Vec<Client> {
    let mut clients = Vec::new();
    for i in 0..64 {
        clients.push(Client::connect_as(addr, ClientType::Operator, &format!("op{i}"), None).expect("register"));
        let log = p.log_text();
        if log.contains("client registered msg_id=1021 shard=0")
            && log.contains("client registered msg_id=1021 shard=1")
        {
            return clients;
        }
    }
    panic!("64 connections and not one on each shard; log:\n{}", p.log_text());
}

/// Pulls the trigger and checks the process ends promptly with status 70
/// and exactly one log line about the panic, naming `thread` and the
/// injected message. Returns the time from trigger to exit.
fn trigger_and_expect_exit(p: &mut Proc, trigger: &Path, thread: &str, what: &str) -> Duration {
    let pulled = Instant::now();
    std::fs::write(trigger, b"").unwrap();
    let status = p
        .exit_within(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("ixn-server still running 10 s after a panic in {what}; log:\n{}", p.log_text()));
    let took = pulled.elapsed();
    let log = p.log_text();
    assert_eq!(status.code(), Some(PANIC_EXIT_STATUS), "exit status after a panic in {what}; log:\n{log}");
    let panic_lines: Vec<&str> = log.lines().filter(|l| l.to_lowercase().contains("panic")).collect();
    assert_eq!(panic_lines.len(), 1, "exactly one log line about the panic in {what}; log:\n{log}");
    let line = panic_lines[0];
    assert!(line.contains("ERROR") && line.contains("panic: ending the process msg_id=1090"), "{line}");
    assert!(line.contains(&format!("thread=\"{thread}")), "the line names the thread {thread}: {line}");
    assert!(
        line.contains(&format!("panic=injected panic in {what} (IXN_TEST_PANIC)\\nsecond line of the panic message")),
        "the line carries the panic message, on one line: {line}"
    );
    assert!(line.contains("location=\"src/server/faults.rs:"), "{line}");
    took
}

fn assert_two_shards(log: &str) {
    assert!(log.contains("ixn-server starting msg_id=1001") && log.contains("shards=2"), "a 2-shard server:\n{log}");
    assert!(log.contains("shard started msg_id=1010 shard=1"), "shard 1 ran:\n{log}");
}

#[test]
fn a_shard_panic_ends_the_process_with_one_log_line() {
    let dir = TempDir::new("fatal-shard");
    let (mut p, trigger) = armed_server(&dir, "shard-1");
    let addr = p.expect_ready();
    let mut clients = clients_on_both_shards(&p, &addr);
    for c in &mut clients {
        c.ping().expect("every shard answers before the panic");
    }
    let took = trigger_and_expect_exit(&mut p, &trigger, "ixn-shard-1-", "shard 1");
    assert!(took < Duration::from_secs(2), "ended {took:?} after the trigger (checked every 10 ms)");
    assert_two_shards(&p.log_text());
    // Nothing half-alive is left: the connections on shard 0 are gone too,
    // and the port no longer takes connections.
    for c in &mut clients {
        assert!(c.ping().is_err(), "a connection survived the process");
    }
    assert!(TcpStream::connect(&addr).is_err(), "something still listens on {addr}");
}

#[test]
fn a_shard_panic_while_starting_ends_the_process_without_a_ready_line() {
    let dir = TempDir::new("fatal-start");
    let cfg = write_config(&dir.0, &Engine::Sqlite, two_cores(), "");
    let mut p = Proc::spawn(&cfg, &[("IXN_TEST_PANIC", "shard-1")]);
    let status = p.exit_within(Duration::from_secs(30)).unwrap_or_else(|| {
        panic!("ixn-server still running 30 s after shard 1 panicked at start; log:\n{}", p.log_text())
    });
    assert_eq!(status.code(), Some(PANIC_EXIT_STATUS), "log:\n{}", p.log_text());
    assert!(p.ready(Duration::from_millis(100)).is_none(), "no ready line after a shard panicked at start");
    let log = p.log_text();
    assert_eq!(log.lines().filter(|l| l.to_lowercase().contains("panic")).count(), 1, "log:\n{log}");
    assert!(log.contains("thread=\"ixn-shard-1-"), "log:\n{log}");
}

#[test]
fn a_writer_panic_ends_the_process_with_one_log_line() {
    let dir = TempDir::new("fatal-writer");
    let (mut p, trigger) = armed_server(&dir, "writer");
    let addr = p.expect_ready();
    let mut media = Client::connect_as(addr.as_str(), ClientType::MediaServer, "media", None).unwrap();
    media.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    std::fs::write(&trigger, b"").unwrap();
    // The writer panics when it hands this submit's completion back.
    let pulled = Instant::now();
    let answer = media.submit(ixn::client::submit_request("default", "inbound", "chat", 0, ixn_shard::kv![]));
    assert!(answer.is_err(), "the submit whose writer panicked is not acknowledged: {answer:?}");
    let status = p
        .exit_within(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("ixn-server still running 10 s after a writer panic; log:\n{}", p.log_text()));
    assert!(pulled.elapsed() < Duration::from_secs(2), "ended {:?} after the submit", pulled.elapsed());
    assert_eq!(status.code(), Some(PANIC_EXIT_STATUS), "log:\n{}", p.log_text());
    let log = p.log_text();
    let panic_lines: Vec<&str> = log.lines().filter(|l| l.to_lowercase().contains("panic")).collect();
    assert_eq!(panic_lines.len(), 1, "log:\n{log}");
    assert!(panic_lines[0].contains("thread=\"ixn-db-writer-0\""), "{}", panic_lines[0]);
    assert!(panic_lines[0].contains("panic=injected panic in a database writer (IXN_TEST_PANIC)\\nsecond line"));
    assert_two_shards(&log);
}

#[test]
fn a_main_thread_panic_ends_the_process_with_one_log_line() {
    let dir = TempDir::new("fatal-main");
    let (mut p, trigger) = armed_server(&dir, "main");
    let addr = p.expect_ready();
    let _clients = clients_on_both_shards(&p, &addr);
    let took = trigger_and_expect_exit(&mut p, &trigger, "main", "the main thread");
    assert!(took < Duration::from_secs(2), "ended {took:?} after the trigger");
    assert_two_shards(&p.log_text());
}

// ----- a restart waits for the old listeners ----------------------------------

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A 2-shard SQLite configuration listening on 127.0.0.1:`port`.
fn config_on_port(dir: &TempDir, port: u16) -> PathBuf {
    let cfg = write_config(&dir.0, &Engine::Sqlite, two_cores(), "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&cfg, text).unwrap();
    cfg
}

#[test]
fn a_start_waits_for_a_listener_that_goes_away() {
    let dir = TempDir::new("listen-wait");
    let port = free_port();
    let cfg = config_on_port(&dir, port);
    // Stands for the listening sockets of a server that was just killed.
    let old = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let started = Instant::now();
    let p = Proc::spawn(&cfg, &[]);
    std::thread::sleep(Duration::from_millis(400));
    drop(old);
    let addr = p
        .ready(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the start did not wait for the old listener to go; log:\n{}", p.log_text()));
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(addr, format!("127.0.0.1:{port}"));
    let log = p.log_text();
    assert_eq!(log.matches("msg_id=1014").count(), 1, "one line says the start waits:\n{log}");
    Client::connect_as(addr.as_str(), ClientType::Operator, "op", None).unwrap().ping().unwrap();
}

#[test]
fn a_start_gives_up_on_a_listener_that_stays() {
    let dir = TempDir::new("listen-busy");
    let port = free_port();
    let cfg = config_on_port(&dir, port);
    let _other = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let started = Instant::now();
    let mut p = Proc::spawn(&cfg, &[]);
    let status = p.exit_within(Duration::from_secs(30)).expect("the start gives up");
    let took = started.elapsed();
    assert_eq!(status.code(), Some(1));
    assert!(took >= Duration::from_secs(5) && took < Duration::from_secs(15), "gave up after {took:?}");
    let log = p.log_text();
    assert!(
        log.contains(&format!(
            "ixn-server: cannot listen on 127.0.0.1:{port}: Address already in use (os error 98) for 5 s (is another ixn-server running?)"
        )),
        "log:\n{log}"
    );
}

/// Connections that each keep a request in flight and wait for more.
fn busy_connections(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut c = Client::connect_as(addr, ClientType::Operator, &format!("op{i}"), None).unwrap();
            c.ping().unwrap();
            let s = TcpStream::connect(addr).unwrap();
            // A half-sent frame: the server's read stays in flight.
            use std::io::Write;
            (&s).write_all(&[0x40, 0, 0]).unwrap();
            drop(c);
            s
        })
        .collect()
}

#[test]
fn an_immediate_restart_after_kill_9_with_clients_connected_starts() {
    let dir = TempDir::new("restart");
    let port = free_port();
    let cfg = config_on_port(&dir, port);
    for round in 0..6 {
        let mut p = Proc::spawn(&cfg, &[]);
        let addr = p.expect_ready();
        let mut conns = busy_connections(&addr, 64);
        let mut registered: Vec<Client> = (0..16)
            .map(|i| Client::connect_as(addr.as_str(), ClientType::Operator, &format!("r{i}"), None).unwrap())
            .collect();
        for c in &mut registered {
            c.ping().unwrap();
        }
        p.child.kill().unwrap();
        p.child.wait().unwrap();
        // The supervisor restarts at once, the clients still connected.
        let next = Proc::spawn(&cfg, &[]);
        let addr2 = next.ready(Duration::from_secs(60)).unwrap_or_else(|| {
            panic!("round {round}: the restart right after kill -9 failed; log:\n{}", next.log_text())
        });
        assert_eq!(addr2, addr);
        Client::connect_as(addr2.as_str(), ClientType::Operator, "after", None).unwrap().ping().unwrap();
        // The old connections were reset by the kill, not adopted.
        for s in &mut conns {
            let mut buf = [0u8; 1];
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)), "round {round}: an old connection lives on");
        }
        drop(next);
    }
    let log = std::fs::read_to_string(dir.0.join("server.log")).unwrap();
    eprintln!(
        "a start found the previous server's listeners still open, and waited, {} times in 12 starts",
        log.matches("msg_id=1014").count()
    );
}
