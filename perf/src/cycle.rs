//! `ixn-perf cycle`: whole cycles (submit, invitation, accept, stop) in the
//! shard state machines alone, in process, on one thread: no network, no
//! database (every write completes at once, in order), no executor. It
//! measures what the pure core costs per cycle, summed over all shards,
//! and how many messages between shards and writes a cycle takes, so the
//! server's figures (`ixn-bench cycle`) can be read against it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use ixn_shard::agent::AgentRef;
use ixn_shard::catalog::{Catalog, Tenant};
use ixn_shard::machine::{target_shard, Caller, Input, Origin, Output, Shard, ShardParams};
use ixn_shard::proto::request::error_of;
use ixn_shard::proto::{attr, msg_type, ClientType, Frame, Request, Submit};
use ixn_shard::KvList;

#[derive(clap::Args)]
pub struct CycleArgs {
    /// Agents agent1..agentA, each ready for chat.
    #[arg(long, default_value_t = 1000)]
    agents: u32,
    /// Chat capacity of each agent.
    #[arg(long, default_value_t = 3)]
    capacity: i64,
    /// Shards (state machines), all driven by this one thread.
    #[arg(long, default_value_t = 2)]
    shards: u16,
    /// Cycles to complete.
    #[arg(long, default_value_t = 200_000)]
    cycles: u64,
    /// Submissions in flight at a time.
    #[arg(long, default_value_t = 256)]
    window: u64,
    /// Reporting subscribers (every tenant): each reporting event is turned
    /// into its frame once per subscriber, as their connections would.
    #[arg(long, default_value_t = 0)]
    subscribers: u32,
    /// The subscribers ask for the state of agents and queues first
    /// (WithState): each shard's tally then follows every event.
    #[arg(long)]
    with_state: bool,
    /// Reporting events each shard keeps for resuming subscribers
    /// (`reporting-replay-events`).
    #[arg(long, default_value_t = ixn_shard::machine::DEFAULT_REPLAY_EVENTS)]
    keep: usize,
}

struct Node {
    shards: Vec<Shard>,
    queue: VecDeque<(u16, Input)>,
    now_us: i64,
    bound: HashMap<Origin, AgentRef>,
    events: Vec<(Origin, Frame)>,
    replies: Vec<Frame>,
    out: Vec<Output>,
    peer_msgs: u64,
    writes: u64,
    reports: u64,
}

impl Node {
    fn deliver(&mut self, to: u16, input: Input) {
        self.now_us += 1;
        let mut out = std::mem::take(&mut self.out);
        self.shards[to as usize].handle_at(self.now_us, input, &mut out);
        for o in out.drain(..) {
            match o {
                Output::Reply { frame, .. } => self.replies.push(frame),
                Output::Store { token, .. } => {
                    self.writes += 1;
                    self.queue.push_back((to, Input::StorageDone { token, ok: true }));
                }
                Output::Peer { to: dest, msg } => {
                    if dest != to {
                        self.peer_msgs += 1;
                    }
                    self.queue.push_back((dest, Input::Peer { from: to, msg }));
                }
                Output::Event { origin, frame } => self.events.push((origin, frame)),
                Output::Report { event, .. } => {
                    // The subscriber's connection's part in the server.
                    let frame = event.event.frame(self.shards[0].catalog());
                    std::hint::black_box(frame);
                    self.reports += 1;
                }
                Output::Cursor { .. }
                | Output::Unsubscribed { .. }
                | Output::Replay { .. }
                | Output::ReadLog { .. }
                | Output::SendLog { .. } => {}
                Output::Bind { origin, agent } => {
                    match agent {
                        Some(a) => self.bound.insert(origin, a),
                        None => self.bound.remove(&origin),
                    };
                }
            }
        }
        self.out = out;
    }

    fn settle(&mut self) {
        while let Some((to, i)) = self.queue.pop_front() {
            self.deliver(to, i);
        }
    }

