//! Criterion benches of the server's hot paths, apart from the network and
//! the database:
//!
//! * `frame/decode_submit`: a RequestSubmit with five properties, from its
//!   bytes to a typed request (what a connection does per request);
//! * `frame/encode_invite`: an EventInvite with the interaction's
//!   description, to its bytes (what a connection does per event);
//! * `machine/cycles_x100`: 100 whole cycles (submit, invitation, accept,
//!   stop) through two shards' state machines on one thread, every write
//!   completing at once (the pure core's cost per cycle, times 100).
//!
//! Run: `cargo bench -p ixn-perf --bench hot_paths` (figures: tuning.md).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ixn_perf::cycle::{submit, Rig};
use ixn_shard::proto::frame::decode_frame;
use ixn_shard::proto::{attr, msg_type, Frame, Request};
use ixn_shard::{KvList, Value};

/// Frames larger than this are refused by the server's default.
const MAX_FRAME: usize = 1 << 20;

fn properties() -> KvList {
    let mut p = KvList::new();
    p.push("Subject", Value::Str("Question about my last invoice".into()));
    p.push("FromAddress", Value::Str("customer@example.com".into()));
    p.push("Language", Value::Str("english".into()));
    p.push("Segment", Value::Str("gold".into()));
    p.push("CustomerId", Value::Int(48_151_623));
    p
}

fn submit_bytes() -> Vec<u8> {
    submit(properties()).encode(7).encode()
}

fn invite_frame() -> Frame {
    let mut description = KvList::new();
    description.push("InteractionId", Value::Str("0001a2b3c4d5e6f7".into()));
    description.push("Queue", Value::Str("inbound".into()));
    description.push("Properties", Value::List(properties()));
    Frame::new(msg_type::EVENT_INVITE, 0)
        .with(attr::INTERACTION_ID, "0001a2b3c4d5e6f7")
        .with(attr::TICKET, 12_i64)
        .with(attr::AGENT_ID, "agent17")
        .with(attr::PLACE, "place17")
        .with(attr::MEDIA_TYPE, "chat")
        .with(attr::INTERACTION, description)
}

fn frames(c: &mut Criterion) {
    let bytes = submit_bytes();
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_submit", |b| {
        b.iter(|| {
            let frame = decode_frame(black_box(&bytes), MAX_FRAME).expect("a valid frame");
            Request::decode(&frame).expect("a valid request")
        })
    });
    let invite = invite_frame();
    let mut out = Vec::with_capacity(1024);
    g.bench_function("encode_invite", |b| {
        b.iter(|| {
            out.clear();
            black_box(&invite).encode_into(&mut out);
            out.len()
        })
    });
    g.finish();
}

fn machine(c: &mut Criterion) {
    let mut rig = Rig::new(300, 3, 2, 0, false, 0).expect("the rig starts");
    let mut g = c.benchmark_group("machine");
    g.throughput(Throughput::Elements(100));
    g.bench_function("cycles_x100", |b| b.iter(|| rig.run(100, 64).expect("cycles complete")));
    g.finish();
}

criterion_group!(benches, frames, machine);
criterion_main!(benches);
