//! Names from client text (interaction types and subtypes, client names,
//! workbin owners) are interned per shard: counted by the interactions that
//! use them, freed once none does (after the writes in flight that may
//! still name them), and bounded.

use std::sync::Arc;

use ixn_shard::catalog::Catalog;
use ixn_shard::kv;
use ixn_shard::machine::{Caller, Input, Origin, Output, Shard, ShardParams};
use ixn_shard::proto::request::error_of;
use ixn_shard::proto::{attr, ClientType, ErrorCode, Frame, Request, Submit};

struct T {
    s: Shard,
    now: i64,
    /// Writes in flight, oldest first.
    writes: Vec<u64>,
}

impl T {
    fn new(max_names: usize) -> T {
        let params = ShardParams { max_names, ..ShardParams::new(1, 0, 1) };
        T { s: Shard::new(params, Arc::new(Catalog::embedded_default())), now: 1_800_000_000_000, writes: Vec::new() }
    }

    fn feed(&mut self, input: Input) -> Option<Frame> {
        self.now += 1;
        let mut out = Vec::new();
        self.s.handle(self.now, input, &mut out);
        self.s.audit_names().expect("name counts in step");
        let mut answer = None;
        for o in out {
            match o {
                Output::Store { token, .. } => self.writes.push(token),
                Output::Reply { frame, .. } => answer = Some(frame),
                _ => {}
            }
        }
        answer
    }

    fn ask(&mut self, request: Request) -> Option<Frame> {
        let caller = Caller {
            origin: Origin { shard: 0, conn: 1, session: 0 },
            ref_id: 1,
            client_type: ClientType::MediaServer,
            client_name: "media".into(),
            agent: None,
            tenants: ixn_shard::machine::TenantScope::all(),
        };
        self.feed(Input::Request { caller, request })
    }

    fn commit_all(&mut self) -> Vec<Frame> {
        let mut answers = Vec::new();
        while !self.writes.is_empty() {
            let t = self.writes.remove(0);
            answers.extend(self.feed(Input::StorageDone { token: t, ok: true }));
        }
        answers
    }

    fn submit(&mut self, subtype: &str) -> Result<String, ErrorCode> {
        let r = Request::Submit(Box::new(Submit {
            tenant: "default".into(),
            media_type: "chat".into(),
            interaction_type: "Inbound".into(),
            interaction_subtype: subtype.into(),
            queue: "inbound".into(),
            priority: 0,
            properties: kv![("a", 1)],
            id: None,
            received_at_ms: None,
        }));
        if let Some(refused) = self.ask(r) {
            return Err(error_of(&refused).expect("an error").code);
        }
        let ack = self.commit_all().pop().expect("an answer");
        Ok(ack.get_str(attr::INTERACTION_ID).expect("an id").to_string())
    }

    fn stop(&mut self, id: &str) {
        assert!(self.ask(Request::StopProcessing { id: id.into(), reason: None }).is_none());
    }
}

#[test]
fn names_no_interaction_uses_are_freed_once_the_writes_naming_them_complete() {
    let mut t = T::new(1000);
    let base = t.submit("InboundNew").unwrap();
    let (held, _) = t.s.names_held();
    let ids: Vec<String> = (0..30).map(|i| t.submit(&format!("sub-{i}")).unwrap()).collect();
    assert_eq!(t.s.names_held().0, held + 30);
    for id in &ids {
        t.stop(id);
    }
    // The stops are in flight: each may still restore its interaction.
    assert_eq!(t.s.names_held(), (held + 30, 30));
    t.commit_all();
    assert_eq!(t.s.names_held(), (held, 0), "freed once the stops committed");
    assert!(t.s.get(&base).is_some());
}

#[test]
fn a_failed_stop_brings_its_names_back() {
    let mut t = T::new(1000);
    let id = t.submit("rare").unwrap();
    t.stop(&id);
    let token = t.writes.remove(0);
    let answer = t.feed(Input::StorageDone { token, ok: false }).expect("an answer");
    assert_eq!(error_of(&answer).unwrap().code, ErrorCode::StorageFailure);
    let ix = t.s.get(&id).expect("restored");
    assert_eq!(t.s.record(&ix.id).unwrap().interaction_subtype, "rare");
    assert_eq!(t.s.names_held().1, 0, "nothing left to free");
}

#[test]
fn names_are_bounded_and_room_comes_back() {
    // Three names are taken by the first submit: type, subtype, client.
    let mut t = T::new(5);
    let a = t.submit("s0").unwrap();
    t.submit("s1").unwrap();
    t.submit("s2").unwrap();
    assert_eq!(t.submit("s3"), Err(ErrorCode::InvalidValue), "a sixth name is refused");
    assert!(t.submit("s1").is_ok(), "a name in use is taken");
    t.stop(&a);
    t.commit_all();
    assert!(t.submit("s3").is_ok(), "room again once s0 is freed");
    let owner = Request::PlaceInWorkbin { id: t.submit("s1").unwrap(), workbin: "personal".into(), owner: "x".into() };
    let refused = t.ask(owner).expect("refused at once");
    assert_eq!(error_of(&refused).unwrap().code, ErrorCode::InvalidValue);
}

#[test]
fn a_name_used_again_and_retired_again_waits_for_its_latest_retirement() {
    let mut t = T::new(1000);
    let id = t.submit("InboundNew").unwrap();
    let to_workbin = || Request::PlaceInWorkbin { id: id.clone(), workbin: "personal".into(), owner: "o1".into() };
    assert!(t.ask(to_workbin()).is_none());
    t.commit_all();
    // Pipelined: out of the workbin (o1 has no user: it retires behind this
    // write), back in (o1 used again), stopped (o1 retires again, behind
    // the stop, whose copy names it).
    assert!(t.ask(Request::PlaceInQueue { id: id.clone(), queue: Some("inbound".into()) }).is_none());
    assert!(t.ask(to_workbin()).is_none());
    t.stop(&id);
    let first = t.writes.remove(0);
    t.feed(Input::StorageDone { token: first, ok: true });
    assert!(t.s.names_held().0 >= 4, "o1 still held: the stop's copy names it");
    let second = t.writes.remove(0);
    t.feed(Input::StorageDone { token: second, ok: true });
    let stop = t.writes.remove(0);
    let answer = t.feed(Input::StorageDone { token: stop, ok: false }).expect("an answer");
    assert_eq!(error_of(&answer).unwrap().code, ErrorCode::StorageFailure);
    assert_eq!(t.s.record(&id).unwrap().workbin_owner.as_deref(), Some("o1"), "restored in o1's workbin");
}
