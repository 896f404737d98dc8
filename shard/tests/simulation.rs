//! Deterministic simulations of a node's shards: several pure [`Shard`]
//! state machines joined by a simulated mesh (one FIFO channel per pair of
//! shards, delivered in a random interleaving), with storage that completes
//! writes in a random order (each interaction's in order, as the server's
//! writers do) and the shared harness of `sim/mod.rs`, which audits the
//! shard after every input ([`Shard::audit`]: every view index against its
//! keys recomputed now, queue counts, locks, links, reservations).
//!
//! Two runs:
//!
//! - **Single-list model.** A seeded random mix of submits, property
//!   changes, moves, workbin placements, stops, pulls (alone and several at
//!   once), lock time-outs, closed routing connections, searches, snapshots
//!   and queue-depth reads, some writes failing; after every step the
//!   shards are compared with a single-list model of every queue and view
//!   (membership, order, locks), including views ordered and filtered by
//!   `version`, which most changes raise.
//! - **Pipelines and crashes.** Clients that do not wait: bursts of
//!   requests about one id (client-given ids reused after a stop), pulls
//!   and moves racing with writes that fail or are held back for a long
//!   time, routers' connections or sessions closing with requests in
//!   flight (a session's are answered all the same), and crashes: the node restarts from the modelled database with
//!   another shard count. Every request gets one answer; nothing is
//!   visible before its submit commits; every acknowledged change survives
//!   in memory and across crashes, and no acknowledged stop comes back.
//!
//! Run: `cargo test -p ixn-shard --test simulation`: fixed seeds, then
//! fresh random seeds for `IXN_SIM_SECONDS` (default 3) per run. A failing
//! seed is printed; replay it with `IXN_SIM_SEED=<seed>`; `IXN_SIM_TRACE=1`
//! prints every input. Long runs: docs/operations.md, "Simulations".

mod sim;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use ixn_shard::catalog::{Catalog, Tenant, WorkbinKind};
use ixn_shard::id::owner_of;
use ixn_shard::machine::{target_shard, Caller, Input, Origin, Output, Shard, ShardParams};
use ixn_shard::peer::LockKind;
use ixn_shard::proto::request::error_of;
use ixn_shard::proto::{attr, msg_type, ClientType, ErrorCode, Frame, Request, Submit};
use ixn_shard::{KvList, Value};
use sim::{cover, run_seeds, Node, Rng};

const T0: i64 = 1_800_000_000_000;
/// Routing timeout in the simulation, milliseconds.
const RT: i64 = 40;
const STEPS: usize = 120;

fn catalog() -> Catalog {
    let mut t = Tenant::new("default");
    t.add_media("chat", true).unwrap();
    t.add_process("bp", &["inbound", "vip", "done"]).unwrap();
    t.link_next("inbound", "vip").unwrap();
    t.link_next("vip", "done").unwrap();
    t.add_view("inbound", "by-priority", None, Some("priority DESC")).unwrap();
    t.add_view("inbound", "english", Some("lang = 'en'"), Some("region ASC, priority DESC")).unwrap();
    // Keyed and filtered by version, which most changes raise while the
    // interaction is in the view.
    t.add_view("inbound", "by-version", None, Some("version DESC")).unwrap();
    t.add_view("vip", "vip-fifo", Some("priority >= 3"), None).unwrap();
    t.add_view("vip", "vip-changed", Some("version >= 2 AND lang = 'en'"), Some("version ASC, region DESC")).unwrap();
    t.add_workbin("personal", WorkbinKind::Agent).unwrap();
    Catalog::new(vec![t], true).unwrap()
}

const VIEWS: [&str; 6] = ["by-priority", "english", "by-version", "vip-fifo", "vip-changed", "done"];
const QUEUES: [&str; 3] = ["inbound", "vip", "done"];

