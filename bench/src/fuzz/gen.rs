//! Valid requests of every message type, chosen for each kind of client
//! from what the fuzzer has seen so far: interaction ids from answers and
//! events, client-given ids from a small pool (so they collide and are
//! reused), the configured names (and a few unknown ones), invitations,
//! pulled interactions and snapshots of the connection.
//!
//! "Valid" means well encoded, with attributes of the right types: the
//! server may still refuse a request (an unknown queue, a locked
//! interaction, a count out of range), and is meant to. The mutations that
//! break the encoding are in `mutate.rs`.

use std::collections::VecDeque;

use ixn_shard::proto::{ClientType, Request, Submit};
use ixn_shard::{KvList, Value};

use super::rng::Rng;
use super::setup::{Tenant, CLIENTS, MAX_PROPERTIES, TENANTS};

/// Interaction ids remembered (the most recent).
const KNOWN_IDS: usize = 256;
/// Live interactions the fuzzer keeps the server around: past it, media
/// servers submit less and routers and operators sweep (take interactions
/// and stop them), so that a long run stays in one regime instead of
/// growing until every search takes seconds.
pub const LIVE_TARGET: i64 = 2000;

/// The kinds of connection the fuzzer drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    MediaServer,
    Desktop,
    Router,
    Reporter,
    Proxy,
    Operator,
    /// A connection that only checks that its shard answers (oracle a).
    Control,
}

impl Role {
    pub const FUZZING: [Role; 6] =
        [Role::MediaServer, Role::Desktop, Role::Router, Role::Reporter, Role::Proxy, Role::Operator];

    pub fn client_type(self) -> ClientType {
        match self {
            Role::MediaServer => ClientType::MediaServer,
            Role::Desktop => ClientType::AgentDesktop,
            Role::Router => ClientType::RoutingEngine,
            Role::Reporter => ClientType::ReportingEngine,
            Role::Proxy => ClientType::Proxy,
            Role::Operator | Role::Control => ClientType::Operator,
        }
    }

    /// The configured client (name, password) this role registers as.
    pub fn client(self) -> (&'static str, &'static str) {
        let i = match self {
            Role::MediaServer => 0,
            Role::Desktop => 1,
            Role::Router => 2,
            Role::Reporter => 3,
            Role::Proxy => 4,
            Role::Operator => 5,
            Role::Control => 6,
        };
        (CLIENTS[i].0, CLIENTS[i].2)
    }
}

/// What the fuzzer does with a request's answer, beyond checking it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Follow {
    Nothing,
    Register,
    /// Remember the id of the EventAck.
    Submit,
    Login {
        tenant: &'static str,
        agent: &'static str,
    },
    Logout,
    /// Handling begins at the EventAck.
    Accept {
        id: String,
    },
    /// The interaction is no longer the router's to deliver.
    Routed {
        id: String,
    },
    /// Remember the snapshot.
    Snapshot,
    Release {
        snapshot: u64,
    },
    /// Remember where the interaction went.
    Workbin {
        id: String,
        tenant: &'static str,
        workbin: &'static str,
        owner: String,
    },
    Subscribe,
    Unsubscribe,
    /// Stop every interaction the answer lists (keeps the population bounded).
    Sweep,
    /// A registration that opens this session of the connection
    /// (protocol 6.9): open from its EventAck on.
    OpenSession(u32),
    /// RequestCloseSession of this session: closed from its EventAck on.
    CloseSession(u32),
}

/// One request to send and what to do with its answer.
pub struct Planned {
    pub request: Request,
    pub follow: Follow,
}

impl Planned {
    fn new(request: Request) -> Planned {
        Planned { request, follow: Follow::Nothing }
    }
    pub fn with(request: Request, follow: Follow) -> Planned {
        Planned { request, follow }
    }
}

/// What the fuzzer knows about the server's state, shared by connections.
#[derive(Default)]
pub struct World {
    /// Whether submissions may carry client-given ids (`--no-client-ids`
    /// leaves them out, to get past a known fault of theirs).
    pub client_ids: bool,
    /// More interactions live than [`LIVE_TARGET`]: submit less, sweep.
    pub crowded: bool,
    ids: VecDeque<String>,
    /// Interactions placed in an agent workbin: (id, tenant, workbin, owner).
    workbin_items: VecDeque<(String, &'static str, &'static str, String)>,
    /// Reporting cursors seen lately (EventCursor), to resume from.
    cursors: VecDeque<String>,
}

