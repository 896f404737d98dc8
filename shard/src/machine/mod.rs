//! The shard state machine: pure and deterministic.
//!
//! Inputs (requests, storage completions, messages from other shards, clock
//! ticks, closed connections) go in with the current time; outputs
//! (replies, storage writes, messages to shards) come out. No I/O, no clock
//! reads, no randomness. The server's executor feeds it; tests drive it
//! directly, several shards at once through a simulated mesh.
//!
//! This file holds the interactions a shard owns: the requests about one
//! interaction, view indexes, queue counts and locks. `coord.rs` holds the
//! requests that span every shard (pull, search, snapshots, depth).
//!
//! Durability rule (brief, invariant 1): a change is applied in memory at
//! once, sent to storage as a full-row write, and acknowledged only when the
//! storage completion for that write comes back successful. If storage
//! refuses a write (it completes with ok = false: definitely not applied),
//! the request is answered with StorageFailure and the change is undone (a
//! failed submit is forgotten, a failed stop is restored, a failed property
//! change or place is reverted); later writes of the same interaction, made
//! on top of it, fail with it. An accept, hold or leave stays in memory and
//! is written with the next change, which is allowed because it was never
//! acknowledged.

use std::collections::VecDeque;
use std::sync::Arc;

use ahash::{AHashMap, AHashSet};

use crate::agent::AgentRef;
use crate::catalog::{Catalog, QueueIdx, TenantIdx, ViewIdx, WorkbinIdx};
use crate::event::{text, Event, What};
use crate::id::{self, IdGen};
use crate::interaction::{tie_at, Interaction, InteractionRecord, IxId, Millis, Names, Place};
use crate::packed::PackedList;
use crate::peer::{Holder, LockKind, PeerMsg};
use crate::proto::frame::Frame;
use crate::proto::msg::{attr, ClientType, ErrorCode};
use crate::proto::request::{event_ack, event_error, ProtoError, Request, Submit};
use crate::report::Settle;
use crate::store::{Slot, Store};
use crate::symbols::Symbols;
use crate::value::KvList;

pub(crate) mod indexing;
use indexing::Index;

/// Where a request came from: the shard that holds the connection, the
/// connection's number on that shard and the session on that connection
/// (0: the connection's own). Replies and events go back there. A session
/// is a client of its own: its agent, locks, snapshots and subscription
/// are its own, and closing it ends them as closing a connection does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub shard: u16,
    pub conn: u64,
    pub session: u32,
}

impl Origin {
    /// The connection's own session.
    pub fn conn(shard: u16, conn: u64) -> Origin {
        Origin { shard, conn, session: 0 }
    }
}

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub origin: Origin,
    pub ref_id: u32,
    pub client_type: ClientType,
    pub client_name: Arc<str>,
    /// The agent logged in on the caller's connection, if any.
    pub agent: Option<AgentRef>,
    /// The tenants the client may act on (its `[[client]] tenants`).
    pub tenants: TenantScope,
}

/// The tenants a client may act on: every one, or those listed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantScope(Option<Arc<[TenantIdx]>>);

impl TenantScope {
    /// Every tenant (no `tenants` list, or protected mode).
    pub fn all() -> Self {
        TenantScope(None)
    }

    pub fn only(tenants: Vec<TenantIdx>) -> Self {
        TenantScope(Some(tenants.into()))
    }

    pub fn is_all(&self) -> bool {
        self.0.is_none()
    }

    pub fn allows(&self, tenant: TenantIdx) -> bool {
        self.0.as_ref().is_none_or(|l| l.contains(&tenant))
    }
}

#[derive(Clone, Debug)]
pub enum Input {
    /// A request routed to this shard (it owns the interaction, or it is a
    /// submit with a server-generated id).
    Request { caller: Caller, request: Request },
    /// Storage finished the write with this token.
    StorageDone { token: u64, ok: bool },
    /// A message from a shard (possibly this one).
    Peer { from: u16, msg: PeerMsg },
    /// Time passed: expire locks and waiting pulls whose time is up.
    Tick,
    /// A session of a connection of this shard closed (or the connection,
    /// for each of its sessions): its locks, pulls, snapshots and
    /// subscription end; the home of the agent logged in on it is told.
    ConnClosed { origin: Origin, agent: Option<AgentRef> },
    /// A reload's catalog ([`Catalog::evolve`]): it keeps every object's
    /// index. Applied at once, even during a snapshot's cut: it changes no
    /// interaction (a new view's index is built beside the others).
    Reconfigure { catalog: Arc<Catalog> },
}

impl Input {
    /// Whether the input may change interactions, and so must wait while a
    /// snapshot holds this shard's cut (see [`crate::peer::ScanMode`]).
    fn changes_interactions(&self) -> bool {
        match self {
            Input::Request { .. } | Input::StorageDone { .. } | Input::Tick | Input::ConnClosed { .. } => true,
            Input::Reconfigure { .. } => false,
            Input::Peer { msg, .. } => matches!(
                msg,
                PeerMsg::PullLock { .. }
                    | PeerMsg::Unlock { .. }
                    | PeerMsg::Offer { .. }
                    | PeerMsg::Reserved { .. }
                    | PeerMsg::Revoke { .. }
                    // A locking snapshot's last slice takes locks.
                    | PeerMsg::ScanSlice { .. }
                    | PeerMsg::ScanMerge { .. }
            ),
        }
    }
}

/// A change for the database, keyed by interaction id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// First row of a new interaction.
    Insert(Box<InteractionRecord>),
    /// Replace the row (delete, then insert): every later change.
    Upsert(Box<InteractionRecord>),
    /// The interaction left the cache.
    Delete(String),
    /// No row changes: only the write's events go to the event log (an
    /// invitation, an agent's state). The key (an interaction id, or an
    /// agent's) names the writer, as an id does.
    Log(String),
}

