//! Simulation: configuration reloads under traffic. Random histories on 1
//! to 4 shards where, between submissions, moves, stops, pulls, agent
//! logins, offers and accepts, a reload lays a random configuration over
//! the running one (queues, views with conditions and orders, strategies,
//! agents and places, each added, changed or removed), published as the
//! server does: every shard takes it before its next input, a reload that
//! adds views first publishes them hidden and waits until every shard has
//! built their indexes (slice by slice, interleaved with everything else),
//! then the full catalog.
//!
//! Checked: after every input each shard's audit (view indexes against
//! recomputed keys, counts, locks, links, timers); a submit or move is
//! refused with 33 exactly when its queue is not in the catalog in force,
//! a pull with 39 exactly when its view is not; an agent logs in only when
//! it and its place are configured; once a reload is done no desktop is
//! still logged in as a removed agent or on a removed place.
//!
//! Fixed seeds, then fresh random seeds for a time box (sim/mod.rs says how
//! to replay a failing seed).

mod sim;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use ixn_shard::agent::AgentRef;
use ixn_shard::catalog::{Catalog, Tenant};
use ixn_shard::interaction::Place;
use ixn_shard::kv;
use ixn_shard::machine::{target_shard, AgentParams, Caller, Input, Origin, Output, ShardParams};
use ixn_shard::proto::{attr, msg_type, ClientType, ErrorCode, Frame, Request, Submit};
use sim::{cover, run_seeds, Node, Rng};

const T0: i64 = 1_800_000_000_000;
const STEPS: usize = 400;
const QUEUES: [&str; 4] = ["q0", "q1", "q2", "q3"];
const VIEWS: [&str; 4] = ["v0", "v1", "v2", "v3"];
/// Conditions and orders a view may have.
const VIEW_KINDS: [(Option<&str>, &str); 4] = [
    (None, "priority"),
    (Some("priority >= 3"), "priority DESC"),
    (Some("lang = 'en'"), "lang, priority DESC"),
    (None, "lang DESC"),
];
const AGENTS: [&str; 4] = ["a0", "a1", "a2", "a3"];
const PLACES: [&str; 4] = ["p0", "p1", "p2", "p3"];

/// One random configuration of tenant `default`.
#[derive(Clone, Debug)]
struct Config {
    /// Queue numbers, in the order written (q0 always, so a tenant has one).
    queues: Vec<usize>,
    /// (view, queue, kind).
    views: Vec<(usize, usize, usize)>,
    /// Queues with the built-in strategy.
    strategies: Vec<usize>,
    /// (agent, chat capacity).
    agents: Vec<(usize, i64)>,
    places: Vec<usize>,
}

impl Config {
    fn random(rng: &mut Rng) -> Config {
        let mut queues: Vec<usize> = (1..QUEUES.len()).filter(|_| rng.chance(60)).collect();
        queues.insert(rng.below(queues.len() as u64 + 1) as usize, 0);
        let mut views = Vec::new();
        for v in 0..VIEWS.len() {
            if rng.chance(60) {
                views.push((v, *rng.pick(&queues).unwrap(), rng.below(VIEW_KINDS.len() as u64) as usize));
            }
        }
        let strategies = queues.iter().copied().filter(|_| rng.chance(40)).collect();
        let mut agents = Vec::new();
        for a in 0..AGENTS.len() {
            if rng.chance(70) {
                agents.push((a, 1 + rng.below(2) as i64));
            }
        }
        let places = (0..PLACES.len()).filter(|_| rng.chance(75)).collect();
        Config { queues, views, strategies, agents, places }
    }

    fn catalog(&self) -> Catalog {
        let mut t = Tenant::new("default");
        t.add_media("chat", true).unwrap();
        let names: Vec<&str> = self.queues.iter().map(|&q| QUEUES[q]).collect();
        t.add_process("bp", &names).unwrap();
        for w in names.windows(2) {
            t.link_next(w[0], w[1]).unwrap();
        }
        for &(v, q, kind) in &self.views {
            let (condition, order) = VIEW_KINDS[kind];
            t.add_view(QUEUES[q], VIEWS[v], condition, Some(order)).unwrap();
        }
        for &q in &self.strategies {
            t.set_strategy(QUEUES[q], None, None).unwrap();
        }
        for &(a, cap) in &self.agents {
            t.add_agent(AGENTS[a], &[], &[("chat", cap)], &["team"]).unwrap();
        }
        for &p in &self.places {
            t.add_place(PLACES[p]).unwrap();
        }
        Catalog::new(vec![t], true).unwrap()
    }
}

