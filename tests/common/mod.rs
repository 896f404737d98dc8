//! Test harness: runs the real `ixn-server` binary on loopback, on SQLite
//! (a fresh data directory) or PostgreSQL (a fresh database in the
//! throwaway server that `.ci/test` starts and names in `IXN_TEST_PG`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ixn::client::Client;
use ixn_shard::proto::ClientType;

#[derive(Clone, Debug)]
pub enum Engine {
    Sqlite,
    /// Connection string of a database made for this test.
    Postgres(String),
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("ixn-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The engines to run a test on: SQLite always; PostgreSQL when
/// `IXN_TEST_PG` is set. Under CI a missing `IXN_TEST_PG` fails the test,
/// so PostgreSQL coverage cannot silently disappear.
pub fn engines(tag: &str) -> Vec<Engine> {
    let mut v = vec![Engine::Sqlite];
    match std::env::var("IXN_TEST_PG") {
        Ok(conn) if !conn.is_empty() => v.push(Engine::Postgres(fresh_pg_database(&conn, tag))),
        _ => {
            assert!(std::env::var("CI").is_err(), "CI is set but IXN_TEST_PG is not: run the suite with .ci/test");
            eprintln!("IXN_TEST_PG not set: PostgreSQL part of '{tag}' not run (use .ci/test)");
        }
    }
    v
}

fn conn_field<'a>(conn: &'a str, key: &str) -> Option<&'a str> {
    conn.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then_some(v.trim())
    })
}

/// Creates an empty database with the ixn schema; returns its connection
/// string (the given one with the database name replaced).
fn fresh_pg_database(conn: &str, tag: &str) -> String {
    let port = conn_field(conn, "Port").unwrap_or("5432");
    let host = conn_field(conn, "Server").unwrap_or("127.0.0.1");
    let user = conn_field(conn, "Uid").unwrap_or("postgres");
    let base = conn_field(conn, "Database").expect("Database= in IXN_TEST_PG");
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let name = format!("ixn_{}_{}_{}", tag.replace('-', "_"), std::process::id(), n);
    let psql = |db: &str, args: &[&str]| {
        let out = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", port, "-U", user, "-d", db])
            .args(args)
            .output()
            .expect("psql (installed by .ci/setup)");
        assert!(out.status.success(), "psql failed: {}", String::from_utf8_lossy(&out.stderr));
    };
    psql(base, &["-c", &format!("DROP DATABASE IF EXISTS {name}")]);
    psql(base, &["-c", &format!("CREATE DATABASE {name}")]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("storage/sql/postgresql/isdb.sql");
    psql(&name, &["-f", script.to_str().unwrap()]);
    conn.replace(&format!("Database={base}"), &format!("Database={name}"))
}

/// A running `ixn-server` process.
pub struct Server {
    pub child: Child,
    pub addr: String,
    /// The management listener's address, when it is on.
    pub management: Option<String>,
    /// The TLS listener's address, when there is one.
    pub tls: Option<String>,
    pub config_path: PathBuf,
    pub dir: PathBuf,
}

/// Writes a configuration for `engine` into `dir`.
pub fn write_config(dir: &Path, engine: &Engine, cores: &str, extra: &str) -> PathBuf {
    write_config_with(dir, engine, cores, "", extra)
}

/// Like [`write_config`], with `settings` (lines such as
/// `routing-timeout = 1\n`) in the `[settings]` section, which the
/// PostgreSQL connection string shares; `extra` follows it.
pub fn write_config_with(dir: &Path, engine: &Engine, cores: &str, settings: &str, extra: &str) -> PathBuf {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ncores = \"{cores}\"\ndata-dir = \"{}\"\n",
        dir.join("data").display()
    );
    if let Engine::Postgres(conn) = engine {
        text.push_str(&format!(
            "[settings]\nconnection-string = \"{}\"\n",
            conn.replace('\\', "\\\\").replace('"', "\\\"")
        ));
    } else if !settings.is_empty() {
        text.push_str("[settings]\n");
    }
    text.push_str(settings);
    text.push_str(extra);
    let path = dir.join("ixn.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Two shards where the machine has two cores or more.
pub fn two_cores() -> &'static str {
    "0,1"
}

impl Server {
    pub fn start(config_path: &Path) -> Server {
        Server::try_start(config_path).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the server; returns its stderr on failure.
    pub fn try_start(config_path: &Path) -> Result<Server, String> {
        let dir = config_path.parent().unwrap().to_path_buf();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("server.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ixn-server"))
            .arg("--config")
            .arg(config_path)
            .env("IXN_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn ixn-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // The management line comes before the ready line.
            let (mut management, mut tls) = (None, None);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("ixn-server management: http://") {
                    management = rest.split('/').next().map(str::to_string);
                }
                if let Some(rest) = line.strip_prefix("ixn-server tls: listening on ") {
                    tls = rest.split(',').next().map(str::to_string);
                }
                if let Some(rest) = line.strip_prefix("ixn-server ready: listening on ") {
                    let addr = rest.split(';').next().unwrap().to_string();
                    let _ = tx.send((addr, management.take(), tls.take()));
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok((addr, management, tls)) => {
                Ok(Server { child, addr, management, tls, config_path: config_path.to_path_buf(), dir })
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "ixn-server did not start; log:\n{}",
                    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
                ))
            }
        }
    }

    pub fn client(&self) -> Client {
        Client::connect_as(self.addr.as_str(), ClientType::Operator, "test", None).expect("connect and register")
    }

    pub fn media_server(&self) -> Client {
        Client::connect_as(self.addr.as_str(), ClientType::MediaServer, "media", None).expect("connect and register")
    }

    /// A connection registered as `client_type` under `name`.
    pub fn client_as(&self, client_type: ClientType, name: &str) -> Client {
        Client::connect_as(self.addr.as_str(), client_type, name, None).expect("connect and register")
    }

    /// SIGKILL: no drain, no goodbye.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        None
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

// ----- reading answers (routing.rs, snapshot.rs) -----------------------------

/// The INTERACTION lists of an answer, in order.
pub fn interactions_of(f: &ixn_shard::proto::frame::Frame) -> Vec<&ixn_shard::KvList> {
    f.attrs
        .iter()
        .filter(|a| a.id == ixn_shard::proto::attr::INTERACTION)
        .map(|a| a.value.as_list().expect("INTERACTION is a list"))
        .collect()
}

/// The ids of an answer's INTERACTION lists, in order.
pub fn ids_of(f: &ixn_shard::proto::frame::Frame) -> Vec<String> {
    interactions_of(f)
        .into_iter()
        .map(|l| l.get("id").and_then(ixn_shard::Value::as_str).expect("an interaction list has an id").to_string())
        .collect()
}

/// The server's error for a call that must fail.
pub fn server_error_of<T: std::fmt::Debug>(r: Result<T, ixn::client::ClientError>) -> ixn_shard::proto::ProtoError {
    match r {
        Err(ixn::client::ClientError::Server(e)) => e,
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// Prints the server's log when dropped during a panic (a failing test).
pub struct LogOnPanic<'a>(pub &'a Server);

impl Drop for LogOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- server log ({}) -----\n{}", self.0.dir.display(), self.0.log());
        }
    }
}

