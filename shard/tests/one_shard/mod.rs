//! A one-shard driver for tests: its own peer messages fed back to it,
//! every write committed in order once the shard is idle, the index audited
//! after every input.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use ixn_shard::agent::AgentRef;
use ixn_shard::catalog::Catalog;
use ixn_shard::kv;
use ixn_shard::machine::{AgentParams, Caller, Input, Origin, Output, Shard, ShardParams};
use ixn_shard::proto::{attr, msg_type, ClientType, Frame, Request, Submit};

pub const MEDIA: Origin = Origin { shard: 0, conn: 1, session: 0 };
pub const ROUTER: Origin = Origin { shard: 0, conn: 2, session: 0 };
pub const DESK: Origin = Origin { shard: 0, conn: 3, session: 0 };
pub const HANDLING_MS: i64 = 60_000;

pub struct Driver {
    pub shard: Shard,
    pub now_ms: i64,
    next_ref: u32,
    agent: HashMap<Origin, AgentRef>,
    /// Everything each connection received: answers and events.
    pub got: HashMap<Origin, Vec<Frame>>,
}

impl Driver {
    pub fn new(catalog: Catalog) -> Self {
        let params = ShardParams {
            agents: AgentParams { handling_timeout_ms: HANDLING_MS, ..AgentParams::default() },
            ..ShardParams::new(1, 0, 1)
        };
        Driver {
            shard: Shard::new(params, Arc::new(catalog)),
            now_ms: 1_800_000_000_000,
            next_ref: 1,
            agent: HashMap::new(),
            got: HashMap::new(),
        }
    }

    pub fn feed(&mut self, input: Input) {
        let mut queue = vec![input];
        let mut writes = Vec::new();
        while !queue.is_empty() || !writes.is_empty() {
            let input = if queue.is_empty() {
                Input::StorageDone { token: writes.remove(0), ok: true }
            } else {
                queue.remove(0)
            };
            self.now_ms += 1;
            let mut out = Vec::new();
            self.shard.handle(self.now_ms, input, &mut out);
            if let Err(e) = self.shard.audit_index().and_then(|()| self.shard.audit_names()) {
                panic!("index out of step with the interactions: {e}");
            }
            for o in out {
                match o {
                    Output::Peer { msg, .. } => queue.push(Input::Peer { from: 0, msg }),
                    Output::Store { token, .. } => writes.push(token),
                    Output::Reply { origin, frame } | Output::Event { origin, frame } => {
                        self.got.entry(origin).or_default().push(frame)
                    }
                    Output::Report { origin, event, .. } => {
                        let frame = event.event.frame(self.shard.catalog());
                        self.got.entry(origin).or_default().push(frame)
                    }
                    Output::Cursor { .. }
                    | Output::Unsubscribed { .. }
                    | Output::Replay { .. }
                    | Output::ReadLog { .. }
                    | Output::SendLog { .. } => {}
                    Output::Bind { origin, agent } => {
                        match agent {
                            Some(a) => self.agent.insert(origin, a),
                            None => self.agent.remove(&origin),
                        };
                    }
                }
            }
        }
    }

    /// Sends `request` from `origin` and returns its answer.
    pub fn ask(&mut self, origin: Origin, client_type: ClientType, request: Request) -> Frame {
        self.ask_as(origin, client_type, ixn_shard::machine::TenantScope::all(), request)
    }

    /// [`Driver::ask`] from a client that may act on `tenants` only.
    pub fn ask_as(
        &mut self,
        origin: Origin,
        client_type: ClientType,
        tenants: ixn_shard::machine::TenantScope,
        request: Request,
    ) -> Frame {
        let ref_id = self.next_ref;
        self.next_ref += 1;
        let caller = Caller {
            origin,
            ref_id,
            client_type,
            client_name: "test".into(),
            agent: self.agent.get(&origin).copied(),
            tenants,
        };
        self.feed(Input::Request { caller, request });
        let got = self.got.get(&origin).map(Vec::as_slice).unwrap_or_default();
        let answer = got.iter().rev().find(|f| f.ref_id == ref_id).unwrap_or_else(|| panic!("no answer to {ref_id}"));
        answer.clone()
    }

    pub fn ok(&mut self, origin: Origin, client_type: ClientType, request: Request) -> Frame {
        let what = request.name();
        let f = self.ask(origin, client_type, request);
        assert_ne!(f.msg_type, msg_type::EVENT_ERROR, "{what} refused: {:?}", f.get_str(attr::ERROR_TEXT));
        f
    }

    pub fn submit(&mut self, priority: i64) -> String {
        let r = Request::Submit(Box::new(Submit {
            tenant: "default".into(),
            media_type: "chat".into(),
            interaction_type: "Inbound".into(),
            interaction_subtype: "InboundNew".into(),
            queue: "inbound".into(),
            priority,
            properties: kv![("lang", "en")],
            id: None,
            received_at_ms: None,
        }));
        self.ok(MEDIA, ClientType::MediaServer, r).get_str(attr::INTERACTION_ID).unwrap().to_string()
    }

    pub fn pull(&mut self, view: &str) -> Vec<String> {
        let r = Request::Pull { tenant: "default".into(), view: view.into(), count: 10 };
        let f = self.ok(ROUTER, ClientType::RoutingEngine, r);
        f.lists(attr::INTERACTION).iter().filter_map(|l| l.get("id")?.as_str().map(str::to_string)).collect()
    }

    pub fn login_ready(&mut self) {
        let login = Request::AgentLogin {
            tenant: "default".into(),
            agent: "a1".into(),
            place: "p1".into(),
            media: vec![("chat".into(), 0)],
            reason: None,
        };
        self.ok(DESK, ClientType::AgentDesktop, login);
        let ready = Request::SetReady { tenant: "default".into(), agent: None, media: None, ready: true, reason: None };
        self.ok(DESK, ClientType::AgentDesktop, ready);
    }

    /// The routing engine delivers `id` to a1, whose desktop accepts it.
    pub fn deliver_and_accept(&mut self, id: &str) {
        self.ok(ROUTER, ClientType::RoutingEngine, Request::Deliver { id: id.into(), agent: "a1".into() });
        let invite = self.got[&DESK]
            .iter()
            .rev()
            .find(|f| f.msg_type == msg_type::EVENT_INVITE && f.get_str(attr::INTERACTION_ID) == Some(id))
            .expect("an invitation")
            .clone();
        let ticket = invite.get_int(attr::TICKET).map(|t| t as u64);
        self.ok(DESK, ClientType::AgentDesktop, Request::Accept { id: id.into(), ticket });
    }

    pub fn release_router_locks(&mut self) {
        self.feed(Input::ConnClosed { origin: ROUTER, agent: None });
    }
}