impl StoreOp {
    pub fn id(&self) -> &str {
        match self {
            StoreOp::Insert(r) | StoreOp::Upsert(r) => &r.id,
            StoreOp::Delete(id) | StoreOp::Log(id) => id,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Send `frame` to the connection at `origin`.
    Reply { origin: Origin, frame: Frame },
    /// Write `op` and, in the same transaction, `log` to the event log
    /// (empty while it is off); answer with `Input::StorageDone { token, .. }`.
    Store { token: u64, op: StoreOp, log: Vec<Arc<crate::report::Published>> },
    /// Send `msg` to shard `to` (possibly this one) as `Input::Peer`.
    Peer { to: u16, msg: PeerMsg },
    /// Send an unsolicited event (reference id 0: an invitation, a
    /// revocation, a logout) to the connection at `origin`. Not an answer.
    Event { origin: Origin, frame: Frame },
    /// Send a reporting event to the subscriber at `origin`; its connection
    /// turns it into a frame ([`Event::frame`]) and stamps its cursor. One
    /// event goes to every subscriber, shared.
    /// `sub` names the subscription (its coordinator's op): a connection
    /// drops events of any subscription but its latest.
    Report { origin: Origin, sub: u64, event: Arc<crate::report::Published> },
    /// Events the subscriber at `origin` missed, in order, all from one
    /// shard: its connection sends them as the client reads, ahead of any
    /// later event.
    Replay { origin: Origin, sub: u64, events: Vec<Arc<crate::report::Published>> },
    /// The subscriber at `origin` starts at `cursor`: its connection keeps
    /// it, moving it on with each reporting event it sends. Emitted before
    /// any event of the subscription, on the same path.
    Cursor { origin: Origin, sub: u64, cursor: crate::report::Cursor },
    /// The subscriber at `origin` unsubscribed: from this answer on, its
    /// connection sends no event of any subscription below `below`.
    Unsubscribed { origin: Origin, below: u64 },
    /// Read the event log from after `after` (a cursor of an earlier run)
    /// up to `upto` (of this run); answer with `Input::StorageDone { token }`.
    ReadLog { token: u64, after: crate::report::Cursor, upto: crate::report::Cursor },
    /// Send what the read `token` found (of `tenant`, or all) to the
    /// subscriber at `origin`, ahead of any later event of subscription `sub`.
    /// `after` is the cursor the subscriber resumes from: the events of
    /// its run carry it, moved on.
    SendLog { origin: Origin, sub: u64, token: u64, tenant: Option<TenantIdx>, after: crate::report::Cursor },
    /// The connection at `origin` now carries `agent` (a login) or none (a
    /// logout); its later requests name it as [`Caller::agent`]. Emitted
    /// before the login's answer, on the same path, so it arrives first.
    Bind { origin: Origin, agent: Option<AgentRef> },
}

/// What to do if a write fails.
#[derive(Clone, Debug)]
enum Undo {
    Nothing,
    /// A submit that was never acknowledged: drop it again. The tie names
    /// this submit's interaction, not a later one with the same id.
    ForgetSubmitted {
        id: IxId,
        tie: u64,
    },
    /// A stop that was never acknowledged: the interaction is live again.
    Restore(Box<Interaction>),
    /// A change (properties, place) that was never acknowledged: the
    /// interaction as it was before it.
    Revert(Box<Interaction>),
}

/// A write waiting for its storage completion.
#[derive(Debug)]
pub(crate) struct Pending {
    reply_to: Option<Origin>,
    reply: Frame,
    undo: Undo,
    /// A submit: the interaction with this tie becomes visible to views
    /// and search once committed. By tie, not id: a client-given id may be
    /// stopped and submitted again before this write completes.
    reveal: Option<u64>,
    /// An earlier write of the same interaction failed and was undone in
    /// memory; this one was made on top of it, so it is answered as failed
    /// whatever storage says, and undoes nothing.
    doomed: bool,
    /// A stop whose interaction had a change fail while it was in flight,
    /// with doomed writes in between: if the stop fails, the restored row
    /// is written again (a doomed write may have stored the refused change).
    put_back: bool,
    /// A stop made while a move of its interaction was in flight: its
    /// events go to the event log only once it has committed, by a write
    /// of their own. Until then the move may fail, and the events change
    /// with it (see `revert`).
    log_after: bool,
    /// Names this write's copy of an interaction uses, counted as in use
    /// until it completes: set when a failed change's copy moves to a later
    /// stop, past the writes the names' retirement waits for.
    pub(crate) pinned: Option<[Option<crate::symbols::Sym>; 5]>,
    /// Events about the same interaction that came after this write (to
    /// subscribers, to the agent's desktops), sent after its answer and its
    /// own events whether it commits or not, so they keep their order.
    pub(crate) after: Vec<Output>,
    /// What the caller's desktops are told if this change is answered as
    /// failed: the change ended the caller's own link without telling them
    /// (they asked for it), and the link stays ended whatever storage says
    /// (see `end_own_link`). Sent before the error.
    told_if_failed: Vec<Output>,
    /// What the parties' desktops are told once this change commits (and
    /// never if it fails): sent after its answer.
    told_if_committed: Vec<Output>,
    /// The interaction written.
    id: IxId,
    /// This write's token: later writes have larger ones.
    token: u64,
}

/// A lock on one interaction.
#[derive(Clone, Debug)]
pub(crate) struct Lock {
    pub holder: Holder,
    pub kind: LockKind,
    /// When a routing lock ends by itself (0: never).
    pub deadline: Millis,
}

/// Interactions in one queue on this shard.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct QueueCount {
    pub interactions: u64,
    pub locked: u64,
}

/// Identity of a shard within its node.
#[derive(Clone, Copy, Debug)]
pub struct ShardParams {
    pub node: u8,
    pub shard: u16,
    pub shards: u16,
    /// Largest encoded size of one interaction's properties: keeps every
    /// answer describing an interaction well inside a frame.
    pub max_properties_bytes: usize,
    /// Most property keys of one interaction, nested lists' keys included
    /// (`max-properties-per-interaction`): bounds the work of any request
    /// about properties, checked before that work.
    pub max_property_keys: usize,
    /// Largest frame sent (`max-frame-size`): answers listing interactions
    /// stop before it.
    pub max_frame: usize,
    /// How long a pulled interaction stays locked to its routing client.
    pub routing_timeout_ms: Millis,
    /// How long a pull from an empty view waits for an interaction.
    pub pull_hold_ms: Millis,
    /// Most interactions one snapshot holds.
    pub max_snapshot: u32,
    /// Slots one slice of a scan examines (scan.rs): the longest a find or
    /// snapshot holds the shard in one step.
    pub scan_slice: u32,
    /// Most distinct names (interaction types, client names, workbin
    /// owners, agents) the shard's interactions may use at once.
    pub max_names: usize,
    /// Most requests held back while a snapshot's cut holds the shard;
    /// more are refused (52 Overloaded). Other inputs are never refused:
    /// their number is bounded by the requests and writes in flight.
    pub max_held_requests: usize,
    /// The client types that may search (`find-client-types`).
    pub find_clients: ClientTypes,
    /// The client types that may take snapshots (`snapshot-client-types`).
    pub snapshot_clients: ClientTypes,
    /// Agents, invitations and handling.
    pub agents: AgentParams,
    /// This run of the server (its start time, ms): cursors of another run
    /// name events no longer kept.
    pub generation: u64,
    /// Reporting events each shard keeps for subscribers that resume
    /// (`reporting-replay-events`).
    pub replay_events: usize,
    /// Whether the event log is on (`[logger-settings]`): every event is
    /// made and written with its change.
    pub event_log: bool,
}

/// A set of client types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientTypes(u8);

impl ClientTypes {
    pub fn all() -> Self {
        ClientTypes::of(&ClientType::ALL)
    }

    pub fn of(types: &[ClientType]) -> Self {
        ClientTypes(types.iter().fold(0, |bits, &t| bits | 1 << t as u8))
    }

    pub fn contains(self, t: ClientType) -> bool {
        self.0 & (1 << t as u8) != 0
    }

    /// The names of its types, for messages.
    pub fn names(self) -> Vec<&'static str> {
        ClientType::ALL.into_iter().filter(|&t| self.contains(t)).map(ClientType::name).collect()
    }
}

/// What `allow-multiple-agent-connections` allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultipleConnections {
    /// An agent may be logged in from several desktop connections at once.
    Allow,
    /// A second connection's login is refused while the first is there.
    Refuse,
    /// A second connection's login logs the first connection out.
    ForceLogout,
}

/// The agent options of `[settings]` (docs/configuration.md).
#[derive(Clone, Copy, Debug)]
pub struct AgentParams {
    /// `delivering-timeout`: how long an invitation waits for an answer.
    pub delivering_timeout_ms: Millis,
    /// `handling-timeout`: how long an agent may hold an interaction
    /// before it goes back to its queue.
    pub handling_timeout_ms: Millis,
    /// `not-ready-on-invitation-timeout`: an invitation that times out
    /// sets the agent not ready for its media type.
    pub not_ready_on_invitation_timeout: bool,
    /// `login-session-timeout`: how long an agent stays logged in after its
    /// last connection dropped, so a desktop can reconnect.
    pub login_session_timeout_ms: Millis,
    /// `allow-multiple-agent-connections`.
    pub multiple_connections: MultipleConnections,
    /// `agent-login-control`: a place holds one agent at a time.
    pub agent_login_control: bool,
    /// `agent-seats`: licensed agent seats of this node (logins at once).
    pub agent_seats: u32,
}

impl Default for AgentParams {
    fn default() -> Self {
        AgentParams {
            delivering_timeout_ms: 30_000,
            handling_timeout_ms: 180 * 60 * 1000,
            not_ready_on_invitation_timeout: false,
            login_session_timeout_ms: 1440 * 1000,
            multiple_connections: MultipleConnections::Allow,
            agent_login_control: true,
            agent_seats: u32::MAX,
        }
    }
}

impl ShardParams {
    /// Parameters for tests and tools: the server's defaults.
    pub fn new(node: u8, shard: u16, shards: u16) -> Self {
        ShardParams {
            node,
            shard,
            shards,
            max_properties_bytes: crate::proto::frame::DEFAULT_MAX_FRAME / 2,
            max_property_keys: DEFAULT_MAX_PROPERTY_KEYS,
            max_frame: crate::proto::frame::DEFAULT_MAX_FRAME,
            routing_timeout_ms: 720 * 60 * 1000,
            pull_hold_ms: 0,
            max_snapshot: 500,
            scan_slice: crate::scan::SCAN_SLICE,
            max_names: crate::symbols::MAX_NAMES,
            max_held_requests: MAX_HELD_REQUESTS,
            find_clients: ClientTypes::all(),
            snapshot_clients: ClientTypes::all(),
            agents: AgentParams::default(),
            generation: 1,
            replay_events: DEFAULT_REPLAY_EVENTS,
            event_log: false,
        }
    }
}

pub struct Shard {
    pub(crate) params: ShardParams,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) store: Store,
    pub(crate) syms: Symbols,
    /// Names no interaction uses any more, waiting for the writes in flight.
    retiring: crate::symbols::Retiring,
    /// Names left with no user in the current step.
    unused_names: Vec<crate::symbols::Sym>,
    ids: IdGen,
    next_token: u64,
    pub(crate) pending: AHashMap<u64, Pending>,
    /// Writes that only carry events to the event log (`StoreOp::Log`).
    pub(crate) log_only: AHashSet<u64>,
    /// View indexes, queue counts and locks: changed only through
    /// `indexing.rs`.
    pub(crate) index: Index,
    /// Requests this shard coordinates across the shards, the snapshots
    /// its clients hold, and pulls of other shards waiting on its views:
    /// changed only by coord.rs.
    pub(crate) coord: crate::coord::Coordinator,
    /// The last op number given: requests that span shards (coordinated
    /// here, gathered by agent homes, subscriptions, strategy rounds).
    pub(crate) next_op: u64,
    /// Scans in progress on this shard (scan.rs).
    pub(crate) scans: crate::scan::Scans,
    /// Snapshot cuts holding this shard, and the inputs they hold back.
    pub(crate) frozen: u32,
    held: VecDeque<Input>,
    /// Requests among `held`.
    held_requests: usize,
    /// The time of the input being handled, in microseconds.
    now_us: i64,
    /// The last tie given to a submission (see [`tie_at`]).
    last_tie: u64,

    // ----- agents (agent.rs) -----
    /// The agents homed here, the node's ledger (shard 0) and agent-state
    /// gatherings: changed only by agent.rs.
    pub(crate) homes: crate::agent::Homes,

    // ----- routing (routing.rs) -----
    /// Links, reservations and (for the tenants it dispatches) strategies:
    /// changed only by routing.rs.
    pub(crate) routing: crate::routing::Routing,

    // ----- reporting (report.rs) -----
    /// Numbers, orders, keeps and sends this shard's events.
    pub(crate) reporter: crate::report::Reporter,
    /// The last write in flight of each interaction that has one: an
    /// event to an agent's desktop made now waits for that write's answer,
    /// and a submit of an id whose stop is in flight is refused.
    pub(crate) last_write: AHashMap<IxId, u64>,

    /// Every deadline of every part above, in one table (timers.rs): a
    /// tick takes what is due, in deadline order.
    pub(crate) timers: crate::timers::Timers,
}