impl World {
    pub fn new(client_ids: bool) -> World {
        World { client_ids, ..World::default() }
    }

    pub fn remember_cursor(&mut self, cursor: &str) {
        if self.cursors.len() == 64 {
            self.cursors.pop_front();
        }
        self.cursors.push_back(cursor.to_string());
    }

    /// A cursor to subscribe after: none mostly, else one seen (recent or
    /// old), or one bent out of shape.
    pub fn some_cursor(&self, rng: &mut Rng) -> Option<String> {
        let seen = |rng: &mut Rng| {
            (!self.cursors.is_empty()).then(|| self.cursors[rng.below(self.cursors.len() as u64) as usize].clone())
        };
        match rng.weighted(&[60, 25, 5, 5, 5]) {
            1 => seen(rng),
            2 => seen(rng).map(|c| c.replace(',', ",9")),
            3 => seen(rng).map(|c| format!("1{c}")),
            4 => Some(["", ":", "0:", "1:2,3", "x:1", "18446744073709551615:0,0"][rng.below(6) as usize].to_string()),
            _ => None,
        }
    }

    pub fn remember(&mut self, id: &str) {
        if id.is_empty() || self.ids.iter().rev().take(16).any(|k| k == id) {
            return;
        }
        if self.ids.len() == KNOWN_IDS {
            self.ids.pop_front();
        }
        self.ids.push_back(id.to_string());
    }

    pub fn remember_workbin(&mut self, id: String, tenant: &'static str, workbin: &'static str, owner: String) {
        if self.workbin_items.len() == 64 {
            self.workbin_items.pop_front();
        }
        self.workbin_items.push_back((id, tenant, workbin, owner));
    }

    /// An interaction id: mostly one seen lately, sometimes a client-given
    /// one of the pool, an invalid one or an unknown one.
    pub fn some_id(&self, rng: &mut Rng) -> String {
        match rng.weighted(&[80, 12, 4, 4]) {
            0 if !self.ids.is_empty() => {
                // Recent ids are the live ones: lean towards them.
                let n = self.ids.len();
                let span = rng.range(1, n as u64);
                let back = rng.below(span) as usize;
                self.ids[n - 1 - back].clone()
            }
            0 | 1 if self.client_ids => client_id(rng),
            0..=2 => odd_id(rng),
            _ => "0NC0PVP200000401".to_string(),
        }
    }
}

/// A client-given id from a small pool, so submissions collide (35), stop
/// and reuse them.
pub fn client_id(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => format!("px-{}", rng.range(1, 3)),
        1 => format!("cid.{}", rng.range(1, 12)),
        2 => format!("c:{}_{}", rng.below(4), rng.below(4)),
        _ => format!("px-{}", rng.range(1, 60)),
    }
}

/// Ids that break the rules of client-given ids (error 36) or no live
/// interaction has.
fn odd_id(rng: &mut Rng) -> String {
    match rng.below(7) {
        0 => String::new(),
        1 => "has space".into(),
        2 => "x".repeat(65),
        3 => "0123456789ABCDEF".into(),
        4 => "ünïcode".into(),
        5 => "a/b".into(),
        _ => "x".repeat(64),
    }
}

fn tenant(rng: &mut Rng) -> &'static Tenant {
    if rng.chance(0.85) {
        &TENANTS[0]
    } else {
        &TENANTS[1]
    }
}

/// A tenant name: mostly configured, sometimes not (30).
fn tenant_name(rng: &mut Rng) -> String {
    if rng.chance(0.04) {
        "no-such-tenant".into()
    } else {
        tenant(rng).name.into()
    }
}

/// A name from `names`, sometimes an unknown one.
fn name_of(rng: &mut Rng, names: &[&str], unknown: &str) -> String {
    if rng.chance(0.05) {
        unknown.into()
    } else {
        rng.pick(names).to_string()
    }
}

fn media_of(rng: &mut Rng, t: &Tenant) -> String {
    match rng.below(20) {
        0 if !t.disabled_media.is_empty() => rng.pick(t.disabled_media).to_string(),
        1 => "fax".into(),
        _ => rng.pick(t.media).to_string(),
    }
}