// ---------------------------------------------------------------------------
// The model: one list of interactions, views computed by filtering and sorting
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum MPlace {
    Queue(&'static str),
    Workbin(String),
}

#[derive(Clone, Debug)]
struct MLock {
    holder: Origin,
    kind: LockKind,
    deadline: i64,
}

#[derive(Clone, Debug)]
struct MIx {
    seq: u64,
    priority: i64,
    version: u32,
    lang: Option<String>,
    region: Option<String>,
    place: MPlace,
    lock: Option<MLock>,
}

#[derive(Default)]
struct Model {
    ixs: BTreeMap<String, MIx>,
    next_seq: u64,
}

impl Model {
    fn in_view(view: &str, ix: &MIx) -> bool {
        match view {
            "by-priority" => ix.place == MPlace::Queue("inbound"),
            "english" => ix.place == MPlace::Queue("inbound") && ix.lang.as_deref() == Some("en"),
            "by-version" => ix.place == MPlace::Queue("inbound"),
            "vip-fifo" => ix.place == MPlace::Queue("vip") && ix.priority >= 3,
            "vip-changed" => ix.place == MPlace::Queue("vip") && ix.version >= 2 && ix.lang.as_deref() == Some("en"),
            "done" => ix.place == MPlace::Queue("done"),
            _ => unreachable!(),
        }
    }

    /// The view as one sorted list of unlocked interactions.
    fn view(&self, view: &str) -> Vec<String> {
        let mut v: Vec<(&String, &MIx)> =
            self.ixs.iter().filter(|(_, ix)| ix.lock.is_none() && Model::in_view(view, ix)).collect();
        match view {
            "by-priority" => v.sort_by_key(|(_, ix)| (std::cmp::Reverse(ix.priority), ix.seq)),
            "english" => v.sort_by_key(|(_, ix)| {
                // Missing values sort last.
                (ix.region.is_none(), ix.region.clone(), std::cmp::Reverse(ix.priority), ix.seq)
            }),
            "by-version" => v.sort_by_key(|(_, ix)| (std::cmp::Reverse(ix.version), ix.seq)),
            "vip-changed" => v.sort_by_key(|(_, ix)| {
                // Missing values sort last, whatever the direction.
                (ix.version, ix.region.is_none(), std::cmp::Reverse(ix.region.clone()), ix.seq)
            }),
            _ => v.sort_by_key(|(_, ix)| ix.seq),
        }
        v.into_iter().map(|(id, _)| id.clone()).collect()
    }

    fn matches(cond: &str, ix: &MIx) -> bool {
        match cond {
            "priority >= 5" => ix.priority >= 5,
            "lang = 'en'" => ix.lang.as_deref() == Some("en"),
            "region IS NULL" => ix.region.is_none(),
            _ => unreachable!(),
        }
    }

    /// Matches of `cond`, in submission order.
    fn find(&self, cond: &str, unlocked_only: bool) -> Vec<String> {
        let mut v: Vec<(&String, &MIx)> = self
            .ixs
            .iter()
            .filter(|(_, ix)| Model::matches(cond, ix) && !(unlocked_only && ix.lock.is_some()))
            .collect();
        v.sort_by_key(|(_, ix)| ix.seq);
        v.into_iter().map(|(id, _)| id.clone()).collect()
    }
}

// ---------------------------------------------------------------------------
// The simulated node, called like a client: send, settle, take the answer
// ---------------------------------------------------------------------------

fn params(shard: u16, shards: u16) -> ShardParams {
    ShardParams {
        routing_timeout_ms: RT,
        max_snapshot: 1000,
        max_properties_bytes: 4096,
        ..ShardParams::new(1, shard, shards)
    }
}

struct Sim {
    node: Node,
    replies: Vec<(Origin, Frame)>,
    next_ref: u32,
}

impl Sim {
    fn new(n: u16, seed: u64, ctx: String) -> Sim {
        Sim { node: Node::new(n, Arc::new(catalog()), params, T0, Rng(seed), ctx), replies: Vec::new(), next_ref: 1 }
    }

    fn n(&self) -> u16 {
        self.node.n()
    }

    /// Takes the node's answers (events and binds are not used here).
    fn collect(&mut self) {
        while let Some((_, o)) = self.node.outbox.pop_front() {
            if let Output::Reply { origin, frame } = o {
                self.replies.push((origin, frame));
            }
        }
    }

    fn input(&mut self, shard: u16, input: Input) {
        self.node.input(shard, input);
        self.collect();
    }

    /// Sends a request the way the server routes it: to the owner of the
    /// interaction it names, else to the connection's shard.
    fn send(&mut self, origin: Origin, client_type: ClientType, request: Request) -> u32 {
        let ref_id = self.next_ref;
        self.next_ref += 1;
        let caller = Caller {
            origin,
            ref_id,
            client_type,
            client_name: format!("client-{}", origin.conn).into(),
            agent: None,
            tenants: ixn_shard::machine::TenantScope::all(),
        };
        let target = target_shard(self.node.catalog(), self.n(), origin.shard, &caller, &request);
        self.input(target, Input::Request { caller, request });
        ref_id
    }

    fn settle(&mut self) {
        self.node.settle();
        self.collect();
    }

    fn deliver_one(&mut self) -> bool {
        let moved = self.node.deliver_one();
        self.collect();
        moved
    }

    fn try_take_reply(&mut self, origin: Origin, ref_id: u32) -> Option<Frame> {
        let i = self.replies.iter().position(|(o, f)| *o == origin && f.ref_id == ref_id)?;
        Some(self.replies.swap_remove(i).1)
    }

    fn take_reply(&mut self, origin: Origin, ref_id: u32) -> Frame {
        let i = self
            .replies
            .iter()
            .position(|(o, f)| *o == origin && f.ref_id == ref_id)
            .unwrap_or_else(|| panic!("{}: no answer to request {ref_id}", self.node.ctx));
        let (_, f) = self.replies.swap_remove(i);
        assert!(
            !self.replies.iter().any(|(o, f)| *o == origin && f.ref_id == ref_id),
            "request {ref_id} answered twice"
        );
        f
    }

    fn call(&mut self, origin: Origin, client_type: ClientType, request: Request) -> Frame {
        let r = self.send(origin, client_type, request);
        self.settle();
        self.take_reply(origin, r)
    }

    /// The view as the shards hold it, merged in global order.
    fn view(&self, view: &str) -> Vec<String> {
        let v = self.node.catalog().tenant_at(0).view_idx(view).unwrap();
        let mut all = Vec::new();
        for (s, shard) in self.node.shards.iter().enumerate() {
            for id in shard.view_ids(0, v) {
                let (key, tie) = shard.view_position(&id, 0, v).expect("listed ids are in the view");
                all.push((key, tie, s, id.to_string()));
            }
        }
        all.sort();
        all.into_iter().map(|(_, _, _, id)| id).collect()
    }

    fn owner(&self, id: &str) -> &Shard {
        &self.node.shards[owner_of(id, self.n()) as usize]
    }
}

fn ids_of(f: &Frame) -> Vec<String> {
    f.lists(attr::INTERACTION).iter().map(|l| l.get("id").unwrap().as_str().unwrap().to_string()).collect()
}

fn code(f: &Frame) -> Option<ErrorCode> {
    error_of(f).map(|e| e.code)
}

// ---------------------------------------------------------------------------
// One seeded run
// ---------------------------------------------------------------------------

struct Run {
    sim: Sim,
    model: Model,
    routers: Vec<Origin>,
    media: Origin,
    seed: u64,
    step: usize,
}

impl Run {
    fn new(seed: u64) -> Run {
        let mut rng = Rng(seed);
        let n = 1 + rng.below(4) as u16;
        let mut sim = Sim::new(n, seed ^ 0x5151, format!("single-list model, seed {seed}"));
        // Some runs with storage that fails now and then: whatever the
        // database refused is undone in memory (a submit forgotten, a
        // change, move or stop undone), and the model keeps it as it was.
        sim.node.faults.fail = [0, 0, 3, 10][rng.below(4) as usize];
        let routers = (0..3).map(|i| Origin { shard: (i % n as u64) as u16, conn: 100 + i, session: 0 }).collect();
        Run { sim, model: Model::default(), routers, media: Origin { shard: 0, conn: 1, session: 0 }, seed, step: 0 }
    }

    fn ctx(&self) -> String {
        format!("seed {} step {} ({} shards)", self.seed, self.step, self.sim.n())
    }

    fn random_id(&mut self) -> Option<String> {
        let ids: Vec<String> = self.model.ixs.keys().cloned().collect();
        self.sim.node.rng.pick(&ids).cloned()
    }

    fn random_props(&mut self) -> KvList {
        let mut l = KvList::new();
        match self.sim.node.rng.below(3) {
            0 => l.push("lang", Value::Str("en".into())),
            1 => l.push("lang", Value::Str("fr".into())),
            _ => {}
        }
        if self.sim.node.rng.below(2) == 0 {
            let r = ["north", "south", "east"][self.sim.node.rng.below(3) as usize];
            l.push("region", Value::Str(r.into()));
        }
        l
    }

    fn submit(&mut self) {
        let priority = self.sim.node.rng.below(10) as i64;
        let properties = self.random_props();
        let queue = ["inbound", "inbound", "vip"][self.sim.node.rng.below(3) as usize];
        let client_id = (self.sim.node.rng.below(4) == 0).then(|| format!("c-{}-{}", self.seed, self.model.next_seq));
        let conn = Origin { shard: self.sim.node.rng.below(self.sim.n() as u64) as u16, conn: 1, session: 0 };
        let request = Request::Submit(Box::new(Submit {
            tenant: "default".into(),
            media_type: "chat".into(),
            interaction_type: "Inbound".into(),
            interaction_subtype: "InboundNew".into(),
            queue: queue.into(),
            priority,
            properties: properties.clone(),
            id: client_id,
            received_at_ms: None,
        }));
        let f = self.sim.call(conn, ClientType::MediaServer, request);
        if self.failed(&f) {
            return;
        }
        assert_eq!(f.msg_type, msg_type::EVENT_ACK, "{}: submit refused: {f:?}", self.ctx());
        let id = f.get_str(attr::INTERACTION_ID).unwrap().to_string();
        let seq = self.model.next_seq;
        self.model.next_seq += 1;
        let text = |k: &str| properties.get(k).and_then(Value::as_str).map(str::to_string);
        self.model.ixs.insert(
            id,
            MIx {
                seq,
                priority,
                version: 0,
                lang: text("lang"),
                region: text("region"),
                place: MPlace::Queue(queue),
                lock: None,
            },
        );
    }

    fn change(&mut self) {
        let Some(id) = self.random_id() else { return };
        let mut changed = KvList::new();
        let mut deleted = Vec::new();
        match self.sim.node.rng.below(4) {
            0 => changed.push("lang", Value::Str(["en", "fr"][self.sim.node.rng.below(2) as usize].into())),
            1 => deleted.push("lang".to_string()),
            2 => changed.push("region", Value::Str(["north", "west"][self.sim.node.rng.below(2) as usize].into())),
            _ => deleted.push("region".to_string()),
        }
        let f = self.sim.call(
            self.media,
            ClientType::MediaServer,
            Request::ChangeProperties { id: id.clone(), changed: changed.clone(), deleted: deleted.clone() },
        );
        // A change the database refused is undone in memory.
        if self.failed(&f) {
            return;
        }
        assert_eq!(f.msg_type, msg_type::EVENT_ACK, "{}: change refused: {f:?}", self.ctx());
        let ix = self.model.ixs.get_mut(&id).unwrap();
        ix.version += 1;
        for (k, v) in changed.iter() {
            let v = v.as_str().map(str::to_string);
            if k == "lang" {
                ix.lang = v;
            } else {
                ix.region = v;
            }
        }
        for k in deleted {
            if k == "lang" {
                ix.lang = None;
            } else {
                ix.region = None;
            }
        }
    }

    /// Whether `f` says storage failed (EventError StorageFailure).
    fn failed(&self, f: &Frame) -> bool {
        let failed = code(f) == Some(ErrorCode::StorageFailure);
        assert!(!failed || self.sim.node.faults.fail > 0, "{}: storage failed with no failures injected", self.ctx());
        failed
    }

    /// A client that is either a router (maybe the lock holder) or the
    /// media server.
    fn some_client(&mut self) -> (Origin, ClientType) {
        if self.sim.node.rng.below(2) == 0 {
            (*self.sim.node.rng.pick(&self.routers).unwrap(), ClientType::RoutingEngine)
        } else {
            (self.media, ClientType::MediaServer)
        }
    }

    /// Whether `client` may change `id` now, per the model's locks.
    fn may_change(&self, id: &str, client: Origin) -> bool {
        self.model.ixs[id].lock.as_ref().is_none_or(|l| l.holder == client)
    }

    fn place(&mut self) {
        let Some(id) = self.random_id() else { return };
        let (client, ct) = self.some_client();
        let queue = match self.sim.node.rng.below(4) {
            0 => None,
            i => Some(QUEUES[i as usize - 1]),
        };
        let f = self.sim.call(client, ct, Request::PlaceInQueue { id: id.clone(), queue: queue.map(str::to_string) });
        let cur = self.model.ixs[&id].place.clone();
        let target = match (queue, &cur) {
            (Some(q), _) => Ok(q),
            (None, MPlace::Queue("inbound")) => Ok("vip"),
            (None, MPlace::Queue("vip")) => Ok("done"),
            (None, MPlace::Queue(_)) => Err(ErrorCode::UnknownQueue),
            (None, MPlace::Workbin(_)) => Err(ErrorCode::InvalidValue),
        };
        match target {
            Err(c) => assert_eq!(code(&f), Some(c), "{}: place of {id} with no next: {f:?}", self.ctx()),
            Ok(_) if !self.may_change(&id, client) => {
                assert_eq!(code(&f), Some(ErrorCode::InteractionLocked), "{}: place of locked {id}", self.ctx())
            }
            Ok(q) => {
                let ix = self.model.ixs.get_mut(&id).unwrap();
                // The move ended any lock; the database refusing it undoes
                // the move, not the unlock.
                ix.lock = None;
                if self.failed(&f) {
                    return;
                }
                assert_eq!(f.msg_type, msg_type::EVENT_ACK, "{}: place of {id}: {f:?}", self.ctx());
                let ix = self.model.ixs.get_mut(&id).unwrap();
                ix.place = MPlace::Queue(q);
                ix.version += 1;
            }
        }
    }

    fn workbin(&mut self) {
        let Some(id) = self.random_id() else { return };
        let (client, ct) = self.some_client();
        let owner = ["agent1", "agent2"][self.sim.node.rng.below(2) as usize];
        let f = self.sim.call(
            client,
            ct,
            Request::PlaceInWorkbin { id: id.clone(), workbin: "personal".into(), owner: owner.into() },
        );
        if !self.may_change(&id, client) {
            assert_eq!(code(&f), Some(ErrorCode::InteractionLocked), "{}", self.ctx());
            return;
        }
        let ix = self.model.ixs.get_mut(&id).unwrap();
        ix.lock = None;
        if self.failed(&f) {
            return;
        }
        assert_eq!(f.msg_type, msg_type::EVENT_ACK, "{}: workbin: {f:?}", self.ctx());
        let ix = self.model.ixs.get_mut(&id).unwrap();
        ix.place = MPlace::Workbin(owner.into());
        ix.version += 1;
        // Its content, through the coordinator of a random connection.
        let f = self.sim.call(
            self.media,
            ClientType::MediaServer,
            Request::GetWorkbinContent { tenant: "default".into(), workbin: "personal".into(), owner: owner.into() },
        );
        let mut expected: Vec<(u64, String)> = self
            .model
            .ixs
            .iter()
            .filter(|(_, ix)| ix.place == MPlace::Workbin(owner.into()))
            .map(|(id, ix)| (ix.seq, id.clone()))
            .collect();
        expected.sort();
        let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();
        assert_eq!(ids_of(&f), expected, "{}: workbin content of {owner}", self.ctx());
    }

    fn stop(&mut self) {
        let Some(id) = self.random_id() else { return };
        let (client, ct) = self.some_client();
        let f = self.sim.call(client, ct, Request::StopProcessing { id: id.clone(), reason: None });
        if !self.may_change(&id, client) {
            assert_eq!(code(&f), Some(ErrorCode::InteractionLocked), "{}", self.ctx());
            return;
        }
        if self.failed(&f) {
            // Undone: live again where it was, but its lock ended with the stop.
            self.model.ixs.get_mut(&id).unwrap().lock = None;
            return;
        }
        assert_eq!(f.msg_type, msg_type::EVENT_ACK, "{}: stop: {f:?}", self.ctx());
        self.model.ixs.remove(&id);
    }

    fn lock_in_model(&mut self, ids: &[String], holder: Origin, kind: LockKind, deadline: i64) {
        for id in ids {
            let ix = self.model.ixs.get_mut(id).unwrap();
            assert!(ix.lock.is_none(), "{}: {id} given out while locked", self.ctx());
            ix.lock = Some(MLock { holder, kind, deadline });
        }
    }

    /// One pull, alone: it must return exactly the head of the model's view.
    fn pull(&mut self) {
        let view = VIEWS[self.sim.node.rng.below(VIEWS.len() as u64) as usize];
        let router = *self.sim.node.rng.pick(&self.routers).unwrap();
        let count = 1 + self.sim.node.rng.below(5) as u32;
        let expected: Vec<String> = self.model.view(view).into_iter().take(count as usize).collect();
        let f = self.sim.call(
            router,
            ClientType::RoutingEngine,
            Request::Pull { tenant: "default".into(), view: view.into(), count },
        );
        assert_eq!(f.msg_type, msg_type::EVENT_PULLED_INTERACTIONS, "{}: pull: {f:?}", self.ctx());
        let got = ids_of(&f);
        assert_eq!(got, expected, "{}: pull {count} from {view}", self.ctx());
        let deadline = self.sim.node.now + RT;
        self.lock_in_model(&got, router, LockKind::Routing, deadline);
    }

    /// Several routers pull from one view at once, their messages
    /// interleaved: each gets a run in view order, no interaction twice,
    /// and together they get the head of the view.
    fn concurrent_pulls(&mut self) {
        let view = VIEWS[self.sim.node.rng.below(VIEWS.len() as u64) as usize];
        let model_view = self.model.view(view);
        let routers = self.routers.clone();
        let mut sent = Vec::new();
        let mut total = 0;
        for r in routers {
            let count = 1 + self.sim.node.rng.below(4) as u32;
            total += count as usize;
            let req = Request::Pull { tenant: "default".into(), view: view.into(), count };
            sent.push((r, self.sim.send(r, ClientType::RoutingEngine, req)));
        }
        self.sim.settle();
        let mut all = HashSet::new();
        let deadline = self.sim.node.now + RT;
        for (r, ref_id) in sent {
            let f = self.sim.take_reply(r, ref_id);
            let got = ids_of(&f);
            let pos: Vec<usize> = got
                .iter()
                .map(|id| {
                    model_view
                        .iter()
                        .position(|m| m == id)
                        .unwrap_or_else(|| panic!("{}: {id} not in {view}", self.ctx()))
                })
                .collect();
            assert!(pos.windows(2).all(|w| w[0] < w[1]), "{}: a pull out of view order: {got:?}", self.ctx());
            for id in &got {
                assert!(all.insert(id.clone()), "{}: {id} pulled twice", self.ctx());
            }
            self.lock_in_model(&got, r, LockKind::Routing, deadline);
        }
        let head: HashSet<String> = model_view.into_iter().take(total).collect();
        assert_eq!(all, head, "{}: concurrent pulls from {view} did not take the head of the view", self.ctx());
    }

    fn advance(&mut self) {
        let ms = 1 + self.sim.node.rng.below(2 * RT as u64) as i64;
        self.sim.node.advance(ms);
        for s in 0..self.sim.n() {
            self.sim.input(s, Input::Tick);
        }
        self.sim.settle();
        let now = self.sim.node.now;
        for ix in self.model.ixs.values_mut() {
            if ix.lock.as_ref().is_some_and(|l| l.kind == LockKind::Routing && l.deadline <= now) {
                ix.lock = None;
            }
        }
    }

    fn close_router(&mut self) {
        let r = *self.sim.node.rng.pick(&self.routers).unwrap();
        self.sim.input(r.shard, Input::ConnClosed { origin: r, agent: None });
        self.sim.settle();
        for ix in self.model.ixs.values_mut() {
            if ix.lock.as_ref().is_some_and(|l| l.holder == r) {
                ix.lock = None;
            }
        }
    }

    fn find(&mut self) {
        let cond = ["priority >= 5", "lang = 'en'", "region IS NULL"][self.sim.node.rng.below(3) as usize];
        let limit = 1 + self.sim.node.rng.below(20) as u32;
        let all = self.model.find(cond, false);
        let f = self.sim.call(
            self.media,
            ClientType::MediaServer,
            Request::FindInteractions { tenant: None, condition: cond.into(), limit },
        );
        assert_eq!(f.get_int(attr::TOTAL), Some(all.len() as i64), "{}: find total for {cond}", self.ctx());
        let expected: Vec<String> = all.into_iter().take(limit as usize).collect();
        assert_eq!(ids_of(&f), expected, "{}: find {cond} limit {limit}", self.ctx());
    }

    fn snapshot(&mut self) {
        let cond = ["priority >= 5", "lang = 'en'", "region IS NULL"][self.sim.node.rng.below(3) as usize];
        let lock = self.sim.node.rng.below(2) == 0;
        let (client, ct) = self.some_client();
        let limit = 1 + self.sim.node.rng.below(30) as u32;
        let matching = self.model.find(cond, lock);
        let expected: Vec<String> = matching.iter().take(limit as usize).cloned().collect();
        let f = self.sim.call(
            client,
            ct,
            Request::TakeSnapshot { tenant: Some("default".into()), condition: cond.into(), lock, limit: Some(limit) },
        );
        assert_eq!(f.msg_type, msg_type::EVENT_SNAPSHOT_TAKEN, "{}: snapshot: {f:?}", self.ctx());
        assert_eq!(f.get_int(attr::TOTAL), Some(matching.len() as i64), "{}: snapshot total", self.ctx());
        let snap = f.get_int(attr::SNAPSHOT_ID).unwrap() as u64;
        if lock {
            self.lock_in_model(&expected, client, LockKind::Snapshot(snap), 0);
        }
        self.check_state();
        // Read it in pages; another connection may not.
        let page = 1 + self.sim.node.rng.below(7) as u32;
        let mut read = Vec::new();
        let mut start = 0;
        loop {
            let f = self.sim.call(client, ct, Request::GetSnapshotInteractions { snapshot: snap, start, count: page });
            let ids = ids_of(&f);
            if ids.is_empty() {
                break;
            }
            start += ids.len() as u32;
            read.extend(ids);
        }
        assert_eq!(read, expected, "{}: snapshot pages of {cond}", self.ctx());
        let other = Origin { shard: client.shard, conn: 999, session: 0 };
        let f = self.sim.call(other, ct, Request::GetSnapshotInteractions { snapshot: snap, start: 0, count: 5 });
        assert_eq!(code(&f), Some(ErrorCode::UnknownSnapshot), "{}", self.ctx());
        let f = self.sim.call(client, ct, Request::ReleaseSnapshot { snapshot: snap });
        assert_eq!(f.msg_type, msg_type::EVENT_ACK, "{}", self.ctx());
        self.sim.settle();
        for ix in self.model.ixs.values_mut() {
            if ix.lock.as_ref().is_some_and(|l| l.kind == LockKind::Snapshot(snap)) {
                ix.lock = None;
            }
        }
    }

    /// A snapshot taken while one client submits a chain of interactions on
    /// alternating shards, each submit sent only when the previous one was
    /// acknowledged: whatever the interleaving, the snapshot holds a prefix
    /// of the chain (a cut at one instant), after everything older.
    fn snapshot_during_a_chain(&mut self) {
        // The chain needs every submit acknowledged.
        let faults = std::mem::take(&mut self.sim.node.faults);
        let cond = "priority >= 5";
        let before = self.model.find(cond, false);
        let client = self.routers[0];
        let req = Request::TakeSnapshot { tenant: None, condition: cond.into(), lock: false, limit: None };
        let snap_ref = self.sim.send(client, ClientType::RoutingEngine, req);
        let n = self.sim.n();
        let len = 2 + self.sim.node.rng.below(6) as usize;
        let mut chain: Vec<String> = Vec::new();
        let mut pending: Option<(Origin, u32)> = None;
        loop {
            if pending.is_none() && chain.len() < len {
                let conn = Origin { shard: (chain.len() as u16) % n, conn: 2, session: 0 };
                let request = Request::Submit(Box::new(Submit {
                    tenant: "default".into(),
                    media_type: "chat".into(),
                    interaction_type: "Inbound".into(),
                    interaction_subtype: "InboundNew".into(),
                    queue: "inbound".into(),
                    priority: 9,
                    properties: KvList::new(),
                    id: None,
                    received_at_ms: None,
                }));
                pending = Some((conn, self.sim.send(conn, ClientType::MediaServer, request)));
            }
            let moved = self.sim.deliver_one();
            if let Some((o, r)) = pending {
                if let Some(f) = self.sim.try_take_reply(o, r) {
                    assert_eq!(f.msg_type, msg_type::EVENT_ACK, "{}: chain submit: {f:?}", self.ctx());
                    chain.push(f.get_str(attr::INTERACTION_ID).unwrap().to_string());
                    pending = None;
                    continue;
                }
            }
            if !moved && pending.is_none() {
                break;
            }
            assert!(moved, "{}: the chain's submit is stuck", self.ctx());
        }
        let f = self.sim.take_reply(client, snap_ref);
        assert_eq!(f.msg_type, msg_type::EVENT_SNAPSHOT_TAKEN, "{}: {f:?}", self.ctx());
        let snap = f.get_int(attr::SNAPSHOT_ID).unwrap() as u64;
        let f = self.sim.call(
            client,
            ClientType::RoutingEngine,
            Request::GetSnapshotInteractions { snapshot: snap, start: 0, count: 1000 },
        );
        let got = ids_of(&f);
        let cut =
            got.len().checked_sub(before.len()).unwrap_or_else(|| panic!("{}: snapshot lost older ones", self.ctx()));
        let mut expected = before.clone();
        expected.extend(chain.iter().take(cut).cloned());
        assert_eq!(got, expected, "{}: the snapshot is not a cut: older {before:?}, chain {chain:?}", self.ctx());
        let f = self.sim.call(client, ClientType::RoutingEngine, Request::ReleaseSnapshot { snapshot: snap });
        assert_eq!(f.msg_type, msg_type::EVENT_ACK, "{}", self.ctx());
        for id in chain {
            let seq = self.model.next_seq;
            self.model.next_seq += 1;
            let ix = MIx {
                seq,
                priority: 9,
                version: 0,
                lang: None,
                region: None,
                place: MPlace::Queue("inbound"),
                lock: None,
            };
            self.model.ixs.insert(id, ix);
        }
        self.sim.node.faults = faults;
    }

    fn queue_depth(&mut self) {
        let f = self.sim.call(self.media, ClientType::MediaServer, Request::GetQueueDepth { tenant: "default".into() });
        for a in f.attrs.iter().filter(|a| a.id == attr::QUEUE_DEPTH) {
            let l = a.value.as_list().unwrap();
            let q = l.get("queue").unwrap().as_str().unwrap();
            let in_q: Vec<&MIx> = self.model.ixs.values().filter(|ix| ix.place == MPlace::Queue(leak(q))).collect();
            assert_eq!(l.get("interactions").unwrap().as_int(), Some(in_q.len() as i64), "{}: depth {q}", self.ctx());
            let locked = in_q.iter().filter(|ix| ix.lock.is_some()).count() as i64;
            assert_eq!(l.get("locked").unwrap().as_int(), Some(locked), "{}: locked in {q}", self.ctx());
            for (v, n) in l.get("views").unwrap().as_list().unwrap().iter() {
                assert_eq!(n.as_int(), Some(self.model.view(v).len() as i64), "{}: depth of view {v}", self.ctx());
            }
        }
    }

    /// The shards against the model: every view's members and order, every
    /// lock, and nothing left in flight.
    fn check_state(&self) {
        for v in VIEWS {
            assert_eq!(self.sim.view(v), self.model.view(v), "{}: view {v}", self.ctx());
        }
        let held: usize = self.sim.node.shards.iter().map(Shard::len).sum();
        assert_eq!(held, self.model.ixs.len(), "{}: interactions held", self.ctx());
        for (id, ix) in &self.model.ixs {
            let lock = self.sim.owner(id).lock_of(id).map(|(h, k)| (h.origin, k));
            assert_eq!(lock, ix.lock.as_ref().map(|l| (l.holder, l.kind)), "{}: lock of {id}", self.ctx());
        }
        for s in &self.sim.node.shards {
            assert_eq!(s.pending_writes(), 0, "{}", self.ctx());
            assert_eq!(s.pending_ops(), 0, "{}", self.ctx());
        }
    }

    fn run(mut self) {
        for step in 0..STEPS {
            self.step = step;
            self.sim.node.advance(1);
            match self.sim.node.rng.below(100) {
                0..=29 => self.submit(),
                30..=39 => self.change(),
                40..=49 => self.place(),
                50..=53 => self.workbin(),
                54..=59 => self.stop(),
                60..=74 => self.pull(),
                75..=79 => self.concurrent_pulls(),
                80..=85 => self.advance(),
                86..=88 => self.close_router(),
                89..=92 => self.find(),
                93..=94 => self.snapshot(),
                95..=96 => self.snapshot_during_a_chain(),
                _ => self.queue_depth(),
            }
            self.check_state();
        }
    }
}

fn leak(q: &str) -> &'static str {
    QUEUES.iter().find(|&&x| x == q).copied().expect("a known queue")
}

