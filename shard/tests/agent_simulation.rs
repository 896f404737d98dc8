//! Deterministic simulation of agents across shards, with the shared
//! harness of `sim/mod.rs`: 1 to 4 pure [`Shard`]s joined by a simulated
//! mesh (one FIFO channel per pair, delivered in a random interleaving),
//! storage completing writes in a random order (each interaction's in
//! order), failing some and holding some back for a long time, crashes
//! after which the node restarts from the modelled database with another
//! shard count, and a seeded random mix of submissions (some pipelined:
//! submit, stop and submit again of one client-given id without waiting),
//! property changes that move interactions in views keyed and filtered by
//! fields that change (`version`, properties), logins (again, with another
//! capacity), media types removed and added with another capacity,
//! readiness, do-not-disturb, invitations accepted and rejected, stops,
//! leaves, holds, operator moves, a routing engine that pulls and delivers,
//! desktops that drop and reconnect, logouts and time passing
//! (delivering-timeout, handling-timeout, routing-timeout,
//! login-session-timeout). The built-in strategy delivers from a view
//! chosen per seed: submission order, `version DESC`, or a filtered one.
//!
//! After every input the harness audits the shard ([`Shard::audit`]) and
//! checks the capacity rule: holdings grow only by a reservation taken
//! below capacity (capacity itself may drop below what an agent holds).
//! Once the node is quiet it checks:
//!
//! - invariant 2: an interaction is with at most one agent (invited or
//!   handling), and owners and agents' homes agree on who holds what;
//! - invariant 3: no agent holds more of a media type than its configured
//!   capacity; every EventInvite a desktop got fits it;
//! - invariants 1 and 7: every acknowledged submission is live, with every
//!   acknowledged change, until an acknowledged stop, after which it is
//!   gone, and so after a crash; the reporting stream shows each
//!   interaction's transitions in order;
//! - the event log (on for half the seeds): every event a subscriber
//!   received is stored, as it was sent, and no event is stored twice,
//!   across failed writes, writes held back and crashes (the modelled
//!   database stores a write's events when it commits or lands at a
//!   crash);
//! - invariant 5: every request got exactly one answer;
//! - routing: no interaction waits in the strategy's view while a
//!   connected, ready agent with free capacity and the skills it needs is
//!   idle (the built-in strategy offers the moment one is able).
//!
//! Run: `cargo test -p ixn-shard --test agent_simulation`: fixed seeds,
//! then fresh random seeds for `IXN_SIM_SECONDS` (default 3). A failing
//! seed is printed; `IXN_SIM_SEED=<seed>` replays it, `IXN_SIM_TRACE=1`
//! prints every input. Long runs: docs/operations.md, "Simulations".

mod sim;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use ixn_shard::agent::{home_of, AgentRef};
use ixn_shard::catalog::{Catalog, Tenant};
use ixn_shard::machine::{
    target_shard, AgentParams, Caller, Input, MultipleConnections, Origin, Output, Shard, ShardParams,
};
use ixn_shard::proto::request::error_of;
use ixn_shard::proto::{attr, msg_type, ClientType, ErrorCode, Frame, Request, Submit};
use ixn_shard::routing::{parse_skills, skills_meet};
use ixn_shard::{KvList, Value};
use sim::{cover, run_seeds, Node, Rng};

const T0: i64 = 1_800_000_000_000;
const STEPS: usize = 150;
const AGENTS: u32 = 6;
/// Routing timeout, milliseconds: a pulled interaction not delivered goes back.
const RT: i64 = 200;

/// Skill sets and capacities (chat, email) of agents a0..a5.
const AGENT_SKILLS: [&[(&str, i64)]; AGENTS as usize] = [
    &[("english", 5)],
    &[("billing", 5), ("english", 3)],
    &[("billing", 2)],
    &[("english", 8)],
    &[],
    &[("english", 5), ("french", 4)],
];
const AGENT_CAPACITY: [(i64, i64); AGENTS as usize] = [(3, 1), (1, 1), (2, 0), (1, 1), (2, 2), (3, 1)];
const REQUIREMENTS: [Option<&str>; 6] =
    [None, None, Some("english"), Some("english:5"), Some("billing:3"), Some("french")];

/// The views the built-in strategy may deliver from (one per seed).
const STRATEGY_VIEWS: [&str; 3] = ["inbound-fifo", "inbound-by-version", "inbound-marked"];
/// The views the routing engine pulls from.
const PULL_VIEWS: [&str; 4] = ["inbound-by-version", "inbound-marked", "routed-by-version", "routed-hot"];
/// Client-given ids: few, so each is submitted, stopped and submitted again.
const CLIENT_IDS: [&str; 3] = ["px-0", "px-1", "px-2"];

fn catalog(strategy_view: &str) -> Catalog {
    let mut t = Tenant::new("default");
    t.add_media("chat", true).unwrap();
    t.add_media("email", true).unwrap();
    t.add_process("bp", &["inbound", "routed", "done"]).unwrap();
    // Keys and conditions on fields that change while an interaction is
    // in the view, offered, handled and back: version and a property.
    t.add_view("inbound", "inbound-fifo", None, None).unwrap();
    t.add_view("inbound", "inbound-by-version", None, Some("version DESC")).unwrap();
    t.add_view("inbound", "inbound-marked", Some("mark = 'y' OR version >= 3"), Some("priority DESC, version ASC"))
        .unwrap();
    t.add_view("routed", "routed-by-version", None, Some("version ASC")).unwrap();
    t.add_view("routed", "routed-hot", Some("priority >= 5 OR mark = 'y'"), Some("mark DESC, version DESC")).unwrap();
    t.set_strategy("inbound", Some(strategy_view), None).unwrap();
    for i in 0..AGENTS as usize {
        let (chat, email) = AGENT_CAPACITY[i];
        let cap: Vec<(&str, i64)> = [("chat", chat), ("email", email)].into_iter().filter(|(_, c)| *c > 0).collect();
        t.add_agent(&format!("a{i}"), AGENT_SKILLS[i], &cap, &[]).unwrap();
    }
    for i in 0..AGENTS + 2 {
        t.add_place(&format!("p{i}")).unwrap();
    }
    Catalog::new(vec![t], true).unwrap()
}

/// The configured capacity of agent `a` for `media`.
fn configured(a: usize, media: &str) -> i64 {
    if media == "chat" {
        AGENT_CAPACITY[a].0
    } else {
        AGENT_CAPACITY[a].1
    }
}

/// What the desktop of one agent knows.
#[derive(Default, Debug)]
struct Desk {
    conn: Option<Origin>,
    /// Logged in, as far as the desktop knows (kept across a drop, so it
    /// logs in again when it reconnects).
    logged_in: bool,
    /// Invitations it got and has not answered: id -> (ticket, media).
    invites: BTreeMap<String, (i64, String)>,
    handling: BTreeSet<String>,
}

