//! Finds and snapshots scan a shard in slices, with other requests handled
//! between two slices, and still answer with the shard as it was at the
//! scan's cut: interactions stopped, changed, moved, locked or submitted
//! after the cut do not change what it counts and lists.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use ixn_shard::catalog::Catalog;
use ixn_shard::kv;
use ixn_shard::machine::{Caller, Input, Origin, Output, Shard, ShardParams};
use ixn_shard::peer::PeerMsg;
use ixn_shard::proto::request::error_of;
use ixn_shard::proto::{attr, msg_type, ClientType, Frame, Request, Submit};

const SLICE: u32 = 3;

/// One shard; its messages to itself wait in `queue` until `pump` or `step`
/// delivers them, so a test can run requests between two slices.
struct One {
    s: Shard,
    now: i64,
    next_ref: u32,
    queue: VecDeque<PeerMsg>,
    answers: BTreeMap<u32, Frame>,
}

impl One {
    fn new() -> One {
        let params = ShardParams { scan_slice: SLICE, ..ShardParams::new(1, 0, 1) };
        One {
            s: Shard::new(params, Arc::new(Catalog::embedded_default())),
            now: 1_800_000_000_000,
            next_ref: 1,
            queue: VecDeque::new(),
            answers: BTreeMap::new(),
        }
    }

    /// Feeds one input; commits its writes at once; keeps messages to self.
    fn feed(&mut self, input: Input) {
        let mut inputs = VecDeque::from([input]);
        while let Some(i) = inputs.pop_front() {
            self.now += 1;
            let mut out = Vec::new();
            self.s.handle(self.now, i, &mut out);
            self.s.audit_index().expect("indexes in step");
            self.s.audit_names().expect("name counts in step");
            for o in out {
                match o {
                    Output::Store { token, .. } => inputs.push_back(Input::StorageDone { token, ok: true }),
                    Output::Peer { msg, .. } => self.queue.push_back(msg),
                    Output::Reply { frame, .. } => {
                        assert!(self.answers.insert(frame.ref_id, frame).is_none(), "answered twice");
                    }
                    _ => {}
                }
            }
        }
    }

    fn request(&mut self, client_type: ClientType, request: Request) -> u32 {
        let ref_id = self.next_ref;
        self.next_ref += 1;
        let caller = Caller {
            origin: Origin { shard: 0, conn: 5, session: 0 },
            ref_id,
            client_type,
            client_name: "op".into(),
            agent: None,
            tenants: ixn_shard::machine::TenantScope::all(),
        };
        self.feed(Input::Request { caller, request });
        ref_id
    }

    /// Delivers queued messages to self until one slice has run.
    fn step(&mut self) -> bool {
        while let Some(msg) = self.queue.pop_front() {
            let slice = matches!(msg, PeerMsg::ScanSlice { .. });
            self.feed(Input::Peer { from: 0, msg });
            if slice {
                return true;
            }
        }
        false
    }

    fn pump(&mut self) {
        while self.step() {}
    }

    fn answer(&self, r: u32) -> &Frame {
        let f = self.answers.get(&r).expect("answered");
        assert!(error_of(f).is_none(), "{:?}", error_of(f));
        f
    }

    fn submit(&mut self, lang: &str) -> String {
        let r = self.request(
            ClientType::MediaServer,
            Request::Submit(Box::new(Submit {
                tenant: "default".into(),
                media_type: "chat".into(),
                interaction_type: "Inbound".into(),
                interaction_subtype: "InboundNew".into(),
                queue: "done".into(),
                priority: 0,
                properties: kv![("lang", lang)],
                id: None,
                received_at_ms: None,
            })),
        );
        self.answer(r).get_str(attr::INTERACTION_ID).unwrap().to_string()
    }

    fn set_lang(&mut self, id: &str, lang: &str) {
        let r = self.request(
            ClientType::MediaServer,
            Request::ChangeProperties { id: id.into(), changed: kv![("lang", lang)], deleted: vec![] },
        );
        self.answer(r);
    }

    fn stop(&mut self, id: &str) {
        let r = self.request(ClientType::MediaServer, Request::StopProcessing { id: id.into(), reason: None });
        self.answer(r);
    }
}

fn ids_of(f: &Frame) -> BTreeSet<String> {
    f.lists(attr::INTERACTION).iter().map(|l| l.get("id").unwrap().as_str().unwrap().to_string()).collect()
}