#[test]
fn shards_match_the_single_list_model() {
    let situations = ["a write failed"];
    run_seeds("simulation", "shards_match_the_single_list_model", 100, &situations, |seed| Run::new(seed).run());
}

// ---------------------------------------------------------------------------
// Pipelines and crashes
// ---------------------------------------------------------------------------

/// Client-given ids the pipelines use: few, so each is submitted, stopped
/// and submitted again many times.
const CLIENT_IDS: [&str; 4] = ["px-0", "px-1", "px-2", "px-3"];

/// A request sent and not answered yet.
#[derive(Debug)]
struct Waiting {
    origin: Origin,
    /// The interaction it names, if any.
    id: Option<String>,
    what: &'static str,
}

struct Chaos {
    sim: Sim,
    waiting: BTreeMap<u32, Waiting>,
    answered: HashSet<u32>,
    /// Connections closed: the server drops what is sent to them.
    closed: HashSet<Origin>,
    /// Ids acknowledged by a submit (some stopped since).
    ids: Vec<String>,
    /// Interactions each router was given by a pull.
    pulled: HashMap<Origin, Vec<String>>,
    routers: Vec<Origin>,
    media: Vec<Origin>,
    step: usize,
}

impl Chaos {
    fn new(seed: u64) -> Chaos {
        let mut rng = Rng(seed);
        let n = 1 + rng.below(4) as u16;
        let mut sim = Sim::new(n, seed ^ 0xc4a0, format!("pipelines and crashes, seed {seed}"));
        sim.node.faults.fail = [0, 5, 15][rng.below(3) as usize];
        sim.node.faults.hold = [0, 5, 20][rng.below(3) as usize];
        let mut c = Chaos {
            sim,
            waiting: BTreeMap::new(),
            answered: HashSet::new(),
            closed: HashSet::new(),
            ids: Vec::new(),
            pulled: HashMap::new(),
            routers: Vec::new(),
            media: Vec::new(),
            step: 0,
        };
        c.connect();
        c
    }