fn agent_of(rng: &mut Rng, t: &Tenant) -> String {
    name_of(rng, &t.agents.iter().map(|a| a.0).collect::<Vec<_>>(), "nobody")
}

fn any_agent(rng: &mut Rng) -> String {
    let t = tenant(rng);
    agent_of(rng, t)
}

fn short_text(rng: &mut Rng) -> String {
    rng.pick(&["en", "fr", "de", "vip", "std", "a", "", "hello world", "ä-ö", "x'y", "%_"]).to_string()
}

/// A property value; skills properties mostly parse.
fn property_value(rng: &mut Rng, key: &str, depth: usize) -> Value {
    if key == "RequiredSkills" || key == "Skills" {
        return match rng.below(10) {
            0 => Value::Str("english:11".into()),
            1 => Value::Int(5),
            2 => {
                let mut l = KvList::new();
                l.push("english", Value::Int(rng.range(1, 10) as i64));
                Value::List(l)
            }
            3 => Value::Str(String::new()),
            _ => {
                Value::Str(rng.pick(&["english:3", "english:9", "billing", "english:2,billing", "english"]).to_string())
            }
        };
    }
    match rng.below(if depth < 3 { 9 } else { 8 }) {
        0..=2 => Value::Str(short_text(rng)),
        3 | 4 => Value::Int(rng.range(0, 20) as i64),
        5 => Value::Int(*rng.pick(&[i64::MIN, i64::MAX, -1, 0, 1 << 40])),
        6 => {
            let n = rng.below(16) as usize;
            Value::Bin(rng.bytes(n))
        }
        7 => Value::Str("s".repeat(rng.range(100, 2000) as usize)),
        _ => Value::List(properties(rng, depth + 1)),
    }
}

/// A property list: usually a few of the keys the views read.
pub fn properties(rng: &mut Rng, depth: usize) -> KvList {
    const KEYS: &[&str] =
        &["lang", "segment", "score", "note", "RequiredSkills", "Skills", "blob", "nested", "odd key"];
    let mut l = KvList::new();
    for _ in 0..rng.below(5) {
        let key = *rng.pick(KEYS);
        let value = match key {
            "lang" if rng.chance(0.8) => Value::Str(rng.pick(&["en", "fr", "de"]).to_string()),
            "segment" if rng.chance(0.8) => Value::Str(rng.pick(&["vip", "std"]).to_string()),
            "score" if rng.chance(0.8) => Value::Int(rng.range(0, 100) as i64),
            _ => property_value(rng, key, depth),
        };
        // Repeated keys are refused (14): mostly avoid them.
        if l.get(key).is_none() || rng.chance(0.05) {
            l.push(key, value);
        }
    }
    if rng.chance(0.02) {
        l.push("", Value::Int(1));
    }
    if rng.chance(0.02) {
        // Around the bound on keys per interaction (max-properties-per-interaction).
        for k in 0..rng.range(MAX_PROPERTIES as u64 - 10, MAX_PROPERTIES as u64 + 10) {
            l.push(format!("k{k}"), Value::Int(k as i64));
        }
    }
    l
}

fn condition(rng: &mut Rng) -> String {
    const VALID: &[&str] = &[
        "id IS NOT NULL",
        "priority >= 5",
        "lang = 'en' AND version > 1",
        "segment IN ('vip', 'std')",
        "queue = 'work' OR workbin IS NOT NULL",
        "note LIKE 'a%'",
        "NOT (priority < 0)",
        "score > 10 AND media_type = 'chat'",
        "version >= 2",
        "\"odd key\" = 'x' OR lang IS NULL",
        "submitted_at > 0 AND queue != 'done'",
        "locked_by IS NULL",
    ];
    const INVALID: &[&str] = &["priority == 5", "", "(((", "AND", "x = 'open", "priority >= 'a' OR", "a IN ()"];
    match rng.below(20) {
        0 => rng.pick(INVALID).to_string(),
        1 => format!("{}x = 1{}", "(".repeat(40), ")".repeat(40)),
        2 => format!("note = '{}'", "n".repeat(9000)),
        _ => rng.pick(VALID).to_string(),
    }
}

fn count(rng: &mut Rng, usual: u64) -> u32 {
    match rng.below(25) {
        0 => 0,
        1 => 100_000,
        _ => rng.range(1, usual) as u32,
    }
}

