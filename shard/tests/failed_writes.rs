//! A write the database refuses (storage completes it with ok = false: it
//! was definitely not applied) is answered with error 50 and undone in
//! memory, so memory, answers and the database agree. Writes of the same
//! interaction made on top of it fail with it, and one more write puts the
//! row back as it was. A stop made after it stands, and says it stopped the
//! interaction from where it was before the failed change.

use std::sync::Arc;

use ixn_shard::catalog::Catalog;
use ixn_shard::event::{Location, Subject, What};
use ixn_shard::kv;
use ixn_shard::machine::{Caller, Input, Origin, Output, Shard, ShardParams, StoreOp};
use ixn_shard::proto::request::error_of;
use ixn_shard::proto::{attr, ClientType, ErrorCode, Request, Submit};

const ORIGIN: Origin = Origin { shard: 0, conn: 7, session: 0 };

struct T {
    s: Shard,
    now: i64,
    next_ref: u32,
}

/// What one input produced: writes (token, op) and answers (ref, error code
/// or None for success).
#[derive(Default, Debug)]
struct Got {
    writes: Vec<(u64, StoreOp)>,
    answers: Vec<(u32, Option<ErrorCode>)>,
}

impl T {
    fn new() -> T {
        T { s: Shard::new(ShardParams::new(1, 0, 1), Arc::new(Catalog::embedded_default())), now: 1_000, next_ref: 1 }
    }

    fn feed(&mut self, input: Input) -> Got {
        self.now += 1;
        let mut out = Vec::new();
        self.s.handle(self.now, input, &mut out);
        self.s.audit_index().expect("indexes in step");
        self.s.audit_names().expect("name counts in step");
        let mut got = Got::default();
        for o in out {
            match o {
                Output::Store { token, op, .. } => got.writes.push((token, op)),
                Output::Reply { frame, .. } => got.answers.push((frame.ref_id, error_of(&frame).map(|e| e.code))),
                _ => {}
            }
        }
        got
    }

    /// Sends a request; returns its reference id and the token of its write.
    fn send(&mut self, request: Request) -> (u32, u64) {
        let ref_id = self.next_ref;
        self.next_ref += 1;
        let caller = Caller {
            origin: ORIGIN,
            ref_id,
            client_type: ClientType::MediaServer,
            client_name: "m".into(),
            agent: None,
            tenants: ixn_shard::machine::TenantScope::all(),
        };
        let got = self.feed(Input::Request { caller, request });
        assert!(got.answers.is_empty(), "answered before its write: {got:?}");
        assert_eq!(got.writes.len(), 1, "{got:?}");
        (ref_id, got.writes[0].0)
    }

    fn done(&mut self, token: u64, ok: bool) -> Got {
        self.feed(Input::StorageDone { token, ok })
    }

    fn submitted(&mut self) -> String {
        let (r, t) = self.send(Request::Submit(Box::new(Submit {
            tenant: "default".into(),
            media_type: "chat".into(),
            interaction_type: "Inbound".into(),
            interaction_subtype: "InboundNew".into(),
            queue: "inbound".into(),
            priority: 3,
            properties: kv![("lang", "en")],
            id: None,
            received_at_ms: None,
        })));
        let got = self.done(t, true);
        assert_eq!(got.answers, vec![(r, None)]);
        self.s.get(&{ self.s.interactions().next().unwrap().id.to_string() }).unwrap().id.to_string()
    }

    fn lang(&self, id: &str) -> Option<String> {
        self.s.get(id)?.properties().get("lang").and_then(|v| v.as_str()).map(str::to_string)
    }

    fn queue(&self, id: &str) -> Option<String> {
        let r = self.s.record(id)?;
        Some(r.queue)
    }
}

fn change(id: &str, lang: &str) -> Request {
    Request::ChangeProperties { id: id.into(), changed: kv![("lang", lang)], deleted: vec![] }
}