    /// New client connections (after a start or a crash).
    fn connect(&mut self) {
        let n = self.sim.n() as u64;
        let base = 1000 * (self.sim.node.crashes as u64 + 1);
        self.routers = (0..2).map(|i| Origin { shard: (i % n) as u16, conn: base + 100 + i, session: 0 }).collect();
        self.media = (0..2).map(|i| Origin { shard: ((i + 1) % n) as u16, conn: base + i, session: 0 }).collect();
        self.pulled.clear();
    }

    fn ctx(&self) -> String {
        format!("{} step {} ({} shards)", self.sim.node.ctx, self.step, self.sim.n())
    }

    fn send(&mut self, origin: Origin, client_type: ClientType, request: Request, what: &'static str) {
        let id = request.interaction_id().map(str::to_string);
        let r = self.sim.send(origin, client_type, request);
        self.waiting.insert(r, Waiting { origin, id, what });
        self.answers();
    }

    /// Takes the answers that came: each for a request waiting, once.
    fn answers(&mut self) {
        for (origin, f) in std::mem::take(&mut self.sim.replies) {
            if self.closed.contains(&origin) {
                continue;
            }
            let r = f.ref_id;
            let w = self.waiting.remove(&r).unwrap_or_else(|| {
                let twice = self.answered.contains(&r);
                panic!(
                    "{}\n{}: answer {f:?} to request {r}, answered before: {twice}",
                    self.sim.node.history(),
                    self.ctx()
                )
            });
            assert_eq!(w.origin, origin, "{}: answer to the wrong connection", self.ctx());
            self.answered.insert(r);
            if let Some(e) = error_of(&f) {
                let unexpected = match e.code {
                    ErrorCode::Internal => true,
                    ErrorCode::StorageFailure => self.sim.node.faults.fail == 0,
                    _ => false,
                };
                assert!(
                    !unexpected,
                    "{}\n{}: {} of {:?} refused: {e}",
                    self.sim.node.history(),
                    self.ctx(),
                    w.what,
                    w.id
                );
                continue;
            }
            match (w.what, f.get_str(attr::INTERACTION_ID)) {
                ("submit", Some(id)) => {
                    if self.ids.iter().any(|x| x == id) {
                        cover("a client-given id submitted again after its stop");
                    }
                    self.ids.push(id.to_string())
                }
                ("pull", _) => self.pulled.entry(origin).or_default().extend(ids_of(&f)),
                _ => {}
            }
        }
    }

