//! `ixn-bench cycle` end to end against a real server (the debug
//! `ixn-bench` the workspace builds beside `ixn-server`): the load
//! generator that the cycle figures of tuning.md come from completes every
//! cycle it starts, and its own checks (nothing lost, nothing duplicated,
//! no agent above its capacity) hold, on one shard and on two.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{two_cores, write_config_with, Engine, Server, TempDir};

/// The bench binary the workspace builds into the same folder.
fn bench_bin() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_ixn-server")).with_file_name("ixn-bench");
    assert!(bin.exists(), "{} is missing: build the workspace (cargo test --workspace builds it)", bin.display());
    bin
}

fn cycle_on(cores: &str, tag: &str) {
    let dir = TempDir::new(tag);
    let generated = Command::new(bench_bin())
        .args(["gen-config", "--agents", "50", "--capacity", "3"])
        .output()
        .expect("run ixn-bench gen-config");
    assert!(generated.status.success(), "gen-config failed");
    let config = write_config_with(&dir.0, &Engine::Sqlite, cores, "", &String::from_utf8(generated.stdout).unwrap());
    let server = Server::start(&config);
    let json = dir.0.join("r.json");
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
}

#[test]
fn every_cycle_started_completes_on_one_shard() {
    cycle_on("0", "bench-cycle-one");
}

#[test]
fn every_cycle_started_completes_on_two_shards() {
    cycle_on(two_cores(), "bench-cycle-two");
}