fn submit(rng: &mut Rng, id: Option<String>) -> Request {
    let t = tenant(rng);
    let queue = match rng.below(30) {
        0 => "no-such-queue".to_string(),
        _ => rng.pick(&t.queues[..t.queues.len().min(4)]).to_string(),
    };
    let mut s = Submit {
        tenant: if rng.chance(0.03) { "no-such-tenant".into() } else { t.name.into() },
        media_type: media_of(rng, t),
        interaction_type: rng.pick(&["Inbound", "Outbound", "Internal"]).to_string(),
        interaction_subtype: rng.pick(&["InboundNew", "OutboundReply", "InternalCollaboration"]).to_string(),
        queue,
        priority: if rng.chance(0.05) { *rng.pick(&[i64::MIN, i64::MAX, -7]) } else { rng.range(0, 9) as i64 },
        properties: properties(rng, 0),
        id,
        received_at_ms: rng.chance(0.2).then(|| rng.range(0, 1 << 42) as i64),
    };
    if rng.chance(0.02) {
        s.interaction_type = if rng.chance(0.5) { String::new() } else { "T".repeat(300) };
    }
    Request::Submit(Box::new(s))
}

fn submit_planned(rng: &mut Rng, id: Option<String>) -> Planned {
    Planned::with(submit(rng, id), Follow::Submit)
}

fn change(rng: &mut Rng, id: String) -> Request {
    let changed = properties(rng, 0);
    let deleted = if rng.chance(0.3) {
        vec![rng.pick(&["lang", "segment", "score", "note", "nope"]).to_string()]
    } else {
        Vec::new()
    };
    Request::ChangeProperties { id, changed, deleted }
}

/// A queue name of some tenant, sometimes an unknown one.
fn queue_name(rng: &mut Rng) -> String {
    let t = tenant(rng);
    name_of(rng, t.queues, "no-such-queue")
}

fn place(rng: &mut Rng, id: String) -> Request {
    let queue = if rng.chance(0.3) { None } else { Some(queue_name(rng)) };
    Request::PlaceInQueue { id, queue }
}

fn workbin_for(rng: &mut Rng, id: String, agent: Option<&str>) -> Planned {
    let t = tenant(rng);
    let workbin = *rng.pick(t.workbins);
    let owner = match (agent, rng.below(12)) {
        (_, 0) => String::new(),
        (_, 1) => "o".repeat(256),
        (Some(a), 2..=7) => a.to_string(),
        _ => rng.pick(t.agents).0.to_string(),
    };
    let follow = Follow::Workbin { id: id.clone(), tenant: t.name, workbin, owner: owner.clone() };
    Planned::with(Request::PlaceInWorkbin { id, workbin: workbin.into(), owner }, follow)
}

fn stop(rng: &mut Rng, id: String) -> Request {
    Request::StopProcessing { id, reason: rng.chance(0.5).then(|| short_text(rng)) }
}

fn pull(rng: &mut Rng) -> Request {
    let t = tenant(rng);
    Request::Pull { tenant: t.name.into(), view: name_of(rng, t.views, "no-such-view"), count: count(rng, 5) }
}

fn find(rng: &mut Rng) -> Request {
    let tenant = rng.chance(0.5).then(|| tenant_name(rng));
    Request::FindInteractions { tenant, condition: condition(rng), limit: count(rng, 200) }
}

fn take_snapshot(rng: &mut Rng) -> Planned {
    let tenant = rng.chance(0.5).then(|| tenant_name(rng));
    let limit = rng.chance(0.5).then(|| count(rng, 40));
    Planned::with(
        Request::TakeSnapshot { tenant, condition: condition(rng), lock: rng.chance(0.3), limit },
        Follow::Snapshot,
    )
}

fn snapshot_page(rng: &mut Rng, snapshots: &[u64]) -> Request {
    let snapshot = if snapshots.is_empty() || rng.chance(0.1) { rng.below(1000) } else { *rng.pick(snapshots) };
    Request::GetSnapshotInteractions {
        snapshot,
        start: if rng.chance(0.1) { u32::MAX } else { rng.below(20) as u32 },
        count: count(rng, 20),
    }
}

fn release(rng: &mut Rng, snapshots: &[u64]) -> Planned {
    let snapshot = if snapshots.is_empty() || rng.chance(0.1) { rng.below(1000) } else { *rng.pick(snapshots) };
    Planned::with(Request::ReleaseSnapshot { snapshot }, Follow::Release { snapshot })
}