/// What an answer must be.
#[derive(Debug)]
enum Expect {
    /// Refused with one of these codes (33 or 39; a move of an interaction
    /// stopped meanwhile is 34 first).
    Refused(Vec<ErrorCode>),
    /// Accepted or refused for a reason the model does not follow (a lock,
    /// a stopped interaction): only not with these codes.
    NotRefusedAs(Vec<ErrorCode>),
    /// A login: accepted only if the agent and place are configured.
    Login { agent: usize, allowed: bool },
}

struct Run {
    node: Node,
    rng: Rng,
    next_ref: u32,
    expect: BTreeMap<u32, (Origin, Expect)>,
    ids: Vec<String>,
    /// The connection each agent's desktop is and the agent it carries.
    bound: HashMap<Origin, AgentRef>,
    /// A reload's full catalog, waiting for the hidden views to be built.
    staged: Option<Arc<Catalog>>,
    reloads: u32,
}

fn error_code(f: &Frame) -> Option<i64> {
    (f.msg_type == msg_type::EVENT_ERROR).then(|| f.get_int(attr::ERROR_CODE)).flatten()
}

fn desk(agent: usize, n: u16) -> Origin {
    Origin { shard: agent as u16 % n, conn: 10 + agent as u64, session: 0 }
}

impl Run {
    fn new(seed: u64) -> Run {
        let mut rng = Rng(seed);
        let n = 1 + rng.below(4) as u16;
        let catalog = Config::random(&mut rng).catalog();
        let params = move |s: u16, n: u16| ShardParams {
            agents: AgentParams { handling_timeout_ms: 60_000, ..AgentParams::default() },
            // Small slices, so view builds take many steps among the others.
            scan_slice: 16 * (1 + s as u32 % 2),
            ..ShardParams::new(1, s, n)
        };
        let node = Node::new(n, Arc::new(catalog), params, T0, Rng(seed ^ 0x7e10), format!("reloads, seed {seed}"));
        Run {
            node,
            rng,
            next_ref: 1,
            expect: BTreeMap::new(),
            ids: Vec::new(),
            bound: HashMap::new(),
            staged: None,
            reloads: 0,
        }
    }

    fn n(&self) -> u16 {
        self.node.n()
    }

    fn send(&mut self, origin: Origin, client_type: ClientType, request: Request, expect: Expect) {
        let ref_id = self.next_ref;
        self.next_ref += 1;
        let caller = Caller {
            origin,
            ref_id,
            client_type,
            client_name: "sim".into(),
            agent: self.bound.get(&origin).copied(),
            tenants: ixn_shard::machine::TenantScope::all(),
        };
        let target = target_shard(self.node.catalog(), self.n(), origin.shard, &caller, &request);
        if self.node.shards[target as usize].building_views() > 0 {
            cover("a request while a view is being built");
        }
        self.expect.insert(ref_id, (origin, expect));
        self.node.input(target, Input::Request { caller, request });
        self.collect();
    }

    /// Checks answers; follows binds; desktops accept their invitations.
    fn collect(&mut self) {
        while let Some((_, o)) = self.node.outbox.pop_front() {
            match o {
                Output::Reply { origin, frame } => self.answer(origin, frame),
                Output::Event { origin, frame } if frame.msg_type == msg_type::EVENT_INVITE => {
                    let id = frame.get_str(attr::INTERACTION_ID).unwrap().to_string();
                    let ticket = frame.get_int(attr::TICKET).map(|t| t as u64);
                    if self.node.catalog().tenant_at(0).queue("q0").is_some() {
                        cover("an offer made by a strategy");
                    }
                    let accept = Request::Accept { id, ticket };
                    self.send(origin, ClientType::AgentDesktop, accept, Expect::NotRefusedAs(vec![]));
                }
                Output::Bind { origin, agent } => {
                    match agent {
                        Some(a) => self.bound.insert(origin, a),
                        None => self.bound.remove(&origin),
                    };
                }
                _ => {}
            }
        }
    }