/// A request's immediate answer (`Some`), or `None` when storage answers later.
type Reply = Result<Option<Frame>, ProtoError>;

impl Shard {
    pub fn new(params: ShardParams, catalog: Arc<Catalog>) -> Self {
        assert!(params.shard < params.shards);
        let reporter = crate::report::Reporter::new(params.shard, params.replay_events, params.event_log, &catalog);
        let index = Index::new(&catalog);
        let routing = crate::routing::Routing::new(&catalog, params.shard, params.shards);
        Shard {
            params,
            catalog,
            store: Store::new(),
            syms: Symbols::new(),
            retiring: Default::default(),
            unused_names: Vec::new(),
            ids: IdGen::new(params.node, params.shard, params.shards),
            next_token: 1,
            pending: AHashMap::new(),
            log_only: AHashSet::new(),
            index,
            coord: Default::default(),
            next_op: 1,
            scans: Default::default(),
            frozen: 0,
            held: VecDeque::new(),
            held_requests: 0,
            now_us: 0,
            last_tie: 0,
            reporter,
            last_write: AHashMap::new(),
            homes: Default::default(),
            routing,
            timers: Default::default(),
        }
    }

    /// This shard with another `max-interactions-per-snapshot` (tools).
    pub fn with_max_snapshot(mut self, max: u32) -> Self {
        self.params.max_snapshot = max;
        self
    }

    pub fn params(&self) -> ShardParams {
        self.params
    }

    /// Views a reload added whose index this shard is still building.
    pub fn building_views(&self) -> usize {
        self.index.building()
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub(crate) fn names(&self) -> Names<'_> {
        Names { catalog: &self.catalog, syms: &self.syms }
    }

    /// Number of live interactions held.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// Interned names held (types, client names, workbin owners, agents),
    /// and those no interaction uses that wait for writes in flight.
    pub fn names_held(&self) -> (usize, usize) {
        (self.syms.len(), self.retiring.len())
    }

    /// Writes sent to storage and not yet completed.
    pub fn pending_writes(&self) -> usize {
        self.pending.len()
    }

    /// Reporting events made and not yet sent: each waits for its write,
    /// or for an earlier event's.
    pub fn unreleased_events(&self) -> usize {
        self.reporter.unreleased()
    }

    /// Pulls waiting on this shard's views (see `pull-hold-timeout`).
    pub fn watchers(&self) -> usize {
        self.coord.watchers()
    }

    /// Requests this shard coordinates that have not been answered yet.
    pub fn pending_ops(&self) -> usize {
        self.coord.pending()
    }