/// Checks `got` against `expected`, the order a test expects when
/// submission order is the order in which one sequential submitter got its
/// acks, sorted (stably) by `key` (docs/protocol.md 7.8: an interaction
/// submitted after another was acknowledged comes after it, on any shard).
/// The error shows where they part, with each id's key, time and shard.
pub fn check_submission_order(got: &[String], expected: &[String], key: impl Fn(&str) -> i64) -> Result<(), String> {
    use ixn_shard::id::{decode, owner_of};
    let show = |id: &str| match decode(id) {
        Some(p) => format!("{id} (key {}, ms {}, seq {}, shard {})", key(id), p.time_ms, p.seq, owner_of(id, 2)),
        None => format!("{id} (key {})", key(id)),
    };
    if got.len() != expected.len() {
        return Err(format!("{} ids, expected {}: got {got:?}", got.len(), expected.len()));
    }
    match got.iter().zip(expected).position(|(g, e)| g != e) {
        None => Ok(()),
        Some(i) => Err(format!("at {i}: got {}, expected {}", show(&got[i]), show(&expected[i]))),
    }
}

/// Media-server connections that together submit on both shards of a
/// two-shard server (the kernel spreads connections over the shards'
/// listeners, and a submission stays on its connection's shard), at least
/// `at_least` of them, each with its shard, alternating shards from the
/// start (so a round robin over any two neighbours uses both). Each is
/// probed with a submission to the queue `done`, stopped at once.
pub fn media_conns(s: &Server, at_least: usize) -> Vec<(Client, u16)> {
    let mut by_shard: [Vec<Client>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..64 {
        if by_shard[0].len() + by_shard[1].len() >= at_least && by_shard.iter().all(|v| !v.is_empty()) {
            break;
        }
        let mut m = s.media_server();
        let probe = ixn::client::submit_request("default", "done", "chat", 0, ixn_shard::KvList::new());
        let id = m.submit(probe).expect("probe submit");
        m.stop(&id, Some("probe")).expect("probe stop");
        by_shard[ixn_shard::id::owner_of(&id, 2) as usize].push(m);
    }
    assert!(by_shard.iter().all(|v| !v.is_empty()), "64 connections all submitted on one shard");
    let [a, b] = by_shard;
    let (mut a, mut b) = (a.into_iter(), b.into_iter());
    let mut out = Vec::new();
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => {
                out.extend(x.map(|c| (c, 0)));
                out.extend(y.map(|c| (c, 1)));
            }
        }
    }
}

/// Polls `check` every 20 ms until it gives a value or `within` has passed;
/// then fails the test naming `what` and the last thing `check` saw.
pub fn eventually<T>(what: &str, within: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => panic!("{what}: not within {within:?}; last: {last}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}