    fn answer(&mut self, origin: Origin, frame: Frame) {
        let Some((from, expect)) = self.expect.remove(&frame.ref_id) else { return };
        assert_eq!(from, origin, "{}: an answer reached another connection", self.node.ctx);
        let code = error_code(&frame);
        let ctx = &self.node.ctx;
        match expect {
            Expect::Refused(want) => assert!(
                want.iter().any(|c| code == Some(*c as i64)),
                "{ctx}: ref {} should be refused with {want:?}, got {code:?}",
                frame.ref_id
            ),
            Expect::NotRefusedAs(not) => {
                assert!(
                    !not.iter().any(|c| code == Some(*c as i64)),
                    "{ctx}: ref {} refused with {code:?}: {:?}",
                    frame.ref_id,
                    frame.get_str(attr::ERROR_TEXT)
                );
                if let (None, Some(id)) = (code, frame.get_str(attr::INTERACTION_ID)) {
                    if frame.msg_type == msg_type::EVENT_ACK && !self.ids.iter().any(|i| i == id) {
                        self.ids.push(id.to_string());
                    }
                }
            }
            Expect::Login { agent, allowed } => {
                if !allowed {
                    assert!(code.is_some(), "{ctx}: {} logged in while not configured", AGENTS[agent]);
                    cover("a login of an agent or on a place a reload removed refused");
                }
            }
        }
    }

    fn live_queue(&self, q: &str) -> bool {
        self.node.catalog().tenant_at(0).queue(q).is_some()
    }

    fn step(&mut self) {
        let n = self.n();
        let shard = self.rng.below(n as u64) as u16;
        let media = Origin { shard, conn: 1, session: 0 };
        let router = Origin { shard, conn: 2, session: 0 };
        match self.rng.below(100) {
            0..=24 => {
                let q = QUEUES[self.rng.below(QUEUES.len() as u64) as usize];
                let live = self.live_queue(q);
                if !live {
                    cover("a submit to a queue not configured refused");
                }
                let lang = if self.rng.chance(50) { "en" } else { "fr" };
                let r = Request::Submit(Box::new(Submit {
                    tenant: "default".into(),
                    media_type: "chat".into(),
                    interaction_type: "Inbound".into(),
                    interaction_subtype: "InboundNew".into(),
                    queue: q.into(),
                    priority: self.rng.below(6) as i64,
                    properties: kv![("lang", lang)],
                    id: None,
                    received_at_ms: None,
                }));
                let expect = if live {
                    Expect::NotRefusedAs(vec![ErrorCode::UnknownQueue])
                } else {
                    Expect::Refused(vec![ErrorCode::UnknownQueue])
                };
                self.send(media, ClientType::MediaServer, r, expect);
            }
            25..=34 => {
                let Some(id) = self.rng.pick(&self.ids).cloned() else { return };
                let q = QUEUES[self.rng.below(QUEUES.len() as u64) as usize];
                let expect = if self.live_queue(q) {
                    Expect::NotRefusedAs(vec![ErrorCode::UnknownQueue])
                } else {
                    Expect::Refused(vec![ErrorCode::UnknownQueue, ErrorCode::UnknownInteraction])
                };
                let r = Request::PlaceInQueue { id, queue: Some(q.into()) };
                self.send(media, ClientType::MediaServer, r, expect);
            }
            35..=39 => {
                let Some(id) = self.rng.pick(&self.ids).cloned() else { return };
                self.send(
                    media,
                    ClientType::MediaServer,
                    Request::StopProcessing { id, reason: None },
                    Expect::NotRefusedAs(vec![]),
                );
            }
            40..=54 => {
                let v = VIEWS[self.rng.below(VIEWS.len() as u64) as usize];
                let live = self.node.catalog().tenant_at(0).view_idx(v).is_some();
                let expect = if live {
                    Expect::NotRefusedAs(vec![ErrorCode::UnknownView])
                } else {
                    Expect::Refused(vec![ErrorCode::UnknownView])
                };
                let r = Request::Pull { tenant: "default".into(), view: v.into(), count: 1 + self.rng.below(3) as u32 };
                self.send(router, ClientType::RoutingEngine, r, expect);
            }
            55..=59 => {
                self.node.input(shard, Input::ConnClosed { origin: router, agent: None });
                self.collect();
            }
            60..=69 => self.login(),
            70..=76 => self.reload(),
            _ => {
                for _ in 0..1 + self.rng.below(8) {
                    self.node.deliver_one();
                    self.collect();
                }
            }
        }
        self.advance_reload();
    }

    fn login(&mut self) {
        let a = self.rng.below(AGENTS.len() as u64) as usize;
        let p = self.rng.below(PLACES.len() as u64) as usize;
        let o = desk(a, self.n());
        let t = self.node.catalog().tenant_at(0);
        let allowed = t.agent(AGENTS[a]).is_some() && t.place(PLACES[p]).is_some();
        if self.bound.contains_key(&o) {
            let ready =
                Request::SetReady { tenant: "default".into(), agent: None, media: None, ready: true, reason: None };
            self.send(o, ClientType::AgentDesktop, ready, Expect::NotRefusedAs(vec![]));
            return;
        }
        let login = Request::AgentLogin {
            tenant: "default".into(),
            agent: AGENTS[a].into(),
            place: PLACES[p].into(),
            media: vec![("chat".into(), 0)],
            reason: None,
        };
        self.send(o, ClientType::AgentDesktop, login, Expect::Login { agent: a, allowed });
    }