/// 20 interactions, half of them `lang = 'en'`: even ones. Two odd ones
/// are stopped, so their slots are free at the cut, for interactions
/// submitted after it.
fn backlog(o: &mut One) -> Vec<String> {
    let ids: Vec<String> = (0..20).map(|i| o.submit(if i % 2 == 0 { "en" } else { "fr" })).collect();
    o.stop(&ids[15]);
    o.stop(&ids[17]);
    ids
}

/// Changes after the cut, on both sides of the scan's cursor.
fn churn(o: &mut One, ids: &[String], round: usize) {
    let n = ids.len();
    let a = &ids[(round * 7) % n];
    let b = &ids[(round * 7 + 3) % n];
    let c = &ids[(round * 7 + 5) % n];
    // Locked ones (by a snapshot) are left alone: a media server may not stop them.
    let free = |o: &One, id: &str| o.s.get(id).is_some() && o.s.lock_of(id).is_none();
    if free(o, a) {
        o.stop(a);
    }
    if free(o, b) {
        o.set_lang(b, "en");
    }
    if free(o, c) {
        o.set_lang(c, "de");
    }
    // Two, so that slots free at the cut are taken too.
    o.submit("en");
    o.submit("en");
}

#[test]
fn a_find_sees_the_shard_as_at_its_cut_while_it_changes_between_slices() {
    let mut o = One::new();
    let ids = backlog(&mut o);
    let at_cut: BTreeSet<String> = ids.iter().step_by(2).cloned().collect();
    let r = o.request(
        ClientType::Operator,
        Request::FindInteractions { tenant: None, condition: "lang = 'en'".into(), limit: 100 },
    );
    let mut round = 0;
    while o.step() {
        if o.answers.contains_key(&r) {
            break;
        }
        churn(&mut o, &ids, round);
        round += 1;
    }
    o.pump();
    assert!(round >= 5, "the scan took several slices ({round})");
    let f = o.answer(r);
    assert_eq!(f.msg_type, msg_type::EVENT_INTERACTIONS_FOUND);
    assert_eq!(f.get_int(attr::TOTAL), Some(at_cut.len() as i64), "counted as at the cut");
    // Listed: the matches at the cut still live when the scan ended
    // (described then); so at least those live now, and nothing else.
    let listed = ids_of(f);
    assert!(listed.is_subset(&at_cut), "{listed:?} not all matches at the cut");
    assert!(at_cut.iter().filter(|id| o.s.get(id).is_some()).all(|id| listed.contains(id)));
    assert!(listed.len() < at_cut.len(), "some were stopped after the cut");
}

#[test]
fn a_snapshot_holds_the_matches_at_its_cut_while_the_shard_changes_between_slices() {
    for lock in [false, true] {
        let mut o = One::new();
        let ids = backlog(&mut o);
        // One is locked before the cut: a locking snapshot skips it.
        let pulled = o.request(
            ClientType::Operator,
            Request::TakeSnapshot { tenant: None, condition: format!("id = '{}'", ids[0]), lock: true, limit: None },
        );
        o.pump();
        o.answer(pulled);
        let at_cut: BTreeSet<String> = ids.iter().step_by(2).filter(|id| !lock || **id != ids[0]).cloned().collect();
        let r = o.request(
            ClientType::Operator,
            Request::TakeSnapshot { tenant: None, condition: "lang = 'en'".into(), lock, limit: None },
        );
        let mut round = 0;
        while o.step() {
            if o.answers.contains_key(&r) {
                break;
            }
            churn(&mut o, &ids[1..], round);
            round += 1;
        }
        o.pump();
        let f = o.answer(r).clone();
        assert_eq!(f.msg_type, msg_type::EVENT_SNAPSHOT_TAKEN);
        assert_eq!(f.get_int(attr::TOTAL), Some(at_cut.len() as i64), "lock {lock}: counted as at the cut");
        let snapshot = f.get_int(attr::SNAPSHOT_ID).unwrap() as u64;
        let page = o.request(ClientType::Operator, Request::GetSnapshotInteractions { snapshot, start: 0, count: 100 });
        o.pump();
        let entries = o.answer(page).lists(attr::INTERACTION);
        let listed: BTreeSet<String> = entries.iter().map(|l| l.get("id").unwrap().as_str().unwrap().into()).collect();
        let gone: BTreeSet<String> = entries
            .iter()
            .filter(|l| l.get("gone").is_some())
            .map(|l| l.get("id").unwrap().as_str().unwrap().into())
            .collect();
        let live_at_cut: BTreeSet<String> = at_cut.iter().filter(|id| o.s.get(id).is_some()).cloned().collect();
        assert!(live_at_cut.len() < at_cut.len(), "some were stopped after the cut");
        if lock {
            // It holds what it could lock at its end: the cut's matches
            // still live then, which nothing could stop since.
            assert_eq!(listed, live_at_cut, "the snapshot holds the cut's matches it locked");
            assert!(gone.is_empty());
            assert!(listed.iter().all(|id| o.s.lock_of(id).is_some()), "each is locked by the snapshot");
        } else {
            assert_eq!(listed, at_cut, "the snapshot holds the cut's matches");
            assert_eq!(gone, &at_cut - &live_at_cut, "those stopped since are shown gone");
        }
    }
}