    fn send(&mut self, origin: Origin, ref_id: u32, client_type: ClientType, request: Request) {
        let caller = Caller {
            origin,
            ref_id,
            client_type,
            client_name: "perf".into(),
            agent: self.bound.get(&origin).copied(),
            tenants: ixn_shard::machine::TenantScope::all(),
        };
        let to = target_shard(self.shards[0].catalog(), self.shards.len() as u16, origin.shard, &caller, &request);
        self.deliver(to, Input::Request { caller, request });
    }
}

fn catalog(agents: u32, capacity: i64) -> Result<Catalog, String> {
    let mut t = Tenant::new("default");
    t.add_media("chat", true)?;
    t.add_process("default", &["inbound"])?;
    t.set_strategy("inbound", None, None)?;
    for i in 1..=agents {
        t.add_agent(&format!("agent{i}"), &[("english", 5)], &[("chat", capacity)], &[])?;
        t.add_place(&format!("place{i}"))?;
    }
    Catalog::new(vec![t], true)
}

/// A chat submitted to queue `inbound` of tenant `default`.
pub fn submit(properties: KvList) -> Request {
    Request::Submit(Box::new(Submit {
        tenant: "default".into(),
        media_type: "chat".into(),
        interaction_type: "Inbound".into(),
        interaction_subtype: "InboundNew".into(),
        queue: "inbound".into(),
        priority: 0,
        properties,
        id: None,
        received_at_ms: None,
    }))
}

/// Shards with agents logged in and ready (and subscribers, if asked),
/// driven by one thread: whole cycles on demand.
pub struct Rig {
    n: Node,
    shards: u16,
    next_ref: u32,
}

/// What `cycles` cycles cost in messages between shards, writes and
/// reporting events.
pub struct Counts {
    pub peer_msgs: u64,
    pub writes: u64,
    pub reports: u64,
}

impl Rig {
    /// `agents` agents of chat capacity `capacity` on `shards` shards, each
    /// logged in and ready; `subscribers` reporting subscribers (asking for
    /// state first with `with_state`); `keep` replay events per shard.
    pub fn new(
        agents: u32,
        capacity: i64,
        shards: u16,
        subscribers: u32,
        with_state: bool,
        keep: usize,
    ) -> Result<Rig, String> {
        let catalog = Arc::new(catalog(agents, capacity)?);
        let params = |s: u16| ShardParams { replay_events: keep, ..ShardParams::new(1, s, shards) };
        let machines = (0..shards).map(|s| Shard::new(params(s), catalog.clone())).collect();
        let n = Node {
            shards: machines,
            queue: VecDeque::new(),
            now_us: 1_800_000_000_000_000,
            bound: HashMap::new(),
            events: Vec::new(),
            replies: Vec::new(),
            out: Vec::new(),
            peer_msgs: 0,
            writes: 0,
            reports: 0,
        };
        let mut rig = Rig { n, shards, next_ref: 1 };
        let desk = |i: u32| Origin { shard: (i % shards as u32) as u16, conn: 1 + i as u64, session: 0 };
        for i in 1..=agents {
            let login = Request::AgentLogin {
                tenant: "default".into(),
                agent: format!("agent{i}"),
                place: format!("place{i}"),
                media: vec![],
                reason: None,
            };
            rig.request(desk(i), ClientType::AgentDesktop, login);
            let ready =
                Request::SetReady { tenant: "default".into(), agent: None, media: None, ready: true, reason: None };
            rig.request(desk(i), ClientType::AgentDesktop, ready);
        }
        for s in 0..subscribers {
            let origin = Origin { shard: (s % shards as u32) as u16, conn: 2_000_000 + s as u64, session: 0 };
            let subscribe = Request::Subscribe { tenant: None, cursor: None, with_state };
            rig.request(origin, ClientType::ReportingEngine, subscribe);
        }
        if let Some(e) = rig.n.replies.iter().find_map(error_of) {
            return Err(format!("setting up the agents and subscribers: {e}"));
        }
        rig.n.replies.clear();
        Ok(rig)
    }