fn workbin_content(rng: &mut Rng) -> Request {
    let t = tenant(rng);
    Request::GetWorkbinContent {
        tenant: t.name.into(),
        workbin: name_of(rng, t.workbins, "no-such-workbin"),
        owner: rng.pick(t.agents).0.into(),
    }
}

fn agent_state(rng: &mut Rng) -> Request {
    let t = tenant(rng);
    Request::GetAgentState { tenant: t.name.into(), agent: rng.chance(0.6).then(|| agent_of(rng, t)) }
}

fn deliver(rng: &mut Rng, id: String) -> Planned {
    Planned::with(Request::Deliver { id: id.clone(), agent: any_agent(rng) }, Follow::Routed { id })
}

/// A login of the agent `slot` points at (its own place, mostly).
fn login(rng: &mut Rng) -> Planned {
    let t = tenant(rng);
    let (agent, own_place) = *rng.pick(t.agents);
    let place = if rng.chance(0.1) { rng.pick(t.places).to_string() } else { own_place.to_string() };
    let media = match rng.below(6) {
        0 => Vec::new(),
        1 => vec![("chat".to_string(), 0), ("fax".to_string(), 1)],
        2 => vec![("chat".to_string(), 1)],
        _ => t.media.iter().map(|m| (m.to_string(), rng.below(3) as u16)).collect(),
    };
    Planned::with(
        Request::AgentLogin {
            tenant: t.name.into(),
            agent: agent.into(),
            place,
            media,
            reason: rng.chance(0.2).then(|| short_text(rng)),
        },
        Follow::Login { tenant: t.name, agent },
    )
}

/// What a connection knows of its own state, as the generator needs it.
pub struct Seat<'a> {
    pub role: Role,
    /// The agent the connection carries: (tenant, login id).
    pub agent: Option<(&'static str, &'static str)>,
    pub invites: &'a [(String, u64)],
    pub handling: &'a [String],
    pub pulled: &'a [String],
    pub snapshots: &'a [u64],
    pub subscribed: bool,
}

/// An agent request for the connection's agent (no AgentId) or, from an
/// operator or now and then from anyone (23), for a named agent.
fn agent_request(rng: &mut Rng, seat: &Seat) -> Planned {
    let (tenant, named) = match seat.agent {
        Some((t, a)) if seat.role != Role::Operator || rng.chance(0.5) => {
            (t.to_string(), if rng.chance(0.1) { Some(a.to_string()) } else { None })
        }
        _ => {
            let t = tenant(rng);
            (t.name.to_string(), Some(agent_of(rng, t)))
        }
    };
    let t = TENANTS.iter().find(|t| t.name == tenant).unwrap_or(&TENANTS[0]);
    let agent = if seat.role != Role::Operator && rng.chance(0.03) { Some(any_agent(rng)) } else { named };
    let request = match rng.weighted(&[30, 10, 6, 5, 6, 4]) {
        0 => Request::SetReady {
            tenant,
            agent,
            media: rng.chance(0.4).then(|| media_of(rng, t)),
            ready: true,
            reason: None,
        },
        1 => Request::SetReady {
            tenant,
            agent,
            media: rng.chance(0.5).then(|| media_of(rng, t)),
            ready: false,
            reason: rng.chance(0.5).then(|| short_text(rng)),
        },
        2 => Request::AddMedia { tenant, agent, media: media_of(rng, t), capacity: rng.below(4) as u16 },
        3 => Request::RemoveMedia { tenant, agent, media: media_of(rng, t) },
        4 => Request::SetDoNotDisturb { tenant, agent, on: rng.chance(0.4) },
        _ => {
            return Planned::with(
                Request::AgentLogout { tenant, agent: agent.clone(), reason: rng.chance(0.5).then(|| short_text(rng)) },
                if agent.is_none() { Follow::Logout } else { Follow::Nothing },
            )
        }
    };
    Planned::new(request)
}

/// An interaction the connection's agent has: handled, invited, or (less
/// often) any.
fn own_id(rng: &mut Rng, world: &World, seat: &Seat) -> String {
    if !seat.handling.is_empty() && rng.chance(0.8) {
        rng.pick(seat.handling).clone()
    } else if !seat.invites.is_empty() && rng.chance(0.5) {
        rng.pick(seat.invites).0.clone()
    } else {
        world.some_id(rng)
    }
}