#[test]
fn a_failed_property_change_is_undone() {
    let mut t = T::new();
    let id = t.submitted();
    let version = t.s.get(&id).unwrap().version;
    let (r, w) = t.send(change(&id, "fr"));
    assert_eq!(t.lang(&id).as_deref(), Some("fr"), "applied in memory while in flight");
    let got = t.done(w, false);
    assert_eq!(got.answers, vec![(r, Some(ErrorCode::StorageFailure))]);
    assert!(got.writes.is_empty(), "nothing later to put back: {got:?}");
    assert_eq!(t.lang(&id).as_deref(), Some("en"), "a change answered 'not applied' is not applied");
    assert_eq!(t.s.get(&id).unwrap().version, version);
}

#[test]
fn a_failed_place_in_queue_or_workbin_is_undone() {
    let mut t = T::new();
    let id = t.submitted();
    let (r, w) = t.send(Request::PlaceInQueue { id: id.clone(), queue: Some("done".into()) });
    assert_eq!(t.queue(&id).as_deref(), Some("done"));
    assert_eq!(t.done(w, false).answers, vec![(r, Some(ErrorCode::StorageFailure))]);
    assert_eq!(t.queue(&id).as_deref(), Some("inbound"));
    let (r, w) = t.send(Request::PlaceInWorkbin { id: id.clone(), workbin: "personal".into(), owner: "agent1".into() });
    assert_eq!(t.done(w, false).answers, vec![(r, Some(ErrorCode::StorageFailure))]);
    assert_eq!(t.queue(&id).as_deref(), Some("inbound"));
    let r = t.s.record(&id).unwrap();
    assert_eq!(r.workbin_owner, None);
}

#[test]
fn writes_made_on_top_of_a_failed_change_fail_with_it_and_the_row_is_put_back() {
    let mut t = T::new();
    let id = t.submitted();
    let (r1, w1) = t.send(change(&id, "fr"));
    let (r2, w2) = t.send(change(&id, "de"));
    let got = t.done(w1, false);
    assert_eq!(got.answers, vec![(r1, Some(ErrorCode::StorageFailure))]);
    assert_eq!(t.lang(&id).as_deref(), Some("en"));
    // The second write's row carries the first change: one more write puts
    // the row back as memory has it.
    let [(w3, StoreOp::Upsert(rec))] = got.writes.as_slice() else { panic!("a write putting the row back: {got:?}") };
    assert_eq!(rec.properties, kv![("lang", "en")]);
    // The second change fails even though its write commits.
    let got = t.done(w2, true);
    assert_eq!(got.answers, vec![(r2, Some(ErrorCode::StorageFailure))]);
    assert_eq!(t.lang(&id).as_deref(), Some("en"));
    assert!(t.done(*w3, true).answers.is_empty());
    assert_eq!(t.s.pending_writes(), 0);
}

#[test]
fn a_stop_made_after_a_failed_change_stands() {
    let mut t = T::new();
    let id = t.submitted();
    let (r1, w1) = t.send(change(&id, "fr"));
    let (r2, w2) = t.send(Request::StopProcessing { id: id.clone(), reason: None });
    assert!(t.s.get(&id).is_none());
    let got = t.done(w1, false);
    assert_eq!(got.answers, vec![(r1, Some(ErrorCode::StorageFailure))]);
    assert!(got.writes.is_empty(), "the stop carries nothing of the change: {got:?}");
    assert!(t.s.get(&id).is_none(), "still being stopped");
    assert_eq!(t.done(w2, true).answers, vec![(r2, None)], "the stop stands");
    assert!(t.s.get(&id).is_none());
    assert_eq!(t.s.pending_writes(), 0);
}