#[test]
fn scans_are_refused_to_client_types_not_allowed_and_past_the_bound() {
    use ixn_shard::machine::ClientTypes;
    use ixn_shard::proto::ErrorCode;
    let params = ShardParams {
        scan_slice: SLICE,
        find_clients: ClientTypes::of(&[ClientType::Operator]),
        snapshot_clients: ClientTypes::of(&[ClientType::RoutingEngine]),
        ..ShardParams::new(1, 0, 1)
    };
    let mut o = One::new();
    o.s = Shard::new(params, Arc::new(Catalog::embedded_default()));
    backlog(&mut o);
    let find = || Request::FindInteractions { tenant: None, condition: "lang = 'en'".into(), limit: 10 };
    let snap = || Request::TakeSnapshot { tenant: None, condition: "lang = 'en'".into(), lock: false, limit: None };
    let code = |o: &One, r: u32| error_of(&o.answers[&r]).map(|e| e.code);
    let r = o.request(ClientType::AgentDesktop, find());
    assert_eq!(code(&o, r), Some(ErrorCode::NotPermitted));
    let r = o.request(ClientType::Operator, snap());
    assert_eq!(code(&o, r), Some(ErrorCode::NotPermitted));
    // Eight scans at once through one shard; the ninth is refused, and
    // taken again once one has ended.
    let running: Vec<u32> = (0..8).map(|_| o.request(ClientType::Operator, find())).collect();
    let r = o.request(ClientType::Operator, find());
    assert_eq!(code(&o, r), Some(ErrorCode::Overloaded));
    o.pump();
    for r in running {
        o.answer(r);
    }
    let r = o.request(ClientType::RoutingEngine, snap());
    o.pump();
    o.answer(r);
    assert_eq!(o.s.scans_in_progress(), 0);
}

#[test]
fn requests_held_during_a_cut_are_bounded() {
    use ixn_shard::proto::ErrorCode;
    // Shard 1 of two, cut by a snapshot whose coordinator (shard 0) has not
    // thawed it yet.
    let params = ShardParams { max_held_requests: 3, ..ShardParams::new(1, 1, 2) };
    let mut s = Shard::new(params, Arc::new(Catalog::embedded_default()));
    let condition = Arc::new(ixn_shard::condition::Condition::parse("priority >= 0").unwrap());
    let scan = PeerMsg::Scan {
        op: 1,
        filter: ixn_shard::peer::Filter::Condition { tenant: None, condition },
        limit: 10,
        mode: ixn_shard::peer::ScanMode::Snapshot { snapshot: 9, lock: None },
    };
    let mut out = Vec::new();
    s.handle(1, Input::Peer { from: 0, msg: scan }, &mut out);
    assert!(out.iter().any(|o| matches!(o, Output::Peer { msg: PeerMsg::CutTaken { .. }, .. })));
    let mut refused = Vec::new();
    for ref_id in 1..=5u32 {
        let caller = Caller {
            origin: Origin { shard: 1, conn: 3, session: 0 },
            ref_id,
            client_type: ClientType::Operator,
            client_name: "op".into(),
            agent: None,
            tenants: ixn_shard::machine::TenantScope::all(),
        };
        let mut out = Vec::new();
        s.handle(2, Input::Request { caller, request: Request::GetQueueDepth { tenant: "default".into() } }, &mut out);
        for o in out {
            if let Output::Reply { frame, .. } = o {
                assert_eq!(error_of(&frame).map(|e| e.code), Some(ErrorCode::Overloaded));
                refused.push(frame.ref_id);
            }
        }
    }
    assert_eq!(refused, vec![4, 5], "three held, the rest refused at once");
    let mut out = Vec::new();
    s.handle(3, Input::Peer { from: 0, msg: PeerMsg::Thaw { op: 1 } }, &mut out);
    let answered = out.iter().filter(|o| matches!(o, Output::Peer { msg: PeerMsg::QueueDepth { .. }, .. })).count();
    assert_eq!(answered, 3 * 2, "the three held ones go on (each asks both shards)");
}
