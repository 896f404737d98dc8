//! The shard state machine driven directly, without sockets or storage:
//! requests and storage completions in, replies and writes out.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ixn_shard::catalog::Catalog;
use ixn_shard::id::owner_of;
use ixn_shard::kv;
use ixn_shard::machine::{Caller, Input, Origin, Output, Shard, ShardParams, StoreOp};
use ixn_shard::proto::request::error_of;
use ixn_shard::proto::{attr, msg_type, ClientType, ErrorCode, Frame, Request, Submit};
use ixn_shard::{KvList, Value};

const T0: i64 = 1_800_000_000_000;

fn shard(shard: u16, shards: u16) -> Shard {
    Shard::new(
        ShardParams { max_properties_bytes: 4096, ..ShardParams::new(1, shard, shards) },
        Arc::new(Catalog::embedded_default()),
    )
}

fn caller(ref_id: u32, client_type: ClientType) -> Caller {
    Caller {
        origin: Origin { shard: 0, conn: 7, session: 0 },
        ref_id,
        client_type,
        client_name: "media".into(),
        agent: None,
        tenants: ixn_shard::machine::TenantScope::all(),
    }
}

fn submit(queue: &str, media: &str, props: KvList) -> Request {
    Request::Submit(Box::new(Submit {
        tenant: "default".into(),
        media_type: media.into(),
        interaction_type: "Inbound".into(),
        interaction_subtype: "InboundNew".into(),
        queue: queue.into(),
        priority: 2,
        properties: props,
        id: None,
        received_at_ms: None,
    }))
}

fn step(s: &mut Shard, input: Input) -> Vec<Output> {
    let mut out = Vec::new();
    s.handle(T0, input, &mut out);
    out
}

fn req(s: &mut Shard, ref_id: u32, r: Request) -> Vec<Output> {
    step(s, Input::Request { caller: caller(ref_id, ClientType::MediaServer), request: r })
}

fn only_store(out: &[Output]) -> (u64, StoreOp) {
    match out {
        [Output::Store { token, op, .. }] => (*token, op.clone()),
        other => panic!("expected one write and no reply, got {other:?}"),
    }
}

fn only_reply(out: &[Output]) -> Frame {
    match out {
        [Output::Reply { frame, .. }] => frame.clone(),
        other => panic!("expected one reply and no write, got {other:?}"),
    }
}

fn done(s: &mut Shard, token: u64, ok: bool) -> Vec<Output> {
    step(s, Input::StorageDone { token, ok })
}

/// Submits and commits; returns the id.
fn submitted(s: &mut Shard) -> String {
    let (token, op) = only_store(&req(s, 1, submit("inbound", "chat", kv![("lang", "en")])));
    assert!(matches!(op, StoreOp::Insert(_)));
    let ack = only_reply(&done(s, token, true));
    ack.get_str(attr::INTERACTION_ID).unwrap().to_string()
}

#[test]
fn submit_is_acknowledged_only_after_its_write_commits() {
    let mut s = shard(0, 1);
    let out = req(&mut s, 11, submit("inbound", "chat", kv![("lang", "en")]));
    let (token, op) = only_store(&out);
    let StoreOp::Insert(rec) = op else { panic!("first write is an insert") };
    assert_eq!((rec.queue.as_str(), rec.media_type.as_str(), rec.priority), ("inbound", "chat", 2));
    assert_eq!(rec.submitted_at, Some(T0));
    assert_eq!(s.pending_writes(), 1);
    let ack = only_reply(&done(&mut s, token, true));
    assert_eq!((ack.msg_type, ack.ref_id), (msg_type::EVENT_ACK, 11));
    assert_eq!(ack.get_str(attr::INTERACTION_ID), Some(rec.id.as_str()));
    assert_eq!(s.pending_writes(), 0);
    assert_eq!(s.len(), 1);
}