    fn submit_request(&mut self, id: Option<String>) -> Request {
        let rng = &mut self.sim.node.rng;
        let mut properties = KvList::new();
        if rng.chance(60) {
            properties.push("lang", Value::Str(["en", "fr"][rng.below(2) as usize].into()));
        }
        Request::Submit(Box::new(Submit {
            tenant: "default".into(),
            media_type: "chat".into(),
            interaction_type: "Inbound".into(),
            interaction_subtype: "InboundNew".into(),
            queue: ["inbound", "vip"][rng.below(2) as usize].into(),
            priority: rng.below(10) as i64,
            properties,
            id,
            received_at_ms: None,
        }))
    }

    /// A request about `id` of a random kind.
    fn request_about(&mut self, id: &str) -> (Request, &'static str) {
        let rng = &mut self.sim.node.rng;
        let id = id.to_string();
        match rng.below(10) {
            0..=2 => (Request::StopProcessing { id, reason: None }, "stop"),
            3..=5 => {
                let mut changed = KvList::new();
                let mut deleted = Vec::new();
                match rng.below(3) {
                    0 => changed.push("lang", Value::Str(["en", "fr"][rng.below(2) as usize].into())),
                    1 => changed.push("region", Value::Str(["north", "west"][rng.below(2) as usize].into())),
                    _ => deleted.push(["lang", "region"][rng.below(2) as usize].to_string()),
                }
                (Request::ChangeProperties { id, changed, deleted }, "change")
            }
            6..=7 => {
                let queue = [None, Some("inbound"), Some("vip"), Some("done")][rng.below(4) as usize];
                (Request::PlaceInQueue { id, queue: queue.map(str::to_string) }, "place")
            }
            8 => (Request::PlaceInWorkbin { id, workbin: "personal".into(), owner: "agent1".into() }, "workbin"),
            _ => (Request::GetInteractionProperties { id }, "get"),
        }
    }

