//! Requests about one client-given id pipelined from one connection, without
//! waiting for answers, with the writes completing in order, out of order or
//! failing: the shard must never index an interaction twice, reveal one
//! write's interaction through another's commit, or forget the wrong one.

use std::sync::Arc;

use ixn_shard::catalog::Catalog;
use ixn_shard::kv;
use ixn_shard::machine::{Caller, Input, Origin, Output, Shard, ShardParams};
use ixn_shard::proto::request::error_of;
use ixn_shard::proto::{msg_type, ClientType, ErrorCode, Request, Submit};

const T0: i64 = 1_800_000_000_000;
const ID: &str = "px-1";

fn shard() -> Shard {
    Shard::new(ShardParams::new(1, 0, 1), Arc::new(Catalog::embedded_default()))
}

fn caller(ref_id: u32) -> Caller {
    Caller {
        origin: Origin { shard: 0, conn: 7, session: 0 },
        ref_id,
        client_type: ClientType::MediaServer,
        client_name: "media".into(),
        agent: None,
        tenants: ixn_shard::machine::TenantScope::all(),
    }
}

fn submit(lang: &str) -> Request {
    Request::Submit(Box::new(Submit {
        tenant: "default".into(),
        media_type: "chat".into(),
        interaction_type: "Inbound".into(),
        interaction_subtype: "InboundNew".into(),
        queue: "inbound".into(),
        priority: 2,
        properties: kv![("lang", lang)],
        id: Some(ID.into()),
        received_at_ms: None,
    }))
}

fn stop() -> Request {
    Request::StopProcessing { id: ID.into(), reason: None }
}

/// Feeds `input`; returns the write tokens and the answers (ref id, ok).
fn feed(s: &mut Shard, t: i64, input: Input) -> (Vec<u64>, Vec<(u32, bool)>) {
    let mut out = Vec::new();
    s.handle_at(t, input, &mut out);
    let mut writes = Vec::new();
    let mut answers = Vec::new();
    for o in out {
        match o {
            Output::Store { token, .. } => writes.push(token),
            Output::Reply { frame, .. } => answers.push((frame.ref_id, frame.msg_type != msg_type::EVENT_ERROR)),
            _ => {}
        }
    }
    (writes, answers)
}

/// The number of entries `ID` has in the implicit view of `inbound`.
fn entries_in_inbound(s: &Shard) -> usize {
    let t = s.catalog().tenant("default").unwrap();
    let tenant = s.catalog().tenant_at(t);
    let v = tenant.queues[tenant.queue("inbound").unwrap() as usize].views[0];
    s.view_ids(t, v).iter().filter(|id| &***id == ID).count()
}

/// Submit, stop, submit of one id, pipelined; then the writes complete in
/// the order `order` with the outcomes `ok` (submit, stop). Returns the
/// shard and every answer (ref id, success), sorted.
fn run(order: [usize; 2], ok: [bool; 2]) -> (Shard, Vec<(u32, bool)>) {
    let mut s = shard();
    let mut tokens = Vec::new();
    let mut answers = Vec::new();
    for (i, r) in [submit("en"), stop(), submit("fr")].into_iter().enumerate() {
        let (w, a) = feed(&mut s, T0 * 1000 + i as i64, Input::Request { caller: caller(i as u32 + 1), request: r });
        tokens.extend(w);
        answers.extend(a);
    }
    // The second submit is refused at once: the stop is not committed yet.
    assert_eq!(answers, vec![(3, false)]);
    assert_eq!(tokens.len(), 2);
    let mut cleanups = Vec::new();
    for (n, &i) in order.iter().enumerate() {
        let (w, a) = feed(&mut s, T0 * 1000 + 10 + n as i64, Input::StorageDone { token: tokens[i], ok: ok[i] });
        cleanups.extend(w);
        answers.extend(a);
    }
    for t in cleanups {
        feed(&mut s, T0 * 1000 + 100, Input::StorageDone { token: t, ok: true });
    }
    assert_eq!(s.pending_writes(), 0);
    answers.sort();
    (s, answers)
}

#[test]
fn a_submit_pipelined_behind_a_stop_of_its_id_is_refused_until_the_stop_commits() {
    let mut s = shard();
    let mut tokens = Vec::new();
    for (i, r) in [submit("en"), stop()].into_iter().enumerate() {
        let (w, a) = feed(&mut s, i as i64, Input::Request { caller: caller(i as u32 + 1), request: r });
        assert!(a.is_empty());
        tokens.extend(w);
    }
    let mut out = Vec::new();
    s.handle_at(5, Input::Request { caller: caller(3), request: submit("fr") }, &mut out);
    let [Output::Reply { frame, .. }] = out.as_slice() else { panic!("expected one answer, got {out:?}") };
    let e = error_of(frame).expect("an error");
    assert_eq!(e.code, ErrorCode::DuplicateInteractionId);
    assert!(e.text.contains("being stopped"), "{}", e.text);
    for t in tokens {
        feed(&mut s, 10, Input::StorageDone { token: t, ok: true });
    }
    // Once the stop is committed the id is free again.
    let (w, a) = feed(&mut s, 20, Input::Request { caller: caller(4), request: submit("fr") });
    assert!(a.is_empty());
    let (_, a) = feed(&mut s, 21, Input::StorageDone { token: w[0], ok: true });
    assert_eq!(a, vec![(4, true)]);
    assert_eq!(s.get(ID).unwrap().properties().get("lang").and_then(|v| v.as_str()), Some("fr"));
    assert_eq!(entries_in_inbound(&s), 1);
}

#[test]
fn submit_stop_submit_of_one_id_with_every_outcome() {
    // Storage completes one interaction's writes in order (one writer per
    // id); each write may commit or be refused.
    for bits in 0..4u8 {
        let ok = [bits & 1 != 0, bits & 2 != 0];
        let (s, answers) = run([0, 1], ok);
        let what = format!("ok {ok:?}");
        // A stop of a submit that failed fails with it.
        assert_eq!(answers, vec![(1, ok[0]), (2, ok[0] && ok[1]), (3, false)], "{what}");
        // Live only if its submit committed and its stop did not.
        match s.get(ID) {
            Some(ix) => {
                assert!(ok[0] && !ok[1], "{what}: live");
                assert_eq!(ix.properties().get("lang").and_then(|v| v.as_str()), Some("en"), "{what}");
                assert_eq!(entries_in_inbound(&s), 1, "{what}");
            }
            None => assert!(!ok[0] || ok[1], "{what}: gone"),
        }
    }
}

#[test]
fn a_failed_submit_forgets_only_its_own_interaction() {
    let mut s = shard();
    let (w1, _) = feed(&mut s, 0, Input::Request { caller: caller(1), request: submit("en") });
    let (cleanup, a) = feed(&mut s, 1, Input::StorageDone { token: w1[0], ok: false });
    assert_eq!(a, vec![(1, false)]);
    assert_eq!(cleanup.len(), 1, "a clean-up delete");
    // Until the clean-up commits, the id counts as being stopped.
    let (_, a) = feed(&mut s, 2, Input::Request { caller: caller(2), request: submit("fr") });
    assert_eq!(a, vec![(2, false)]);
    feed(&mut s, 3, Input::StorageDone { token: cleanup[0], ok: true });
    let (w2, _) = feed(&mut s, 4, Input::Request { caller: caller(3), request: submit("fr") });
    let (_, a) = feed(&mut s, 5, Input::StorageDone { token: w2[0], ok: true });
    assert_eq!(a, vec![(3, true)]);
    assert_eq!(entries_in_inbound(&s), 1);
}