struct Sim {
    node: Node,
    next_ref: u32,
    next_conn: u64,
    /// The agent each connection carries (from Output::Bind).
    bound: HashMap<Origin, AgentRef>,
    open: HashSet<Origin>,
    /// Requests sent and not yet answered: ref -> what to do with the
    /// answer, and the interaction it names.
    waiting: BTreeMap<u32, (Pending, Option<String>)>,
    answered: BTreeSet<u32>,
    /// Property changes (by their `change` number) a desktop was told of:
    /// none may be one that is then answered as failed.
    told_changes: BTreeSet<i64>,
    /// Property changes answered as failed.
    failed_changes: BTreeSet<i64>,
    next_change: i64,
    desks: Vec<Desk>,
    /// Interactions known to exist (acknowledged submissions, or loaded
    /// after a crash), and their media type.
    live: BTreeMap<String, String>,
    /// Each interaction's state as the reporting stream tells it.
    reported: BTreeMap<String, Reported>,
    /// Interactions the routing engine pulled and holds.
    pulled: Vec<String>,
    router: Origin,
    reporter: Origin,
    /// The EventCursor of the last reporting event the reporter received.
    reporter_cursor: Option<String>,
    /// A second reporting client, a Stat Server: it subscribes with the
    /// state first at random points (again and again, on new
    /// connections), and keeps agents and queues from it and the events
    /// since.
    stat_conn: Option<Origin>,
    stat: Stat,
    /// The cursor of an earlier run the reporter resumed with after the
    /// last crash (event log on), and what it received of earlier runs.
    resumed_from: Option<String>,
    /// Whether the reporter's latest RequestSubscribe was answered.
    reporter_live: bool,
    old_cursor: (u64, Vec<u64>),
    old_received: BTreeSet<(u64, u16, u64)>,
    media_server: u64,
    strategy_view: &'static str,
}

/// An interaction's state by its reporting events (invariant 7: each
/// transition once, in order, ending in one terminal event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reported {
    Queued,
    Invited,
    Accepting,
    Handling,
    Stopped,
}

#[derive(Clone, Debug)]
enum Pending {
    Submit {
        media: String,
    },
    Login {
        agent: usize,
    },
    /// `from`: the desktop connection that sent it.
    Accept {
        agent: usize,
        id: String,
        from: Origin,
    },
    Stop {
        id: String,
    },
    /// A property change, numbered by its `change` property.
    Change {
        change: i64,
    },
    Pull,
    Leave,
    Deliver,
    /// The reporter's RequestSubscribe: once answered, its subscription is
    /// live (a resume from the event log waits for the log's read).
    ReporterSubscribe,
    /// The reporter's RequestUnsubscribe: once answered, nothing of that
    /// subscription arrives, and it subscribes again after its cursor.
    Resubscribe {
        conn: Origin,
    },
    Other,
}

/// What a Stat Server would keep from the stream: queue depths and
/// logged-in agents (do-not-disturb; media type -> capacity, ready).
#[derive(Debug, Default)]
struct Stat {
    /// The whole state arrived (its last frame carries the cursor).
    complete: bool,
    /// Writes that had failed when it subscribed.
    failed_before: u64,
    depth: BTreeMap<String, i64>,
    /// The queue each interaction an event placed is counted in (as the
    /// protocol tells a client to count: out of where its last
    /// EventPlacedInQueue put it).
    located: BTreeMap<String, String>,
    agents: BTreeMap<String, AgentStat>,
}

/// An agent as the stream tells it: do-not-disturb; media type ->
/// (capacity, ready).
type AgentStat = (bool, BTreeMap<String, (i64, bool)>);

impl Stat {
    fn take_state(&mut self, f: &Frame) {
        for a in &f.attrs {
            let Value::List(l) = &a.value else { continue };
            let s = |k: &str| l.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            let n = |k: &str| l.get(k).and_then(Value::as_int).unwrap_or(-1);
            if a.id == attr::QUEUE_DEPTH {
                self.depth.insert(s("queue"), n("interactions"));
            } else if a.id == attr::AGENT_STATE {
                let mut media = BTreeMap::new();
                if let Some(Value::List(ms)) = l.get("media") {
                    for (name, v) in ms.iter() {
                        let Value::List(e) = v else { continue };
                        let cap = e.get("capacity").and_then(Value::as_int).unwrap_or(-1);
                        let ready = e.get("ready").and_then(Value::as_int) == Some(1);
                        media.insert(name.to_string(), (cap, ready));
                    }
                }
                self.agents.insert(s("agent_id"), (n("do_not_disturb") == 1, media));
            }
        }
        self.complete = f.get_str(attr::EVENT_CURSOR).is_some();
    }

    fn apply(&mut self, f: &Frame) {
        let s = |id| f.get_str(id).map(str::to_string);
        if let Some(id) = s(attr::INTERACTION_ID) {
            let out_of = |stat: &mut Stat, said: Option<String>| {
                if let Some(q) = stat.located.remove(&id).or(said) {
                    *stat.depth.entry(q).or_default() -= 1;
                }
            };
            match f.msg_type {
                msg_type::EVENT_PLACED_IN_QUEUE => {
                    out_of(self, s(attr::FROM_QUEUE));
                    let q = s(attr::QUEUE).expect("a queue");
                    *self.depth.entry(q.clone()).or_default() += 1;
                    self.located.insert(id, q);
                }
                msg_type::EVENT_PLACED_IN_WORKBIN => out_of(self, s(attr::FROM_QUEUE)),
                msg_type::EVENT_PROCESSING_STOPPED => out_of(self, s(attr::QUEUE)),
                _ => {}
            }
            return;
        }
        let Some(agent) = s(attr::AGENT_ID) else { return };
        match f.msg_type {
            msg_type::EVENT_AGENT_LOGIN => {
                let mut media = BTreeMap::new();
                if let Some(Value::List(ms)) = f.get(attr::MEDIA_LIST) {
                    for (name, v) in ms.iter() {
                        media.insert(name.to_string(), (v.as_int().unwrap_or(-1), false));
                    }
                }
                self.agents.insert(agent, (false, media));
            }
            msg_type::EVENT_AGENT_LOGOUT => {
                self.agents.remove(&agent);
            }
            t => {
                let Some((dnd, media)) = self.agents.get_mut(&agent) else { return };
                let m = s(attr::MEDIA_TYPE).unwrap_or_default();
                match t {
                    msg_type::EVENT_READY_FOR_MEDIA | msg_type::EVENT_NOT_READY_FOR_MEDIA => {
                        if let Some(e) = media.get_mut(&m) {
                            e.1 = t == msg_type::EVENT_READY_FOR_MEDIA;
                        }
                    }
                    msg_type::EVENT_MEDIA_ADDED => {
                        media.insert(m, (f.get_int(attr::CAPACITY).unwrap_or(-1), false));
                    }
                    msg_type::EVENT_MEDIA_REMOVED => {
                        media.remove(&m);
                    }
                    msg_type::EVENT_DO_NOT_DISTURB_ON => *dnd = true,
                    msg_type::EVENT_DO_NOT_DISTURB_OFF => *dnd = false,
                    _ => {}
                }
            }
        }
    }
}

fn params(agents: AgentParams, event_log: bool) -> impl Fn(u16, u16) -> ShardParams {
    move |s, n| ShardParams {
        agents,
        max_properties_bytes: 4096,
        routing_timeout_ms: RT,
        event_log,
        ..ShardParams::new(1, s, n)
    }
}