    /// When the earliest deadline is due (a routing lock, a waiting pull,
    /// an invitation, a handling, a login session): an [`Input::Tick`] at
    /// or after it does something, none before it does.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.timers.next()
    }

    pub fn get(&self, id: &str) -> Option<&Interaction> {
        self.store.by_id(id)
    }

    pub fn interactions(&self) -> impl Iterator<Item = &Interaction> {
        self.store.iter().map(|(_, ix)| ix)
    }

    /// The record storage would hold for `id` now.
    pub fn record(&self, id: &str) -> Option<InteractionRecord> {
        self.get(id).map(|ix| ix.to_record(self.names()))
    }

    /// The client holding a lock on `id`, and what for.
    pub fn lock_of(&self, id: &str) -> Option<(Holder, LockKind)> {
        let slot = self.store.find(id)?;
        self.index.lock(slot).map(|l| (l.holder.clone(), l.kind))
    }

    /// The ids in one view on this shard, in view order.
    pub fn view_ids(&self, tenant: TenantIdx, view: ViewIdx) -> Vec<Box<str>> {
        let v = &self.index.view(tenant, view);
        v.head(v.len())
            .into_iter()
            .map(|(_, tie)| (*self.store.get(self.store.find_tie(tie).expect("a view entry's tie is held")).id).into())
            .collect()
    }

    /// The view key and tie of `id` in `view`, if it is in it here.
    pub fn view_position(&self, id: &str, tenant: TenantIdx, view: ViewIdx) -> Option<(crate::view::ViewKey, u64)> {
        let slot = self.store.find(id)?;
        let ix = self.store.get(slot);
        let v = &self.index.view(tenant, view);
        let key = v.key(ix, self.names());
        v.contains(&key, ix.tie).then_some((key, ix.tie))
    }

    /// Whether this shard owns `id`.
    pub fn owns(&self, id: &str) -> bool {
        id::owner_of(id, self.params.shards) == self.params.shard
    }

    /// Puts back an interaction read from storage at start.
    pub fn load(&mut self, record: InteractionRecord) -> Result<(), String> {
        let id = record.id.clone();
        if !self.owns(&id) {
            return Err(format!("interaction {id} does not belong to shard {}", self.params.shard));
        }
        if self.store.find(&id).is_some() {
            return Err(format!("interaction {id} is stored twice"));
        }
        let mut ix = Interaction::from_record(record, &self.catalog, &mut self.syms)
            .map_err(|e| format!("interaction {id}: {e}"))?;
        self.recover_handled(&mut ix);
        // Ties are unique in a shard. Two shards may have given the same
        // one (the same microsecond) before a restart with fewer shards:
        // the later loaded then takes the next free value.
        while self.store.find_tie(ix.tie).is_some() {
            ix.tie += 1;
        }
        self.last_tie = self.last_tie.max(ix.tie);
        if let (Place::Queue(q), true) = (ix.place, ix.visible) {
            self.reporter.tally.loaded(ix.tenant, q);
        }
        self.admit(ix, &mut Vec::new());
        Ok(())
    }

    /// An interaction an agent was handling when the server stopped: agent
    /// sessions do not survive a restart, so it goes back to its queue (at
    /// its place) or, with `handled-at-restart = "workbin:NAME"`, to the
    /// agent's content of that workbin. The row says so at its next write.
    fn recover_handled(&mut self, ix: &mut Interaction) {
        let Some(agent) = ix.handling.as_deref_mut().and_then(|h| h.assigned_to.take()) else { return };
        let Some(name) = &self.catalog.handled_at_restart_workbin else { return };
        let t = self.catalog.tenant_at(ix.tenant);
        if let Some(w) = t.workbin(name).filter(|&w| t.workbins[w as usize].kind == crate::catalog::WorkbinKind::Agent)
        {
            ix.place = Place::Workbin { workbin: w, owner: agent };
        }
    }

    /// Feeds one input at `now_ms`; appends what must happen to `out`.
    pub fn handle(&mut self, now_ms: Millis, input: Input, out: &mut Vec<Output>) {
        self.handle_at(now_ms * 1000, input, out)
    }

    /// [`Shard::handle`] with the time in microseconds, which orders
    /// submissions finely (see [`tie_at`]).
    pub fn handle_at(&mut self, now_us: i64, input: Input, out: &mut Vec<Output>) {
        self.now_us = now_us;
        let now_ms = now_us.div_euclid(1000);
        if self.frozen > 0 && input.changes_interactions() {
            if let Input::Request { caller, .. } = &input {
                // Requests are what clients can pile up during a cut.
                if self.held_requests >= self.params.max_held_requests {
                    let e = ProtoError::new(
                        ErrorCode::Overloaded,
                        "the shard is taking a snapshot and holds too many requests already; retry",
                    );
                    out.push(Output::Reply { origin: caller.origin, frame: event_error(caller.ref_id, &e) });
                    return;
                }
                self.held_requests += 1;
            }
            self.held.push_back(input);
            return;
        }
        self.apply(now_ms, input, out);
        // A thaw may have ended the last cut: replay what it held back, in
        // order, unless another cut began meanwhile.
        while self.frozen == 0 {
            let Some(next) = self.held.pop_front() else { break };
            if matches!(next, Input::Request { .. }) {
                self.held_requests -= 1;
            }
            self.apply(now_ms, next, out);
        }
        self.retire_names();
    }

    fn apply(&mut self, now_ms: Millis, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::Request { caller, request } => self.handle_request(now_ms, caller, request, out),
            Input::StorageDone { token, ok } => self.storage_done(token, ok, out),
            Input::Peer { from, msg } => self.handle_peer(now_ms, from, msg, out),
            Input::Tick => self.tick(now_ms, out),
            Input::ConnClosed { origin, agent } => {
                self.conn_closed(origin, out);
                self.unsubscribe(origin, out);
                if let Some(agent) = agent {
                    let to = crate::agent::home_of(agent, self.params.shards);
                    out.push(Output::Peer { to, msg: PeerMsg::DesktopGone { origin, agent } });
                }
            }
            Input::Reconfigure { catalog } => self.reconfigure(now_ms, catalog, out),
        }
    }

    /// Runs with a reload's catalog from now on. Added queues and views
    /// get their (built) indexes, strategies follow the new configuration,
    /// agents removed from it (or whose place was) are logged out, and the
    /// dispatchers hear every other logged-in agent's availability again.
    /// Interactions in a removed queue stay there, reachable by id.
    fn reconfigure(&mut self, now_ms: Millis, catalog: Arc<Catalog>, out: &mut Vec<Output>) {
        assert!(catalog.extends(&self.catalog), "a reload's catalog keeps every object at its index");
        self.catalog = catalog;
        self.index_added_objects(out);
        self.reporter.tally.extend(&self.catalog);
        self.routing.reconfigure(&self.catalog, self.params.shard, self.params.shards);
        self.reconfigure_agents(now_ms, out);
        for t in 0..self.catalog.tenants.len() as TenantIdx {
            self.wake_routes(t, None, out);
        }
    }

    /// A client bound to some tenants acts on nothing else: a request
    /// naming another tenant is refused (23), one asking for every tenant
    /// must name one (23), and an interaction of another tenant is, to it,
    /// no interaction at all (34), so its existence does not leak. A
    /// tenant that does not exist is left to the request's own check (30).
    fn check_tenant(&self, caller: &Caller, request: &Request) -> Result<(), ProtoError> {
        if caller.tenants.is_all() {
            return Ok(());
        }
        match request.tenant_named() {
            Some(Some(name)) => {
                if let Some(t) = self.catalog.tenant(name) {
                    if !caller.tenants.allows(t) {
                        return Err(ProtoError::new(
                            ErrorCode::NotPermitted,
                            format!("client '{}' may not act on tenant '{name}'", caller.client_name),
                        ));
                    }
                }
            }
            Some(None) => {
                return Err(ProtoError::new(
                    ErrorCode::NotPermitted,
                    format!(
                        "client '{}' may act only on the tenants it is configured for: name one (attribute Tenant)",
                        caller.client_name
                    ),
                ))
            }
            None => {}
        }
        if let (Some(id), false) = (request.interaction_id(), matches!(request, Request::Submit(_))) {
            if self.get(id).is_some_and(|ix| !caller.tenants.allows(ix.tenant)) {
                return Err(ProtoError::new(ErrorCode::UnknownInteraction, format!("no interaction {id}")));
            }
        }
        Ok(())
    }

    fn handle_request(&mut self, now_ms: Millis, caller: Caller, request: Request, out: &mut Vec<Output>) {
        let origin = caller.origin;
        let ref_id = caller.ref_id;
        if let Some(id) = request.interaction_id() {
            if !self.owns(id) {
                // The router sends requests to the owner; anything else is a bug.
                let err = ProtoError::new(ErrorCode::Internal, format!("request for {id} routed to the wrong shard"));
                out.push(Output::Reply { origin, frame: event_error(ref_id, &err) });
                return;
            }
        }
        if let Err(e) = self.check_tenant(&caller, &request) {
            out.push(Output::Reply { origin, frame: event_error(ref_id, &e) });
            return;
        }
        let result = match request {
            Request::Submit(s) => self.submit(now_ms, &caller, *s, out),
            Request::GetInteractionProperties { id } => self.get_properties(&id, ref_id),
            Request::ChangeProperties { id, changed, deleted } => {
                self.change_properties(&caller, &id, changed, deleted, out)
            }
            Request::PlaceInQueue { id, queue } => self.place_in_queue(now_ms, &caller, &id, queue.as_deref(), out),
            Request::StopProcessing { id, reason } => {
                self.stop_processing(now_ms, &caller, &id, reason.as_deref(), out)
            }
            Request::PlaceInWorkbin { id, workbin, owner } => {
                self.place_in_workbin(now_ms, &caller, &id, &workbin, &owner, out)
            }
            Request::Pull { tenant, view, count } => self.start_pull(now_ms, &caller, &tenant, &view, count, out),
            Request::FindInteractions { tenant, condition, limit } => {
                self.start_find(&caller, tenant.as_deref(), &condition, limit, out)
            }
            Request::GetWorkbinContent { tenant, workbin, owner } => {
                self.start_workbin_content(&caller, &tenant, &workbin, &owner, out)
            }
            Request::TakeSnapshot { tenant, condition, lock, limit } => {
                self.start_snapshot(&caller, tenant.as_deref(), &condition, lock, limit, out)
            }
            Request::GetSnapshotInteractions { snapshot, start, count } => {
                self.start_snapshot_page(&caller, snapshot, start, count, out)
            }
            Request::ReleaseSnapshot { snapshot } => self.release_snapshot(&caller, snapshot, out),
            Request::GetQueueDepth { tenant } => self.start_queue_depth(&caller, &tenant, out),
            Request::GetAgentState { tenant, agent: None } => self.start_agent_states(&caller, &tenant, out),
            r @ (Request::AgentLogin { .. }
            | Request::AgentLogout { .. }
            | Request::SetReady { .. }
            | Request::AddMedia { .. }
            | Request::RemoveMedia { .. }
            | Request::SetDoNotDisturb { .. }
            | Request::GetAgentState { .. }) => self.agent_request(now_ms, &caller, r, out),
            Request::Accept { id, ticket } => self.accept(now_ms, &caller, &id, ticket, out),
            Request::Reject { id, ticket, reason } => self.reject(now_ms, &caller, &id, ticket, reason.as_deref(), out),
            Request::Deliver { id, agent } => self.deliver(&caller, &id, &agent, out),
            Request::Hold { id } => self.hold(now_ms, &caller, &id, true, out),
            Request::Resume { id } => self.hold(now_ms, &caller, &id, false, out),
            Request::TransferToAgent { id, agent } => self.transfer(&caller, &id, &agent, out),
            Request::LeaveInteraction { id, queue } => self.leave(now_ms, &caller, &id, queue.as_deref(), out),
            Request::Subscribe { tenant, cursor, with_state } => {
                self.subscribe(&caller, tenant.as_deref(), cursor.as_deref(), with_state, out)
            }
            Request::Unsubscribe => {
                if self.unsubscribe(caller.origin, out) {
                    Ok(Some(event_ack(ref_id)))
                } else {
                    Err(ProtoError::new(ErrorCode::InvalidState, "this connection is not subscribed"))
                }
            }
            Request::RegisterClient { .. } | Request::Ping | Request::CloseSession => Err(ProtoError::new(
                ErrorCode::Internal,
                format!("{} is handled by the connection, not a shard", request.name()),
            )),
        };
        match result {
            Ok(Some(frame)) => out.push(Output::Reply { origin, frame }),
            Ok(None) => {} // answered when storage completes
            Err(e) => out.push(Output::Reply { origin, frame: event_error(ref_id, &e) }),
        }
    }

    /// Sends the current state of `slot` to storage, with the events of
    /// the change (sent when it settles; written with it to the event
    /// log); the reply waits for it. Returns the write's token.
    fn write(
        &mut self,
        slot: Slot,
        reply_to: Option<Origin>,
        reply: Frame,
        undo: Undo,
        events: Vec<Event>,
        out: &mut Vec<Output>,
    ) -> u64 {
        let record = Box::new(self.store.get(slot).to_record(self.names()));
        let op = if self.mark_stored(slot) { StoreOp::Upsert(record) } else { StoreOp::Insert(record) };
        let token = self.new_token();
        let log = self.reporter.hold(token, events);
        // Generated ids are inline: no allocation on this path.
        let id = self.store.get(slot).id.clone();
        self.last_write.insert(id.clone(), token);
        self.pending.insert(
            token,
            Pending {
                reply_to,
                reply,
                undo,
                reveal: None,
                doomed: false,
                put_back: false,
                log_after: false,
                pinned: None,
                after: Vec::new(),
                told_if_failed: Vec::new(),
                told_if_committed: Vec::new(),
                id,
                token,
            },
        );
        out.push(Output::Store { token, op, log });
        token
    }

    /// Writes `slot` and acknowledges `caller` when committed, sending
    /// `reports` then.
    pub(crate) fn write_reporting(&mut self, slot: Slot, caller: &Caller, reports: Vec<Event>, out: &mut Vec<Output>) {
        self.write(slot, Some(caller.origin), event_ack(caller.ref_id), Undo::Nothing, reports, out);
    }

    /// [`Shard::write_reporting`] for a change that is undone if its write
    /// fails: `before` is the interaction as it was before the change.
    /// Returns the write's token.
    pub(crate) fn write_revertible(
        &mut self,
        slot: Slot,
        caller: &Caller,
        reports: Vec<Event>,
        before: Box<Interaction>,
        out: &mut Vec<Output>,
    ) -> u64 {
        self.write(slot, Some(caller.origin), event_ack(caller.ref_id), Undo::Revert(before), reports, out)
    }

    /// What the desktops of the parties are told once write `token`
    /// commits, and not if it fails: news of the change it writes.
    pub(crate) fn tell_if_committed(&mut self, token: u64, told: Vec<Output>) {
        self.pending.get_mut(&token).expect("a write in flight").told_if_committed = told;
    }

    /// What the caller's desktops are told if write `token` fails (see
    /// `end_own_link`).
    pub(crate) fn tell_if_failed(&mut self, token: u64, told: Vec<Output>) {
        self.pending.get_mut(&token).expect("a write in flight").told_if_failed = told;
    }

    /// Writes `slot` with no one to answer (a time-out's change).
    pub(crate) fn write_silent(&mut self, slot: Slot, out: &mut Vec<Output>) {
        self.write(slot, None, Frame::new(0, 0), Undo::Nothing, Vec::new(), out);
    }

    pub(crate) fn new_token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    fn submit(&mut self, now_ms: Millis, caller: &Caller, s: Submit, out: &mut Vec<Output>) -> Reply {
        if !caller.client_type.may_submit() {
            return Err(ProtoError::new(
                ErrorCode::NotPermitted,
                format!("a {} client may not submit interactions", caller.client_type.name()),
            ));
        }
        if !self.catalog.enable_submit {
            return Err(ProtoError::new(ErrorCode::SubmitDisabled, "this node does not accept submissions"));
        }
        let tenant = self.tenant_idx(&s.tenant)?;
        let t = self.catalog.tenant_at(tenant);
        let media = t.media_type(&s.media_type).ok_or_else(|| {
            ProtoError::new(
                ErrorCode::UnknownMediaType,
                format!("unknown media type '{}' in tenant '{}'", s.media_type, t.name),
            )
        })?;
        if !t.media[media as usize].enabled {
            return Err(ProtoError::new(
                ErrorCode::MediaTypeDisabled,
                format!("media type '{}' is disabled in tenant '{}'", s.media_type, t.name),
            ));
        }
        let queue = self.queue_idx(tenant, &s.queue)?;
        self.check_properties(&s.properties)?;
        self.check_skills(tenant, &s.properties)?;
        self.check_size(&s.properties)?;
        for (what, v) in [("InteractionType", &s.interaction_type), ("InteractionSubtype", &s.interaction_subtype)] {
            check_name(what, v)?;
        }
        self.check_name_room(&[&s.interaction_type, &s.interaction_subtype, &caller.client_name])?;
        let id: Box<str> = match s.id {
            Some(id) => {
                self.check_client_id(&id)?;
                id.into()
            }
            None => {
                // A loaded interaction may hold an id this generator makes
                // again (the clock went back across a restart): skip it.
                let mut id = self.ids.next(now_ms);
                while self.store.find(&id).is_some() {
                    id = self.ids.next(now_ms);
                }
                id.into()
            }
        };
        let tie = self.next_tie();
        let ix = Interaction {
            id: IxId::new(&id),
            properties: PackedList::pack(&s.properties),
            handling: None,
            priority: s.priority,
            received_at: s.received_at_ms.unwrap_or(now_ms),
            submitted_at: now_ms,
            placed_in_queue_at: now_ms,
            moved_to_queue_at: 0,
            tie,
            version: 0,
            tenant,
            media,
            place: Place::Queue(queue),
            interaction_type: self.syms.intern(&s.interaction_type),
            interaction_subtype: self.syms.intern(&s.interaction_subtype),
            submitted_by: self.syms.intern(&caller.client_name),
            stored: false,
            visible: false,
        };
        // Not visible until committed: in no view yet.
        let slot = self.admit(ix, out);
        let reply = event_ack(caller.ref_id).with(attr::INTERACTION_ID, &*id);
        let undo = Undo::ForgetSubmitted { id: IxId::new(&id), tie };
        // Numbered now, ahead of the events of any change pipelined behind
        // it; sent when it commits.
        let events = [What::Submitted, What::PlacedInQueue { from: None }]
            .into_iter()
            .filter_map(|what| self.ix_event(now_ms, slot, || what))
            .collect();
        let token = self.write(slot, Some(caller.origin), reply, undo, events, out);
        self.pending.get_mut(&token).expect("just written").reveal = Some(tie);
        Ok(None)
    }

    /// The next tie of this shard: the current microsecond, or one more
    /// than the last tie if the clock has not moved past it (or went back).
    fn next_tie(&mut self) -> u64 {
        self.last_tie = tie_at(self.now_us).max(self.last_tie + 1);
        self.last_tie
    }

    fn check_client_id(&self, id: &str) -> Result<(), ProtoError> {
        if id::decode(id).is_some() {
            // Ids of the generated form are the server's to make: a
            // client taking one could collide with a later one.
            return Err(ProtoError::new(
                ErrorCode::InvalidInteractionId,
                format!("interaction id '{id}' has the form of a server-generated id; choose another form"),
            ));
        }
        if !id::is_valid_client_id(id) {
            return Err(ProtoError::new(
                ErrorCode::InvalidInteractionId,
                format!(
                    "interaction id '{id}' must be 1 to {} letters, digits, '-', '_', '.' or ':'",
                    id::MAX_CLIENT_ID_LEN
                ),
            ));
        }
        if self.store.find(id).is_some() {
            return Err(ProtoError::new(ErrorCode::DuplicateInteractionId, format!("interaction {id} already exists")));
        }
        if self.last_write.contains_key(&IxId::new(id)) {
            // Its stop (or a failed submit's clean-up) is not committed yet.
            // Were this submit taken, a failing stop would bring back the
            // first interaction beside it under one id.
            return Err(ProtoError::new(
                ErrorCode::DuplicateInteractionId,
                format!("interaction {id} is being stopped; submit it again once the stop is acknowledged"),
            ));
        }
        Ok(())
    }

    pub(crate) fn tenant_idx(&self, name: &str) -> Result<TenantIdx, ProtoError> {
        self.catalog
            .tenant(name)
            .ok_or_else(|| ProtoError::new(ErrorCode::UnknownTenant, format!("unknown tenant '{name}'")))
    }

    pub(crate) fn queue_idx(&self, tenant: TenantIdx, name: &str) -> Result<QueueIdx, ProtoError> {
        let t = self.catalog.tenant_at(tenant);
        t.queue(name).ok_or_else(|| {
            ProtoError::new(ErrorCode::UnknownQueue, format!("unknown queue '{name}' in tenant '{}'", t.name))
        })
    }

    pub(crate) fn workbin_idx(&self, tenant: TenantIdx, name: &str) -> Result<WorkbinIdx, ProtoError> {
        let t = self.catalog.tenant_at(tenant);
        t.workbin(name).ok_or_else(|| {
            ProtoError::new(ErrorCode::UnknownWorkbin, format!("unknown workbin '{name}' in tenant '{}'", t.name))
        })
    }

    pub(crate) fn live(&self, id: &str) -> Result<Slot, ProtoError> {
        self.store
            .find(id)
            .ok_or_else(|| ProtoError::new(ErrorCode::UnknownInteraction, format!("no interaction {id}")))
    }

    /// Refuses a change by `caller` to an interaction another client has
    /// locked. Operators may override a lock.
    fn check_lock(&self, slot: Slot, caller: &Caller) -> Result<(), ProtoError> {
        match self.index.lock(slot) {
            // The agent an interaction is offered to or handled by may
            // move, transfer or stop it.
            Some(l) if matches!(l.kind, LockKind::Agent(a) if caller.agent == Some(a)) => Ok(()),
            Some(l) if l.holder.origin != caller.origin && caller.client_type != ClientType::Operator => {
                Err(ProtoError::new(
                    ErrorCode::InteractionLocked,
                    format!(
                        "interaction {} is locked by client '{}' ({})",
                        self.store.get(slot).id,
                        l.holder.name,
                        match l.kind {
                            LockKind::Routing => "routing".to_string(),
                            LockKind::Snapshot(s) => format!("snapshot {s}"),
                            LockKind::Agent(a) =>
                                format!("offered to or handled by agent '{}'", self.agent_login_id(a)),
                        }
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    fn get_properties(&self, id: &str, ref_id: u32) -> Reply {
        let slot = self.live(id)?;
        Ok(Some(self.store.get(slot).to_frame(self.names(), ref_id)))
    }

    fn change_properties(
        &mut self,
        caller: &Caller,
        id: &str,
        changed: KvList,
        deleted: Vec<String>,
        out: &mut Vec<Output>,
    ) -> Reply {
        let slot = self.live(id)?;
        let max = self.params.max_property_keys;
        if deleted.len() > max {
            return Err(ProtoError::new(
                ErrorCode::InvalidValue,
                format!("{} keys to delete; at most {max} are allowed (max-properties-per-interaction)", deleted.len()),
            ));
        }
        self.check_properties(&changed)?;
        if let Some(k) = changed.first_key_among(&deleted) {
            return Err(ProtoError::new(
                ErrorCode::InvalidValue,
                format!("property '{k}' is both changed and deleted"),
            ));
        }
        if changed.is_empty() && deleted.is_empty() {
            return Err(ProtoError::new(
                ErrorCode::MissingAttribute,
                "nothing to change: give Properties or DeletedKeys",
            ));
        }
        let tenant = self.store.get(slot).tenant;
        self.check_skills(tenant, &changed)?;
        let told = (self.routing.is_linked(slot) || self.reporting(tenant)).then(|| changed.clone());
        let mut properties = self.store.get(slot).properties();
        // Deleting a key that is not there is not an error: the result is
        // the same, and clients retrying a change must not fail.
        properties.apply(changed, &deleted);
        // An interaction loaded with more keys than the bound allows (the
        // option was lowered) may still change without growing.
        if properties.entries_up_to(self.params.max_property_keys).is_none()
            && properties.entries_up_to(usize::MAX) > self.store.get(slot).properties().entries_up_to(usize::MAX)
        {
            self.check_properties_count(&properties)?;
        }
        self.check_size(&properties)?;
        let before = Box::new(self.store.get(slot).clone());
        self.modify(slot, out, |ix| {
            ix.set_properties(&properties);
            ix.version += 1;
        });
        let mut reports = Vec::new();
        let mut notices = Vec::new();
        if let Some(changed) = told {
            notices = self.party_notices(slot, caller, &changed, &deleted);
            let now_ms = self.now_us.div_euclid(1000);
            reports.extend(self.ix_event(now_ms, slot, || What::PropertiesChanged { changed }));
        }
        let token = self.write_revertible(slot, caller, reports, before, out);
        self.tell_if_committed(token, notices);
        Ok(None)
    }

    /// Required skills named by a strategy's skills-property must parse,
    /// or the interaction could never be routed.
    fn check_skills(&self, tenant: TenantIdx, props: &KvList) -> Result<(), ProtoError> {
        for (_, s) in self.catalog.tenant_at(tenant).strategy_queues() {
            if let Some(v) = props.get(&s.skills_property) {
                crate::routing::parse_skills(v).map_err(|e| {
                    ProtoError::new(ErrorCode::InvalidValue, format!("property {}: {e}", s.skills_property))
                })?;
            }
        }
        Ok(())
    }

    fn place_in_queue(
        &mut self,
        now_ms: Millis,
        caller: &Caller,
        id: &str,
        queue: Option<&str>,
        out: &mut Vec<Output>,
    ) -> Reply {
        let slot = self.live(id)?;
        let ix = self.store.get(slot);
        let t = self.catalog.tenant_at(ix.tenant);
        let q = match queue {
            Some(name) => self.queue_idx(ix.tenant, name)?,
            None => {
                // The workflow: the queue configured to follow this one.
                let Place::Queue(cur) = ix.place else {
                    return Err(ProtoError::new(
                        ErrorCode::InvalidValue,
                        format!("interaction {id} is in a workbin, not a queue: name the queue to place it in"),
                    ));
                };
                let cur = &t.queues[cur as usize];
                cur.next.ok_or_else(|| {
                    ProtoError::new(
                        ErrorCode::UnknownQueue,
                        format!("queue '{}' has no next queue configured: name the queue to place it in", cur.name),
                    )
                })?
            }
        };
        self.check_lock(slot, caller)?;
        let before = Box::new(self.store.get(slot).clone());
        let told_if_failed = self.end_own_link(now_ms, slot, caller, "moved", out);
        let mut reports = Vec::new();
        if matches!(self.store.get(slot).place, Place::Workbin { .. }) {
            reports.extend(self.ix_event(now_ms, slot, || What::TakenFromWorkbin { by: None }));
        }
        let from = self.store.get(slot).queue();
        self.move_to(slot, Place::Queue(q), now_ms, out);
        reports.extend(self.ix_event(now_ms, slot, || What::PlacedInQueue { from }));
        let token = self.write_revertible(slot, caller, reports, before, out);
        self.tell_if_failed(token, told_if_failed);
        Ok(None)
    }

    fn place_in_workbin(
        &mut self,
        now_ms: Millis,
        caller: &Caller,
        id: &str,
        workbin: &str,
        owner: &str,
        out: &mut Vec<Output>,
    ) -> Reply {
        let slot = self.live(id)?;
        let w = self.workbin_idx(self.store.get(slot).tenant, workbin)?;
        check_name("WorkbinOwner", owner)?;
        self.check_name_room(&[owner])?;
        self.check_lock(slot, caller)?;
        let before = Box::new(self.store.get(slot).clone());
        let told_if_failed = self.end_own_link(now_ms, slot, caller, "moved", out);
        let owner = self.syms.intern(owner);
        let from = self.store.get(slot).queue();
        self.move_to(slot, Place::Workbin { workbin: w, owner }, now_ms, out);
        let reports = self.ix_event(now_ms, slot, || What::PlacedInWorkbin { from });
        let token = self.write_revertible(slot, caller, reports.into_iter().collect(), before, out);
        self.tell_if_failed(token, told_if_failed);
        Ok(None)
    }

    /// Moves an interaction to `place` in one step: it leaves every view of
    /// its old queue and enters those of the new one. Any lock ends.
    pub(crate) fn move_to(&mut self, slot: Slot, place: Place, now_ms: Millis, out: &mut Vec<Output>) {
        self.end_link(now_ms, slot, false, Some("moved"), out);
        self.modify_unlocked(slot, out, |ix| {
            ix.place = place;
            if matches!(place, Place::Queue(_)) {
                ix.placed_in_queue_at = now_ms;
                ix.moved_to_queue_at = now_ms;
            }
            ix.version += 1;
        });
    }

    fn stop_processing(
        &mut self,
        now_ms: Millis,
        caller: &Caller,
        id: &str,
        reason: Option<&str>,
        out: &mut Vec<Output>,
    ) -> Reply {
        let slot = self.live(id)?;
        // A media server may end an interaction that is with an agent (the
        // customer left): the agent's desktops are told (EventRevoked).
        let ended_by_media = caller.client_type == ClientType::MediaServer
            && self.index.lock(slot).is_some_and(|l| matches!(l.kind, LockKind::Agent(_)));
        if !ended_by_media {
            self.check_lock(slot, caller)?;
        }
        let told_if_failed = self.end_own_link(now_ms, slot, caller, "stopped", out);
        self.end_link(now_ms, slot, false, Some("stopped"), out);
        let reports =
            self.ix_event(now_ms, slot, || What::ProcessingStopped { reason: reason.map(text) }).into_iter().collect();
        let ixid = self.store.get(slot).id.clone();
        let behind = self.moved_in_flight(&ixid, self.store.get(slot).place);
        let ix = self.evict(slot);
        self.routing.forget_rejection(&ix.id);
        let token = self.new_token();
        self.pending.insert(
            token,
            Pending {
                reply_to: Some(caller.origin),
                reply: event_ack(caller.ref_id),
                undo: Undo::Restore(Box::new(ix)),
                reveal: None,
                doomed: false,
                put_back: false,
                log_after: behind,
                pinned: None,
                after: Vec::new(),
                told_if_failed,
                told_if_committed: Vec::new(),
                id: ixid.clone(),
                token,
            },
        );
        self.last_write.insert(ixid, token);
        let mut log = self.reporter.hold(token, reports);
        if behind {
            log.clear();
        }
        out.push(Output::Store { token, op: StoreOp::Delete(id.to_string()), log });
        Ok(None)
    }

    /// Whether a write in flight moved interaction `id` to `place` (from
    /// another queue or workbin): if it fails, the interaction was never
    /// there, and a stop made meanwhile is reported from where it was.
    fn moved_in_flight(&self, id: &IxId, place: Place) -> bool {
        if !self.last_write.contains_key(id) {
            return false;
        }
        self.pending.values().any(|p| &p.id == id && matches!(&p.undo, Undo::Revert(before) if before.place != place))
    }

    /// The ties of the submissions whose writes are in flight.
    pub(crate) fn submits_in_flight(&self) -> impl Iterator<Item = u64> + '_ {
        self.pending.values().filter_map(|p| p.reveal)
    }

    /// The interaction a stop still in flight would restore, if the stop
    /// of the interaction with `tie` is in flight. A submit's completion
    /// that finds its interaction already stopped settles it there: a
    /// failed stop must bring back what was committed, as it was, and
    /// nothing that never was. The stop is the id's last write (a submit
    /// of an id being stopped is refused), so `last_write` finds it.
    fn stopped_in_flight(&mut self, id: &IxId, tie: u64) -> Option<&mut Undo> {
        let p = self.last_write.get(id).and_then(|t| self.pending.get_mut(t))?;
        matches!(&p.undo, Undo::Restore(ix) if ix.tie == tie).then_some(&mut p.undo)
    }

    /// Drops an interaction whose submit failed: whatever happened to it
    /// meanwhile (a link, a lock, views) ends with it.
    fn forget(&mut self, slot: Slot, out: &mut Vec<Output>) {
        let now_ms = self.now_us.div_euclid(1000);
        self.end_link(now_ms, slot, false, Some("stopped"), out);
        let ix = self.evict(slot);
        self.routing.forget_rejection(&ix.id);
    }

    fn storage_done(&mut self, token: u64, ok: bool, out: &mut Vec<Output>) {
        if self.reporter.log_reads.contains_key(&token) {
            self.log_read(token, ok, out);
            return;
        }
        if self.log_only.remove(&token) {
            // Events of a change that is not stored: it stands, so they
            // are sent whether the log took them or not (a refusal is the
            // writer's to log).
            self.reporter.settle(token, Settle::Release, out);
            return;
        }
        let Some(mut p) = self.pending.remove(&token) else {
            // A completion for a write this shard never made: a bug in the
            // server's plumbing. Refuse loudly in tests, ignore in release.
            debug_assert!(false, "storage completion for unknown token {token}");
            return;
        };

        if self.last_write.get(&p.id) == Some(&token) {
            self.last_write.remove(&p.id);
        }
        let mut after = std::mem::take(&mut p.after);
        let pinned = p.pinned.take();
        // Only a failed write needs its id past `complete`.
        let failed = (!ok).then(|| p.id.clone());
        self.complete(p, ok, out);
        if let Some(id) = failed {
            // Undone: the invitations still waiting to go out described
            // the change that failed.
            self.redescribe_waiting_invites(&id, &mut after);
        }
        // Every write's events are settled by now; this is a guard, which
        // finds none left (an unsettled event would hold every later one).
        debug_assert!(!self.reporter.holds(token), "write {token} completed with its events unsettled");
        out.extend(after);
        if let Some(names) = pinned {
            self.release_names(names);
        }
        // After its undoing, which may bring back names the write held.
        if let Some(freed) = self.retiring.completed(token) {
            self.free_names(freed);
        }
    }

    /// The invitations to interaction `id` still waiting behind its writes
    /// (in `after`, and behind the writes in flight) describe it anew, as
    /// it is now. Called when a write of it failed and was undone: they were
    /// made while that change was in memory, and a desktop must not be told
    /// of a change that was never committed. Stopped meanwhile by a stop
    /// still in flight, it is described as that stop would restore it.
    fn redescribe_waiting_invites(&mut self, id: &IxId, after: &mut [Output]) {
        let now = match self.store.find(id) {
            Some(slot) => self.describe(slot),
            None => match self.last_write.get(id).and_then(|t| self.pending.get(t)).map(|p| &p.undo) {
                // The invitation's lock, which the stop ended.
                Some(Undo::Restore(ix)) => ix.summary(self.names(), Some(crate::routing::AGENT_LOCK_NAME)),
                _ => return,
            },
        };
        let queued = self.pending.values_mut().flat_map(|p| p.after.iter_mut());
        for o in after.iter_mut().chain(queued) {
            let Output::Event { frame, .. } = o else { continue };
            if frame.msg_type != crate::proto::msg::msg_type::EVENT_INVITE
                || frame.get_str(attr::INTERACTION_ID) != Some(&**id)
            {
                continue;
            }
            for a in frame.attrs.iter_mut().filter(|a| a.id == attr::INTERACTION) {
                a.value = crate::value::Value::List(now.clone());
            }
        }
    }

    /// A write's answer, its events and, if it failed, its undoing.
    fn complete(&mut self, p: Pending, ok: bool, out: &mut Vec<Output>) {
        // A change that stays applied in memory whatever storage says
        // (accept, hold, leave: no undo) is reported as memory has it.
        let kept = matches!(p.undo, Undo::Nothing);
        let events = if kept { Settle::Release } else { Settle::Drop };
        if !ok && kept {
            self.log_again(&p, out);
        }
        if p.doomed {
            self.reporter.settle(p.token, events, out);
            out.extend(p.told_if_failed);
            if let Some(origin) = p.reply_to {
                let err = ProtoError::new(
                    ErrorCode::StorageFailure,
                    "an earlier change of this interaction could not be committed; this one, made on top of it, \
                     is not applied",
                );
                out.push(Output::Reply { origin, frame: event_error(p.reply.ref_id, &err) });
            }
            return;
        }
        if ok {
            self.committed(p, out);
            return;
        }
        let ref_id = p.reply.ref_id;
        self.reporter.settle(p.token, events, out);
        out.extend(p.told_if_failed);
        match p.undo {
            Undo::Nothing => {}
            Undo::ForgetSubmitted { id, tie } => self.forget_submitted(p.token, id, tie, out),
            Undo::Restore(ix) => {
                let mut ix = *ix;
                ix.stored = true;
                // A submit of an id being stopped is refused, so nothing
                // took its place meanwhile.
                assert!(self.store.find(&ix.id).is_none(), "interaction {} restored beside a live one", ix.id);
                let slot = self.admit(ix, out);
                if p.put_back {
                    // Doomed writes before it may have stored a refused change.
                    self.write_silent(slot, out);
                }
            }
            Undo::Revert(before) => self.revert(p.token, *before, out),
        }
        if let Some(origin) = p.reply_to {
            let err = ProtoError::new(
                ErrorCode::StorageFailure,
                "the change could not be committed to the database; it is not applied",
            );
            out.push(Output::Reply { origin, frame: event_error(ref_id, &err) });
        }
    }

    /// A failed write of a change that stands in memory anyway (no undo):
    /// its events are sent, so with the event log on they are written to
    /// it on their own first, and sent when that write completes.
    fn log_again(&mut self, p: &Pending, out: &mut Vec<Output>) {
        let log = self.reporter.held_for_log(p.token);
        if log.is_empty() {
            return;
        }
        let token = self.new_token();
        self.log_only.insert(token);
        self.reporter.move_hold(p.token, token);
        out.push(Output::Store { token, op: StoreOp::Log(p.id.to_string()), log });
    }

    /// A committed write: a submit becomes visible, its events go out, its
    /// request is acknowledged.
    fn committed(&mut self, p: Pending, out: &mut Vec<Output>) {
        // Its events (a submission's too, stopped meanwhile or not): out
        // ahead of the wake-ups its views send. A stop that was made behind
        // another write logs them first, and they go out after that.
        if p.log_after {
            self.log_again(&p, out);
        }
        self.reporter.settle(p.token, Settle::Release, out);
        if let Some(tie) = p.reveal {
            // Stopped before its submit committed: if the stop fails, it
            // comes back visible.
            if let Some(Undo::Restore(ix)) = self.stopped_in_flight(&p.id, tie) {
                ix.visible = true;
            }
            if let Some(slot) = self.store.find_tie(tie) {
                self.reveal(slot, out);
            }
        }
        if let Some(origin) = p.reply_to {
            out.push(Output::Reply { origin, frame: p.reply });
        }
        out.extend(p.told_if_committed);
    }

    /// A submit failed: its interaction is dropped, every later write of it
    /// fails with it, and a delete removes whatever those may store.
    fn forget_submitted(&mut self, token: u64, id: IxId, tie: u64, out: &mut Vec<Output>) {
        // A stop too: there was never anything to stop, nor to report.
        self.doom_later_writes(&id, token, true);
        if let Some(slot) = self.store.find_tie(tie) {
            self.forget(slot, out);
        }
        // Until the delete commits the id counts as being stopped.
        let token = self.new_token();
        self.last_write.insert(id.clone(), token);
        self.pending.insert(
            token,
            Pending {
                reply_to: None,
                reply: Frame::new(0, 0),
                undo: Undo::Nothing,
                reveal: None,
                doomed: false,
                put_back: false,
                log_after: false,
                pinned: None,
                after: Vec::new(),
                told_if_failed: Vec::new(),
                told_if_committed: Vec::new(),
                id: id.clone(),
                token,
            },
        );
        out.push(Output::Store { token, op: StoreOp::Delete(id.to_string()), log: Vec::new() });
    }

    /// A change failed: the interaction is as it was before it. Later
    /// writes of it carry the change in their rows, so they fail too and,
    /// if there were any, one more write puts the row back as it was. A
    /// later stop carries nothing of it: it stands, and if it fails it
    /// brings back the interaction as it was before the failed change; its
    /// events say it was stopped from where it was before the change.
    fn revert(&mut self, token: u64, mut before: Interaction, out: &mut Vec<Output>) {
        let later = self.doom_later_writes(&before.id, token, false);
        // Writes of one interaction complete in order: its submit has
        // committed (had it failed, this write would be doomed).
        before.visible = true;
        before.stored = true;
        if self.store.find_tie(before.tie).is_none() {
            // Stopped since, by a stop still in flight (the id's last write).
            let stop = *self.last_write.get(&before.id).expect("a stop in flight");
            // The stop's events were made where the failed change had put
            // the interaction: it is stopped from where it was before. If
            // the change moved it, they are not in the event log yet (the
            // stop was made behind a move), so the log gets them corrected.
            let at = self.location_of(&before);
            let p = &self.pending[&stop];
            let Undo::Restore(stopped) = &p.undo else { unreachable!("a stop in flight") };
            assert!(p.log_after || stopped.place == before.place, "a stop made behind a move logs its events after it");
            self.reporter.relocate(stop, &before.id, &at);
            let p = self.pending.get_mut(&stop).expect("in flight");
            let Undo::Restore(ix) = &mut p.undo else {
                unreachable!("interaction {} gone with no stop in flight", before.id)
            };
            assert_eq!(ix.tie, before.tie, "the stop in flight is this interaction's");
            before.clear_assignment();
            let names = indexing::names_of(&before);
            **ix = before;
            p.put_back = later;
            assert!(p.pinned.is_none(), "one failed change moves its copy to a stop");
            p.pinned = Some(names);
            for s in names.into_iter().flatten() {
                self.syms.acquire(s);
            }
            return;
        }
        let slot = match self.store.find_tie(before.tie) {
            Some(slot) => {
                let linked = self.routing.is_linked(slot);
                self.modify(slot, out, |ix| {
                    // An agent's link is not undone: what it says of the
                    // agent (handling times, assigned_to) stays.
                    let handling = ix.handling.take();
                    *ix = before;
                    if linked {
                        ix.handling = handling;
                    } else {
                        ix.clear_assignment();
                    }
                });
                slot
            }
            None => unreachable!("checked"),
        };
        if later {
            self.write_silent(slot, out);
        }
    }

    /// Marks every write of `id` made after `token` as doomed; returns
    /// whether there was any. Runs only when a write fails.
    /// A stop is doomed only with `stops`: it carries nothing of a failed
    /// change, but stops nothing after a failed submit.
    fn doom_later_writes(&mut self, id: &IxId, token: u64, stops: bool) -> bool {
        if self.last_write.get(id).is_none_or(|&last| last <= token) {
            return false;
        }
        let mut any = false;
        for p in self.pending.values_mut().filter(|p| p.token > token && &p.id == id) {
            if stops || !matches!(p.undo, Undo::Restore(_)) {
                p.doomed = true;
                any = true;
            }
        }
        any
    }

    /// The interaction at `slot` as an entry of an interaction list, with
    /// the client holding a lock on it, if any.
    pub(crate) fn describe(&self, slot: Slot) -> KvList {
        let lock = self.index.lock(slot).map(|l| &*l.holder.name);
        self.store.get(slot).summary(self.names(), lock)
    }

    /// Ends what is due, in deadline order, each by the part that owns it.
    fn tick(&mut self, now_ms: Millis, out: &mut Vec<Output>) {
        use crate::timers::Timer;
        while let Some(timer) = self.timers.pop_due(now_ms) {
            match timer {
                Timer::Lock(slot) => self.unlock(slot, out),
                Timer::Pull(op) => self.pull_expired(op, out),
                Timer::Link(slot) => self.link_expired(now_ms, slot, out),
                Timer::LoginSession(agent) => self.logout(now_ms, agent, "login-session-timeout", None, out),
            }
        }
    }
}

impl Shard {
    /// Property lists in requests must be within `max-properties-per-interaction`
    /// entries (nested lists' entries count), checked before any work per
    /// entry; must not name a key twice or use an empty key; and must leave
    /// room to be nested in an interaction list.
    fn check_properties(&self, l: &KvList) -> Result<(), ProtoError> {
        self.check_properties_count(l)?;
        let levels = list_levels(l);
        if levels > MAX_PROPERTY_LEVELS {
            return Err(ProtoError::new(
                ErrorCode::InvalidValue,
                format!("properties nest {levels} list levels; at most {MAX_PROPERTY_LEVELS} are allowed"),
            ));
        }
        if l.has_duplicate_keys() {
            return Err(ProtoError::new(ErrorCode::InvalidValue, "a property key appears twice"));
        }
        if l.iter().any(|(k, _)| k.is_empty()) {
            return Err(ProtoError::new(ErrorCode::InvalidValue, "a property key is empty"));
        }
        Ok(())
    }

    /// An interaction's properties, nested lists' entries included, are at
    /// most `max-properties-per-interaction` entries.
    fn check_properties_count(&self, l: &KvList) -> Result<(), ProtoError> {
        let max = self.params.max_property_keys;
        if l.len() > max || l.entries_up_to(max).is_none() {
            return Err(ProtoError::new(
                ErrorCode::InvalidValue,
                format!("properties would hold more than {max} keys (max-properties-per-interaction)"),
            ));
        }
        Ok(())
    }

    /// Names a request would add must fit in the shard's table of names
    /// (a client could otherwise grow it without bound).
    fn check_name_room(&self, names: &[&str]) -> Result<(), ProtoError> {
        let new = names.iter().filter(|n| self.syms.lookup(n).is_none()).count();
        if new > 0 && self.syms.len() + new > self.params.max_names {
            return Err(ProtoError::new(
                ErrorCode::InvalidValue,
                format!(
                    "this shard holds {} distinct interaction types, client names and workbin owners, the most \
                     allowed; use one already in use",
                    self.params.max_names
                ),
            ));
        }
        Ok(())
    }

    fn check_size(&self, properties: &KvList) -> Result<(), ProtoError> {
        let size = crate::proto::frame::encoded_list_len(properties);
        if size > self.params.max_properties_bytes {
            return Err(ProtoError::new(
                ErrorCode::InvalidValue,
                format!(
                    "properties would take {size} bytes; the limit is {} (max-frame-size / 2)",
                    self.params.max_properties_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// The views of queue `q` whose condition `ix` meets: those that hold it
/// while it is unlocked (attach and detach must agree on them).
fn views_holding<'a>(ix: &'a Interaction, q: QueueIdx, n: Names<'a>) -> impl Iterator<Item = ViewIdx> + 'a {
    let t = n.catalog.tenant_at(ix.tenant);
    t.queues[q as usize]
        .views
        .iter()
        .copied()
        .filter(move |&v| t.views[v as usize].condition.as_ref().is_none_or(|c| ix.matches(c, n)))
}

/// The shard a request must run on: the owner of the interaction it names,
/// the home of the agent it names (or of the caller's agent), else the
/// shard that received it. The server's router and the simulation use it.
pub fn target_shard(catalog: &Catalog, shards: u16, here: u16, caller: &Caller, request: &Request) -> u16 {
    if let Some(id) = request.interaction_id() {
        return id::owner_of(id, shards);
    }
    let Some((tenant, agent)) = request.agent() else { return here };
    let agent = match agent {
        Some(login) => {
            let Some(t) = catalog.tenant(tenant) else { return here };
            match catalog.tenant_at(t).agent(login) {
                Some(a) => AgentRef { tenant: t, agent: a },
                None => return here,
            }
        }
        None => match caller.agent {
            Some(a) => a,
            None => return here,
        },
    };
    crate::agent::home_of(agent, shards)
}

/// Requests a shard holds back during a snapshot's cut, by default: the cut
/// lasts one round trip between shards, in which even 10,000 busy
/// connections send far fewer.
pub const MAX_HELD_REQUESTS: usize = 65_536;

/// The default of `max-properties-per-interaction`.
pub const DEFAULT_MAX_PROPERTY_KEYS: usize = 1000;

/// `reporting-replay-events`: events each shard keeps for subscribers that
/// resume after a lost connection.
pub const DEFAULT_REPLAY_EVENTS: usize = 65_536;

/// Longest interaction type, subtype or client name stored (the database
/// columns are 255 characters wide).
pub const MAX_NAME_LEN: usize = 255;

/// A name stored in a text column: 1 to [`MAX_NAME_LEN`] bytes, and no NUL
/// character (ODBC drivers cut text at one: the database would store
/// another name than the one acknowledged).
fn check_name(what: &str, v: &str) -> Result<(), ProtoError> {
    if v.is_empty() || v.len() > MAX_NAME_LEN {
        return Err(ProtoError::new(ErrorCode::InvalidValue, format!("{what} must be 1 to {MAX_NAME_LEN} bytes")));
    }
    if v.contains('\0') {
        return Err(ProtoError::new(ErrorCode::InvalidValue, format!("{what} must not contain a NUL character")));
    }
    Ok(())
}

/// Deepest nesting of property lists, the list itself counting 1. Interaction
/// lists in answers carry properties one level down (docs/protocol.md 7.9),
/// so they must leave one level of the frame's nesting limit free.
pub const MAX_PROPERTY_LEVELS: usize = crate::proto::frame::MAX_LIST_DEPTH - 2;

fn list_levels(l: &KvList) -> usize {
    1 + l.iter().filter_map(|(_, v)| v.as_list()).map(list_levels).max().unwrap_or(0)
}
