//! The TCP mutation fuzzer (`ixn-bench fuzz`, bench/src/fuzz.rs) as a test:
//! a few seconds against the debug server on one shard and on two, each
//! with a fixed seed and with a fresh one. The fuzzer starts its own server
//! and checks, all along, that the process and every shard stay up and
//! answer, that every request on a connection whose stream it did not break
//! gets exactly one answer in time, that every EventError has a code and a
//! text, and that the log shows no panic.
//!
//! A failure prints the seed, the reason, the server log's tail and the file
//! that holds the last frames. Replay it here with `IXN_FUZZ_SEED=S cargo
//! test --test tcp_fuzz`, or longer with `ixn-bench fuzz --seed S --shards N
//! --minutes M` (docs/operations.md, "ixn-bench fuzz").

#[allow(dead_code)]
#[path = "../bench/src/fuzz.rs"]
mod fuzz;

use std::path::PathBuf;
use std::time::Duration;

/// The seed every run of this test uses, besides a fresh one.
const FIXED_SEED: u64 = 20_261_202;
/// Seconds of fuzzing per seed and shard count.
const SECONDS: u64 = 5;
/// Fuzzing connections: fewer than the default, so that two servers and
/// two fuzzers share a 2-core machine.
const CONNECTIONS: usize = 12;

/// `IXN_FUZZ_SEED` alone when it is set (a replay); else the fixed seed and
/// a fresh one.
fn seeds() -> Vec<u64> {
    match std::env::var("IXN_FUZZ_SEED") {
        Ok(s) => vec![s.trim().parse().expect("IXN_FUZZ_SEED is a number")],
        Err(_) => vec![FIXED_SEED, fuzz::fresh_seed()],
    }
}

fn fuzz_on(shards: usize) {
    for seed in seeds() {
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_ixn-server"));
        let mut o = fuzz::Options::new(bin, seed, shards, Duration::from_secs(SECONDS));
        o.connections = CONNECTIONS;
        eprintln!("tcp_fuzz: seed {seed} on {shards} shard(s)");
        match fuzz::run(&o) {
            Ok(summary) => eprintln!("{summary}"),
            Err(failure) => panic!("{failure}"),
        }
    }
}

#[test]
fn fuzz_one_shard() {
    fuzz_on(1);
}

#[test]
fn fuzz_two_shards() {
    fuzz_on(2);
}