    /// A media server sends requests about one id without waiting for the
    /// answers: submit, stop and submit again of a client-given id, or
    /// changes, moves and stops of any.
    fn burst(&mut self) {
        let media = *self.sim.node.rng.pick(&self.media).unwrap();
        let client_id = self.sim.node.rng.chance(70);
        let id = if client_id {
            CLIENT_IDS[self.sim.node.rng.below(CLIENT_IDS.len() as u64) as usize].to_string()
        } else {
            match self.sim.node.rng.pick(&self.ids) {
                Some(id) => id.clone(),
                None => return,
            }
        };
        let len = 1 + self.sim.node.rng.below(4);
        for _ in 0..len {
            if client_id && self.sim.node.rng.chance(35) {
                let r = self.submit_request(Some(id.clone()));
                self.send(media, ClientType::MediaServer, r, "submit");
            } else {
                let (r, what) = self.request_about(&id);
                self.send(media, ClientType::MediaServer, r, what);
            }
        }
    }

    fn pull(&mut self) {
        let view = VIEWS[self.sim.node.rng.below(VIEWS.len() as u64) as usize];
        let router = *self.sim.node.rng.pick(&self.routers).unwrap();
        let count = 1 + self.sim.node.rng.below(3) as u32;
        self.send(
            router,
            ClientType::RoutingEngine,
            Request::Pull { tenant: "default".into(), view: view.into(), count },
            "pull",
        );
    }

