//! Built-in routing, invitations and handling.
//!
//! **Dispatcher.** Each tenant's built-in strategies run on one shard, its
//! dispatcher (`agent::dispatcher_of`). It keeps a copy of every agent's
//! availability (per media type: free capacity and idle-since), sent by
//! the agents' home shards when it changes. A *round* for a strategy queue
//! reads the first `n` entries of the strategy's view from every shard
//! (with media type and required skills), merges them in view order
//! (invariant 4) and, for each in that order, picks the longest-idle agent
//! that is available for its media type and has the skills; an interaction
//! no agent can take is skipped and waits. Each pick becomes an offer.
//!
//! **Reservation** (invariants 2 and 3). The owner of the interaction takes
//! an offer only if the interaction is still in the view as read, and
//! locks it to the agent (it leaves every view: nobody else can offer or
//! pull it). It then asks the agent's home to reserve one unit of capacity;
//! the home checks login, readiness, do-not-disturb and capacity and takes
//! the unit in the same step, or refuses. On success the owner sends
//! EventInvite to the agent's desktops; on refusal it unlocks the
//! interaction, which is back at its place. The dispatcher's copy is only a
//! hint: a stale copy costs a refused offer, never a broken invariant.
//!
//! **Waking.** A round that ends with no one invited leaves the strategy
//! idle until an agent's availability grows or an entry enters the view on
//! some shard (each round re-arms a one-shot wake on every shard).
//!
//! **Links.** While invited or handled, the interaction's owner keeps a
//! link (agent, media type, ticket, desktops) and its deadline: the
//! delivering-timeout revokes an invitation, the handling-timeout returns
//! an abandoned interaction to its queue. Every end of a link tells the
//! agent's home to release the unit.

use std::collections::BTreeSet;

use ahash::AHashMap;

use crate::agent::{home_of, AgentRef};
use crate::catalog::Catalog;
use crate::catalog::{AgentIdx, MediaIdx, PlaceIdx, TenantIdx, ViewIdx};
use crate::event::{text, What};
use crate::interaction::IxId;
use crate::interaction::{HandlingTimes, Millis, Place};
use crate::machine::{Caller, Origin, Output, Shard};
use crate::peer::{Availability, Head, Holder, LockKind, OfferOutcome, PeerMsg, RouteHead};
use crate::proto::frame::Frame;
use crate::proto::msg::{attr, msg_type, ClientType, ErrorCode};
use crate::proto::request::{event_ack, event_error, ProtoError};
use crate::store::Slot;
use crate::timers::Timer;
use crate::value::{KvList, Value};
use std::sync::Arc;

type Reply = Result<Option<Frame>, ProtoError>;

fn err(code: ErrorCode, text: impl Into<String>) -> ProtoError {
    ProtoError::new(code, text)
}

// ----- required skills -------------------------------------------------------

/// Parses required skills: a string `"english:5, billing"` (a skill alone
/// means any level) or a list {skill: int level}. Levels are 1 to 10.
pub fn parse_skills(v: &Value) -> Result<Vec<(Box<str>, u8)>, String> {
    let level = |name: &str, l: i64| -> Result<u8, String> {
        if (1..=crate::catalog::MAX_SKILL_LEVEL as i64).contains(&l) {
            Ok(l as u8)
        } else {
            Err(format!("skill '{name}' level {l} is not 1 to {}", crate::catalog::MAX_SKILL_LEVEL))
        }
    };
    let mut out = Vec::new();
    match v {
        Value::Str(s) => {
            for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (name, l) = match part.split_once(':') {
                    None => (part, 1),
                    Some((n, l)) => {
                        let l: i64 = l
                            .trim()
                            .parse()
                            .map_err(|_| format!("skill '{}' has level '{}', not a number", n.trim(), l.trim()))?;
                        (n.trim(), l)
                    }
                };
                if name.is_empty() {
                    return Err("a skill name is empty".into());
                }
                out.push((name.into(), level(name, l)?));
            }
        }
        Value::List(l) => {
            for (name, v) in l.iter() {
                let Value::Int(n) = v else { return Err(format!("skill '{name}' level must be int")) };
                out.push((name.into(), level(name, *n)?));
            }
        }
        _ => return Err("required skills must be a string or a list".into()),
    }
    Ok(out)
}

/// Whether `skills` (sorted by name, as the catalog keeps them) meet every
/// requirement.
pub fn skills_meet(skills: &[(String, u8)], need: &[(Box<str>, u8)]) -> bool {
    need.iter()
        .all(|(name, min)| skills.binary_search_by(|(s, _)| s.as_str().cmp(name)).is_ok_and(|i| skills[i].1 >= *min))
}

// ----- state -----------------------------------------------------------------