impl Sim {
    fn new(n: u16, seed: u64) -> Sim {
        let mut rng = Rng(seed ^ 0xa9e1);
        let policy = match rng.below(3) {
            0 => MultipleConnections::Allow,
            1 => MultipleConnections::Refuse,
            _ => MultipleConnections::ForceLogout,
        };
        let agents = AgentParams {
            delivering_timeout_ms: 60,
            handling_timeout_ms: 400,
            not_ready_on_invitation_timeout: rng.chance(50),
            login_session_timeout_ms: if rng.chance(20) { 0 } else { 60 },
            multiple_connections: policy,
            agent_login_control: true,
            agent_seats: AGENTS - 1,
        };
        let strategy_view = STRATEGY_VIEWS[rng.below(3) as usize];
        let fail = [0, 0, 3, 10][rng.below(4) as usize];
        let hold = [0, 0, 5, 15][rng.below(4) as usize];
        let event_log = rng.chance(50);
        let ctx = format!(
            "agents, seed {seed} (strategy on {strategy_view}, {fail}% writes fail, {hold}% held, event log {})",
            if event_log { "on" } else { "off" }
        );
        let mut node = Node::new(n, Arc::new(catalog(strategy_view)), params(agents, event_log), T0, rng, ctx);
        node.faults.fail = fail;
        node.faults.hold = hold;
        let mut sim = Sim {
            node,
            next_ref: 1,
            next_conn: 1,
            bound: HashMap::new(),
            open: HashSet::new(),
            waiting: BTreeMap::new(),
            answered: BTreeSet::new(),
            told_changes: BTreeSet::new(),
            failed_changes: BTreeSet::new(),
            next_change: 1,
            desks: (0..AGENTS).map(|_| Desk::default()).collect(),
            live: BTreeMap::new(),
            reported: BTreeMap::new(),
            pulled: Vec::new(),
            router: Origin { shard: 0, conn: 0, session: 0 },
            reporter: Origin { shard: 0, conn: 0, session: 0 },
            reporter_cursor: None,
            stat_conn: None,
            stat: Stat::default(),
            resumed_from: None,
            reporter_live: false,
            old_cursor: (0, Vec::new()),
            old_received: BTreeSet::new(),
            media_server: 100_000,
            strategy_view,
        };
        sim.connect_clients(None);
        sim
    }

    fn ctx(&self) -> &str {
        &self.node.ctx
    }

    fn rng(&mut self) -> &mut Rng {
        &mut self.node.rng
    }

    /// Connects the routing engine and a reporting client that subscribes
    /// (at the start, and again after a crash: then, with the event log on,
    /// after the last event it read in the earlier run).
    fn connect_clients(&mut self, resume: Option<String>) {
        self.router = self.new_conn();
        self.reporter = self.new_conn();
        let r = self.reporter;
        if let Some(c) = &resume {
            let (g, nums) = c.split_once(':').expect("a cursor");
            self.resumed_from = Some(c.clone());
            self.old_cursor = (g.parse().unwrap(), nums.split(',').map(|n| n.parse().unwrap()).collect());
            self.old_received.clear();
            cover("a reporter resumed across a crash from the event log");
        }
        let subscribe = Request::Subscribe { tenant: None, cursor: resume, with_state: false };
        self.reporter_live = false;
        self.send(r, ClientType::ReportingEngine, subscribe, Pending::ReporterSubscribe);
        self.stat_conn = None;
        self.stat = Stat::default();
        self.settle();
    }

    /// Checks one reporting event against the interaction's reported state.
    fn reported_event(&mut self, frame: &Frame) {
        let t = frame.msg_type;
        let Some(id) = frame.get_str(attr::INTERACTION_ID).map(str::to_string) else {
            // Agent events: only their shape is checked here.
            assert!(frame.get_str(attr::AGENT_ID).is_some(), "{}: {} names no agent", self.ctx(), msg_type::name(t));
            return;
        };
        use Reported::*;
        let now = self.reported.get(&id).copied();
        let next = match (now, t) {
            // A client-given id may be submitted again once stopped.
            (None | Some(Stopped), msg_type::EVENT_INTERACTION_SUBMITTED) => Queued,
            (Some(Queued), msg_type::EVENT_PLACED_IN_QUEUE | msg_type::EVENT_PLACED_IN_WORKBIN) => Queued,
            (Some(Queued), msg_type::EVENT_AGENT_INVITED) => Invited,
            (Some(Invited), msg_type::EVENT_INVITE_REVOKED | msg_type::EVENT_REJECTED) => Queued,
            (Some(Invited), msg_type::EVENT_TAKEN_FROM_QUEUE) => Accepting,
            (Some(Accepting), msg_type::EVENT_PARTY_ADDED) => Handling,
            (Some(Handling), msg_type::EVENT_HELD | msg_type::EVENT_RESUMED) => Handling,
            (Some(Handling), msg_type::EVENT_PARTY_REMOVED) => Queued,
            (Some(s), msg_type::EVENT_PROPERTIES_CHANGED) if s != Stopped => s,
            (Some(Queued), msg_type::EVENT_PROCESSING_STOPPED) => Stopped,
            (s, _) => panic!("{}\n{}: {id}: {} in state {s:?}", self.node.history(), self.ctx(), msg_type::name(t)),
        };
        self.reported.insert(id, next);
    }

    fn n(&self) -> u16 {
        self.node.n()
    }

    /// Handles what the node put out: answers, events, binds.
    fn pump(&mut self) {
        while let Some((_, o)) = self.node.outbox.pop_front() {
            match o {
                Output::Reply { frame, .. } => self.answer(frame),
                Output::Event { origin, frame } => self.event(origin, frame),
                Output::Report { .. }
                | Output::Cursor { .. }
                | Output::Unsubscribed { .. }
                | Output::Replay { .. }
                | Output::ReadLog { .. }
                | Output::SendLog { .. } => {
                    unreachable!("the simulated node hands reporting events on as frames")
                }
                Output::Bind { origin, agent } => match agent {
                    Some(a) => {
                        self.bound.insert(origin, a);
                    }
                    None => {
                        self.bound.remove(&origin);
                    }
                },
                Output::Store { .. } | Output::Peer { .. } => unreachable!("the node routes these"),
            }
        }
    }

    fn input(&mut self, shard: u16, input: Input) {
        self.node.input(shard, input);
        self.pump();
    }

    fn settle(&mut self) {
        self.node.settle();
        self.pump();
    }

    /// Lets a few messages and completions through.
    fn settle_some(&mut self) {
        for _ in 0..self.rng().below(8) {
            self.node.deliver_one();
        }
        self.pump();
    }

    fn send(&mut self, origin: Origin, client_type: ClientType, request: Request, pending: Pending) {
        let ref_id = self.next_ref;
        self.next_ref += 1;
        let caller = Caller {
            origin,
            ref_id,
            client_type,
            client_name: format!("client-{}", origin.conn).into(),
            agent: self.bound.get(&origin).copied(),
            tenants: ixn_shard::machine::TenantScope::all(),
        };
        let target = target_shard(self.node.catalog(), self.n(), origin.shard, &caller, &request);
        let id = request.interaction_id().map(str::to_string);
        self.waiting.insert(ref_id, (pending, id));
        self.input(target, Input::Request { caller, request });
    }

