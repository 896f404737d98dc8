//! `ixn-bench cycle` end to end against a real server (the debug
//! `ixn-server` the workspace builds beside it): the load generator that
//! the cycle figures of tuning.md come from completes every cycle it
//! starts, and its own checks (nothing lost, nothing duplicated, no agent
//! above its capacity) hold, on one shard and on two.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bench_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ixn-bench"))
}

/// The server binary the workspace builds into the same folder.
fn server_bin() -> PathBuf {
    let bin = bench_bin().with_file_name("ixn-server");
    assert!(bin.exists(), "{} is missing: build the workspace (cargo test --workspace builds it)", bin.display());
    bin
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ixn-bench-cycle-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A server with `agents` agents of chat capacity 3 (ixn-bench gen-config)
/// on `cores`, listening on a free loopback port.
fn start(dir: &Path, agents: u32, cores: &str) -> Server {
    let generated = Command::new(bench_bin())
        .args(["gen-config", "--agents", &agents.to_string(), "--capacity", "3"])
        .output()
        .expect("run ixn-bench gen-config");
    assert!(generated.status.success(), "gen-config failed");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ncores = \"{cores}\"\ndata-dir = \"{}\"\nmanagement-listen = \"off\"\n{}",
        dir.join("data").display(),
        String::from_utf8(generated.stdout).unwrap()
    );
    let path = dir.join("ixn.toml");
    std::fs::write(&path, config).unwrap();
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let mut child = Command::new(server_bin())
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn ixn-server");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("ixn-server ready: listening on ") {
                let _ = tx.send(rest.split(';').next().unwrap().to_string());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
        let _ = child.kill();
        panic!("ixn-server did not start: {}", std::fs::read_to_string(dir.join("server.log")).unwrap_or_default())
    });
    Server { child, addr }
}

fn cycle_on(cores: &str, tag: &str) {
    let dir = temp_dir(tag);
    let server = start(&dir, 50, cores);
    let json = dir.join("r.json");
    let out = Command::new(bench_bin())
        .args(["cycle", "--server", &server.addr, "--agents", "50", "--media-servers", "2", "--window", "16"])
        .args(["--duration", "2", "--agent-threads", "2", "--json"])
        .arg(&json)
        .output()
        .expect("run ixn-bench cycle");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ixn-bench cycle failed:\n{text}");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} missing in {r}"));
    assert!(n("completed") > 100, "too few cycles: {r}");
    assert_eq!(n("completed"), n("submitted"), "{r}");
    assert!(n("invites") >= n("completed"), "{r}");
    for k in ["lost", "duplicates", "capacity_violations", "errors", "logouts_unanswered"] {
        assert_eq!(n(k), 0, "{k}: {r}");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_cycle_started_completes_on_one_shard() {
    cycle_on("0", "one");
}

#[test]
fn every_cycle_started_completes_on_two_shards() {
    cycle_on("0,1", "two");
}