#[test]
fn a_stop_made_after_a_failed_move_stands_and_says_it_stopped_from_where_it_was() {
    // With the event log on: the stop's event goes to the log once the
    // stop has committed, and says the queue the database had it in, not
    // the one the refused move named.
    let mut t = T::new();
    let mut params = ShardParams::new(1, 0, 1);
    params.event_log = true;
    t.s = Shard::new(params, Arc::new(Catalog::embedded_default()));
    let id = t.submitted();
    let (r1, w1) = t.send(Request::PlaceInQueue { id: id.clone(), queue: Some("done".into()) });
    let (r2, w2) = t.send(Request::StopProcessing { id: id.clone(), reason: None });
    assert_eq!(t.done(w1, false).answers, vec![(r1, Some(ErrorCode::StorageFailure))]);
    let mut out = Vec::new();
    t.now += 1;
    t.s.handle(t.now, Input::StorageDone { token: w2, ok: true }, &mut out);
    let answers: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Reply { frame, .. } => Some((frame.ref_id, error_of(frame).map(|e| e.code))),
            _ => None,
        })
        .collect();
    assert_eq!(answers, vec![(r2, None)], "the stop stands");
    assert!(t.s.get(&id).is_none());
    let logged: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Store { token, op: StoreOp::Log(_), log } => Some((*token, log.clone())),
            _ => None,
        })
        .collect();
    let [(w3, log)] = logged.as_slice() else { panic!("the stop's events logged by a write of their own: {out:?}") };
    let [stopped] = log.as_slice() else { panic!("one event: {log:?}") };
    assert!(matches!(stopped.event.what, What::ProcessingStopped { .. }), "{stopped:?}");
    let inbound = t.s.catalog().tenants[0].queue("inbound").unwrap();
    assert!(
        matches!(&stopped.event.subject, Subject::Interaction { at: Location::Queue(q), .. } if *q == inbound),
        "stopped from inbound, where the database had it: {stopped:?}"
    );
    let w3 = *w3;
    t.done(w3, true);
    assert_eq!(t.s.pending_writes(), 0);
}

#[test]
fn a_stop_failing_after_a_failed_change_brings_back_the_interaction_before_it() {
    for doomed_between in [false, true] {
        let mut t = T::new();
        let id = t.submitted();
        let (r1, w1) = t.send(change(&id, "fr"));
        let between = doomed_between.then(|| t.send(change(&id, "de")));
        let (r3, w3) = t.send(Request::StopProcessing { id: id.clone(), reason: None });
        assert_eq!(t.done(w1, false).answers, vec![(r1, Some(ErrorCode::StorageFailure))]);
        if let Some((r2, w2)) = between {
            // Its write commits (with the refused change in its row), yet it
            // is answered as failed.
            assert_eq!(t.done(w2, true).answers, vec![(r2, Some(ErrorCode::StorageFailure))]);
        }
        let got = t.done(w3, false);
        assert_eq!(got.answers, vec![(r3, Some(ErrorCode::StorageFailure))]);
        assert_eq!(t.lang(&id).as_deref(), Some("en"), "live again, as before the refused change");
        // Only a doomed write in between may have stored the refused change:
        // then the row is written again as memory has it.
        match got.writes.as_slice() {
            [] => assert!(!doomed_between),
            [(w4, StoreOp::Upsert(rec))] => {
                assert!(doomed_between);
                assert_eq!(rec.properties, kv![("lang", "en")]);
                let w4 = *w4;
                t.done(w4, true);
            }
            other => panic!("unexpected writes {other:?}"),
        }
        assert_eq!(t.s.pending_writes(), 0);
    }
}

#[test]
fn writes_after_a_failed_submit_fail_with_it() {
    let mut t = T::new();
    let (r1, w1) = t.send(Request::Submit(Box::new(Submit {
        tenant: "default".into(),
        media_type: "chat".into(),
        interaction_type: "Inbound".into(),
        interaction_subtype: "InboundNew".into(),
        queue: "inbound".into(),
        priority: 0,
        properties: kv![("lang", "en")],
        id: Some("media-42".into()),
        received_at_ms: None,
    })));
    let (r2, w2) = t.send(change("media-42", "fr"));
    let got = t.done(w1, false);
    assert_eq!(got.answers, vec![(r1, Some(ErrorCode::StorageFailure))]);
    let [(w3, StoreOp::Delete(_))] = got.writes.as_slice() else { panic!("a clean-up delete: {got:?}") };
    // The change's write commits (its row would exist until the clean-up),
    // yet it is answered as failed: the interaction never existed.
    assert_eq!(t.done(w2, true).answers, vec![(r2, Some(ErrorCode::StorageFailure))]);
    t.done(*w3, true);
    assert!(t.s.get("media-42").is_none());
    let _ = attr::INTERACTION_ID;
}