    /// Sends one request and settles everything it causes.
    fn request(&mut self, origin: Origin, client_type: ClientType, request: Request) {
        self.n.send(origin, self.next_ref, client_type, request);
        self.next_ref = self.next_ref.wrapping_add(1).max(1);
        self.n.settle();
    }

    /// Completes `cycles` whole cycles (submit, invitation, accept, stop),
    /// `window` submissions in flight at a time.
    pub fn run(&mut self, cycles: u64, window: u64) -> Result<Counts, String> {
        let (peer0, writes0, reports0) = (self.n.peer_msgs, self.n.writes, self.n.reports);
        let shards = self.shards as u64;
        let n = &mut self.n;
        let mut next_ref = self.next_ref;
        // What each outstanding request is: accept (of id by desk) or stop.
        let mut accepts: HashMap<u32, (Origin, String)> = HashMap::new();
        let mut stops: HashMap<u32, ()> = HashMap::new();
        let (mut submitted, mut completed, mut open) = (0u64, 0u64, 0u64);
        while completed < cycles {
            let before = (submitted, completed, next_ref);
            while open < window && submitted < cycles {
                let ms = Origin { shard: (submitted % shards) as u16, conn: 1_000_000, session: 0 };
                n.send(ms, next_ref, ClientType::MediaServer, submit(KvList::new()));
                next_ref = next_ref.wrapping_add(1).max(1);
                submitted += 1;
                open += 1;
            }
            n.settle();
            for (origin, f) in std::mem::take(&mut n.events) {
                if f.msg_type != msg_type::EVENT_INVITE {
                    continue;
                }
                let id = f.get_str(attr::INTERACTION_ID).ok_or("EventInvite without id")?.to_string();
                let ticket = f.get_int(attr::TICKET).map(|t| t as u64);
                accepts.insert(next_ref, (origin, id.clone()));
                n.send(origin, next_ref, ClientType::AgentDesktop, Request::Accept { id, ticket });
                next_ref = next_ref.wrapping_add(1).max(1);
            }
            n.settle();
            for f in std::mem::take(&mut n.replies) {
                if let Some(e) = error_of(&f) {
                    return Err(format!("request {} refused: {e}", f.ref_id));
                }
                if let Some((origin, id)) = accepts.remove(&f.ref_id) {
                    stops.insert(next_ref, ());
                    n.send(origin, next_ref, ClientType::AgentDesktop, Request::StopProcessing { id, reason: None });
                    next_ref = next_ref.wrapping_add(1).max(1);
                } else if stops.remove(&f.ref_id).is_some() {
                    completed += 1;
                    open -= 1;
                }
            }
            if (submitted, completed, next_ref) == before {
                return Err(format!("stalled after {completed} cycles with {open} open"));
            }
        }
        self.next_ref = next_ref;
        Ok(Counts { peer_msgs: n.peer_msgs - peer0, writes: n.writes - writes0, reports: n.reports - reports0 })
    }
}

pub fn run(a: CycleArgs) -> Result<(), String> {
    let mut rig = Rig::new(a.agents, a.capacity, a.shards, a.subscribers, a.with_state, a.keep)?;
    let started = Instant::now();
    let counts = rig.run(a.cycles, a.window)?;
    let secs = started.elapsed().as_secs_f64();
    let completed = a.cycles.max(1);
    let peer = counts.peer_msgs as f64 / completed as f64;
    let writes = counts.writes as f64 / completed as f64;
    let reports = counts.reports as f64 / completed as f64;
    println!(
        "cycle (in process, one thread, {} shards, {} agents x {}, {} subscribers{}): {completed} cycles in {secs:.2} s \
         = {:.0}/s ({:.2} us each); per cycle {peer:.1} messages between shards, {writes:.1} writes, {reports:.1} \
         reporting events sent",
        a.shards,
        a.agents,
        a.capacity,
        a.subscribers,
        if a.with_state { " with state" } else { "" },
        completed as f64 / secs,
        secs * 1e6 / completed as f64
    );
    Ok(())
}
