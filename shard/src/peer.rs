//! Messages between the shards of one node. A shard that holds a client's
//! connection coordinates that client's requests which span every shard
//! (pull, search, workbin content, snapshots, queue depth): it sends one of
//! these to each shard, itself included, and combines the answers.
//! Channels between two shards deliver in order (FIFO); the design relies
//! on that (docs/architecture.md, "Global order").

use std::sync::Arc;

use crate::agent::AgentRef;
use crate::catalog::{AgentIdx, MediaIdx, PlaceIdx, TenantIdx, ViewIdx, WorkbinIdx};
use crate::condition::Condition;
use crate::interaction::Millis;
use crate::machine::Origin;
use crate::proto::request::ProtoError;
use crate::value::KvList;
use crate::view::ViewKey;

/// Many interaction ids in one string: two allocations for any number of
/// ids. Scans send their results between shards this way, and snapshots
/// keep theirs so, because a million small strings made on one thread and
/// freed on another leave work for the allocator of the first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdList {
    text: String,
    ends: Vec<u32>,
}

impl IdList {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, id: &str) {
        self.text.push_str(id);
        self.ends.push(u32::try_from(self.text.len()).expect("an id list under 4 GiB"));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).map(|i| self.get(i))
    }
}

impl<'a> FromIterator<&'a str> for IdList {
    fn from_iter<T: IntoIterator<Item = &'a str>>(iter: T) -> Self {
        let mut l = IdList::new();
        for id in iter {
            l.push(id);
        }
        l
    }
}

/// A client that holds locks: its connection, and its name for answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub origin: Origin,
    pub name: Arc<str>,
}

/// What a lock is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// Pulled by a routing client; ends with a move, a stop, the routing
    /// timeout, or the client's disconnection.
    Routing,
    /// Held by a locking snapshot until it is released.
    Snapshot(u64),
    /// Offered to, or handled by, an agent (see `routing.rs`); ends when the
    /// invitation or the handling ends.
    Agent(AgentRef),
}

/// One candidate of a built-in strategy's round: a view head with what the
/// strategy needs to choose an agent for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteHead {
    pub head: Head,
    pub media: MediaIdx,
    /// Required skills: (name, minimum level).
    pub skills: Vec<(Box<str>, u8)>,
    /// The agent that last rejected it: offered to another agent first.
    pub avoid: Option<AgentIdx>,
}

/// What an agent can take now, as its home shard tells the dispatcher:
/// per media type, free capacity and since when the agent is idle on it.
pub type Availability = Vec<(MediaIdx, u16, Millis)>;

/// How an offer made by a strategy round ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfferOutcome {
    /// The agent is invited.
    Invited,
    /// The interaction was no longer there as seen (moved, locked, gone).
    Missed,
    /// The agent's home refused the reservation (capacity, readiness).
    Refused,
}

/// One candidate from a shard's view head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub key: ViewKey,
    pub tie: u64,
    pub id: Box<str>,
}

/// Which interactions a scan selects.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// RequestFindInteractions and RequestTakeSnapshot.
    Condition { tenant: Option<TenantIdx>, condition: Arc<Condition> },
    /// RequestGetWorkbinContent.
    Workbin { tenant: TenantIdx, workbin: WorkbinIdx, owner: Box<str> },
}

/// One queue's depth on one shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Interactions in the queue, locked ones included.
    pub interactions: u64,
    pub locked: u64,
    /// Entries in each of the queue's views, in the catalog's order.
    pub views: Vec<u64>,
}

/// What a scan is for.
#[derive(Clone, Debug, PartialEq)]
pub enum ScanMode {
    /// Describe the matches (search, workbin content).
    Find,
    /// A snapshot: cut, hold every change until [`PeerMsg::Thaw`] so all
    /// shards are cut at one instant, then list the matches at the cut and
    /// lock them to `lock` if given (those not locked at the cut).
    Snapshot { snapshot: u64, lock: Option<Holder> },
}