#[test]
fn a_failed_submit_is_forgotten_and_answered_with_storage_failure() {
    let mut s = shard(0, 1);
    let (token, op) = only_store(&req(&mut s, 3, submit("inbound", "chat", KvList::new())));
    let out = done(&mut s, token, false);
    let mut reply = None;
    let mut cleanup = None;
    for o in out {
        match o {
            Output::Reply { frame, .. } => reply = Some(frame),
            Output::Store { op: StoreOp::Delete(id), token, .. } => cleanup = Some((id, token)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(error_of(&reply.unwrap()).unwrap().code, ErrorCode::StorageFailure);
    let (id, t) = cleanup.expect("a delete removes whatever may have been stored");
    assert_eq!(id, op.id());
    assert!(s.is_empty());
    assert!(done(&mut s, t, true).is_empty(), "the cleanup write answers no one");
    assert_eq!(s.pending_writes(), 0);
}

#[test]
fn change_place_and_stop_write_full_rows() {
    let mut s = shard(0, 1);
    let id = submitted(&mut s);
    let out = req(
        &mut s,
        2,
        Request::ChangeProperties {
            id: id.clone(),
            changed: kv![("lang", "fr"), ("x", 1)],
            deleted: vec!["gone".into()],
        },
    );
    let (token, op) = only_store(&out);
    let StoreOp::Upsert(rec) = op else { panic!("later writes are upserts") };
    assert_eq!(rec.properties, kv![("lang", "fr"), ("x", 1)]);
    assert_eq!(rec.version, 1);
    assert_eq!(only_reply(&done(&mut s, token, true)).ref_id, 2);

    let (token, op) = only_store(&req(&mut s, 3, Request::PlaceInQueue { id: id.clone(), queue: Some("done".into()) }));
    let StoreOp::Upsert(rec) = op else { panic!() };
    assert_eq!((rec.queue.as_str(), rec.moved_to_queue_at), ("done", Some(T0)));
    only_reply(&done(&mut s, token, true));

    let (token, op) = only_store(&req(&mut s, 4, Request::StopProcessing { id: id.clone(), reason: None }));
    assert_eq!(op, StoreOp::Delete(id.clone()));
    assert!(s.get(&id).is_none());
    only_reply(&done(&mut s, token, true));
}

/// A write carries the interaction's properties without copying them: the
/// record and the stored interaction hold the same bytes, and a change
/// gives the interaction new ones while the record in flight keeps its own.
#[test]
fn a_write_shares_the_properties_it_stores() {
    let mut s = shard(0, 1);
    let out = req(&mut s, 11, submit("inbound", "chat", kv![("lang", "en"), ("n", 3)]));
    let (token, op) = only_store(&out);
    let StoreOp::Insert(rec) = op else { panic!("first write is an insert") };
    let id = rec.id.clone();
    let stored = &s.get(&id).unwrap().properties;
    assert_eq!(rec.properties, kv![("lang", "en"), ("n", 3)]);
    assert_eq!(rec.properties.bytes().as_ptr(), stored.bytes().as_ptr(), "the record copied the properties");
    only_reply(&done(&mut s, token, true));

    let changed = Request::ChangeProperties { id: id.clone(), changed: kv![("lang", "fr")], deleted: vec![] };
    let (_, op) = only_store(&req(&mut s, 12, changed));
    let StoreOp::Upsert(after) = op else { panic!("later writes are upserts") };
    assert_eq!(rec.properties, kv![("lang", "en"), ("n", 3)], "a change altered a record in flight");
    assert_eq!(after.properties, kv![("lang", "fr"), ("n", 3)]);
    assert_eq!(s.get(&id).unwrap().properties.bytes().as_ptr(), after.properties.bytes().as_ptr());
}

#[test]
fn a_failed_stop_restores_the_interaction() {
    let mut s = shard(0, 1);
    let id = submitted(&mut s);
    let (token, _) = only_store(&req(&mut s, 4, Request::StopProcessing { id: id.clone(), reason: None }));
    let reply = only_reply(&done(&mut s, token, false));
    assert_eq!(error_of(&reply).unwrap().code, ErrorCode::StorageFailure);
    assert_eq!(s.get(&id).unwrap().properties(), kv![("lang", "en")]);
}

#[test]
fn refused_requests_change_nothing_and_write_nothing() {
    let mut s = shard(0, 1);
    let id = submitted(&mut s);
    let before = s.get(&id).unwrap().clone();
    let cases: Vec<(Request, ClientType, ErrorCode)> = vec![
        (submit("nowhere", "chat", KvList::new()), ClientType::MediaServer, ErrorCode::UnknownQueue),
        (submit("inbound", "voice", KvList::new()), ClientType::MediaServer, ErrorCode::MediaTypeDisabled),
        (submit("inbound", "fax", KvList::new()), ClientType::MediaServer, ErrorCode::UnknownMediaType),
        (submit("inbound", "chat", KvList::new()), ClientType::AgentDesktop, ErrorCode::NotPermitted),
        (
            submit(
                "inbound",
                "chat",
                KvList::from_entries(vec![("a".into(), Value::Int(1)), ("a".into(), Value::Int(2))]),
            ),
            ClientType::MediaServer,
            ErrorCode::InvalidValue,
        ),
        (
            Request::PlaceInQueue { id: id.clone(), queue: Some("nowhere".into()) },
            ClientType::MediaServer,
            ErrorCode::UnknownQueue,
        ),
        (
            Request::ChangeProperties { id: id.clone(), changed: kv![("lang", "de")], deleted: vec!["lang".into()] },
            ClientType::MediaServer,
            ErrorCode::InvalidValue,
        ),
        (
            Request::ChangeProperties { id: id.clone(), changed: KvList::new(), deleted: vec![] },
            ClientType::MediaServer,
            ErrorCode::MissingAttribute,
        ),
        (
            Request::ChangeProperties { id: "missing".into(), changed: kv![("a", 1)], deleted: vec![] },
            ClientType::MediaServer,
            ErrorCode::UnknownInteraction,
        ),
        (
            Request::StopProcessing { id: "missing".into(), reason: None },
            ClientType::MediaServer,
            ErrorCode::UnknownInteraction,
        ),
    ];
    for (i, (r, ct, code)) in cases.into_iter().enumerate() {
        let out = step(&mut s, Input::Request { caller: caller(100 + i as u32, ct), request: r });
        let e = error_of(&only_reply(&out)).unwrap();
        assert_eq!(e.code, code, "case {i}: {}", e.text);
    }
    assert_eq!(s.get(&id).unwrap(), &before);
    assert_eq!(s.len(), 1);
    assert_eq!(s.pending_writes(), 0);
}

#[test]
fn client_given_ids_and_duplicates() {
    let shards = 2;
    let name = (0..).map(|i| format!("order-{i}")).find(|n| owner_of(n, shards) == 1).unwrap();
    let mut s1 = shard(1, shards);
    let mut sub = submit("inbound", "chat", KvList::new());
    if let Request::Submit(b) = &mut sub {
        b.id = Some(name.clone());
    }
    let (token, _) = only_store(&req(&mut s1, 1, sub.clone()));
    // A duplicate is refused even before the first commit completes.
    assert_eq!(error_of(&only_reply(&req(&mut s1, 2, sub.clone()))).unwrap().code, ErrorCode::DuplicateInteractionId);
    only_reply(&done(&mut s1, token, true));
    // The other shard does not own it and says so instead of acting.
    let mut s0 = shard(0, shards);
    assert_eq!(error_of(&only_reply(&req(&mut s0, 3, sub))).unwrap().code, ErrorCode::Internal);
    assert!(s0.is_empty());
}

/// A tiny deterministic generator (xorshift), so the test needs no crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random mixes of requests and out-of-order storage completions (some
/// failing): the shard's state passes its audit after every input; every
/// request gets exactly one answer; once every write has
/// completed nothing is pending; an acknowledged submit is live unless an
/// acknowledged stop removed it, and an acknowledged stop is gone.
#[test]
fn random_histories_answer_every_request_once() {
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut s = shard(0, 1);
        let mut answered: HashSet<u32> = HashSet::new();
        // Writes in flight: (token, interaction id). Storage completes one
        // interaction's writes in order (one writer per id, in order), so
        // only the oldest of an id may complete next.
        let mut inflight: Vec<(u64, String)> = Vec::new();
        let mut ids: Vec<String> = Vec::new();
        let mut acked_stops: HashSet<String> = HashSet::new();
        let mut next_ref = 1u32;
        // Reference id -> the interaction a stop request was about.
        let mut stop_of_ref: HashMap<u32, String> = HashMap::new();
        let mut id_of_ref: HashMap<u32, ()> = HashMap::new();
        for _ in 0..200 {
            let mut out = Vec::new();
            if !inflight.is_empty() && rng.below(3) == 0 {
                let pick = &inflight[rng.below(inflight.len() as u64) as usize].1;
                let oldest = (0..inflight.len()).filter(|&i| inflight[i].1 == *pick).min_by_key(|&i| inflight[i].0);
                let (t, _) = inflight.remove(oldest.expect("the picked one at least"));
                s.handle(T0, Input::StorageDone { token: t, ok: rng.below(10) != 0 }, &mut out);
            } else {
                let r = next_ref;
                next_ref += 1;
                id_of_ref.insert(r, ());
                let pick = |rng: &mut Rng, ids: &Vec<String>| {
                    if ids.is_empty() || rng.below(8) == 0 {
                        "unknown".to_string()
                    } else {
                        ids[rng.below(ids.len() as u64) as usize].clone()
                    }
                };
                let request = match rng.below(5) {
                    0 => submit(
                        if rng.below(6) == 0 { "nowhere" } else { "inbound" },
                        "chat",
                        kv![("k", rng.below(5) as i64)],
                    ),
                    1 => Request::ChangeProperties {
                        id: pick(&mut rng, &ids),
                        changed: kv![("k", rng.below(5) as i64)],
                        deleted: vec![],
                    },
                    2 => Request::PlaceInQueue {
                        id: pick(&mut rng, &ids),
                        queue: Some(["inbound", "done", "bad"][rng.below(3) as usize].into()),
                    },
                    3 => {
                        let id = pick(&mut rng, &ids);
                        stop_of_ref.insert(r, id.clone());
                        Request::StopProcessing { id, reason: None }
                    }
                    _ => Request::GetInteractionProperties { id: pick(&mut rng, &ids) },
                };
                s.handle(T0, Input::Request { caller: caller(r, ClientType::MediaServer), request }, &mut out);
            }
            // Views, counts, locks and writes in flight agree after every input.
            s.audit().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            for o in out {
                match o {
                    Output::Reply { frame, .. } => {
                        assert!(answered.insert(frame.ref_id), "seed {seed}: ref {} answered twice", frame.ref_id);
                        if frame.msg_type == msg_type::EVENT_ACK {
                            if let Some(id) = frame.get_str(attr::INTERACTION_ID) {
                                ids.push(id.to_string());
                            }
                            if let Some(id) = stop_of_ref.get(&frame.ref_id) {
                                acked_stops.insert(id.clone());
                            }
                        }
                    }
                    Output::Store { token, op, .. } => inflight.push((token, op.id().to_string())),
                    Output::Peer { .. }
                    | Output::Event { .. }
                    | Output::Report { .. }
                    | Output::Cursor { .. }
                    | Output::Unsubscribed { .. }
                    | Output::ReadLog { .. }
                    | Output::SendLog { .. }
                    | Output::Replay { .. }
                    | Output::Bind { .. } => {
                        panic!("seed {seed}: no request here spans shards")
                    }
                }
            }
        }
        // Complete everything still in flight.
        while !inflight.is_empty() {
            let (t, _) = inflight.remove(0);
            let mut out = Vec::new();
            s.handle(T0, Input::StorageDone { token: t, ok: true }, &mut out);
            s.audit().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            for o in out {
                match o {
                    Output::Reply { frame, .. } => {
                        assert!(answered.insert(frame.ref_id), "seed {seed}: answered twice");
                        if let (Some(id), msg_type::EVENT_ACK) = (frame.get_str(attr::INTERACTION_ID), frame.msg_type) {
                            ids.push(id.to_string());
                        }
                        if let (Some(id), msg_type::EVENT_ACK) = (stop_of_ref.get(&frame.ref_id), frame.msg_type) {
                            acked_stops.insert(id.clone());
                        }
                    }
                    Output::Store { token, op, .. } => inflight.push((token, op.id().to_string())),
                    Output::Peer { .. }
                    | Output::Event { .. }
                    | Output::Report { .. }
                    | Output::Cursor { .. }
                    | Output::Unsubscribed { .. }
                    | Output::ReadLog { .. }
                    | Output::SendLog { .. }
                    | Output::Replay { .. }
                    | Output::Bind { .. } => {
                        panic!("seed {seed}: no request here spans shards")
                    }
                }
            }
        }
        assert_eq!(s.pending_writes(), 0, "seed {seed}");
        for r in id_of_ref.keys() {
            assert!(answered.contains(r), "seed {seed}: request {r} never answered");
        }
        assert_eq!(answered.len(), id_of_ref.len(), "seed {seed}: answers for requests never made");
        for ix in s.interactions() {
            assert!(s.owns(&ix.id));
        }
        for id in &ids {
            assert_eq!(s.get(id).is_some(), !acked_stops.contains(id), "seed {seed}: {id} live/stopped mismatch");
        }
        assert_eq!(s.len(), ids.len() - acked_stops.len(), "seed {seed}: only acknowledged submits are live");
    }
}

#[test]
fn client_ids_of_the_generated_form_are_refused() {
    let mut s = shard(0, 1);
    let taken = ixn_shard::id::encode(ixn_shard::id::IdParts { time_ms: T0, node: 1, partition: 0, seq: 0 });
    let mut sub = submit("inbound", "chat", KvList::new());
    if let Request::Submit(b) = &mut sub {
        b.id = Some(taken);
    }
    assert_eq!(error_of(&only_reply(&req(&mut s, 1, sub))).unwrap().code, ErrorCode::InvalidInteractionId);
    // And generation never hands out an id that is already live.
    for _ in 0..100 {
        submitted(&mut s);
    }
    assert_eq!(s.len(), 100);
}

#[test]
fn properties_are_bounded_in_size() {
    let mut s = shard(0, 1);
    let big = kv![("blob", Value::Bin(vec![0u8; 5000]))];
    assert_eq!(
        error_of(&only_reply(&req(&mut s, 1, submit("inbound", "chat", big)))).unwrap().code,
        ErrorCode::InvalidValue
    );
    let id = submitted(&mut s);
    let half = kv![("a", Value::Bin(vec![0u8; 2500]))];
    let (t, _) =
        only_store(&req(&mut s, 2, Request::ChangeProperties { id: id.clone(), changed: half, deleted: vec![] }));
    only_reply(&done(&mut s, t, true));
    // A second half would pass the limit: refused, nothing changes.
    let other = kv![("b", Value::Bin(vec![0u8; 2500]))];
    let out = req(&mut s, 3, Request::ChangeProperties { id: id.clone(), changed: other, deleted: vec![] });
    assert_eq!(error_of(&only_reply(&out)).unwrap().code, ErrorCode::InvalidValue);
    assert_eq!(s.get(&id).unwrap().version, 1);
    assert!(s.get(&id).unwrap().properties().get("b").is_none());
}

/// Properties nested `levels` lists deep, the property list counting 1.
fn nested_props(levels: usize) -> KvList {
    let mut l = kv![("leaf", 1)];
    for _ in 1..levels {
        l = KvList::from_entries(vec![("inner".into(), Value::List(l))]);
    }
    l
}

#[test]
fn properties_leave_room_to_be_listed_in_answers() {
    use ixn_shard::machine::MAX_PROPERTY_LEVELS;
    use ixn_shard::proto::frame::{decode_frame, DEFAULT_MAX_FRAME};
    let mut s = shard(0, 1);
    let out = req(&mut s, 1, submit("inbound", "chat", nested_props(MAX_PROPERTY_LEVELS + 1)));
    assert_eq!(error_of(&only_reply(&out)).unwrap().code, ErrorCode::InvalidValue);
    assert_eq!(s.len(), 0);
    let (token, _) = only_store(&req(&mut s, 2, submit("inbound", "chat", nested_props(MAX_PROPERTY_LEVELS))));
    done(&mut s, token, true);
    // The deepest allowed properties still fit in an interaction list that a
    // client can decode.
    let caller = Caller {
        origin: Origin { shard: 0, conn: 7, session: 0 },
        ref_id: 3,
        client_type: ClientType::Operator,
        client_name: "op".into(),
        agent: None,
        tenants: ixn_shard::machine::TenantScope::all(),
    };
    let mut out = Vec::new();
    s.handle(
        T0,
        Input::Request {
            caller,
            request: Request::Pull { tenant: "default".into(), view: "inbound-by-priority".into(), count: 1 },
        },
        &mut out,
    );
    // One shard: the coordinator talks to itself until it answers.
    let mut frame = None;
    while let Some(o) = out.pop() {
        match o {
            Output::Peer { msg, .. } => s.handle(T0, Input::Peer { from: 0, msg }, &mut out),
            Output::Reply { frame: f, .. } => frame = Some(f),
            Output::Store { .. } => panic!("a pull writes nothing"),
            Output::Event { .. }
            | Output::Report { .. }
            | Output::Cursor { .. }
            | Output::Unsubscribed { .. }
            | Output::ReadLog { .. }
            | Output::SendLog { .. }
            | Output::Replay { .. }
            | Output::Bind { .. } => {}
        }
    }
    let frame = frame.expect("the pull answered");
    assert_eq!(frame.get_int(attr::COUNT), Some(1));
    assert_eq!(decode_frame(&frame.encode(), DEFAULT_MAX_FRAME).unwrap(), frame);
    // A change adding a deeper property is refused too.
    let id = s.interactions().next().unwrap().id.to_string();
    let changed = kv![("deep", Value::List(nested_props(MAX_PROPERTY_LEVELS)))];
    let out = req(&mut s, 4, Request::ChangeProperties { id, changed, deleted: vec![] });
    assert_eq!(error_of(&only_reply(&out)).unwrap().code, ErrorCode::InvalidValue);
}

#[test]
fn submission_order_follows_the_microsecond_clock_and_survives_a_reload() {
    use ixn_shard::interaction::tie_at;
    let mut shards = [shard(0, 2), shard(1, 2)];
    let base_us = T0 * 1000;
    let mut ids = Vec::new();
    // Alternate shards within one millisecond, one microsecond apart; then
    // three submissions on one shard in the same microsecond.
    let times: Vec<(usize, i64)> = (0..6).map(|i| (i % 2, base_us + i as i64)).chain([(0, base_us + 9); 3]).collect();
    for (n, (s, t)) in times.into_iter().enumerate() {
        let mut out = Vec::new();
        let input = Input::Request {
            caller: caller(n as u32 + 1, ClientType::MediaServer),
            request: submit("inbound", "chat", KvList::new()),
        };
        shards[s].handle_at(t, input, &mut out);
        let (token, _) = only_store(&out);
        let mut out = Vec::new();
        shards[s].handle_at(t, Input::StorageDone { token, ok: true }, &mut out);
        let id = only_reply(&out).get_str(attr::INTERACTION_ID).unwrap().to_string();
        ids.push((s, id));
    }
    let tie = |s: &[Shard; 2], (n, id): &(usize, String)| s[*n].get(id).unwrap().tie;
    let ties: Vec<u64> = ids.iter().map(|x| tie(&shards, x)).collect();
    assert!(ties.windows(2).all(|w| w[0] < w[1]), "ties follow submission order: {ties:?}");
    assert_eq!(ties[0], tie_at(base_us));
    // A reload from the stored records gives the same ties, and new
    // submissions continue after them even with the clock set back.
    let mut reloaded = [shard(0, 2), shard(1, 2)];
    for (s, id) in &ids {
        reloaded[*s].load(shards[*s].record(id).unwrap()).unwrap();
    }
    assert_eq!(ids.iter().map(|x| tie(&reloaded, x)).collect::<Vec<_>>(), ties);
    let mut out = Vec::new();
    let input = Input::Request {
        caller: caller(99, ClientType::MediaServer),
        request: submit("inbound", "chat", KvList::new()),
    };
    reloaded[0].handle_at(base_us - 5_000_000, input, &mut out);
    let (token, _) = only_store(&out);
    let mut out = Vec::new();
    reloaded[0].handle_at(base_us, Input::StorageDone { token, ok: true }, &mut out);
    let id = only_reply(&out).get_str(attr::INTERACTION_ID).unwrap().to_string();
    let last_on_0 = ids.iter().filter(|(s, _)| *s == 0).map(|x| tie(&reloaded, x)).max().unwrap();
    assert!(reloaded[0].get(&id).unwrap().tie > last_on_0);
}

#[test]
fn equal_stored_ties_from_two_former_shards_both_load() {
    // Two shards may give the same tie in the same microsecond; after a
    // restart on one shard both must load and both be routable.
    let mut two = [shard(0, 2), shard(1, 2)];
    let mut records = Vec::new();
    for (s, sh) in two.iter_mut().enumerate() {
        let mut out = Vec::new();
        let input = Input::Request {
            caller: caller(s as u32 + 1, ClientType::MediaServer),
            request: submit("inbound", "chat", KvList::new()),
        };
        sh.handle_at(T0 * 1000, input, &mut out);
        let (token, op) = only_store(&out);
        sh.handle_at(T0 * 1000, Input::StorageDone { token, ok: true }, &mut Vec::new());
        let StoreOp::Insert(r) = op else { panic!("an insert") };
        records.push(*r);
    }
    assert_eq!(records[0].submit_order, records[1].submit_order, "same microsecond, same tie");
    let mut one = shard(0, 1);
    for r in records {
        one.load(r).unwrap();
    }
    let ties: HashSet<u64> = one.interactions().map(|ix| ix.tie).collect();
    assert_eq!(ties.len(), 2, "ties are unique in a shard");
    let view = one.catalog().tenant_at(0).view_idx("inbound-by-priority").unwrap();
    assert_eq!(one.view_ids(0, view).len(), 2);
}

/// Runs one input on a one-shard node, feeding the shard's messages to
/// itself, and returns the replies.
fn run_alone(s: &mut Shard, now_ms: i64, input: Input) -> Vec<Frame> {
    let mut pending = vec![input];
    let mut replies = Vec::new();
    while let Some(i) = pending.pop() {
        let mut out = Vec::new();
        s.handle(now_ms, i, &mut out);
        for o in out {
            match o {
                Output::Peer { msg, .. } => pending.insert(0, Input::Peer { from: 0, msg }),
                Output::Reply { frame, .. } => replies.push(frame),
                Output::Store { token, .. } => pending.insert(0, Input::StorageDone { token, ok: true }),
                Output::Event { .. }
                | Output::Report { .. }
                | Output::Cursor { .. }
                | Output::Unsubscribed { .. }
                | Output::ReadLog { .. }
                | Output::SendLog { .. }
                | Output::Replay { .. }
                | Output::Bind { .. } => {}
            }
        }
    }
    replies
}

fn operator(ref_id: u32) -> Caller {
    Caller {
        origin: Origin { shard: 0, conn: 9, session: 0 },
        ref_id,
        client_type: ClientType::Operator,
        client_name: "op".into(),
        agent: None,
        tenants: ixn_shard::machine::TenantScope::all(),
    }
}

#[test]
fn waiting_pulls_leave_no_watchers_behind() {
    let params = ShardParams { pull_hold_ms: 100, ..ShardParams::new(1, 0, 1) };
    let mut s = Shard::new(params, Arc::new(Catalog::embedded_default()));
    let pull = |r| Input::Request {
        caller: operator(r),
        request: Request::Pull { tenant: "default".into(), view: "done".into(), count: 1 },
    };
    for r in 1..=50 {
        // Each pull waits on the empty view, then its hold time ends.
        assert!(run_alone(&mut s, T0 + r as i64 * 1000, pull(r)).is_empty(), "a pull on an empty view waits");
        assert_eq!(s.watchers(), 1);
        let replies = run_alone(&mut s, T0 + r as i64 * 1000 + 100, Input::Tick);
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].get_int(attr::COUNT), Some(0));
        assert_eq!(s.watchers(), 0, "pull {r} left a watcher");
    }
    // A closed connection's waiting pull leaves none either.
    run_alone(&mut s, T0, pull(99));
    assert_eq!(s.watchers(), 1);
    run_alone(&mut s, T0, Input::ConnClosed { origin: Origin { shard: 0, conn: 9, session: 0 }, agent: None });
    assert_eq!(s.watchers(), 0);
    assert_eq!(s.pending_ops(), 0);
}