/// Requests about an interaction the agent handles (or any).
fn handling_request(rng: &mut Rng, world: &World, seat: &Seat) -> Planned {
    let id = own_id(rng, world, seat);
    let agent = seat.agent.map(|a| a.1);
    match rng.weighted(&[12, 8, 8, 5, 8, 5, 5, 6]) {
        0 => Planned::new(Request::LeaveInteraction { id, queue: rng.chance(0.3).then(|| queue_name(rng)) }),
        1 => Planned::new(Request::Hold { id }),
        2 => Planned::new(Request::Resume { id }),
        3 => Planned::new(Request::TransferToAgent { id, agent: any_agent(rng) }),
        4 => Planned::new(stop(rng, id)),
        5 => Planned::new(place(rng, id)),
        6 => workbin_for(rng, id, agent),
        _ => Planned::new(change(rng, id)),
    }
}

/// An answer to an invitation of the connection's agent.
pub fn answer_invite(rng: &mut Rng, id: String, ticket: u64, accept: bool) -> Planned {
    let ticket = match rng.below(20) {
        0 => None,
        1 => Some(ticket + 1000),
        _ => Some(ticket),
    };
    if accept {
        Planned::with(Request::Accept { id: id.clone(), ticket }, Follow::Accept { id })
    } else {
        Planned::new(Request::Reject { id, ticket, reason: rng.chance(0.5).then(|| short_text(rng)) })
    }
}

/// What an agent does right after its accept was acknowledged: often
/// leave, stop or hold at once (the quick paths through handling).
pub fn after_accept(rng: &mut Rng, id: String) -> Option<Planned> {
    match rng.below(10) {
        0..=3 => Some(Planned::new(Request::LeaveInteraction { id, queue: None })),
        4 => Some(Planned::new(Request::LeaveInteraction { id, queue: Some("work".into()) })),
        5 | 6 => Some(Planned::new(Request::StopProcessing { id, reason: None })),
        7 => Some(Planned::new(Request::Hold { id })),
        _ => None,
    }
}

/// Requests about one id, pipelined (sent without waiting for answers):
/// a client-given id submitted, stopped and submitted again; or, without
/// client-given ids, changes, moves and a stop of a known interaction.
fn same_id_sequence(rng: &mut Rng, world: &World) -> Vec<Planned> {
    let (id, mut v) = if world.client_ids {
        let id = client_id(rng);
        let first = submit_planned(rng, Some(id.clone()));
        (id, vec![first])
    } else {
        (world.some_id(rng), Vec::new())
    };
    for _ in 0..rng.range(1, 5) {
        v.push(match rng.below(8) {
            0 | 1 => Planned::new(stop(rng, id.clone())),
            2 | 3 if world.client_ids => submit_planned(rng, Some(id.clone())),
            2 | 3 => Planned::new(change(rng, id.clone())),
            4 => Planned::new(change(rng, id.clone())),
            5 => Planned::new(place(rng, id.clone())),
            6 => Planned::new(Request::GetInteractionProperties { id: id.clone() }),
            _ => workbin_for(rng, id.clone(), None),
        });
    }
    v
}

/// Requests any registered client may make.
fn common_request(rng: &mut Rng, world: &World) -> Planned {
    let id = world.some_id(rng);
    match rng.weighted(&[10, 10, 6, 6, 5, 5, 4, 4, 3, 3]) {
        0 => Planned::new(Request::GetInteractionProperties { id }),
        1 => Planned::new(change(rng, id)),
        2 => Planned::new(find(rng)),
        3 => Planned::new(Request::GetQueueDepth { tenant: tenant_name(rng) }),
        4 => Planned::new(agent_state(rng)),
        5 => Planned::new(workbin_content(rng)),
        6 => Planned::new(Request::Ping),
        7 => Planned::new(place(rng, id)),
        8 => Planned::new(stop(rng, id)),
        _ => workbin_for(rng, id, None),
    }
}

/// Requests a client of this type may not make (23), now and then.
fn forbidden(rng: &mut Rng, world: &World, role: Role) -> Planned {
    match role {
        Role::MediaServer | Role::Reporter => {
            let id = world.some_id(rng);
            deliver(rng, id)
        }
        Role::Desktop => submit_planned(rng, None),
        _ => Planned::new(Request::Subscribe { tenant: None, cursor: None, with_state: false }),
    }
}