    /// Lays a random configuration over the one in force, as the reloader
    /// does.
    fn reload(&mut self) {
        if self.staged.is_some() {
            return;
        }
        let current = self.node.catalog().clone();
        let next = Config::random(&mut self.rng).catalog();
        let (full, _) = current.evolve(&next).unwrap_or_else(|e| panic!("{}: {e}", self.node.ctx));
        self.reloads += 1;
        let full = Arc::new(full);
        if full.adds_views(&current) {
            let held = (0..self.n()).any(|s| !self.node.shards[s as usize].is_empty());
            if held {
                cover("a reload adding a view over queued interactions");
            }
            self.node.publish(Arc::new(current.staged(&full)));
            self.staged = Some(full);
        } else {
            self.publish(full);
        }
    }

    fn publish(&mut self, full: Arc<Catalog>) {
        let before = self.node.catalog().clone();
        let t = full.tenant_at(0);
        for a in self.bound.values() {
            let gone = t.agents[a.agent as usize].retired;
            if gone && !before.tenant_at(0).agents[a.agent as usize].retired {
                cover("a logged-in agent removed");
            }
        }
        for s in &self.node.shards {
            for ix in s.interactions() {
                if let Place::Queue(q) = ix.place {
                    if t.queues[q as usize].retired && !before.tenant_at(0).queues[q as usize].retired {
                        cover("a queue removed while it holds interactions");
                    }
                }
            }
        }
        self.node.publish(full);
    }

    /// The reloader's wait: woken shards take the hidden views; once every
    /// shard has built them, the full catalog follows.
    fn advance_reload(&mut self) {
        if self.staged.is_none() {
            return;
        }
        if self.rng.chance(30) {
            let s = self.rng.below(self.n() as u64) as u16;
            self.node.wake(s);
            self.collect();
        }
        if self.node.reload_done() {
            let full = self.staged.take().expect("checked");
            self.publish(full);
        }
    }

    /// Everything delivered, every reload finished: no desktop carries an
    /// agent, or sits on a place, the configuration no longer has.
    fn finish(&mut self) {
        for _ in 0..1000 {
            for s in 0..self.n() {
                self.node.wake(s);
            }
            self.node.settle();
            self.collect();
            self.advance_reload();
            if self.staged.is_none() && self.node.reload_done() {
                break;
            }
        }
        assert!(self.staged.is_none() && self.node.reload_done(), "{}: a reload never finished", self.node.ctx);
        for s in 0..self.n() {
            self.node.wake(s);
        }
        self.node.settle();
        self.collect();
        let t = self.node.catalog().tenant_at(0);
        let removed: BTreeSet<String> = t.agents.iter().filter(|a| a.retired).map(|a| a.login_id.clone()).collect();
        for (origin, a) in &self.bound {
            let login = &t.agents[a.agent as usize].login_id;
            assert!(!removed.contains(login), "{}: {login} is still bound to {origin:?} though removed", self.node.ctx);
        }
        for s in &self.node.shards {
            for (a, place) in s.logged_in_agents() {
                let agent = &t.agents[a.agent as usize];
                assert!(!agent.retired, "{}: removed agent {} still logged in", self.node.ctx, agent.login_id);
                let p = &t.places[place as usize];
                assert!(
                    !p.retired,
                    "{}: {} still logged in on removed place {}",
                    self.node.ctx, agent.login_id, p.name
                );
            }
        }
        if self.reloads > 0 {
            cover("a history with reloads finished");
        }
    }

    fn run(mut self) {
        for _ in 0..STEPS {
            self.step();
        }
        self.finish();
    }
}

#[test]
fn reloads_under_traffic_keep_every_shard_consistent() {
    run_seeds(
        "reload_simulation",
        "reloads_under_traffic_keep_every_shard_consistent",
        30,
        &[
            "a request while a view is being built",
            "a reload adding a view over queued interactions",
            "a queue removed while it holds interactions",
            "a logged-in agent removed",
            "a login of an agent or on a place a reload removed refused",
            "a submit to a queue not configured refused",
            "an offer made by a strategy",
            "a history with reloads finished",
        ],
        |seed| Run::new(seed).run(),
    );
}