#[derive(Clone, Debug, PartialEq)]
pub enum PeerMsg {
    /// Pull, step 1: send up to `n` entries from the head of `view`. With
    /// `watch`, a shard whose view is empty remembers to send
    /// [`PeerMsg::ViewFilled`] when an entry arrives.
    PullRead {
        op: u64,
        tenant: TenantIdx,
        view: ViewIdx,
        n: u32,
        watch: bool,
    },
    PullHeads {
        op: u64,
        heads: Vec<Head>,
    },
    /// Pull, step 2: lock these to `holder` if each is still in the view
    /// with the same key, and describe the ones locked.
    PullLock {
        op: u64,
        tenant: TenantIdx,
        view: ViewIdx,
        holder: Holder,
        heads: Vec<Head>,
    },
    PullLocked {
        op: u64,
        got: Vec<(Head, KvList)>,
        missed: u32,
    },
    /// An entry arrived in a view that a waiting pull watched.
    ViewFilled {
        op: u64,
    },
    /// A pull that may have left watchers has ended: forget them.
    Unwatch {
        op: u64,
        tenant: TenantIdx,
        view: ViewIdx,
    },

    /// Search: the first `limit` matches in submission order, and how many
    /// matched in all. The receiver takes its cut at once and scans in
    /// slices (scan.rs); for a snapshot it holds every change and answers
    /// [`PeerMsg::CutTaken`] first, and scans only after
    /// [`PeerMsg::Thaw`].
    Scan {
        op: u64,
        filter: Filter,
        limit: u32,
        mode: ScanMode,
    },
    /// Part of a shard's matches, in submission order: their ties and ids,
    /// and for [`ScanMode::Find`] their descriptions (empty otherwise). A
    /// long list comes in several parts, each a step of the shard; `last`
    /// marks its end, with `total`, how many matched on that shard.
    Scanned {
        op: u64,
        ties: Vec<u64>,
        ids: IdList,
        described: Vec<KvList>,
        total: u64,
        last: bool,
    },
    /// Snapshot: this shard has taken its cut and holds every change.
    CutTaken {
        op: u64,
    },
    /// Snapshot: every shard has taken its cut, so the cuts are one instant
    /// of the node; each shard may go on, and scan.
    Thaw {
        op: u64,
    },
    /// The next slice of a scan (the shard sends it to itself; the server
    /// runs other work before it).
    ScanSlice {
        coord: u16,
        op: u64,
    },
    /// The next step of merging a scan's answers on its coordinating shard
    /// (it sends it to itself, like [`PeerMsg::ScanSlice`]).
    ScanMerge {
        op: u64,
    },
    /// The next slice of building the indexes of views a reload added (a
    /// shard sends it to itself, like [`PeerMsg::ScanSlice`]).
    BuildViews,

    /// Describe these interactions (a snapshot page).
    Describe {
        op: u64,
        ids: Vec<Box<str>>,
    },
    /// The descriptions as encoded INTERACTION attributes, one after the
    /// other in one buffer; `ends[i]` is where the i-th ends, and an empty
    /// one means that interaction is gone. (One buffer, because what one
    /// shard allocates and another frees costs the first one later.)
    Described {
        op: u64,
        encoded: Vec<u8>,
        ends: Vec<u32>,
    },

    /// Release locks: those of `holder` (all, or one snapshot's), or of the
    /// listed interactions. With `confirm`, answer [`PeerMsg::Unlocked`].
    Unlock {
        origin: Origin,
        kind: Option<LockKind>,
        ids: Option<IdList>,
        confirm: Option<u64>,
    },
    Unlocked {
        op: u64,
    },

    QueueDepth {
        op: u64,
        tenant: TenantIdx,
    },
    QueueDepths {
        op: u64,
        queues: Vec<QueueDepth>,
    },