/// The next requests of a registered connection.
pub fn next_requests(rng: &mut Rng, world: &World, seat: &Seat) -> Vec<Planned> {
    if rng.chance(0.03) {
        return vec![forbidden(rng, world, seat.role)];
    }
    match seat.role {
        Role::MediaServer => media_server(rng, world),
        Role::Desktop => desktop(rng, world, seat),
        Role::Router => router(rng, world, seat),
        Role::Reporter => reporter(rng, world, seat),
        Role::Operator => operator(rng, world, seat),
        Role::Proxy => match rng.below(4) {
            0 => media_server(rng, world),
            1 => desktop(rng, world, seat),
            2 => router(rng, world, seat),
            _ => reporter(rng, world, seat),
        },
        Role::Control => vec![Planned::new(Request::Ping)],
    }
}

/// Takes up to 100 interactions (pulled from a view, or listed in a
/// workbin) and stops each.
fn sweep(rng: &mut Rng) -> Planned {
    let t = &TENANTS[0];
    let request = if rng.chance(0.7) {
        Request::Pull { tenant: t.name.into(), view: rng.pick(t.views).to_string(), count: 100 }
    } else {
        Request::GetWorkbinContent {
            tenant: t.name.into(),
            workbin: rng.pick(t.workbins).to_string(),
            owner: rng.pick(t.agents).0.into(),
        }
    };
    Planned::with(request, Follow::Sweep)
}

fn media_server(rng: &mut Rng, world: &World) -> Vec<Planned> {
    let id = world.some_id(rng);
    let submit = if world.crowded { 5 } else { 40 };
    match rng.weighted(&[submit, 8, 8, 10, 6, 4, 24]) {
        0 => vec![submit_planned(rng, None)],
        1 if world.client_ids => {
            let id = client_id(rng);
            vec![submit_planned(rng, Some(id))]
        }
        1 => vec![submit_planned(rng, None)],
        2 => same_id_sequence(rng, world),
        3 => vec![Planned::new(stop(rng, id))],
        4 => vec![Planned::new(change(rng, id))],
        5 => vec![Planned::new(place(rng, id))],
        _ => vec![common_request(rng, world)],
    }
}

fn desktop(rng: &mut Rng, world: &World, seat: &Seat) -> Vec<Planned> {
    if seat.agent.is_none() {
        return vec![if rng.chance(0.85) { login(rng) } else { common_request(rng, world) }];
    }
    let invited = !seat.invites.is_empty();
    let w = [if invited { 30 } else { 0 }, if invited { 6 } else { 0 }, 30, 18, 4, 4, 8];
    match rng.weighted(&w) {
        0 | 1 => {
            let (id, ticket) = rng.pick(seat.invites).clone();
            let accept = rng.chance(0.85);
            vec![answer_invite(rng, id, ticket, accept)]
        }
        2 => vec![handling_request(rng, world, seat)],
        3 => vec![agent_request(rng, seat)],
        4 => {
            // Take back what is in the agent's own workbin.
            let pick =
                world.workbin_items.iter().rev().find(|w| Some((w.1, w.3.as_str())) == seat.agent.map(|a| (a.0, a.1)));
            let id = pick.map(|w| w.0.clone()).unwrap_or_else(|| world.some_id(rng));
            let agent = seat.agent.map(|a| a.1.to_string()).unwrap_or_default();
            vec![Planned::with(Request::Deliver { id: id.clone(), agent }, Follow::Routed { id })]
        }
        5 => vec![login(rng)],
        _ => vec![common_request(rng, world)],
    }
}

fn router(rng: &mut Rng, world: &World, seat: &Seat) -> Vec<Planned> {
    if world.crowded && rng.chance(0.3) {
        return vec![sweep(rng)];
    }
    let has = !seat.pulled.is_empty();
    let w = [
        30,
        if has { 30 } else { 0 },
        if has { 10 } else { 0 },
        if has { 5 } else { 0 },
        if has { 5 } else { 0 },
        6,
        14,
    ];
    let pulled = |rng: &mut Rng| if has { rng.pick(seat.pulled).clone() } else { world.some_id(rng) };
    match rng.weighted(&w) {
        0 => vec![Planned::new(pull(rng))],
        1 => {
            let id = pulled(rng);
            vec![deliver(rng, id)]
        }
        2 => {
            let id = pulled(rng);
            vec![Planned::with(place(rng, id.clone()), Follow::Routed { id })]
        }
        3 => {
            let id = pulled(rng);
            vec![Planned::with(stop(rng, id.clone()), Follow::Routed { id })]
        }
        4 => {
            let id = pulled(rng);
            vec![workbin_for(rng, id, None)]
        }
        5 => {
            let id = world.some_id(rng);
            vec![deliver(rng, id)]
        }
        _ => vec![common_request(rng, world)],
    }
}