    fn answer(&mut self, frame: Frame) {
        let r = frame.ref_id;
        assert!(self.answered.insert(r), "{}: request {r} answered twice", self.ctx());
        let (p, _) =
            self.waiting.remove(&r).unwrap_or_else(|| panic!("{}: answer to unknown request {r}", self.node.ctx));
        let error = error_of(&frame);
        if let Some(e) = &error {
            // Refusals the random mix may meet; anything else is a bug.
            let expected = [
                ErrorCode::UnknownInteraction,
                ErrorCode::UnknownInvitation,
                ErrorCode::InvalidState,
                ErrorCode::AgentNotLoggedIn,
                ErrorCode::AgentAlreadyLoggedIn,
                ErrorCode::AgentNotAvailable,
                ErrorCode::NoLicense,
                ErrorCode::PlaceTaken,
                ErrorCode::MediaNotLoggedIn,
                ErrorCode::InteractionLocked,
                ErrorCode::NotPermitted,
                ErrorCode::DuplicateInteractionId,
            ];
            let storage = e.code == ErrorCode::StorageFailure && self.node.faults.fail > 0;
            assert!(
                expected.contains(&e.code) || storage,
                "{}\n{}: unexpected refusal {e} for {p:?}",
                self.node.history(),
                self.ctx()
            );
        }
        match (p, error) {
            (Pending::ReporterSubscribe, _) => self.reporter_live = true,
            (Pending::Change { change }, Some(_)) => {
                self.failed_changes.insert(change);
                assert!(
                    !self.told_changes.contains(&change),
                    "{}\n{}: a desktop was told of property change {change}, which failed",
                    self.node.history(),
                    self.ctx()
                );
            }
            (Pending::Resubscribe { conn }, None) if conn == self.reporter => {
                let cursor = self.reporter_cursor.clone();
                let subscribe = Request::Subscribe { tenant: None, cursor, with_state: false };
                self.reporter_live = false;
                self.send(conn, ClientType::ReportingEngine, subscribe, Pending::ReporterSubscribe);
            }
            (Pending::Submit { media }, None) => {
                let id = frame.get_str(attr::INTERACTION_ID).expect("submit ack has an id").to_string();
                self.live.insert(id, media);
            }
            (Pending::Login { agent }, None) => self.desks[agent].logged_in = true,
            (Pending::Login { agent }, Some(_)) => {
                // The desktop gives up and disconnects.
                if let Some(conn) = self.desks[agent].conn {
                    if !self.bound.contains_key(&conn) {
                        self.desks[agent].logged_in = false;
                    }
                }
            }
            // A desktop that has been replaced by another meanwhile does
            // not pass what it accepted to its successor.
            (Pending::Accept { agent, id, from }, None) if self.desks[agent].conn == Some(from) => {
                cover("an interaction handled");
                self.desks[agent].handling.insert(id);
            }
            (Pending::Leave, None) => cover("an agent left what it handled"),
            (Pending::Deliver, None) => cover("a routing engine delivered"),
            (Pending::Stop { id }, None) => {
                self.live.remove(&id);
                for d in &mut self.desks {
                    d.handling.remove(&id);
                    d.invites.remove(&id);
                }
            }
            (Pending::Pull, None) => {
                for l in frame.lists(attr::INTERACTION) {
                    self.pulled.push(l.get("id").and_then(Value::as_str).expect("a pulled id").to_string());
                }
            }
            _ => {}
        }
    }

    /// A desktop is told of property change `change` (by its number): it
    /// must not be one that failed, before or after.
    fn told_change(&mut self, change: Option<i64>) {
        let Some(change) = change else { return };
        assert!(
            !self.failed_changes.contains(&change),
            "{}\n{}: a desktop was told of property change {change}, which failed",
            self.node.history(),
            self.ctx()
        );
        self.told_changes.insert(change);
    }

    fn desk_of(&self, origin: Origin) -> Option<usize> {
        self.desks.iter().position(|d| d.conn == Some(origin))
    }

    fn event(&mut self, origin: Origin, frame: Frame) {
        assert_eq!(frame.ref_id, 0, "{}: events carry no reference", self.ctx());
        if Some(origin) == self.stat_conn {
            if frame.msg_type == msg_type::EVENT_REPORTING_STATE {
                assert!(!self.stat.complete, "{}: reporting state after the state was complete", self.ctx());
                self.stat.take_state(&frame);
            } else {
                assert!(self.stat.complete, "{}: a reporting event before the state", self.ctx());
                self.stat.apply(&frame);
            }
            return;
        }
        if origin == self.reporter && msg_type::is_reporting(frame.msg_type) {
            let cursor = frame.get_str(attr::EVENT_CURSOR).expect("a cursor").to_string();
            let (g, nums) = cursor.split_once(':').expect("a cursor");
            let g: u64 = g.parse().unwrap();
            if g < self.node.crashes as u64 + 1 {
                // An event of an earlier run, read back from the event log:
                // each once, checked against the log (check_resumed).
                let nums: Vec<u64> = nums.split(',').map(|n| n.parse().unwrap()).collect();
                if self.old_cursor.0 != g {
                    self.old_cursor = (g, Vec::new());
                }
                self.old_cursor.1.resize(nums.len().max(self.old_cursor.1.len()), 0);
                let moved: Vec<usize> = (0..nums.len()).filter(|&s| nums[s] != self.old_cursor.1[s]).collect();
                assert_eq!(moved.len(), 1, "{}: cursor {cursor} after {:?}", self.ctx(), self.old_cursor);
                let s = moved[0];
                assert!(nums[s] > self.old_cursor.1[s], "{}: cursor {cursor} goes back", self.ctx());
                self.old_cursor.1[s] = nums[s];
                let key = (g, s as u16, nums[s]);
                assert!(self.old_received.insert(key), "{}: old event {key:?} received twice", self.ctx());
                self.reporter_cursor = Some(cursor);
                return;
            }
        }
        if origin == self.reporter {
            assert!(
                msg_type::is_reporting(frame.msg_type),
                "{}: {} to a reporter",
                self.ctx(),
                msg_type::name(frame.msg_type)
            );
            self.reporter_cursor = frame.get_str(attr::EVENT_CURSOR).map(str::to_string);
            return self.reported_event(&frame);
        }
        if !self.open.contains(&origin) {
            return;
        }
        let Some(d) = self.desk_of(origin) else { return };
        let id = frame.get_str(attr::INTERACTION_ID).map(str::to_string);
        match frame.msg_type {
            msg_type::EVENT_INVITE => {
                let id = id.expect("an invite names its interaction");
                let ticket = frame.get_int(attr::TICKET).expect("an invite has a ticket");
                let media = frame.get_str(attr::MEDIA_TYPE).expect("an invite names its media").to_string();
                // The interaction as the invitation describes it: its
                // latest property change is one the desktop is told of.
                let described = frame.get_list(attr::INTERACTION).and_then(|l| l.get("properties")?.as_list().cloned());
                self.told_change(described.and_then(|p| p.get("change")?.as_int()));
                let desk = &mut self.desks[d];
                assert!(!desk.invites.contains_key(&id), "{}: {id} offered twice to a{d}", self.node.ctx);
                desk.invites.insert(id, (ticket, media.clone()));
                // Invariant 3 as the desktop sees it: never more than the
                // configured capacity (a login may lower it, never raise it),
                // even while writes are held back: the agent's unit is freed
                // only once the desktop has been told the earlier link ended.
                let held = desk.invites.values().filter(|(_, m)| *m == media).count()
                    + desk.handling.iter().filter(|h| self.live.get(*h).is_some_and(|m| *m == media)).count();
                let cap = configured(d, &media);
                assert!(
                    held as i64 <= cap,
                    "{}\n{}: a{d} holds {held} {media} (capacity {cap}): invited to {:?}, handling {:?}",
                    self.node.history(),
                    self.node.ctx,
                    desk.invites,
                    desk.handling
                );
            }
            msg_type::EVENT_REVOKED => {
                let id = id.expect("a revoke names its interaction");
                self.desks[d].invites.remove(&id);
                self.desks[d].handling.remove(&id);
            }
            msg_type::EVENT_LOGGED_OUT => {
                self.desks[d].logged_in = false;
                self.desks[d].invites.clear();
            }
            msg_type::EVENT_PROPERTIES_CHANGED => {
                let change = frame.get_list(attr::PROPERTIES).and_then(|l| l.get("change")?.as_int());
                self.told_change(change);
            }
            other => panic!("{}: unexpected event {} to a desktop", self.ctx(), msg_type::name(other)),
        }
    }

    fn new_conn(&mut self) -> Origin {
        let n = self.n() as u64;
        let shard = self.rng().below(n) as u16;
        let o = Origin { shard, conn: self.next_conn, session: 0 };
        self.next_conn += 1;
        self.open.insert(o);
        o
    }

    fn close(&mut self, o: Origin) {
        self.open.remove(&o);
        let agent = self.bound.remove(&o);
        self.input(o.shard, Input::ConnClosed { origin: o, agent });
    }