    // ----- agents, invitations and built-in routing (agent.rs, routing.rs) -----
    /// Agent home -> tenant's dispatcher: what the agent can take now
    /// (empty: nothing).
    AgentAvail {
        agent: AgentRef,
        avail: Availability,
    },
    /// Dispatcher -> every shard: the first `n` entries of `view`, with
    /// media and required skills; arms a [`PeerMsg::StrategyWake`].
    RouteRead {
        op: u64,
        tenant: TenantIdx,
        view: ViewIdx,
        n: u32,
    },
    RouteHeads {
        op: u64,
        heads: Vec<RouteHead>,
    },
    /// Owner -> dispatcher: an entry entered a view a round read.
    StrategyWake {
        tenant: TenantIdx,
        view: ViewIdx,
    },
    /// Dispatcher -> owner: offer this head to `agent` if it is still in
    /// the view as read.
    Offer {
        op: u64,
        tenant: TenantIdx,
        view: ViewIdx,
        head: Head,
        agent: AgentRef,
        media: MediaIdx,
    },
    /// Owner -> dispatcher.
    OfferDone {
        op: u64,
        agent: AgentRef,
        media: MediaIdx,
        outcome: OfferOutcome,
    },
    /// Dispatcher -> home: send the agent's availability again, even if
    /// unchanged (the dispatcher's copy proved stale).
    Republish {
        agent: AgentRef,
    },
    /// Owner -> agent home: reserve one unit of the agent's capacity for
    /// `media` for interaction `id`, atomically against its state.
    Reserve {
        ticket: u64,
        id: Box<str>,
        agent: AgentRef,
        media: MediaIdx,
    },
    /// Home -> owner: the reservation, with the agent's desktops and place.
    Reserved {
        ticket: u64,
        id: Box<str>,
        agent: AgentRef,
        result: Result<(Vec<Origin>, PlaceIdx), ProtoError>,
    },
    /// Owner -> home: the agent no longer holds `id` by the offer
    /// `ticket` (rejected, revoked, left, moved, stopped). `not_ready`: set
    /// the agent not ready for `media` (an invitation timed out with
    /// not-ready-on-invitation-timeout).
    Release {
        agent: AgentRef,
        media: MediaIdx,
        id: Box<str>,
        ticket: u64,
        not_ready: bool,
    },
    /// Owner -> home: the agent accepted `id`.
    Accepted {
        agent: AgentRef,
        id: Box<str>,
    },
    /// Home -> owner: the agent logged out; its invitation to `id` ends.
    Revoke {
        agent: AgentRef,
        id: Box<str>,
    },
    /// Home -> shard 0: take a licensed seat (and, with
    /// agent-login-control, the place) for a login.
    LoginClaim {
        op: u64,
        agent: AgentRef,
        place: PlaceIdx,
        control: bool,
        seats: u32,
    },
    LoginClaimed {
        op: u64,
        result: Result<(), ProtoError>,
    },
    /// Home -> shard 0: the agent logged out.
    LoginFree {
        agent: AgentRef,
    },
    /// Connection's shard -> home: a desktop connection of `agent` closed.
    DesktopGone {
        origin: Origin,
        agent: AgentRef,
    },
    /// Coordinator -> every shard: describe the agents homed there.
    AgentStates {
        op: u64,
        tenant: TenantIdx,
    },
    AgentStateList {
        op: u64,
        states: Vec<(AgentIdx, KvList)>,
    },

    // ----- reporting (report.rs) -----
    /// First round of a subscription of `origin` (to one tenant or all):
    /// can the shard send every event after number `after` (none: from
    /// now)? If so it pins them.
    /// `with_state`: the answer carries the shard's state as of that
    /// number.
    Subscribe {
        op: u64,
        origin: Origin,
        tenant: Option<TenantIdx>,
        after: Option<u64>,
        with_state: bool,
    },
    /// The answer: the number the subscription starts after, or none if
    /// the shard no longer keeps the events it needs; the state asked for.
    Subscribed {
        op: u64,
        start: Option<u64>,
        state: Option<Box<crate::tally::ShardState>>,
    },
    /// Second round: send what was pinned and go live (`go`), or forget it.
    SubscribeGo {
        op: u64,
        go: bool,
    },
    /// The shard is live for the subscription.
    SubscribeLive {
        op: u64,
    },
    Unsubscribe {
        origin: Origin,
    },
}