fn reporter(rng: &mut Rng, world: &World, seat: &Seat) -> Vec<Planned> {
    let w = [if seat.subscribed { 1 } else { 20 }, if seat.subscribed { 3 } else { 1 }, 10, 8, 8, 4, 20];
    match rng.weighted(&w) {
        0 => {
            let tenant = rng.chance(0.4).then(|| tenant_name(rng));
            let cursor = world.some_cursor(rng);
            // Now and then with the state first (refused with a cursor).
            let with_state = rng.chance(0.3);
            vec![Planned::with(Request::Subscribe { tenant, cursor, with_state }, Follow::Subscribe)]
        }
        1 => vec![Planned::with(Request::Unsubscribe, Follow::Unsubscribe)],
        2 => vec![take_snapshot(rng)],
        3 => vec![Planned::new(snapshot_page(rng, seat.snapshots))],
        4 => vec![release(rng, seat.snapshots)],
        5 => vec![Planned::new(find(rng))],
        _ => vec![common_request(rng, world)],
    }
}

fn operator(rng: &mut Rng, world: &World, seat: &Seat) -> Vec<Planned> {
    if world.crowded && rng.chance(0.3) {
        return vec![sweep(rng)];
    }
    let id = world.some_id(rng);
    match rng.weighted(&[10, 10, 8, 6, 6, 6, 4, 8, 6, 6, 4, 3, 20]) {
        0 => vec![submit_planned(rng, None)],
        1 => vec![deliver(rng, id)],
        2 => vec![Planned::new(stop(rng, id))],
        3 => vec![Planned::new(place(rng, id))],
        4 => vec![Planned::new(Request::LeaveInteraction { id, queue: None })],
        5 => {
            let (ticket, accept) = (rng.range(1, 50), rng.chance(0.7));
            vec![answer_invite(rng, id, ticket, accept)]
        }
        6 => vec![Planned::new(if rng.chance(0.5) { Request::Hold { id } } else { Request::Resume { id } })],
        7 => vec![agent_request(rng, seat)],
        8 => vec![Planned::new(pull(rng))],
        9 => vec![take_snapshot(rng)],
        10 => vec![Planned::new(snapshot_page(rng, seat.snapshots))],
        11 => vec![Planned::new(Request::TransferToAgent { id, agent: any_agent(rng) })],
        _ => vec![common_request(rng, world)],
    }
}

/// Requests that make big answers, for a connection that will not read
/// them (its output buffer runs over, message 1024).
pub fn heavy_request(rng: &mut Rng) -> Request {
    match rng.below(4) {
        0 | 1 => Request::FindInteractions { tenant: None, condition: "id IS NOT NULL".into(), limit: 10_000 },
        2 => Request::GetAgentState { tenant: "default".into(), agent: None },
        _ => Request::GetQueueDepth { tenant: "default".into() },
    }
}

/// A request small enough to send in floods.
pub fn flood_request(rng: &mut Rng, world: &World, role: Role) -> Planned {
    match rng.below(4) {
        0 => Planned::new(Request::Ping),
        1 => Planned::new(Request::GetInteractionProperties { id: world.some_id(rng) }),
        2 if matches!(role, Role::MediaServer | Role::Operator | Role::Proxy) => submit_planned(rng, None),
        _ => Planned::new(Request::GetQueueDepth { tenant: "default".into() }),
    }
}

/// A registration for `role`; now and then with a wrong password (22).
pub fn register(rng: &mut Rng, role: Role, wrong_password: bool) -> Planned {
    let (name, password) = role.client();
    let credential = if wrong_password {
        Some(rng.pick(&["wrong", "", "media-pw"]).to_string())
    } else {
        Some(password.to_string())
    };
    Planned::with(
        Request::RegisterClient { client_type: role.client_type(), name: name.into(), credential },
        Follow::Register,
    )
}