    fn media_server(&mut self) -> Origin {
        let n = self.n() as u64;
        Origin { shard: self.rng().below(n) as u16, conn: self.media_server, session: 0 }
    }

    fn submit_request(&mut self, media: &str, id: Option<String>) -> Request {
        let mut properties = KvList::new();
        if let Some(r) = REQUIREMENTS[self.rng().below(REQUIREMENTS.len() as u64) as usize] {
            properties.push("RequiredSkills", Value::Str(r.into()));
        }
        if self.rng().chance(30) {
            properties.push("mark", Value::Str("y".into()));
        }
        let s = Submit {
            tenant: "default".into(),
            media_type: media.into(),
            interaction_type: "Inbound".into(),
            interaction_subtype: "InboundNew".into(),
            queue: if self.rng().chance(75) { "inbound" } else { "routed" }.into(),
            priority: self.rng().below(10) as i64,
            properties,
            id,
            received_at_ms: None,
        };
        Request::Submit(Box::new(s))
    }

    fn submit(&mut self, id: Option<String>) {
        let media = if self.rng().chance(70) { "chat" } else { "email" };
        let r = self.submit_request(media, id);
        let o = self.media_server();
        self.send(o, ClientType::MediaServer, r, Pending::Submit { media: media.into() });
    }

    /// A property change that moves an interaction in, out of and within
    /// views (they key and filter on `mark` and on `version`, which every
    /// change raises).
    fn mark(&mut self, id: String, from: Origin, client_type: ClientType) {
        let mut changed = KvList::new();
        let mut deleted = Vec::new();
        if self.rng().chance(60) {
            changed.push("mark", Value::Str(if self.rng().chance(50) { "y" } else { "n" }.into()));
        } else {
            deleted.push("mark".to_string());
        }
        // Numbered, so a desktop's EventPropertiesChanged names the change.
        let change = self.next_change;
        self.next_change += 1;
        changed.push("change", Value::Int(change));
        let r = Request::ChangeProperties { id, changed, deleted };
        self.send(from, client_type, r, Pending::Change { change });
    }

    /// A media server sends requests about one client-given id without
    /// waiting for the answers: submit, stop, submit again, changes, moves.
    fn pipeline(&mut self) {
        let id = CLIENT_IDS[self.rng().below(CLIENT_IDS.len() as u64) as usize].to_string();
        let o = self.media_server();
        for _ in 0..1 + self.rng().below(4) {
            match self.rng().below(6) {
                0 | 1 => {
                    let r = self.submit_request("chat", Some(id.clone()));
                    self.send(o, ClientType::MediaServer, r, Pending::Submit { media: "chat".into() });
                }
                2 | 3 => {
                    let r = Request::StopProcessing { id: id.clone(), reason: None };
                    self.send(o, ClientType::MediaServer, r, Pending::Stop { id: id.clone() });
                }
                4 => self.mark(id.clone(), o, ClientType::MediaServer),
                _ => {
                    let q = if self.rng().chance(50) { "inbound" } else { "routed" };
                    let r = Request::PlaceInQueue { id: id.clone(), queue: Some(q.into()) };
                    self.send(o, ClientType::MediaServer, r, Pending::Other);
                }
            }
        }
    }

    /// The routing engine pulls, or delivers what it pulled to an agent,
    /// or puts it back.
    fn route(&mut self) {
        let router = self.router;
        if self.pulled.is_empty() || self.rng().chance(30) {
            let view = PULL_VIEWS[self.rng().below(PULL_VIEWS.len() as u64) as usize];
            let count = 1 + self.rng().below(2) as u32;
            let r = Request::Pull { tenant: "default".into(), view: view.into(), count };
            self.send(router, ClientType::RoutingEngine, r, Pending::Pull);
            return;
        }
        let len = self.pulled.len() as u64;
        let i = self.rng().below(len) as usize;
        let id = self.pulled.swap_remove(i);
        if self.rng().chance(25) {
            let q = if self.rng().chance(50) { "routed" } else { "inbound" };
            let r = Request::PlaceInQueue { id, queue: Some(q.into()) };
            self.send(router, ClientType::RoutingEngine, r, Pending::Other);
        } else {
            let r = Request::Deliver { id, agent: format!("a{}", self.rng().below(AGENTS as u64)) };
            self.send(router, ClientType::RoutingEngine, r, Pending::Deliver);
        }
    }

    /// A login with the configured capacities, or a chosen one (possibly
    /// lower than what the agent still holds from before).
    fn login(&mut self, a: usize, conn: Option<Origin>) {
        let o = match conn {
            Some(o) if self.rng().chance(70) => o,
            Some(_) if self.rng().chance(50) => {
                // A second desktop for the same agent.
                let o = self.new_conn();
                self.desks[a].conn = Some(o);
                // A new desktop knows nothing of the other's invitations.
                self.desks[a].invites.clear();
                self.desks[a].handling.clear();
                o
            }
            _ => {
                let o = self.new_conn();
                self.desks[a].invites.clear();
                self.desks[a].handling.clear();
                if let Some(old) = self.desks[a].conn.replace(o) {
                    self.close(old);
                }
                o
            }
        };
        let place =
            if self.rng().chance(10) { format!("p{}", self.rng().below(AGENTS as u64 + 2)) } else { format!("p{a}") };
        let media = match self.rng().below(3) {
            0 => vec![],
            1 => vec![("chat".to_string(), 0)],
            _ => {
                let mut m = vec![("chat".to_string(), 1 + self.rng().below(configured(a, "chat") as u64) as u16)];
                if configured(a, "email") > 0 && self.rng().chance(50) {
                    m.push(("email".to_string(), 1));
                }
                m
            }
        };
        let r = Request::AgentLogin { tenant: "default".into(), agent: format!("a{a}"), place, media, reason: None };
        self.send(o, ClientType::AgentDesktop, r, Pending::Login { agent: a });
        if self.rng().chance(60) {
            // Ready at once, without waiting for the login's answer.
            self.settle_some();
            let r = Request::SetReady { tenant: "default".into(), agent: None, media: None, ready: true, reason: None };
            self.send(o, ClientType::AgentDesktop, r, Pending::Other);
        }
    }

    /// A media type removed, or added with some capacity (maybe below what
    /// the agent holds of it); or, for an agent that handles something, its
    /// capacity lowered at once: the media type removed and added again
    /// with capacity 1, or a logout and a login with chat capacity 1,
    /// without waiting for the answers.
    fn media_change(&mut self, a: usize, o: Origin) {
        if !self.desks[a].handling.is_empty() && self.rng().chance(50) {
            let (tenant, chat) = (String::from("default"), String::from("chat"));
            let lower = if self.rng().chance(50) {
                [
                    Request::RemoveMedia { tenant: tenant.clone(), agent: None, media: chat.clone() },
                    Request::AddMedia { tenant: tenant.clone(), agent: None, media: chat.clone(), capacity: 1 },
                ]
            } else {
                self.desks[a].logged_in = false;
                self.desks[a].invites.clear();
                let place = format!("p{a}");
                [
                    Request::AgentLogout { tenant: tenant.clone(), agent: None, reason: None },
                    Request::AgentLogin {
                        tenant: tenant.clone(),
                        agent: format!("a{a}"),
                        place,
                        media: vec![(chat.clone(), 1)],
                        reason: None,
                    },
                ]
            };
            for r in lower {
                let p =
                    if matches!(r, Request::AgentLogin { .. }) { Pending::Login { agent: a } } else { Pending::Other };
                self.send(o, ClientType::AgentDesktop, r, p);
            }
            let r = Request::SetReady { tenant, agent: None, media: None, ready: true, reason: None };
            self.send(o, ClientType::AgentDesktop, r, Pending::Other);
            return;
        }
        let media = if configured(a, "email") > 0 && self.rng().chance(40) { "email" } else { "chat" };
        let r = if self.rng().chance(50) {
            Request::RemoveMedia { tenant: "default".into(), agent: None, media: media.into() }
        } else {
            let capacity = 1 + self.rng().below(configured(a, media) as u64) as u16;
            Request::AddMedia { tenant: "default".into(), agent: None, media: media.into(), capacity }
        };
        self.send(o, ClientType::AgentDesktop, r, Pending::Other);
    }