    /// A router moves or stops what it pulled, while other writes race.
    fn route(&mut self) {
        let router = *self.sim.node.rng.pick(&self.routers).unwrap();
        let Some(id) = self.pulled.get_mut(&router).and_then(|v| v.pop()) else { return };
        let (r, what) = self.request_about(&id);
        self.send(router, ClientType::RoutingEngine, r, what);
    }

    /// Ids some unanswered request names (memory may be ahead of what was
    /// acknowledged about them).
    fn busy(&self) -> BTreeSet<String> {
        self.waiting.values().filter_map(|w| w.id.clone()).collect()
    }

    fn crash(&mut self) {
        let shards = 1 + self.sim.node.rng.below(4) as u16;
        self.sim.node.crash_and_reload(shards);
        // The connections are gone, and with them every answer not given.
        self.waiting.clear();
        self.sim.replies.clear();
        self.connect();
    }

    fn run(mut self) {
        for step in 0..STEPS {
            self.step = step;
            self.sim.node.advance(1);
            match self.sim.node.rng.below(100) {
                0..=29 => self.burst(),
                30..=39 => {
                    let r = self.submit_request(None);
                    let media = *self.sim.node.rng.pick(&self.media).unwrap();
                    self.send(media, ClientType::MediaServer, r, "submit");
                }
                40..=54 => self.pull(),
                55..=64 => self.route(),
                65..=72 => {
                    // Some of what is in flight moves on; the rest waits.
                    for _ in 0..self.sim.node.rng.below(8) {
                        self.sim.deliver_one();
                    }
                }
                73..=79 => {
                    let ms = 1 + self.sim.node.rng.below(2 * RT as u64) as i64;
                    self.sim.node.advance(ms);
                    for s in 0..self.sim.n() {
                        self.sim.input(s, Input::Tick);
                    }
                    self.sim.node.release_held(30);
                }
                80..=82 => {
                    let r = *self.sim.node.rng.pick(&self.routers).unwrap();
                    self.sim.input(r.shard, Input::ConnClosed { origin: r, agent: None });
                    let i = self.routers.iter().position(|&x| x == r).unwrap();
                    if self.sim.node.rng.below(2) == 0 {
                        // A connection: its requests die with it; answers
                        // to it are dropped.
                        self.waiting.retain(|_, w| w.origin != r);
                        self.closed.insert(r);
                        self.routers[i] = Origin { conn: r.conn + 10, session: 0, ..r };
                    } else {
                        // One session of a connection that goes on: each
                        // of its requests still gets its one answer. The
                        // router carries on in a new session.
                        self.routers[i].session += 1;
                    }
                    self.pulled.remove(&r);
                }
                83..=84 => self.crash(),
                _ => {
                    self.sim.settle();
                    self.answers();
                    self.sim.node.check_acked_in_memory(&self.busy());
                }
            }
            self.answers();
            self.sim.node.check_unrevealed();
        }
        // Everything held back completes; every request is answered.
        self.sim.node.release_held(100);
        self.sim.settle();
        self.answers();
        assert!(self.waiting.is_empty(), "{}: unanswered: {:?}", self.ctx(), self.waiting);
        self.sim.node.check_acked_in_memory(&BTreeSet::new());
        self.crash();
    }
}

/// Seeds that found faults once, run every time. 6122001466326573599: a
/// name retired, used again by a submission, then left by its stop while
/// the writes its first retirement waited for completed; the earlier
/// retirement freed it although the stop's copy still named it, and the
/// stop's failure restored an interaction naming a freed name.
#[test]
fn seeds_that_found_faults() {
    const SEEDS: &[u64] = &[6122001466326573599];
    for &seed in SEEDS {
        Chaos::new(seed).run();
    }
}

#[test]
fn pipelines_failing_storage_and_crashes_lose_nothing_acknowledged() {
    let situations = [
        "a write failed",
        "a write held back",
        "a write in flight landed at a crash",
        "a write in flight lost at a crash",
        "a client-given id submitted again after its stop",
    ];
    run_seeds(
        "simulation",
        "pipelines_failing_storage_and_crashes_lose_nothing_acknowledged",
        150,
        &situations,
        |seed| Chaos::new(seed).run(),
    );
}