#[test]
fn a_connection_holds_a_bounded_number_of_snapshots() {
    use ixn_shard::coord::MAX_SNAPSHOTS_PER_CONNECTION;
    let mut s = shard(0, 1);
    let take = |r| Input::Request {
        caller: operator(r),
        request: Request::TakeSnapshot { tenant: None, condition: "priority >= 0".into(), lock: false, limit: None },
    };
    let mut ids = Vec::new();
    for r in 0..MAX_SNAPSHOTS_PER_CONNECTION as u32 {
        let f = run_alone(&mut s, T0, take(r + 1)).pop().unwrap();
        assert_eq!(f.msg_type, msg_type::EVENT_SNAPSHOT_TAKEN);
        ids.push(f.get_int(attr::SNAPSHOT_ID).unwrap() as u64);
    }
    let f = run_alone(&mut s, T0, take(1000)).pop().unwrap();
    assert_eq!(error_of(&f).unwrap().code, ErrorCode::InvalidValue, "{f:?}");
    let release = Input::Request { caller: operator(1001), request: Request::ReleaseSnapshot { snapshot: ids[0] } };
    assert_eq!(run_alone(&mut s, T0, release).pop().unwrap().msg_type, msg_type::EVENT_ACK);
    assert_eq!(run_alone(&mut s, T0, take(1002)).pop().unwrap().msg_type, msg_type::EVENT_SNAPSHOT_TAKEN);
}