    fn step(&mut self) {
        // Answers and handling go to an agent with something to answer or
        // handle, so that invitations go on to be accepted, held, left and
        // stopped.
        let busy: Vec<usize> = (0..AGENTS as usize)
            .filter(|&i| !self.desks[i].invites.is_empty() || !self.desks[i].handling.is_empty())
            .collect();
        let branch = self.rng().below(100);
        let any = self.rng().below(AGENTS as u64) as usize;
        let a = match branch {
            34..=59 | 67..=70 => self.rng().pick(&busy).copied().unwrap_or(any),
            _ => any,
        };
        let conn = self.desks[a].conn;
        match branch {
            0..=13 => self.submit(None),
            14..=18 => self.pipeline(),
            19..=25 => self.login(a, conn),
            26..=33 => {
                let Some(o) = conn else { return };
                let media = match self.rng().below(3) {
                    0 => None,
                    1 => Some("chat".to_string()),
                    _ => Some("email".to_string()),
                };
                let ready = self.rng().chance(80);
                let r = Request::SetReady { tenant: "default".into(), agent: None, media, ready, reason: None };
                self.send(o, ClientType::AgentDesktop, r, Pending::Other);
            }
            34..=49 => {
                let Some(o) = conn else { return };
                let Some((id, (ticket, _))) = self.desks[a].invites.iter().next().map(|(k, v)| (k.clone(), v.clone()))
                else {
                    return;
                };
                self.desks[a].invites.remove(&id);
                let ticket = Some(ticket as u64);
                if self.rng().chance(80) {
                    let r = Request::Accept { id: id.clone(), ticket };
                    self.send(o, ClientType::AgentDesktop, r, Pending::Accept { agent: a, id, from: o });
                } else {
                    let r = Request::Reject { id, ticket, reason: None };
                    self.send(o, ClientType::AgentDesktop, r, Pending::Other);
                }
            }
            50..=59 => {
                let Some(o) = conn else { return };
                let Some(id) = self.desks[a].handling.iter().next().cloned() else { return };
                match self.rng().below(5) {
                    0 => {
                        self.desks[a].handling.remove(&id);
                        let r = Request::LeaveInteraction { id, queue: None };
                        self.send(o, ClientType::AgentDesktop, r, Pending::Leave);
                    }
                    1 => {
                        let r = if self.rng().chance(50) { Request::Hold { id } } else { Request::Resume { id } };
                        self.send(o, ClientType::AgentDesktop, r, Pending::Other);
                    }
                    2 => self.mark(id, o, ClientType::AgentDesktop),
                    _ => {
                        self.desks[a].handling.remove(&id);
                        let r = Request::StopProcessing { id: id.clone(), reason: None };
                        self.send(o, ClientType::AgentDesktop, r, Pending::Stop { id });
                    }
                }
            }
            60..=62 => {
                // A desktop drops.
                if let Some(o) = self.desks[a].conn.take() {
                    self.close(o);
                }
            }
            63..=64 => {
                let Some(o) = conn else { return };
                let r = Request::AgentLogout { tenant: "default".into(), agent: None, reason: None };
                self.desks[a].logged_in = false;
                self.desks[a].invites.clear();
                self.send(o, ClientType::AgentDesktop, r, Pending::Other);
            }
            65..=66 => {
                let Some(o) = conn else { return };
                let on = self.rng().chance(40);
                let r = Request::SetDoNotDisturb { tenant: "default".into(), agent: None, on };
                self.send(o, ClientType::AgentDesktop, r, Pending::Other);
            }
            67..=70 => {
                let Some(o) = conn else { return };
                self.media_change(a, o);
            }
            71..=73 => {
                // An operator stops or moves any live interaction.
                let ids: Vec<String> = self.live.keys().cloned().collect();
                let Some(id) = self.rng().pick(&ids).cloned() else { return };
                let op = Origin { shard: 0, conn: 100_001, session: 0 };
                if self.rng().chance(50) {
                    let r = Request::StopProcessing { id: id.clone(), reason: None };
                    self.send(op, ClientType::Operator, r, Pending::Stop { id });
                } else {
                    let q = ["inbound", "routed", "done"][self.rng().below(3) as usize];
                    let r = Request::PlaceInQueue { id, queue: Some(q.into()) };
                    self.send(op, ClientType::Operator, r, Pending::Other);
                }
            }
            74..=77 => {
                // Half the time one waiting in the strategy's view, with an
                // agent turning ready at once: it is then offered while the
                // change is in flight, and its invitation must not describe
                // the change if that fails.
                let waiting = if self.rng().chance(50) { self.waiting_in_strategy_view() } else { Vec::new() };
                let ids: Vec<String> =
                    if waiting.is_empty() { self.live.keys().cloned().collect() } else { waiting.clone() };
                let Some(id) = self.rng().pick(&ids).cloned() else { return };
                let o = self.media_server();
                self.mark(id, o, ClientType::MediaServer);
                let desks: Vec<Origin> = self.desks.iter().filter(|d| d.logged_in).filter_map(|d| d.conn).collect();
                if let (false, Some(&desk)) = (waiting.is_empty(), self.rng().pick(&desks)) {
                    cover("an agent turns ready while a waiting interaction's change is in flight");
                    let r = Request::SetReady {
                        tenant: "default".into(),
                        agent: None,
                        media: None,
                        ready: true,
                        reason: None,
                    };
                    self.send(desk, ClientType::AgentDesktop, r, Pending::Other);
                }
            }
            78..=83 => self.route(),
            // Some of what is in flight moves on; the rest waits.
            84..=86 => self.settle_some(),
            _ if self.rng().chance(5) => self.resume_reporter(),
            _ if self.rng().chance(4) => self.subscribe_stat(),
            _ if self.rng().chance(3) => self.crash(),
            _ => {
                // Time passes; writes held back may come back.
                let ms = 1 + self.rng().below(60) as i64;
                self.node.advance(ms);
                for s in 0..self.n() {
                    self.input(s, Input::Tick);
                }
                self.node.release_held(25);
            }
        }
    }

    /// The interactions waiting in the view the built-in strategy routes.
    fn waiting_in_strategy_view(&self) -> Vec<String> {
        let catalog = self.node.catalog().clone();
        let view = catalog.tenant_at(0).view_idx(self.strategy_view).expect("the strategy's view");
        self.node.shards.iter().flat_map(|s| s.view_ids(0, view)).map(|id| id.to_string()).collect()
    }

    /// The Stat Server (re)subscribes on a new connection, with the state
    /// first: its model starts over from that state (snapshot, then
    /// stream).
    fn subscribe_stat(&mut self) {
        if let Some(old) = self.stat_conn.take() {
            self.node.outbox.retain(|(_, o)| !matches!(o, Output::Event { origin, .. } if *origin == old));
            self.close(old);
        }
        let c = self.new_conn();
        self.stat_conn = Some(c);
        self.stat = Stat { failed_before: self.node.failed_writes, ..Stat::default() };
        let subscribe = Request::Subscribe { tenant: None, cursor: None, with_state: true };
        self.send(c, ClientType::ReportingEngine, subscribe, Pending::Other);
    }