/// Who asked for a reservation, and whom to tell.
#[derive(Clone, Debug)]
pub(crate) enum Via {
    Strategy {
        dispatcher: u16,
        op: u64,
    },
    /// RequestDeliver. `locked_here`: the interaction was not locked, so
    /// the delivery locked it to the caller while the agent is reserved.
    Request {
        caller: Caller,
        locked_here: bool,
    },
    /// RequestTransferToAgent from the agent handling it.
    Transfer {
        caller: Caller,
        from: AgentRef,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct Reservation {
    pub id: Box<str>,
    pub agent: AgentRef,
    pub media: MediaIdx,
    pub via: Via,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinkState {
    Invited,
    Handling,
}

/// An interaction offered to or handled by an agent, on its owner.
#[derive(Clone, Debug)]
pub(crate) struct Link {
    pub agent: AgentRef,
    pub media: MediaIdx,
    pub ticket: u64,
    pub state: LinkState,
    pub desktops: Vec<Origin>,
    pub place: PlaceIdx,
    pub held: bool,
    pub deadline: Millis,
}

/// One strategy queue on its dispatcher.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub view: ViewIdx,
    pub running: Option<u64>,
    pub dirty: bool,
    /// Entries read per shard next round (0: from the free capacity).
    pub n: u32,
    /// Its queue lost its strategy (or the strategy its view) in a reload:
    /// no round starts any more. Kept so rounds in flight keep their index.
    pub retired: bool,
}

/// A tenant's strategies and its copy of agent availability.
#[derive(Clone, Debug, Default)]
pub(crate) struct Dispatch {
    pub avail: AHashMap<AgentIdx, Availability>,
    /// Per media type: agents with free capacity, longest idle first.
    pub by_media: Vec<BTreeSet<(Millis, AgentIdx)>>,
    pub routes: Vec<Route>,
    /// The sum of the copy's free capacity, kept as it changes (a round
    /// starts only when it is above 0).
    free: u64,
}

impl Dispatch {
    pub fn new(t: &crate::catalog::Tenant) -> Dispatch {
        Dispatch {
            avail: AHashMap::new(),
            by_media: vec![BTreeSet::new(); t.media.len()],
            routes: t
                .strategy_queues()
                .map(|(_, s)| Route { view: s.view, running: None, dirty: false, n: 0, retired: false })
                .collect(),
            free: 0,
        }
    }

    fn total_free(&self) -> u64 {
        debug_assert_eq!(self.free, self.avail.values().flatten().map(|&(_, f, _)| f as u64).sum::<u64>());
        self.free
    }

    fn set(&mut self, agent: AgentIdx, avail: Availability) {
        if let Some(old) = self.avail.remove(&agent) {
            for (m, free, idle) in old {
                if free > 0 {
                    self.by_media[m as usize].remove(&(idle, agent));
                    self.free -= free as u64;
                }
            }
        }
        for &(m, free, idle) in &avail {
            if free > 0 {
                self.by_media[m as usize].insert((idle, agent));
                self.free += free as u64;
            }
        }
        if !avail.is_empty() {
            self.avail.insert(agent, avail);
        }
    }

    /// Drops the copy of `agent`'s free capacity for `media`.
    fn forget(&mut self, agent: AgentIdx, media: MediaIdx) {
        let Some(entry) = self.avail.get_mut(&agent).and_then(|v| v.iter_mut().find(|e| e.0 == media)) else { return };
        if entry.1 > 0 {
            self.by_media[media as usize].remove(&(entry.2, agent));
            self.free -= entry.1 as u64;
            entry.1 = 0;
        }
    }

    /// Takes one unit from, or gives one back to, the copy of `agent`'s
    /// free capacity for `media`.
    fn adjust(&mut self, agent: AgentIdx, media: MediaIdx, take: bool) {
        let Some(entry) = self.avail.get_mut(&agent).and_then(|v| v.iter_mut().find(|e| e.0 == media)) else { return };
        if take {
            if entry.1 == 0 {
                return;
            }
            entry.1 -= 1;
            self.free -= 1;
            if entry.1 == 0 {
                self.by_media[media as usize].remove(&(entry.2, agent));
            }
        } else {
            entry.1 += 1;
            self.free += 1;
            if entry.1 == 1 {
                self.by_media[media as usize].insert((entry.2, agent));
            }
        }
    }
}

/// A round in flight on the dispatcher.
#[derive(Clone, Debug)]
pub(crate) struct Round {
    pub tenant: TenantIdx,
    pub route: usize,
    pub n: u32,
    pub waiting: u16,
    pub heads: Vec<(RouteHead, u16)>,
    /// Some shard had `n` entries or more: there may be more to read.
    pub full: bool,
    pub offers: u32,
    pub made: u32,
    pub invited: u32,
    /// An offer missed or was refused: others may be possible.
    pub retry: bool,
}

/// The holder name of agent locks (shown as `locked_by`).
pub const AGENT_LOCK_NAME: &str = "agent-delivery";

/// The routing part of a shard: the links of its interactions to agents
/// (invited, handling) and the reservations it asked of agents' homes,
/// and, for the tenants it dispatches, their strategies. Its fields are
/// private to this module, so the rule that ties them to the locks (an
/// agent's lock exactly while a link or a strategy's reservation holds the
/// interaction) is kept, and audited ([`Shard::audit_routing`]), here alone.
pub(crate) struct Routing {
    /// Interactions of this shard offered to or handled by an agent.
    links: AHashMap<Slot, Link>,
    /// Reservations asked of agents' homes, by ticket; and by id.
    reservations: AHashMap<u64, Reservation>,
    reserving: AHashMap<Box<str>, u64>,
    /// The tenants whose strategies this shard runs (their dispatcher).
    dispatch: AHashMap<TenantIdx, Dispatch>,
    rounds: AHashMap<u64, Round>,
    /// Strategy views read by a round: the first entry to arrive wakes the
    /// dispatcher (the shard named).
    strategy_watch: AHashMap<(TenantIdx, ViewIdx), u16>,
    agent_lock_name: Arc<str>,
    /// The agent that last rejected each interaction.
    rejected_by: AHashMap<IxId, AgentIdx>,
}

impl Routing {
    pub(crate) fn new(catalog: &Catalog, shard: u16, shards: u16) -> Routing {
        let dispatch = catalog
            .tenants
            .iter()
            .enumerate()
            .filter(|(i, t)| {
                crate::agent::dispatcher_of(*i as TenantIdx, shards) == shard && t.strategy_queues().next().is_some()
            })
            .map(|(i, t)| (i as TenantIdx, Dispatch::new(t)))
            .collect();
        Routing {
            links: AHashMap::new(),
            reservations: AHashMap::new(),
            reserving: AHashMap::new(),
            dispatch,
            rounds: AHashMap::new(),
            strategy_watch: AHashMap::new(),
            agent_lock_name: AGENT_LOCK_NAME.into(),
            rejected_by: AHashMap::new(),
        }
    }

    /// A reload's catalog: the strategies of the tenants this shard
    /// dispatches follow it (a new strategy gets a route, a removed one's
    /// route retires; routes keep their index for the rounds in flight).
    pub(crate) fn reconfigure(&mut self, catalog: &Catalog, shard: u16, shards: u16) {
        for (i, t) in catalog.tenants.iter().enumerate() {
            let tenant = i as TenantIdx;
            if crate::agent::dispatcher_of(tenant, shards) != shard {
                continue;
            }
            let views: Vec<ViewIdx> = t.strategy_queues().map(|(_, s)| s.view).collect();
            if views.is_empty() && !self.dispatch.contains_key(&tenant) {
                continue;
            }
            let d = self.dispatch.entry(tenant).or_insert_with(|| Dispatch { routes: Vec::new(), ..Dispatch::new(t) });
            for r in &mut d.routes {
                r.retired = !views.contains(&r.view);
            }
            for v in views {
                if !d.routes.iter().any(|r| r.view == v) {
                    d.routes.push(Route { view: v, running: None, dirty: false, n: 0, retired: false });
                }
            }
        }
    }

    /// Whether the interaction at `slot` is offered to or handled by an agent.
    pub(crate) fn is_linked(&self, slot: Slot) -> bool {
        self.links.contains_key(&slot)
    }

    /// The deadline of the link at `slot` (the audit of the timer table).
    pub(crate) fn link_deadline(&self, slot: Slot) -> Option<Millis> {
        self.links.get(&slot).map(|l| l.deadline)
    }

    /// An entry entered `view` of `tenant` here: the dispatcher a strategy
    /// round asked to be woken by it, once.
    pub(crate) fn strategy_woken(&mut self, tenant: TenantIdx, view: ViewIdx) -> Option<u16> {
        if self.strategy_watch.is_empty() {
            return None;
        }
        self.strategy_watch.remove(&(tenant, view))
    }

    /// The interaction left this shard: who rejected it no longer matters.
    pub(crate) fn forget_rejection(&mut self, id: &IxId) {
        self.rejected_by.remove(id);
    }
}

/// Most entries one round reads from each shard.
pub const MAX_ROUND_READ: u32 = 4096;

// ----- the dispatcher ----------------------------------------------------------

impl Shard {
    pub(crate) fn wake_routes(&mut self, tenant: TenantIdx, view: Option<ViewIdx>, out: &mut Vec<Output>) {
        let Some(d) = self.routing.dispatch.get_mut(&tenant) else { return };
        let mut start = Vec::new();
        for (i, r) in d.routes.iter_mut().enumerate() {
            if view.is_some_and(|v| v != r.view) {
                continue;
            }
            if r.running.is_some() {
                r.dirty = true;
            } else {
                start.push(i);
            }
        }
        for i in start {
            self.start_round(tenant, i, out);
        }
    }

    fn start_round(&mut self, tenant: TenantIdx, route: usize, out: &mut Vec<Output>) {
        let shards = self.params.shards;
        let op = self.next_op;
        let d = self.routing.dispatch.get_mut(&tenant).expect("a dispatcher of this tenant");
        let free = d.total_free();
        if free == 0 {
            return;
        }
        self.next_op += 1;
        let r = &mut d.routes[route];
        if r.retired {
            return;
        }
        let n = r.n.max(free.clamp(1, 512) as u32).min(MAX_ROUND_READ);
        r.running = Some(op);
        r.dirty = false;
        let view = r.view;
        self.routing.rounds.insert(
            op,
            Round {
                tenant,
                route,
                n,
                waiting: shards,
                heads: Vec::new(),
                full: false,
                offers: 0,
                made: 0,
                invited: 0,
                retry: false,
            },
        );
        for to in 0..shards {
            out.push(Output::Peer { to, msg: PeerMsg::RouteRead { op, tenant, view, n } });
        }
    }

    /// Any shard: the head of a strategy view, for a round.
    pub(crate) fn route_read(
        &mut self,
        from: u16,
        op: u64,
        tenant: TenantIdx,
        view: ViewIdx,
        n: u32,
        out: &mut Vec<Output>,
    ) {
        let t = self.catalog.tenant_at(tenant);
        let q = t.views[view as usize].queue;
        let prop = t.queues[q as usize].strategy.as_ref().map(|s| s.skills_property.as_str()).unwrap_or("");
        let index = &self.index.view(tenant, view);
        let heads = index
            .head(n as usize)
            .into_iter()
            .map(|(key, tie)| {
                let slot = self.store.find_tie(tie).expect("a view entry's tie is held");
                let ix = self.store.get(slot);
                // Checked when set (submit, change), so a bad value here
                // is only possible from an old row: it needs no skill.
                let skills = ix.properties.value(prop).and_then(|v| parse_skills(&v).ok()).unwrap_or_default();
                let avoid = self.routing.rejected_by.get(&ix.id).copied();
                RouteHead { head: Head { key, tie, id: (*ix.id).into() }, media: ix.media, skills, avoid }
            })
            .collect();
        self.routing.strategy_watch.insert((tenant, view), from);
        out.push(Output::Peer { to: from, msg: PeerMsg::RouteHeads { op, heads } });
    }

    pub(crate) fn route_heads(&mut self, from: u16, op: u64, heads: Vec<RouteHead>, out: &mut Vec<Output>) {
        let Some(round) = self.routing.rounds.get_mut(&op) else { return };
        round.full |= heads.len() as u32 >= round.n;
        round.heads.extend(heads.into_iter().map(|h| (h, from)));
        round.waiting -= 1;
        if round.waiting == 0 {
            self.assign(op, out);
        }
    }

    /// Every shard's head is in: offer each, in view order, to the
    /// longest-idle agent that can take it.
    fn assign(&mut self, op: u64, out: &mut Vec<Output>) {
        let mut round = self.routing.rounds.remove(&op).expect("a round");
        round.heads.sort_by(|(a, sa), (b, sb)| (&a.head.key, a.head.tie, sa).cmp(&(&b.head.key, b.head.tie, sb)));
        let tenant = round.tenant;
        let view = self.routing.dispatch[&tenant].routes[round.route].view;
        let catalog = self.catalog.clone();
        let agents = &catalog.tenant_at(tenant).agents;
        let d = self.routing.dispatch.get_mut(&tenant).expect("a dispatcher");
        for (h, owner) in std::mem::take(&mut round.heads) {
            let Some(set) = d.by_media.get(h.media as usize) else { continue };
            // Longest idle first; the agent that rejected it last only if
            // nobody else can take it.
            let able = |a: &AgentIdx| skills_meet(&agents[*a as usize].skills, &h.skills);
            let pick = set
                .iter()
                .map(|&(_, a)| a)
                .find(|a| Some(*a) != h.avoid && able(a))
                .or_else(|| h.avoid.filter(|a| set.iter().any(|&(_, x)| x == *a) && able(a)));
            let Some(agent) = pick else { continue };
            d.adjust(agent, h.media, true);
            round.offers += 1;
            let agent = AgentRef { tenant, agent };
            out.push(Output::Peer {
                to: owner,
                msg: PeerMsg::Offer { op, tenant, view, head: h.head, agent, media: h.media },
            });
        }
        round.made = round.offers;
        let done = round.offers == 0;
        self.routing.rounds.insert(op, round);
        if done {
            self.end_round(op, out);
        }
    }

    pub(crate) fn offer_done(
        &mut self,
        op: u64,
        agent: AgentRef,
        media: MediaIdx,
        outcome: OfferOutcome,
        out: &mut Vec<Output>,
    ) {
        let Some(round) = self.routing.rounds.get_mut(&op) else { return };
        round.offers -= 1;
        match outcome {
            OfferOutcome::Invited => round.invited += 1,
            OfferOutcome::Missed => {
                // Others may take what this one could not: go again.
                round.retry = true;
                if let Some(d) = self.routing.dispatch.get_mut(&agent.tenant) {
                    d.adjust(agent.agent, media, false);
                }
            }
            OfferOutcome::Refused => {
                // The copy was stale: forget it until the home says again
                // (asked now, so a copy is never left too low), and let
                // another agent take the interaction.
                round.retry = true;
                if let Some(d) = self.routing.dispatch.get_mut(&agent.tenant) {
                    d.forget(agent.agent, media);
                }
                let to = home_of(agent, self.params.shards);
                out.push(Output::Peer { to, msg: PeerMsg::Republish { agent } });
            }
        }
        if self.routing.rounds[&op].offers == 0 {
            self.end_round(op, out);
        }
    }

    fn end_round(&mut self, op: u64, out: &mut Vec<Output>) {
        let round = self.routing.rounds.remove(&op).expect("a round");
        let d = self.routing.dispatch.get_mut(&round.tenant).expect("a dispatcher");
        let r = &mut d.routes[round.route];
        r.running = None;
        let again = if round.invited > 0 || round.retry || r.dirty {
            r.n = 0;
            true
        } else if round.made == 0 && round.full && round.n < MAX_ROUND_READ {
            // Every entry read needs an agent nobody free matches: look deeper.
            r.n = (round.n * 4).min(MAX_ROUND_READ);
            true
        } else {
            r.n = 0;
            false
        };
        if again {
            self.start_round(round.tenant, round.route, out);
        }
    }

    pub(crate) fn agent_avail(&mut self, agent: AgentRef, avail: Availability, out: &mut Vec<Output>) {
        let Some(d) = self.routing.dispatch.get_mut(&agent.tenant) else { return };
        let grows = !avail.is_empty();
        d.set(agent.agent, avail);
        if grows {
            self.wake_routes(agent.tenant, None, out);
        }
    }

    // ----- the owner's side ------------------------------------------------------

    fn agent_holder(&self, dispatcher: u16) -> Holder {
        // Connection 0 is never a client's: no disconnection ends this lock.
        Holder { origin: Origin { shard: dispatcher, conn: 0, session: 0 }, name: self.routing.agent_lock_name.clone() }
    }

    /// A strategy's offer, on the interaction's owner.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn offer(
        &mut self,
        from: u16,
        op: u64,
        tenant: TenantIdx,
        view: ViewIdx,
        head: Head,
        agent: AgentRef,
        media: MediaIdx,
        out: &mut Vec<Output>,
    ) {
        let slot = self.store.find(&head.id).filter(|&s| {
            self.store.get(s).tie == head.tie
                && self.index.view(tenant, view).contains(&head.key, head.tie)
                && !self.routing.reserving.contains_key(&head.id)
        });
        let Some(slot) = slot else {
            out.push(Output::Peer {
                to: from,
                msg: PeerMsg::OfferDone { op, agent, media, outcome: OfferOutcome::Missed },
            });
            return;
        };
        let holder = self.agent_holder(from);
        self.lock(slot, holder, LockKind::Agent(agent), 0, out);
        self.reserve_for(slot, agent, media, Via::Strategy { dispatcher: from, op }, out);
    }

    fn reserve_for(&mut self, slot: Slot, agent: AgentRef, media: MediaIdx, via: Via, out: &mut Vec<Output>) {
        let id: Box<str> = (*self.store.get(slot).id).into();
        let ticket = self.new_token();
        self.routing.reserving.insert(id.clone(), ticket);
        self.routing.reservations.insert(ticket, Reservation { id: id.clone(), agent, media, via });
        let to = home_of(agent, self.params.shards);
        out.push(Output::Peer { to, msg: PeerMsg::Reserve { ticket, id, agent, media } });
    }

    /// The agent's home answered a reservation.
    pub(crate) fn reserved(
        &mut self,
        now_ms: Millis,
        ticket: u64,
        agent: AgentRef,
        result: Result<(Vec<Origin>, PlaceIdx), ProtoError>,
        out: &mut Vec<Output>,
    ) {
        let Some(r) = self.routing.reservations.remove(&ticket) else {
            debug_assert!(false, "an answer for no reservation");
            return;
        };
        self.routing.reserving.remove(&r.id);
        let slot = self.store.find(&r.id);
        let still = slot.is_some_and(|s| match &r.via {
            Via::Strategy { .. } => {
                self.index.lock(s).is_some_and(|l| l.kind == LockKind::Agent(agent))
                    && !self.routing.links.contains_key(&s)
            }
            Via::Request { caller, .. } => {
                !self.routing.links.contains_key(&s)
                    && self.index.lock(s).is_some_and(|l| {
                        l.kind == LockKind::Routing
                            && (l.holder.origin == caller.origin || caller.client_type == ClientType::Operator)
                    })
            }
            Via::Transfer { from, .. } => {
                self.routing.links.get(&s).is_some_and(|l| l.agent == *from && l.state == LinkState::Handling)
            }
        });
        if !still {
            if result.is_ok() {
                let to = home_of(agent, self.params.shards);
                out.push(Output::Peer {
                    to,
                    msg: PeerMsg::Release { agent, media: r.media, id: r.id.clone(), ticket, not_ready: false },
                });
            }
            let e = err(
                ErrorCode::InvalidState,
                format!("interaction {} changed while the agent was being reserved", r.id),
            );
            self.reservation_failed(&r, e, out);
            return;
        }
        let slot = slot.expect("checked");
        let (desktops, place) = match result {
            Ok(x) => x,
            Err(e) => {
                if matches!(r.via, Via::Strategy { .. } | Via::Request { locked_here: true, .. }) {
                    self.unlock(slot, out);
                }
                self.reservation_failed(&r, e, out);
                return;
            }
        };
        let dispatcher = match &r.via {
            Via::Strategy { dispatcher, .. } => *dispatcher,
            Via::Request { .. } => self.params.shard,
            Via::Transfer { .. } => {
                self.end_link(now_ms, slot, false, Some("transferred"), out);
                self.params.shard
            }
        };
        if !matches!(r.via, Via::Strategy { .. }) {
            self.unlock(slot, out);
            let holder = self.agent_holder(dispatcher);
            self.lock(slot, holder, LockKind::Agent(agent), 0, out);
        }
        let from = match &r.via {
            Via::Transfer { from, .. } => Some(self.agent_login_id(*from).to_string()),
            _ => None,
        };
        self.invite(now_ms, slot, (agent, r.media, ticket), desktops, place, from.as_deref(), out);
        match r.via {
            Via::Strategy { dispatcher, op } => out.push(Output::Peer {
                to: dispatcher,
                msg: PeerMsg::OfferDone { op, agent, media: r.media, outcome: OfferOutcome::Invited },
            }),
            Via::Request { caller, .. } | Via::Transfer { caller, .. } => out.push(Output::Reply {
                origin: caller.origin,
                frame: event_ack(caller.ref_id).with(attr::TICKET, ticket as i64),
            }),
        }
    }

    fn reservation_failed(&mut self, r: &Reservation, e: ProtoError, out: &mut Vec<Output>) {
        match &r.via {
            Via::Strategy { dispatcher, op } => {
                let outcome =
                    if e.code == ErrorCode::InvalidState { OfferOutcome::Missed } else { OfferOutcome::Refused };
                out.push(Output::Peer {
                    to: *dispatcher,
                    msg: PeerMsg::OfferDone { op: *op, agent: r.agent, media: r.media, outcome },
                });
            }
            Via::Request { caller, .. } | Via::Transfer { caller, .. } => {
                out.push(Output::Reply { origin: caller.origin, frame: event_error(caller.ref_id, &e) })
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    /// Sends the invitation: `from` is the agent transferring it, if any
    /// (FromAgent in EventInvite and EventAgentInvited).
    #[allow(clippy::too_many_arguments)]
    fn invite(
        &mut self,
        now_ms: Millis,
        slot: Slot,
        (agent, media, ticket): (AgentRef, MediaIdx, u64),
        desktops: Vec<Origin>,
        place: PlaceIdx,
        from: Option<&str>,
        out: &mut Vec<Output>,
    ) {
        let deadline = now_ms + self.params.agents.delivering_timeout_ms;
        self.timers.set(Timer::Link(slot), deadline);
        self.modify(slot, out, |ix| {
            ix.handling.get_or_insert_with(|| Box::new(HandlingTimes::default())).delivered_at = now_ms;
        });
        let catalog = self.catalog.clone();
        let t = catalog.tenant_at(agent.tenant);
        let login = t.agents[agent.agent as usize].login_id.as_str();
        let place_name = t.places[place as usize].name.as_str();
        let mut f = Frame::new(msg_type::EVENT_INVITE, 0)
            .with(attr::INTERACTION_ID, &*self.store.get(slot).id)
            .with(attr::TICKET, ticket as i64)
            .with(attr::AGENT_ID, login)
            .with(attr::PLACE, place_name)
            .with(attr::MEDIA_TYPE, t.media[media as usize].name.as_str());
        if let Some(from) = from {
            f.push(attr::FROM_AGENT, from);
        }
        f.push(attr::INTERACTION, self.describe(slot));
        for o in &desktops {
            self.send_ordered(slot, Output::Event { origin: *o, frame: f.clone() }, out);
        }
        let from_agent = from.map(text);
        let invited = || What::AgentInvited { agent: agent.agent, place, ticket, from_agent };
        self.report_ix(now_ms, slot, invited, out);
        let link = Link { agent, media, ticket, state: LinkState::Invited, desktops, place, held: false, deadline };
        let before = self.routing.links.insert(slot, link);
        assert!(before.is_none(), "invariant 2: an interaction offered to two agents at once");
    }

    /// Ends the link of `slot`, if any: the agent's home releases the unit,
    /// the agent's desktops get EventRevoked (with `revoke`'s reason, if
    /// any), the interaction is unlocked (back at its place in its views).
    pub(crate) fn end_link(
        &mut self,
        now_ms: Millis,
        slot: Slot,
        not_ready: bool,
        revoke: Option<&str>,
        out: &mut Vec<Output>,
    ) -> Option<Link> {
        self.end_link_with(now_ms, slot, not_ready, revoke, true, out)
    }

    /// [`Shard::end_link`]; `tell` false sends the desktops nothing (the
    /// agent asked for the change itself).
    fn end_link_with(
        &mut self,
        now_ms: Millis,
        slot: Slot,
        not_ready: bool,
        revoke: Option<&str>,
        tell: bool,
        out: &mut Vec<Output>,
    ) -> Option<Link> {
        let link = self.routing.links.remove(&slot)?;
        self.timers.cancel(Timer::Link(slot));
        let id: Box<str> = (*self.store.get(slot).id).into();
        let login = self.agent_login_id(link.agent).to_string();
        match (link.state, revoke) {
            (LinkState::Invited, Some(reason)) => {
                let f = revoked_frame(&id, &link, &login, reason);
                for o in link.desktops.iter().filter(|_| tell) {
                    self.send_ordered(slot, Output::Event { origin: *o, frame: f.clone() }, out);
                }
                let revoked =
                    || What::InviteRevoked { agent: link.agent.agent, ticket: link.ticket, reason: text(reason) };
                self.report_ix(now_ms, slot, revoked, out);
            }
            (LinkState::Invited, None) => {}
            (LinkState::Handling, reason) => {
                self.modify(slot, out, |ix| {
                    if let Some(h) = ix.handling.as_deref_mut() {
                        h.assigned_to = None;
                    }
                });
                if let Some(reason) = reason {
                    // The agent's desktops learn it is no longer theirs.
                    let f = revoked_frame(&id, &link, &login, reason);
                    for o in link.desktops.iter().filter(|_| tell) {
                        self.send_ordered(slot, Output::Event { origin: *o, frame: f.clone() }, out);
                    }
                }
                let removed = || What::PartyRemoved { agent: link.agent.agent, reason: reason.map(text) };
                self.report_ix(now_ms, slot, removed, out);
            }
        }
        // The agent's unit is freed only once its desktops have been told
        // the link ended (after the interaction's writes in flight), so a
        // desktop is never invited anew while it still holds the old
        // invitation as far as it knows: invariant 3 as the desktop sees it.
        let to = home_of(link.agent, self.params.shards);
        let (agent, media, ticket) = (link.agent, link.media, link.ticket);
        let release = PeerMsg::Release { agent, media, id, ticket, not_ready };
        self.send_ordered(slot, Output::Peer { to, msg: release }, out);
        if self.index.lock(slot).is_some_and(|l| l.kind == LockKind::Agent(link.agent)) {
            self.unlock(slot, out);
        }
        Some(link)
    }

    /// The link of `id` for the caller's agent (or any agent for an
    /// operator) in `state`.
    fn my_link(&self, caller: &Caller, id: &str, state: LinkState, ticket: Option<u64>) -> Result<Slot, ProtoError> {
        let slot = self.live(id)?;
        let link = self.routing.links.get(&slot).filter(|l| l.state == state);
        let mine = link.is_some_and(|l| {
            (caller.agent == Some(l.agent) || caller.client_type == ClientType::Operator)
                && ticket.is_none_or(|t| t == l.ticket)
        });
        if mine {
            return Ok(slot);
        }
        Err(match state {
            LinkState::Invited => {
                err(ErrorCode::UnknownInvitation, format!("no invitation to interaction {id} for this agent"))
            }
            LinkState::Handling => {
                err(ErrorCode::InvalidState, format!("interaction {id} is not handled by this agent"))
            }
        })
    }

    pub(crate) fn accept(
        &mut self,
        now_ms: Millis,
        caller: &Caller,
        id: &str,
        ticket: Option<u64>,
        out: &mut Vec<Output>,
    ) -> Reply {
        let slot = self.my_link(caller, id, LinkState::Invited, ticket)?;
        let link = self.routing.links.get_mut(&slot).expect("checked");
        link.state = LinkState::Handling;
        link.deadline = now_ms + self.params.agents.handling_timeout_ms;
        let (agent, deadline, place) = (link.agent, link.deadline, link.place);
        self.timers.set(Timer::Link(slot), deadline);
        let login = self.agent_login_id(agent).to_string();
        let sym = self.syms.intern(&login);
        self.modify(slot, out, |ix| {
            let h = ix.handling.get_or_insert_with(|| Box::new(HandlingTimes::default()));
            h.assigned_at = now_ms;
            h.assigned_to = Some(sym);
            ix.version += 1;
        });
        let by = agent.agent;
        let taken = match self.store.get(slot).place {
            Place::Queue(_) => What::TakenFromQueue { agent: by, place },
            Place::Workbin { .. } => What::TakenFromWorkbin { by: Some((by, place)) },
        };
        let reports = [taken, What::PartyAdded { agent: by, place }]
            .into_iter()
            .filter_map(|what| self.ix_event(now_ms, slot, || what))
            .collect();
        out.push(Output::Peer {
            to: home_of(agent, self.params.shards),
            msg: PeerMsg::Accepted { agent, id: id.into() },
        });
        self.write_reporting(slot, caller, reports, out);
        Ok(None)
    }

    pub(crate) fn reject(
        &mut self,
        now_ms: Millis,
        caller: &Caller,
        id: &str,
        ticket: Option<u64>,
        reason: Option<&str>,
        out: &mut Vec<Output>,
    ) -> Reply {
        let slot = self.my_link(caller, id, LinkState::Invited, ticket)?;
        let link = self.routing.links[&slot].clone();
        let rejected = || What::Rejected { agent: link.agent.agent, ticket: link.ticket, reason: reason.map(text) };
        self.report_ix(now_ms, slot, rejected, out);
        self.end_link(now_ms, slot, false, None, out);
        self.routing.rejected_by.insert(self.store.get(slot).id.clone(), link.agent.agent);
        Ok(Some(event_ack(caller.ref_id)))
    }

    /// RequestDeliver: a routing engine offers an interaction it pulled (or
    /// an operator any queued one) to a chosen agent.
    pub(crate) fn deliver(&mut self, caller: &Caller, id: &str, agent: &str, out: &mut Vec<Output>) -> Reply {
        let slot = self.live(id)?;
        let ix = self.store.get(slot);
        let tenant = ix.tenant;
        let media = ix.media;
        if !ix.visible {
            return Err(err(ErrorCode::UnknownInteraction, format!("no interaction {id}")));
        }
        if self.routing.links.contains_key(&slot) || self.routing.reserving.contains_key(id) {
            return Err(err(
                ErrorCode::InvalidState,
                format!("interaction {id} is already offered to or handled by an agent"),
            ));
        }
        let t = self.catalog.tenant_at(tenant);
        // An agent takes back an interaction from its own workbin.
        let own_workbin = match ix.place {
            Place::Workbin { workbin, owner } => {
                t.workbins[workbin as usize].kind == crate::catalog::WorkbinKind::Agent
                    && caller.agent.is_some_and(|a| {
                        let login = self.agent_login_id(a);
                        login == agent && login == self.syms.name(owner)
                    })
            }
            Place::Queue(_) => false,
        };
        if !own_workbin
            && !matches!(caller.client_type, ClientType::RoutingEngine | ClientType::Operator | ClientType::Proxy)
        {
            return Err(err(
                ErrorCode::NotPermitted,
                format!("a {} client may deliver only from its agent's own workbin", caller.client_type.name()),
            ));
        }
        if !own_workbin && !matches!(ix.place, Place::Queue(_)) && caller.client_type != ClientType::Operator {
            return Err(err(ErrorCode::InvalidState, format!("interaction {id} is not in a queue")));
        }
        let locked_here = match self.index.lock(slot) {
            None if own_workbin || caller.client_type == ClientType::Operator => true,
            Some(l)
                if l.kind == LockKind::Routing
                    && (l.holder.origin == caller.origin || caller.client_type == ClientType::Operator) =>
            {
                false
            }
            _ => {
                return Err(err(
                    ErrorCode::InteractionLocked,
                    format!(
                    "pull interaction {id} (RequestPull) before delivering it: this client holds no routing lock on it"
                ),
                ))
            }
        };
        let a = self.resolve_agent(caller, &self.catalog.tenant_at(tenant).name.clone(), Some(agent))?;
        if locked_here {
            // Out of the views while the agent is reserved, so no strategy
            // offers it meanwhile.
            let holder = Holder { origin: caller.origin, name: caller.client_name.clone() };
            self.lock(slot, holder, LockKind::Routing, 0, out);
        }
        self.reserve_for(slot, a, media, Via::Request { caller: caller.clone(), locked_here }, out);
        Ok(None)
    }

    pub(crate) fn transfer(&mut self, caller: &Caller, id: &str, agent: &str, out: &mut Vec<Output>) -> Reply {
        let slot = self.my_link(caller, id, LinkState::Handling, None)?;
        if self.routing.reserving.contains_key(id) {
            return Err(err(ErrorCode::InvalidState, format!("interaction {id} is already being transferred")));
        }
        let link = self.routing.links[&slot].clone();
        let tenant_name = self.catalog.tenant_at(link.agent.tenant).name.clone();
        let to = self.resolve_agent(caller, &tenant_name, Some(agent))?;
        if to == link.agent {
            return Err(err(ErrorCode::InvalidValue, "the interaction is already handled by that agent"));
        }
        self.reserve_for(slot, to, link.media, Via::Transfer { caller: caller.clone(), from: link.agent }, out);
        Ok(None)
    }

    pub(crate) fn hold(&mut self, now_ms: Millis, caller: &Caller, id: &str, on: bool, out: &mut Vec<Output>) -> Reply {
        let slot = self.my_link(caller, id, LinkState::Handling, None)?;
        let link = self.routing.links.get_mut(&slot).expect("checked");
        if link.held == on {
            let state = if on { "already held" } else { "not held" };
            return Err(err(ErrorCode::InvalidState, format!("interaction {id} is {state}")));
        }
        link.held = on;
        let agent = link.agent;
        self.modify(slot, out, |ix| {
            if on {
                ix.handling.get_or_insert_with(|| Box::new(HandlingTimes::default())).held_at = now_ms;
            }
            ix.version += 1;
        });
        let what = || if on { What::Held { agent: agent.agent } } else { What::Resumed { agent: agent.agent } };
        let reports = self.ix_event(now_ms, slot, what);
        self.write_reporting(slot, caller, reports.into_iter().collect(), out);
        Ok(None)
    }

    /// The handling agent leaves: the interaction goes back to its place
    /// in its queue, or to `queue`.
    pub(crate) fn leave(
        &mut self,
        now_ms: Millis,
        caller: &Caller,
        id: &str,
        queue: Option<&str>,
        out: &mut Vec<Output>,
    ) -> Reply {
        let slot = self.my_link(caller, id, LinkState::Handling, None)?;
        let q = queue.map(|q| self.queue_idx(self.store.get(slot).tenant, q)).transpose()?;
        // The agent's own leave tells its desktops nothing; an operator's
        // does (EventRevoked, reason `left`).
        let own = self.routing.links.get(&slot).is_some_and(|l| caller.agent == Some(l.agent));
        // Leaving changes the row (no agent any more): a new version, set
        // while the interaction is still locked, so it re-enters its views
        // under its new key.
        self.modify(slot, out, |ix| ix.version += 1);
        self.end_link_with(now_ms, slot, false, Some("left"), !own, out);
        let mut reports = Vec::new();
        if let Some(q) = q {
            if matches!(self.store.get(slot).place, Place::Workbin { .. }) {
                reports.extend(self.ix_event(now_ms, slot, || What::TakenFromWorkbin { by: None }));
            }
            let from = self.store.get(slot).queue();
            self.move_to(slot, Place::Queue(q), now_ms, out);
            reports.extend(self.ix_event(now_ms, slot, || What::PlacedInQueue { from }));
        }
        self.write_reporting(slot, caller, reports, out);
        Ok(None)
    }

    /// Home -> owner: the agent logged out; its invitation ends.
    pub(crate) fn revoke(&mut self, now_ms: Millis, agent: AgentRef, id: &str, out: &mut Vec<Output>) {
        let Some(slot) = self.store.find(id) else { return };
        if self.routing.links.get(&slot).is_some_and(|l| l.agent == agent && l.state == LinkState::Invited) {
            self.end_link(now_ms, slot, false, Some("agent logged out or disconnected"), out);
        }
    }

    /// Invitations and handling whose time is up.
    /// An invitation (`delivering-timeout`) or a handling
    /// (`handling-timeout`) ran out.
    pub(crate) fn link_expired(&mut self, now_ms: Millis, slot: Slot, out: &mut Vec<Output>) {
        let state = self.routing.links.get(&slot).expect("a link's timer ends with the link").state;
        match state {
            LinkState::Invited => {
                let not_ready = self.params.agents.not_ready_on_invitation_timeout;
                self.end_link(now_ms, slot, not_ready, Some("delivering-timeout"), out);
            }
            LinkState::Handling => {
                // A new version before the unlock, as for a leave.
                self.modify(slot, out, |ix| ix.version += 1);
                self.end_link(now_ms, slot, false, Some("handling-timeout"), out);
                self.write_silent(slot, out);
            }
        }
    }

    /// EventPropertiesChanged for the other parties of a linked interaction,
    /// to send once the change has committed.
    pub(crate) fn party_notices(
        &self,
        slot: Slot,
        caller: &Caller,
        changed: &KvList,
        deleted: &[String],
    ) -> Vec<Output> {
        let Some(link) = self.routing.links.get(&slot) else { return Vec::new() };
        let mut f =
            Frame::new(msg_type::EVENT_PROPERTIES_CHANGED, 0).with(attr::INTERACTION_ID, &*self.store.get(slot).id);
        if !changed.is_empty() {
            f.push(attr::PROPERTIES, changed.clone());
        }
        if !deleted.is_empty() {
            let mut l = KvList::new();
            for k in deleted {
                l.push(k.as_str(), Value::Int(0));
            }
            f.push(attr::DELETED_KEYS, l);
        }
        let to = link.desktops.iter().copied().filter(|&o| o != caller.origin);
        to.map(|origin| Output::Event { origin, frame: f.clone() }).collect()
    }
}

impl Shard {
    /// The interactions of this shard offered to or handled by an agent:
    /// (id, agent, handling), for tests and tools.
    pub fn agent_links(&self) -> Vec<(String, AgentRef, bool)> {
        let mut v: Vec<_> = self
            .routing
            .links
            .iter()
            .map(|(&slot, l)| (self.store.get(slot).id.to_string(), l.agent, l.state == LinkState::Handling))
            .collect();
        v.sort();
        v
    }

    /// Ended links whose agent's unit is not freed yet: the release waits
    /// for the interaction's writes in flight, with the desktops' news of
    /// the end. (id, agent, ticket of the offer), for tests and tools.
    pub fn releases_in_flight(&self) -> Vec<(String, AgentRef, u64)> {
        let mut v: Vec<_> = self
            .pending
            .values()
            .flat_map(|p| &p.after)
            .filter_map(|o| match o {
                Output::Peer { msg: PeerMsg::Release { agent, id, ticket, .. }, .. } => {
                    Some((id.to_string(), *agent, *ticket))
                }
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    /// Reservations this shard is waiting for.
    pub fn pending_reservations(&self) -> usize {
        self.routing.reservations.len()
    }
}

/// EventRevoked for the desktops of `link` to interaction `id`.
fn revoked_frame(id: &str, link: &Link, login: &str, reason: &str) -> Frame {
    Frame::new(msg_type::EVENT_REVOKED, 0)
        .with(attr::INTERACTION_ID, id)
        .with(attr::TICKET, link.ticket as i64)
        .with(attr::AGENT_ID, login)
        .with(attr::REASON, reason)
}

impl Shard {
    /// A request from the agent an interaction is linked to ends the link
    /// without telling that agent's desktops (it asked). Returns what they
    /// are to be told if the request's write fails: the link stays ended
    /// (the interaction goes back to where it was, unlinked), and a desktop
    /// that heard only "not applied" would go on holding it.
    pub(crate) fn end_own_link(
        &mut self,
        now_ms: Millis,
        slot: Slot,
        caller: &Caller,
        reason: &str,
        out: &mut Vec<Output>,
    ) -> Vec<Output> {
        if self.routing.links.get(&slot).is_none_or(|l| caller.agent != Some(l.agent)) {
            return Vec::new();
        }
        let id: Box<str> = (*self.store.get(slot).id).into();
        let link = self.end_link_with(now_ms, slot, false, Some(reason), false, out).expect("checked linked");
        let login = self.agent_login_id(link.agent).to_string();
        let f = revoked_frame(&id, &link, &login, "storage-failure");
        link.desktops.iter().map(|o| Output::Event { origin: *o, frame: f.clone() }).collect()
    }
}

// ----- audit -------------------------------------------------------------------

impl Shard {
    /// The routing part's rules, recomputed (see audit.rs): every agent's
    /// lock has its link or reservation, every link its lock and timer,
    /// reservations are listed both ways, dispatchers' indexes match their
    /// copies.
    pub(crate) fn audit_routing(&self, live: &BTreeSet<Slot>) -> Result<(), String> {
        self.audit_agent_locks(live)?;
        self.audit_links(live)?;
        self.audit_reservations()?;
        self.audit_dispatch()
    }

    /// An agent's lock goes with a link to that agent or a strategy's
    /// reservation for it in flight.
    fn audit_agent_locks(&self, live: &BTreeSet<Slot>) -> Result<(), String> {
        for (slot, lock) in self.index.locks() {
            if !live.contains(&slot) {
                return Err(format!("a lock ({:?}) on slot {slot}, which holds no interaction", lock.kind));
            }
            let LockKind::Agent(agent) = lock.kind else { continue };
            let id = self.id_at(slot);
            let linked = self.routing.links.get(&slot).is_some_and(|l| l.agent == agent);
            let reserving = self
                .routing
                .reserving
                .get(id)
                .and_then(|t| self.routing.reservations.get(t))
                .is_some_and(|r| r.agent == agent && matches!(r.via, Via::Strategy { .. }));
            if !linked && !reserving {
                return Err(format!("{id} is locked to agent {agent:?} with no link or reservation for it"));
            }
        }
        Ok(())
    }

    /// Each link is on a live interaction locked to its agent, with its
    /// deadline listed; an interaction names the agent handling it exactly
    /// while a handling link exists.
    fn audit_links(&self, live: &BTreeSet<Slot>) -> Result<(), String> {
        for (slot, link) in &self.routing.links {
            if !live.contains(slot) {
                return Err(format!("a link to agent {:?} on slot {slot}, which holds no interaction", link.agent));
            }
            let id = self.id_at(*slot);
            let kind = self.index.lock(*slot).map(|l| l.kind);
            if kind != Some(LockKind::Agent(link.agent)) {
                return Err(format!("{id} is linked to agent {:?} but locked {kind:?}", link.agent));
            }
            let timer = self.timers.deadline(Timer::Link(*slot));
            if timer != Some(link.deadline) {
                return Err(format!("{id}'s link ends at {}, its timer {timer:?}", link.deadline));
            }
        }
        for (slot, ix) in self.store.iter() {
            let assigned = ix.handling.as_deref().and_then(|h| h.assigned_to).map(|s| self.syms.name(s));
            let handler = self
                .routing
                .links
                .get(&slot)
                .filter(|l| l.state == LinkState::Handling)
                .map(|l| self.agent_login_id(l.agent));
            if assigned != handler {
                return Err(format!("{} names {assigned:?} as its handler; its link says {handler:?}", ix.id));
            }
        }
        Ok(())
    }

    /// Reservations in flight, by ticket and by id, are one list.
    fn audit_reservations(&self) -> Result<(), String> {
        if self.routing.reservations.len() != self.routing.reserving.len() {
            return Err(format!(
                "{} reservations by ticket, {} by id",
                self.routing.reservations.len(),
                self.routing.reserving.len()
            ));
        }
        for (ticket, r) in &self.routing.reservations {
            if self.routing.reserving.get(&r.id) != Some(ticket) {
                return Err(format!("reservation {ticket} of {} is not listed under its id", r.id));
            }
        }
        Ok(())
    }

    /// The dispatcher's index of agents by media type matches its copy of
    /// their availability.
    fn audit_dispatch(&self) -> Result<(), String> {
        for (tenant, d) in &self.routing.dispatch {
            let mut want: Vec<BTreeSet<(i64, u32)>> = vec![BTreeSet::new(); d.by_media.len()];
            for (agent, avail) in &d.avail {
                for &(m, free, idle) in avail {
                    if free > 0 {
                        want[m as usize].insert((idle, *agent));
                    }
                }
            }
            if want != d.by_media {
                return Err(format!("tenant {tenant}: the dispatcher's agents by media type disagree with its copy"));
            }
        }
        Ok(())
    }
}