#[test]
fn gauges_count_waiting_and_locked_and_know_the_oldest_waiting() {
    let mut s = shard(0, 1);
    assert_eq!(s.gauges().queues[0], ixn_shard::gauges::QueueGauge::default());
    let first = submitted(&mut s);
    // A second one five seconds later.
    let mut out = Vec::new();
    s.handle(
        T0 + 5000,
        Input::Request { caller: caller(2, ClientType::MediaServer), request: submit("inbound", "chat", kv![]) },
        &mut out,
    );
    let (token, _) = only_store(&out);
    done(&mut s, token, true);

    let g = s.gauges();
    assert_eq!((g.interactions, g.pending_writes), (2, 0));
    // Queue 0 of the embedded default is `inbound`, view 0 `inbound-by-priority`.
    assert_eq!(g.queues[0], ixn_shard::gauges::QueueGauge { waiting: 2, locked: 0, oldest_waiting_at: Some(T0) });
    assert_eq!(g.views[0], 2);

    // A pull locks the first (same priority, submitted first): the oldest
    // waiting is now the second.
    let pull = Request::Pull { tenant: "default".into(), view: "inbound-by-priority".into(), count: 1 };
    run_alone(&mut s, T0 + 6000, Input::Request { caller: operator(3), request: pull });
    assert!(s.lock_of(&first).is_some(), "the pull locked the first interaction");
    let g = s.gauges();
    assert_eq!(
        g.queues[0],
        ixn_shard::gauges::QueueGauge { waiting: 1, locked: 1, oldest_waiting_at: Some(T0 + 5000) }
    );
    assert_eq!(g.views[0], 1);
    assert_eq!(g.agents.len(), 1);
    assert_eq!(g.agents[0], ixn_shard::gauges::AgentGauge::default());
}