    /// The reporter's connection drops, losing what was on its way to it; a
    /// new one subscribes after the last event it received. Every check of
    /// the stream goes on as if nothing happened: it must get every event
    /// it missed, once.
    fn resume_reporter(&mut self) {
        let Some(cursor) = self.reporter_cursor.clone() else { return };
        let old = self.reporter;
        if self.rng().chance(40) {
            // On the same connection: unsubscribe, and once that is
            // answered subscribe again after the last event read. Events of
            // the ended subscription still on their way must not reach the
            // connection after the answer, nor after the new subscription
            // started.
            cover("a reporter resubscribed on its connection");
            self.send(old, ClientType::ReportingEngine, Request::Unsubscribe, Pending::Resubscribe { conn: old });
            return;
        }
        self.node.outbox.retain(|(_, o)| !matches!(o, Output::Event { origin, .. } if *origin == old));
        self.close(old);
        cover("a reporter resumed after a lost connection");
        let r = self.new_conn();
        self.reporter = r;
        let subscribe = Request::Subscribe { tenant: None, cursor: Some(cursor), with_state: false };
        self.reporter_live = false;
        self.send(r, ClientType::ReportingEngine, subscribe, Pending::ReporterSubscribe);
    }

    /// Every shard stops; the node restarts from the database, maybe with
    /// another shard count. Connections, logins and invitations are gone:
    /// desktops log in again, the reporter subscribes again.
    fn crash(&mut self) {
        self.node.check_event_log();
        let shards = 1 + self.rng().below(4) as u16;
        self.node.crash_and_reload(shards);
        self.waiting.clear();
        self.bound.clear();
        self.open.clear();
        self.pulled.clear();
        for d in &mut self.desks {
            *d = Desk::default();
        }
        self.live.clear();
        self.reported.clear();
        // A change answered as failed may be in the database after a crash
        // (protocol.md 6.3): what the restart loads is what desktops see.
        self.failed_changes.clear();
        // Events are not kept in memory across a restart: without the event
        // log the reporter starts afresh; with it, it resumes from the log.
        let resume = self.reporter_cursor.take().filter(|_| self.node.shards[0].params().event_log);
        self.resumed_from = None;
        let catalog = self.node.catalog().clone();
        for s in &self.node.shards {
            for ix in s.interactions() {
                let media = catalog.tenant_at(ix.tenant).media[ix.media as usize].name.clone();
                self.live.insert(ix.id.to_string(), media);
                // Nothing is reported for a restart: the stream goes on
                // from where the database left each interaction.
                self.reported.insert(ix.id.to_string(), Reported::Queued);
            }
        }
        self.media_server += 1;
        self.connect_clients(resume);
    }

    /// Ids some unanswered request names.
    fn busy(&self) -> BTreeSet<String> {
        self.waiting.values().filter_map(|(_, id)| id.clone()).collect()
    }

    /// Once every event is out: the reporter's model (the state it got
    /// and every event since) is what memory holds, if no write failed
    /// since it subscribed. (A known limit, docs/protocol.md 7.34: a stop
    /// made while a move of the same interaction was being committed names
    /// the move's queue; if the move fails and the interaction was counted
    /// in the state, not placed by an event since, the client cannot tell
    /// which queue to count it out of.)
    fn check_stat(&self) {
        let quiet = self.node.writes.is_empty() && self.node.shards.iter().all(|s| s.unreleased_events() == 0);
        if !quiet || !self.stat.complete || self.node.outbox.iter().any(|(_, o)| matches!(o, Output::Event { .. })) {
            return;
        }
        if self.node.failed_writes != self.stat.failed_before {
            return;
        }
        let catalog = self.node.catalog().clone();
        let t = catalog.tenant_at(0);
        let mut depth: BTreeMap<String, i64> = t.queues.iter().map(|q| (q.name.clone(), 0)).collect();
        for s in &self.node.shards {
            for ix in s.interactions().filter(|ix| ix.visible) {
                if let Some(q) = ix.queue() {
                    *depth.get_mut(&t.queues[q as usize].name).expect("a queue") += 1;
                }
            }
        }
        let mut agents = BTreeMap::new();
        for i in 0..AGENTS {
            let a = AgentRef { tenant: 0, agent: i };
            let v = self.node.shards[home_of(a, self.n()) as usize].agent_view(a).expect("its home");
            if v.logged_in {
                let media = v
                    .media
                    .iter()
                    .map(|&(m, cap, ready)| (t.media[m as usize].name.clone(), (cap as i64, ready)))
                    .collect();
                agents.insert(t.agents[i as usize].login_id.clone(), (v.dnd, media));
            }
        }
        assert_eq!(self.stat.depth, depth, "{}: queue depths by the reporting state and events", self.ctx());
        assert_eq!(self.stat.agents, agents, "{}: agents by the reporting state and events", self.ctx());
        cover("the reporting state and the events since agree with memory");
    }

    /// After a resume across a crash, once quiet: the reporter received,
    /// once each, exactly the events of earlier runs that the event log
    /// holds after the cursor it resumed with.
    fn check_resumed(&self) {
        let Some(from) = &self.resumed_from else { return };
        if !self.node.writes.is_empty() || self.node.outbox.iter().any(|(_, o)| matches!(o, Output::Event { .. })) {
            return;
        }
        let (g, nums) = from.split_once(':').expect("a cursor");
        let after = ixn_shard::report::Cursor {
            generation: g.parse().unwrap(),
            seqs: nums.split(',').map(|n| n.parse().unwrap()).collect(),
        };
        let current = self.node.crashes as u64 + 1;
        let upto = ixn_shard::report::Cursor { generation: current, seqs: Vec::new() };
        let expected: BTreeSet<(u64, u16, u64)> = self
            .node
            .logged
            .keys()
            .map(|&(run, s, q)| (run as u64 + 1, s, q))
            .filter(|&(g, s, q)| g < current && sim::in_log_range(&after, &upto, g, s, q))
            .collect();
        assert_eq!(self.old_received, expected, "{}: events of earlier runs received after resuming", self.ctx());
    }

    /// The checks that must hold once the node is quiet.
    fn check(&self) {
        let ctx = self.ctx();
        self.check_resumed();
        self.check_stat();
        self.node.check_event_log();
        if !self.node.released.is_empty() {
            cover("the event log held every event sent");
        }
        if !self.node.holds() {
            assert!(self.waiting.is_empty(), "{ctx}: unanswered requests {:?}", self.waiting);
        }
        let catalog = self.node.catalog().clone();
        let t = catalog.tenant_at(0);
        // Who holds what, by the owners' links and by the agents' homes.
        let mut linked: BTreeMap<String, (AgentRef, bool)> = BTreeMap::new();
        for s in &self.node.shards {
            assert_eq!(s.pending_reservations(), 0, "{ctx}: reservations left in flight");
            for (id, agent, handling) in s.agent_links() {
                assert!(linked.insert(id.clone(), (agent, handling)).is_none(), "{ctx}: {id} linked twice");
            }
        }
        // A link that ended still holds the agent's unit until its desktops
        // are told, behind the interaction's writes in flight.
        let releasing: BTreeSet<(String, AgentRef, u64)> =
            self.node.shards.iter().flat_map(|s| s.releases_in_flight()).collect();
        let mut held: BTreeMap<String, (AgentRef, bool)> = BTreeMap::new();
        for i in 0..AGENTS {
            let a = AgentRef { tenant: 0, agent: i };
            let v = self.node.shards[home_of(a, self.n()) as usize].agent_view(a).expect("its home");
            for (id, _, accepted, ticket) in &v.held {
                if releasing.contains(&(id.clone(), a, *ticket)) {
                    cover("an agent's unit freed only after its desktop is told");
                    continue;
                }
                // Invariant 2: one agent at a time.
                assert!(held.insert(id.clone(), (a, *accepted)).is_none(), "{ctx}: {id} held by two agents");
            }
            // Invariant 3: within the configured capacity, whatever the
            // capacity of the current login (the harness checks after
            // every input that holdings grow only below it).
            for (m, media) in ["chat", "email"].into_iter().enumerate() {
                let n = v.held.iter().filter(|(_, hm, _, _)| *hm == m as u16).count() as i64;
                assert!(n <= configured(i as usize, media), "{ctx}: a{i} holds {n} {media}");
                if v.media.iter().any(|&(lm, cap, _)| lm == m as u16 && (cap as i64) < n) {
                    cover("an agent holds more than its capacity now");
                }
            }
        }
        assert_eq!(linked, held, "{ctx}: owners' links and agents' holds differ");
        // Invariants 1 and 7: what was acknowledged is in memory.
        self.node.check_acked_in_memory(&self.busy());
        // The stream agrees: live interactions are not reported stopped.
        // A shard sends its events in order: while an earlier one waits
        // for its write, a committed submission's may wait too; and none
        // comes while the reporter's subscription is being set up.
        let shards = if self.reporter_live { &self.node.shards[..] } else { &[] };
        for s in shards.iter().filter(|s| s.unreleased_events() == 0) {
            for ix in s.interactions().filter(|ix| ix.visible) {
                let r = self.reported.get(&*ix.id);
                assert!(r.is_some_and(|r| *r != Reported::Stopped), "{ctx}: live {} reported as {r:?}", ix.id);
            }
        }
        // Routing: nothing waits in the view while an able agent is idle.
        let view = t.view_idx(self.strategy_view).unwrap();
        for s in &self.node.shards {
            for id in s.view_ids(0, view) {
                let ix = s.get(&id).expect("a view entry is live");
                let need = ix.properties().get("RequiredSkills").map(|v| parse_skills(v).unwrap()).unwrap_or_default();
                for i in 0..AGENTS {
                    let a = AgentRef { tenant: 0, agent: i };
                    let v = self.node.shards[home_of(a, self.n()) as usize].agent_view(a).unwrap();
                    let free = v.media.iter().any(|&(m, cap, ready)| {
                        m == ix.media && ready && (v.held.iter().filter(|(_, hm, _, _)| *hm == m).count() as u16) < cap
                    });
                    let able = v.logged_in
                        && v.connections > 0
                        && !v.dnd
                        && free
                        && skills_meet(&t.agents[i as usize].skills, &need);
                    assert!(!able, "{ctx}: {id} waits while a{i} could take it ({v:?})");
                }
            }
        }
    }
}

fn run(seed: u64) {
    let n = 1 + (seed % 4) as u16;
    let mut sim = Sim::new(n, seed);
    for _ in 0..STEPS {
        sim.node.advance(0);
        sim.step();
        sim.node.check_unrevealed();
        // Sometimes the next step comes before the node is quiet, so
        // requests race with writes and messages still in flight.
        if sim.rng().chance(70) {
            sim.settle();
            sim.check();
        }
    }
    // Writes made while settling (a resumed subscription's log read, say)
    // may be held back in turn: release until none is.
    for _ in 0..1000 {
        sim.node.release_held(100);
        sim.settle();
        if !sim.node.holds() {
            break;
        }
    }
    sim.check();
    assert!(sim.waiting.is_empty(), "{}: unanswered requests {:?}", sim.ctx(), sim.waiting);
    sim.crash();
}

#[test]
fn agents_across_shards_keep_invariants_2_3_and_7() {
    let situations = [
        "an interaction handled",
        "an agent left what it handled",
        "a routing engine delivered",
        "an agent holds more than its capacity now",
        "a write failed",
        "a write held back",
        "a write in flight landed at a crash",
        "a reporter resumed after a lost connection",
        "a reporter resubscribed on its connection",
        "the event log held every event sent",
        "the reporting state and the events since agree with memory",
        "a reporter resumed across a crash from the event log",
    ];
    run_seeds("agent_simulation", "agents_across_shards_keep_invariants_2_3_and_7", 100, &situations, run);
}

/// The simulation must be able to fail: an agent configured with capacity
/// 1 never gets a second chat while it holds one, and the check that
/// catches a waiting interaction does fire when the strategy is absent.
#[test]
fn the_routing_check_fails_without_a_strategy() {
    let mut t = Tenant::new("default");
    t.add_media("chat", true).unwrap();
    t.add_process("bp", &["inbound"]).unwrap();
    t.add_agent("a0", &[], &[("chat", 1)], &[]).unwrap();
    t.add_place("p0").unwrap();
    let catalog = Arc::new(Catalog::new(vec![t], true).unwrap());
    let mut shard = Shard::new(ShardParams::new(1, 0, 1), catalog.clone());
    let mut out = Vec::new();
    let desk = Origin { shard: 0, conn: 1, session: 0 };
    let caller = |ref_id, agent| Caller {
        origin: desk,
        ref_id,
        client_type: ClientType::AgentDesktop,
        client_name: "d".into(),
        agent,
        tenants: ixn_shard::machine::TenantScope::all(),
    };
    let login = Request::AgentLogin {
        tenant: "default".into(),
        agent: "a0".into(),
        place: "p0".into(),
        media: vec![],
        reason: None,
    };
    shard.handle(T0, Input::Request { caller: caller(1, None), request: login }, &mut out);
    let mut pending: VecDeque<Input> = VecDeque::new();
    let drain = |shard: &mut Shard, out: &mut Vec<Output>, pending: &mut VecDeque<Input>| loop {
        for o in out.drain(..) {
            match o {
                Output::Peer { msg, .. } => pending.push_back(Input::Peer { from: 0, msg }),
                Output::Store { token, .. } => pending.push_back(Input::StorageDone { token, ok: true }),
                _ => {}
            }
        }
        let Some(i) = pending.pop_front() else { break };
        shard.handle(T0, i, out);
    };
    drain(&mut shard, &mut out, &mut pending);
    let a = Some(AgentRef { tenant: 0, agent: 0 });
    let ready = Request::SetReady { tenant: "default".into(), agent: None, media: None, ready: true, reason: None };
    shard.handle(T0, Input::Request { caller: caller(2, a), request: ready }, &mut out);
    drain(&mut shard, &mut out, &mut pending);
    let s = Submit {
        tenant: "default".into(),
        media_type: "chat".into(),
        interaction_type: "Inbound".into(),
        interaction_subtype: "InboundNew".into(),
        queue: "inbound".into(),
        priority: 0,
        properties: KvList::new(),
        id: None,
        received_at_ms: None,
    };
    let ms = Caller {
        origin: Origin { shard: 0, conn: 2, session: 0 },
        ref_id: 3,
        client_type: ClientType::MediaServer,
        client_name: "m".into(),
        agent: None,
        tenants: ixn_shard::machine::TenantScope::all(),
    };
    shard.handle(T0, Input::Request { caller: ms, request: Request::Submit(Box::new(s)) }, &mut out);
    drain(&mut shard, &mut out, &mut pending);
    // No strategy: it waits in the view although a0 is ready and free,
    // which is exactly what the simulation's routing check refuses.
    let view = catalog.tenant_at(0).queues[0].views[0];
    assert_eq!(shard.view_ids(0, view).len(), 1);
    let v = shard.agent_view(AgentRef { tenant: 0, agent: 0 }).unwrap();
    assert!(v.logged_in && v.connections == 1 && v.media == vec![(0, 1, true)] && v.held.is_empty());
}
