//! Agents on their home shard: logins, readiness per media type,
//! do-not-disturb, desktop connections and the login session, and the
//! agent's side of a reservation (invariant 3: an agent never holds more
//! interactions of a media type than its capacity for it).
//!
//! Every configured agent has one home shard (`home_of`). All that changes
//! an agent's state happens there, one input at a time, so a reservation
//! checks and takes capacity in one step: two shards offering interactions
//! to one agent at once cannot both get its last free unit. The tenant's
//! dispatcher (`routing.rs`) keeps only a copy of each agent's availability
//! to choose whom to offer to; the home has the last word.
//!
//! Seats (`agent-seats`) and places (`agent-login-control`) are node-wide,
//! so a login claims them from one ledger on shard 0 (one extra round trip,
//! at login only).

use ahash::AHashMap;
use smallvec::SmallVec;

use crate::catalog::{AgentIdx, MediaIdx, PlaceIdx, TenantIdx};
use crate::event::{text, What};
use crate::interaction::Millis;
use crate::machine::{Caller, MultipleConnections, Origin, Output, Shard};
use crate::peer::{Availability, PeerMsg};
use crate::proto::frame::Frame;
use crate::proto::msg::{attr, msg_type, ClientType, ErrorCode};
use crate::proto::request::{event_ack, ProtoError, Request};
use crate::timers::Timer;
use crate::value::{KvList, Value};

/// A configured agent: its tenant and its index there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentRef {
    pub tenant: TenantIdx,
    pub agent: AgentIdx,
}

/// The shard that keeps `agent`'s state.
pub fn home_of(agent: AgentRef, shards: u16) -> u16 {
    ((agent.agent as u64 + agent.tenant as u64) % shards as u64) as u16
}

/// The shard that runs the built-in strategies of `tenant`.
pub fn dispatcher_of(tenant: TenantIdx, shards: u16) -> u16 {
    tenant % shards
}

/// The reason of the logout of an agent a reload removed.
pub const REMOVED_AGENT: &str = "the agent was removed from the configuration";
/// The reason of the logout of an agent whose place a reload removed.
pub const REMOVED_PLACE: &str = "the place was removed from the configuration";

/// The shard that keeps the node's seat and place ledger.
pub const LEDGER_SHARD: u16 = 0;

/// One media type an agent is logged in on.
#[derive(Clone, Debug)]
pub(crate) struct MediaLogin {
    pub media: MediaIdx,
    pub capacity: u16,
    pub ready: bool,
    pub reason: Option<Box<str>>,
    /// Since when it has had nothing more to do on this media type: when
    /// it became ready or last gave an interaction back. Longest idle
    /// first is the strategy's order.
    pub idle_since: Millis,
}

#[derive(Clone, Debug)]
pub(crate) struct Login {
    pub place: PlaceIdx,
    /// Its desktop connections; empty while the login session waits for a
    /// reconnection.
    pub conns: SmallVec<[Origin; 2]>,
    pub media: Vec<MediaLogin>,
    pub dnd: bool,
    /// When its last connection closed (0 while one is open).
    pub lost_at: Millis,
    pub at: Millis,
}

/// An interaction an agent holds: invited to it or handling it.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub id: Box<str>,
    pub media: MediaIdx,
    pub accepted: bool,
    /// The offer's ticket: a release names it, so the release of an
    /// earlier offer of the same interaction never frees a later one.
    pub ticket: u64,
}

/// The state of one agent on its home shard.
///
/// The capacity rule (invariant 3): an agent's capacity for a media type
/// may be lowered below what it holds of that type (a login again with a
/// smaller media list, RemoveMedia then AddMedia); what it holds stays with
/// it, and it is offered nothing new of that type until it holds fewer than
/// its capacity. [`Shard::reserve`] is the only place holdings grow, and it
/// asserts the agent is below capacity.
#[derive(Clone, Debug, Default)]
pub(crate) struct AgentState {
    pub login: Option<Login>,
    /// What it holds, logged in or not (handled interactions stay with an
    /// agent that logs out until they end).
    pub held: Vec<Held>,
    /// The availability last sent to the dispatcher.
    pub published: Availability,
}

impl AgentState {
    pub fn held_for(&self, media: MediaIdx) -> u16 {
        self.held.iter().filter(|h| h.media == media).count() as u16
    }

    /// What the agent can take now.
    fn availability(&self) -> Availability {
        let Some(l) = &self.login else { return Vec::new() };
        // The same conditions as the home's check of a reservation, so a
        // copy that says available is refused only while it is stale.
        if l.dnd || l.conns.is_empty() {
            return Vec::new();
        }
        l.media
            .iter()
            .filter(|m| m.ready)
            .filter_map(|m| {
                let free = m.capacity.saturating_sub(self.held_for(m.media));
                (free > 0).then_some((m.media, free, m.idle_since))
            })
            .collect()
    }
}

/// A login waiting for its seat from the ledger.
#[derive(Clone, Debug)]
pub(crate) struct PendingLogin {
    pub caller: Caller,
    pub agent: AgentRef,
    pub place: PlaceIdx,
    pub media: Vec<(MediaIdx, u16)>,
    pub reason: Option<String>,
}

/// RequestGetAgentState for all agents, coordinated here: the caller, the
/// shards still to answer, the states so far (by agent index).
pub(crate) type AgentStatesOp = (Caller, u16, Vec<(AgentIdx, KvList)>);

/// The agent homes of one shard: the state of the agents homed here, the
/// node's seat and place ledger (shard 0), and RequestGetAgentState
/// gatherings this shard coordinates. Its fields are private to this
/// module, so only the rules written here change them: the capacity rule,
/// desktops and login sessions, and what the dispatcher is told.
#[derive(Debug, Default)]
pub(crate) struct Homes {
    agents: AHashMap<AgentRef, AgentState>,
    pending_logins: AHashMap<u64, PendingLogin>,
    ledger: Ledger,
    state_ops: AHashMap<u64, AgentStatesOp>,
}

impl Homes {
    /// The agents homed here that have state (logged in, or holding).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&AgentRef, &AgentState)> {
        self.agents.iter()
    }

    pub(crate) fn get(&self, a: &AgentRef) -> Option<&AgentState> {
        self.agents.get(a)
    }
}

/// Shard 0's node-wide ledger of logged-in agents and taken places.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ledger {
    pub seats: ahash::AHashMap<AgentRef, PlaceIdx>,
    pub places: ahash::AHashMap<(TenantIdx, PlaceIdx), AgentRef>,
}

type Reply = Result<Option<Frame>, ProtoError>;

fn err(code: ErrorCode, text: impl Into<String>) -> ProtoError {
    ProtoError::new(code, text)
}

impl Shard {
    /// The agent a request names (or the caller's own), checked.
    pub(crate) fn resolve_agent(
        &self,
        caller: &Caller,
        tenant: &str,
        agent: Option<&str>,
    ) -> Result<AgentRef, ProtoError> {
        let t = self.tenant_idx(tenant)?;
        match agent {
            Some(login) => {
                let a = self.catalog.tenant_at(t).agent(login).ok_or_else(|| {
                    err(ErrorCode::UnknownAgent, format!("unknown agent '{login}' in tenant '{tenant}'"))
                })?;
                Ok(AgentRef { tenant: t, agent: a })
            }
            None => caller.agent.filter(|a| a.tenant == t).ok_or_else(|| {
                err(ErrorCode::AgentNotLoggedIn, "no agent is logged in on this connection: name AgentId")
            }),
        }
    }

    pub(crate) fn agent_login_id(&self, a: AgentRef) -> &str {
        &self.catalog.tenant_at(a.tenant).agents[a.agent as usize].login_id
    }

    fn media_name(&self, tenant: TenantIdx, m: MediaIdx) -> &str {
        &self.catalog.tenant_at(tenant).media[m as usize].name
    }

    fn place_name(&self, tenant: TenantIdx, p: PlaceIdx) -> &str {
        &self.catalog.tenant_at(tenant).places[p as usize].name
    }

    /// Whether `caller` may act for agent `a`: its own desktop, or an
    /// operator tool.
    fn may_act_for(&self, caller: &Caller, a: AgentRef) -> Result<(), ProtoError> {
        if caller.agent == Some(a) || caller.client_type == ClientType::Operator {
            return Ok(());
        }
        Err(err(
            ErrorCode::NotPermitted,
            format!("agent '{}' is not logged in on this connection", self.agent_login_id(a)),
        ))
    }

    /// Requests about an agent, on its home shard.
    pub(crate) fn agent_request(
        &mut self,
        now_ms: Millis,
        caller: &Caller,
        request: Request,
        out: &mut Vec<Output>,
    ) -> Reply {
        match request {
            Request::AgentLogin { tenant, agent, place, media, reason } => {
                self.login(caller, &tenant, &agent, &place, &media, reason, out)
            }
            Request::AgentLogout { tenant, agent, reason } => {
                let a = self.resolve_agent(caller, &tenant, agent.as_deref())?;
                self.may_act_for(caller, a)?;
                if self.agent_state(a).login.is_none() {
                    return Err(self.not_logged_in(a));
                }
                self.logout(now_ms, a, reason.as_deref().unwrap_or("logout"), Some(caller.origin), out);
                Ok(Some(event_ack(caller.ref_id)))
            }
            Request::SetReady { tenant, agent, media, ready, reason } => {
                let a = self.resolve_agent(caller, &tenant, agent.as_deref())?;
                self.may_act_for(caller, a)?;
                self.set_ready(now_ms, a, media.as_deref(), ready, reason, out)?;
                Ok(Some(event_ack(caller.ref_id)))
            }
            Request::AddMedia { tenant, agent, media, capacity } => {
                let a = self.resolve_agent(caller, &tenant, agent.as_deref())?;
                self.may_act_for(caller, a)?;
                self.add_media(now_ms, a, &media, capacity, out)?;
                Ok(Some(event_ack(caller.ref_id)))
            }
            Request::RemoveMedia { tenant, agent, media } => {
                let a = self.resolve_agent(caller, &tenant, agent.as_deref())?;
                self.may_act_for(caller, a)?;
                self.remove_media(now_ms, a, &media, out)?;
                Ok(Some(event_ack(caller.ref_id)))
            }
            Request::SetDoNotDisturb { tenant, agent, on } => {
                let a = self.resolve_agent(caller, &tenant, agent.as_deref())?;
                self.may_act_for(caller, a)?;
                let not_logged_in = self.not_logged_in(a);
                let login = self.agent_state_mut(a).login.as_mut().ok_or(not_logged_in)?;
                let changed = login.dnd != on;
                login.dnd = on;
                if changed {
                    self.report_agent(now_ms, a, || What::DoNotDisturb { on }, out);
                    self.publish(a, out);
                }
                Ok(Some(event_ack(caller.ref_id)))
            }
            Request::GetAgentState { tenant, agent } => {
                let a = self.resolve_agent(caller, &tenant, agent.as_deref())?;
                let f = Frame::new(msg_type::EVENT_AGENT_STATE, caller.ref_id)
                    .with(attr::COUNT, 1i64)
                    .with(attr::AGENT_STATE, self.describe_agent(a));
                Ok(Some(f))
            }
            other => Err(err(ErrorCode::Internal, format!("{} is not an agent request", other.name()))),
        }
    }

    fn not_logged_in(&self, a: AgentRef) -> ProtoError {
        err(ErrorCode::AgentNotLoggedIn, format!("agent '{}' is not logged in", self.agent_login_id(a)))
    }

    pub(crate) fn agent_state(&self, a: AgentRef) -> &AgentState {
        static EMPTY: AgentState = AgentState { login: None, held: Vec::new(), published: Vec::new() };
        self.homes.agents.get(&a).unwrap_or(&EMPTY)
    }

    pub(crate) fn agent_state_mut(&mut self, a: AgentRef) -> &mut AgentState {
        debug_assert_eq!(home_of(a, self.params.shards), self.params.shard, "agent state off its home shard");
        self.homes.agents.entry(a).or_default()
    }

    #[allow(clippy::too_many_arguments)]
    fn login(
        &mut self,
        caller: &Caller,
        tenant: &str,
        agent: &str,
        place: &str,
        media: &[(String, u16)],
        reason: Option<String>,
        out: &mut Vec<Output>,
    ) -> Reply {
        if !matches!(caller.client_type, ClientType::AgentDesktop | ClientType::Proxy | ClientType::Operator) {
            return Err(err(
                ErrorCode::NotPermitted,
                format!("a {} client may not log agents in", caller.client_type.name()),
            ));
        }
        let a = self.resolve_agent(caller, tenant, Some(agent))?;
        if let Some(other) = caller.agent.filter(|&o| o != a) {
            return Err(err(
                ErrorCode::InvalidState,
                format!("agent '{}' is logged in on this connection; log it out first", self.agent_login_id(other)),
            ));
        }
        let t = self.catalog.tenant_at(a.tenant);
        let p = t
            .place(place)
            .ok_or_else(|| err(ErrorCode::UnknownPlace, format!("unknown place '{place}' in tenant '{tenant}'")))?;
        let configured = &t.agents[a.agent as usize].capacity;
        let mut list = Vec::new();
        if media.is_empty() {
            list.extend(configured.iter().filter(|(_, c)| *c > 0).copied());
        }
        for (name, cap) in media {
            let m = t.media_type(name).ok_or_else(|| {
                err(ErrorCode::UnknownMediaType, format!("unknown media type '{name}' in tenant '{tenant}'"))
            })?;
            let max = configured.iter().find(|(cm, _)| *cm == m).map(|(_, c)| *c).unwrap_or(0);
            if max == 0 {
                return Err(err(
                    ErrorCode::InvalidValue,
                    format!("agent '{agent}' has no capacity configured for media type '{name}'"),
                ));
            }
            list.push((m, if *cap == 0 { max } else { (*cap).min(max) }));
        }
        if self.agent_state(a).login.is_some() {
            return self.login_again(caller, a, p, out);
        }
        let op = self.next_op;
        self.next_op += 1;
        self.homes
            .pending_logins
            .insert(op, PendingLogin { caller: caller.clone(), agent: a, place: p, media: list, reason });
        let control = self.params.agents.agent_login_control;
        let seats = self.params.agents.agent_seats;
        out.push(Output::Peer {
            to: LEDGER_SHARD,
            msg: PeerMsg::LoginClaim { op, agent: a, place: p, control, seats },
        });
        Ok(None)
    }

    /// A login for an agent already logged in: another desktop, or the same
    /// one back within the login session.
    fn login_again(&mut self, caller: &Caller, a: AgentRef, p: PlaceIdx, out: &mut Vec<Output>) -> Reply {
        let policy = self.params.agents.multiple_connections;
        let login = self.agent_state(a).login.as_ref().expect("checked by the caller");
        if login.place != p {
            return Err(err(
                ErrorCode::AgentAlreadyLoggedIn,
                format!(
                    "agent '{}' is logged in on place '{}'",
                    self.agent_login_id(a),
                    self.place_name(a.tenant, login.place)
                ),
            ));
        }
        if login.conns.contains(&caller.origin) {
            return Ok(Some(event_ack(caller.ref_id)));
        }
        let others: SmallVec<[Origin; 2]> = login.conns.clone();
        if !others.is_empty() {
            match policy {
                MultipleConnections::Allow => {}
                MultipleConnections::Refuse => {
                    return Err(err(
                        ErrorCode::AgentAlreadyLoggedIn,
                        format!(
                        "agent '{}' is logged in from another connection (allow-multiple-agent-connections = false)",
                        self.agent_login_id(a)
                    ),
                    ))
                }
                MultipleConnections::ForceLogout => {
                    for o in &others {
                        self.unbind(*o, a, "logged in from another connection", out);
                    }
                    self.agent_state_mut(a).login.as_mut().expect("checked").conns.clear();
                }
            }
        }
        let login = self.agent_state_mut(a).login.as_mut().expect("checked");
        login.conns.push(caller.origin);
        login.lost_at = 0;
        self.timers.cancel(Timer::LoginSession(a));
        out.push(Output::Bind { origin: caller.origin, agent: Some(a) });
        // Back from a dropped connection: it can take work again.
        self.publish(a, out);
        Ok(Some(self.login_ack(caller.ref_id, a)))
    }

    fn login_ack(&self, ref_id: u32, a: AgentRef) -> Frame {
        let place = self.agent_state(a).login.as_ref().map(|l| l.place).unwrap_or(0);
        event_ack(ref_id)
            .with(attr::AGENT_ID, self.agent_login_id(a))
            .with(attr::PLACE, self.place_name(a.tenant, place))
            .with(attr::MEDIA_LIST, self.media_list(a))
    }

    /// The ledger's answer to a login's claim.
    pub(crate) fn login_claimed(
        &mut self,
        now_ms: Millis,
        op: u64,
        result: Result<(), ProtoError>,
        out: &mut Vec<Output>,
    ) {
        let Some(p) = self.homes.pending_logins.remove(&op) else {
            debug_assert!(false, "a claim answer for no login");
            return;
        };
        let ref_id = p.caller.ref_id;
        let origin = p.caller.origin;
        let reply = match result {
            Err(e) => Err(e),
            // A reload removed the agent or the place meanwhile.
            Ok(()) if self.removed(p.agent, p.place).is_some() => {
                out.push(Output::Peer { to: LEDGER_SHARD, msg: PeerMsg::LoginFree { agent: p.agent } });
                let why = self.removed(p.agent, p.place).expect("checked");
                Err(err(ErrorCode::UnknownAgent, why))
            }
            // Another login of this agent finished first: join it.
            Ok(()) if self.agent_state(p.agent).login.is_some() => self.login_again(&p.caller, p.agent, p.place, out),
            Ok(()) => {
                let a = p.agent;
                let media = p
                    .media
                    .iter()
                    .map(|&(media, capacity)| MediaLogin {
                        media,
                        capacity,
                        ready: false,
                        reason: None,
                        idle_since: now_ms,
                    })
                    .collect();
                let mut conns = SmallVec::new();
                conns.push(origin);
                self.agent_state_mut(a).login =
                    Some(Login { place: p.place, conns, media, dnd: false, lost_at: 0, at: now_ms });
                out.push(Output::Bind { origin, agent: Some(a) });
                let media = self
                    .agent_state(a)
                    .login
                    .as_ref()
                    .map(|l| l.media.iter().map(|m| (m.media, m.capacity)).collect())
                    .unwrap_or_default();
                let reason = p.reason.as_deref().map(text);
                self.report_agent(now_ms, a, || What::AgentLogin { place: p.place, media, reason }, out);
                Ok(Some(self.login_ack(ref_id, a)))
            }
        };
        self.answer(origin, ref_id, reply, out);
    }

    /// Answers a request whose answer was delayed.
    pub(crate) fn answer(&self, origin: Origin, ref_id: u32, reply: Reply, out: &mut Vec<Output>) {
        match reply {
            Ok(Some(frame)) => out.push(Output::Reply { origin, frame }),
            Ok(None) => {}
            Err(e) => out.push(Output::Reply { origin, frame: crate::proto::request::event_error(ref_id, &e) }),
        }
    }

    /// The ledger (shard 0): a login's claim of a seat and a place.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn ledger_claim(
        &mut self,
        from: u16,
        op: u64,
        a: AgentRef,
        place: PlaceIdx,
        control: bool,
        seats: u32,
        out: &mut Vec<Output>,
    ) {
        let result = match self.homes.ledger.seats.get(&a) {
            Some(&p) if p == place => Ok(()),
            Some(_) => Err(err(ErrorCode::AgentAlreadyLoggedIn, "the agent is logged in on another place")),
            None => {
                let taken = self.homes.ledger.places.get(&(a.tenant, place)).copied();
                if control && taken.is_some_and(|o| o != a) {
                    let other = self.agent_login_id(taken.expect("checked")).to_string();
                    Err(err(
                        ErrorCode::PlaceTaken,
                        format!("place '{}' is taken by agent '{other}'", self.place_name(a.tenant, place)),
                    ))
                } else if self.homes.ledger.seats.len() as u64 >= seats as u64 {
                    Err(err(
                        ErrorCode::NoLicense,
                        format!("all {seats} licensed agent seats of this node are taken (agent-seats)"),
                    ))
                } else {
                    self.homes.ledger.seats.insert(a, place);
                    if control {
                        self.homes.ledger.places.insert((a.tenant, place), a);
                    }
                    Ok(())
                }
            }
        };
        out.push(Output::Peer { to: from, msg: PeerMsg::LoginClaimed { op, result } });
    }

    pub(crate) fn ledger_free(&mut self, a: AgentRef) {
        if let Some(p) = self.homes.ledger.seats.remove(&a) {
            if self.homes.ledger.places.get(&(a.tenant, p)) == Some(&a) {
                self.homes.ledger.places.remove(&(a.tenant, p));
            }
        }
    }

    /// Why `a` may not be logged in on `place` any more: a reload removed
    /// one of them.
    fn removed(&self, a: AgentRef, place: PlaceIdx) -> Option<&'static str> {
        let t = self.catalog.tenant_at(a.tenant);
        if t.agents[a.agent as usize].retired {
            Some(REMOVED_AGENT)
        } else if t.places[place as usize].retired {
            Some(REMOVED_PLACE)
        } else {
            None
        }
    }

    /// The agents homed here that are logged in, and their places.
    pub fn logged_in_agents(&self) -> Vec<(AgentRef, PlaceIdx)> {
        let mut l: Vec<(AgentRef, PlaceIdx)> =
            self.homes.agents.iter().filter_map(|(a, s)| s.login.as_ref().map(|l| (*a, l.place))).collect();
        l.sort_unstable();
        l
    }

    /// A reload's catalog is in force: agents it removed, and agents
    /// logged in on a place it removed, are logged out (reason
    /// [`REMOVED_AGENT`] or [`REMOVED_PLACE`]; what they handle stays with
    /// them until it ends, as at any logout); the dispatcher hears every
    /// other homed agent's availability again (its skills or its tenant's
    /// strategies may have changed, and while a tenant had no strategy its
    /// agents told no one).
    pub(crate) fn reconfigure_agents(&mut self, now_ms: Millis, out: &mut Vec<Output>) {
        // In order: the map's order is not the same from run to run, and
        // the outputs must be.
        let mut homed: Vec<(AgentRef, Option<PlaceIdx>)> =
            self.homes.agents.iter().map(|(a, s)| (*a, s.login.as_ref().map(|l| l.place))).collect();
        homed.sort_unstable();
        for (a, place) in homed {
            match place.and_then(|p| self.removed(a, p)) {
                Some(reason) => self.logout(now_ms, a, reason, None, out),
                None => self.republish(a, out),
            }
        }
    }

    /// Tells a connection it no longer carries the agent.
    fn unbind(&self, origin: Origin, a: AgentRef, reason: &str, out: &mut Vec<Output>) {
        out.push(Output::Bind { origin, agent: None });
        let f = Frame::new(msg_type::EVENT_LOGGED_OUT, 0)
            .with(attr::AGENT_ID, self.agent_login_id(a))
            .with(attr::REASON, reason);
        out.push(Output::Event { origin, frame: f });
    }

    /// Logs `a` out: its invitations go back to their queues, its seat and
    /// place are freed. Interactions it handles stay with it until they end
    /// (handling-timeout bounds that).
    pub(crate) fn logout(
        &mut self,
        now_ms: Millis,
        a: AgentRef,
        reason: &str,
        by: Option<Origin>,
        out: &mut Vec<Output>,
    ) {
        let Some(login) = self.agent_state_mut(a).login.take() else { return };
        self.timers.cancel(Timer::LoginSession(a));
        for o in &login.conns {
            if Some(*o) == by {
                out.push(Output::Bind { origin: *o, agent: None });
            } else {
                self.unbind(*o, a, reason, out);
            }
        }
        self.revoke_invitations(a, out);
        out.push(Output::Peer { to: LEDGER_SHARD, msg: PeerMsg::LoginFree { agent: a } });
        self.report_agent(now_ms, a, || What::AgentLogout { place: login.place, reason: text(reason) }, out);
        self.publish(a, out);
    }

    fn set_ready(
        &mut self,
        now_ms: Millis,
        a: AgentRef,
        media: Option<&str>,
        ready: bool,
        reason: Option<String>,
        out: &mut Vec<Output>,
    ) -> Result<(), ProtoError> {
        let m = match media {
            Some(name) => Some(
                self.catalog
                    .tenant_at(a.tenant)
                    .media_type(name)
                    .ok_or_else(|| err(ErrorCode::UnknownMediaType, format!("unknown media type '{name}'")))?,
            ),
            None => None,
        };
        let not_logged_in = self.not_logged_in(a);
        let login = self.agent_state_mut(a).login.as_mut().ok_or(not_logged_in)?;
        if let Some(m) = m {
            if !login.media.iter().any(|x| x.media == m) {
                return Err(err(
                    ErrorCode::MediaNotLoggedIn,
                    format!("the agent is not logged in on media type '{}'", media.unwrap_or("")),
                ));
            }
        }
        let mut changed = Vec::new();
        for x in login.media.iter_mut().filter(|x| m.is_none_or(|m| m == x.media)) {
            if x.ready != ready || (!ready && x.reason.as_deref() != reason.as_deref()) {
                if ready && !x.ready {
                    x.idle_since = now_ms;
                }
                x.ready = ready;
                x.reason = if ready { None } else { reason.as_deref().map(Into::into) };
                changed.push(x.media);
            }
        }
        for media in changed {
            self.report_readiness(now_ms, a, media, ready, reason.as_deref(), out);
        }
        self.publish(a, out);
        Ok(())
    }

    fn report_readiness(
        &mut self,
        now_ms: Millis,
        a: AgentRef,
        media: MediaIdx,
        ready: bool,
        reason: Option<&str>,
        out: &mut Vec<Output>,
    ) {
        let reason = reason.map(text);
        let what =
            || if ready { What::ReadyForMedia { media, reason } } else { What::NotReadyForMedia { media, reason } };
        self.report_agent(now_ms, a, what, out);
    }

    fn add_media(
        &mut self,
        now_ms: Millis,
        a: AgentRef,
        media: &str,
        capacity: u16,
        out: &mut Vec<Output>,
    ) -> Result<(), ProtoError> {
        let t = self.catalog.tenant_at(a.tenant);
        let m = t
            .media_type(media)
            .ok_or_else(|| err(ErrorCode::UnknownMediaType, format!("unknown media type '{media}'")))?;
        let max = t.agents[a.agent as usize].capacity.iter().find(|(cm, _)| *cm == m).map(|(_, c)| *c).unwrap_or(0);
        if max == 0 {
            return Err(err(
                ErrorCode::InvalidValue,
                format!("the agent has no capacity configured for media type '{media}'"),
            ));
        }
        let not_logged_in = self.not_logged_in(a);
        let login = self.agent_state_mut(a).login.as_mut().ok_or(not_logged_in)?;
        if login.media.iter().any(|x| x.media == m) {
            return Err(err(
                ErrorCode::InvalidState,
                format!("the agent is already logged in on media type '{media}'"),
            ));
        }
        let capacity = if capacity == 0 { max } else { capacity.min(max) };
        login.media.push(MediaLogin { media: m, capacity, ready: false, reason: None, idle_since: now_ms });
        self.report_agent(now_ms, a, || What::MediaAdded { media: m, capacity }, out);
        Ok(())
    }

    fn remove_media(
        &mut self,
        now_ms: Millis,
        a: AgentRef,
        media: &str,
        out: &mut Vec<Output>,
    ) -> Result<(), ProtoError> {
        let m = self
            .catalog
            .tenant_at(a.tenant)
            .media_type(media)
            .ok_or_else(|| err(ErrorCode::UnknownMediaType, format!("unknown media type '{media}'")))?;
        let not_logged_in = self.not_logged_in(a);
        let login = self.agent_state_mut(a).login.as_mut().ok_or(not_logged_in)?;
        let before = login.media.len();
        login.media.retain(|x| x.media != m);
        if login.media.len() == before {
            return Err(err(
                ErrorCode::MediaNotLoggedIn,
                format!("the agent is not logged in on media type '{media}'"),
            ));
        }
        self.report_agent(now_ms, a, || What::MediaRemoved { media: m }, out);
        self.publish(a, out);
        Ok(())
    }

    /// Sends the dispatcher the agent's availability if it changed.
    pub(crate) fn publish(&mut self, a: AgentRef, out: &mut Vec<Output>) {
        self.publish_availability(a, false, out);
    }

    /// Sends the availability even if unchanged: the dispatcher's copy
    /// proved stale (a refused offer).
    pub(crate) fn republish(&mut self, a: AgentRef, out: &mut Vec<Output>) {
        self.publish_availability(a, true, out);
    }

    fn publish_availability(&mut self, a: AgentRef, force: bool, out: &mut Vec<Output>) {
        if self.catalog.tenant_at(a.tenant).strategy_queues().next().is_none() {
            return;
        }
        let st = self.agent_state_mut(a);
        let now = st.availability();
        if now == st.published && !force {
            return;
        }
        st.published = now.clone();
        let to = dispatcher_of(a.tenant, self.params.shards);
        out.push(Output::Peer { to, msg: PeerMsg::AgentAvail { agent: a, avail: now } });
    }

    /// The home's side of a reservation: take one unit of capacity, or say
    /// why not. One step, so no two offers can take the same unit.
    pub(crate) fn reserve(
        &mut self,
        from: u16,
        ticket: u64,
        id: Box<str>,
        a: AgentRef,
        media: MediaIdx,
        out: &mut Vec<Output>,
    ) {
        let result = self.check_available(a, media);
        let mut replaced = false;
        let result = result.map(|()| {
            let st = self.agent_state_mut(a);
            let login = st.login.as_ref().expect("checked available");
            let m = login.media.iter().find(|m| m.media == media).expect("checked available");
            // Invariant 3, as the capacity rule states it: a unit is taken
            // only below capacity, so holdings grow past it never; they
            // exceed it only when the capacity was lowered below them.
            assert!(st.held_for(media) < m.capacity, "invariant 3: an offer to an agent at or over its capacity");
            let granted = (login.conns.to_vec(), login.place);
            // An earlier offer of the same interaction whose release is
            // still on its way (it waits until the desktops are told that
            // offer ended) gives its unit to this one: the desktops hear
            // of the end of the earlier offer before they hear of this one.
            let before = st.held.len();
            st.held.retain(|h| h.id != id);
            replaced = st.held.len() < before;
            st.held.push(Held { id: id.clone(), media, accepted: false, ticket });
            granted
        });
        out.push(Output::Peer { to: from, msg: PeerMsg::Reserved { ticket, id, agent: a, result } });
        // The dispatcher took a unit for this offer from its copy; with
        // one handed over, the home's count is unchanged and the copy
        // must hear it anyway.
        self.publish_availability(a, replaced, out);
    }

    fn check_available(&self, a: AgentRef, media: MediaIdx) -> Result<(), ProtoError> {
        let st = self.agent_state(a);
        let login = st.login.as_ref().ok_or_else(|| self.not_logged_in(a))?;
        let name = self.agent_login_id(a);
        if login.conns.is_empty() {
            return Err(err(ErrorCode::AgentNotAvailable, format!("agent '{name}' has no desktop connected")));
        }
        if login.dnd {
            return Err(err(ErrorCode::AgentNotAvailable, format!("agent '{name}' is in do-not-disturb")));
        }
        let m = login.media.iter().find(|m| m.media == media).ok_or_else(|| {
            err(
                ErrorCode::MediaNotLoggedIn,
                format!("agent '{name}' is not logged in on media type '{}'", self.media_name(a.tenant, media)),
            )
        })?;
        if !m.ready {
            return Err(err(ErrorCode::AgentNotAvailable, format!("agent '{name}' is not ready for that media type")));
        }
        if st.held_for(media) >= m.capacity {
            return Err(err(
                ErrorCode::AgentNotAvailable,
                format!("agent '{name}' has no free capacity for that media type"),
            ));
        }
        Ok(())
    }

    /// The agent no longer holds `id` by the offer `ticket` (a later offer
    /// of it may have taken that one's unit meanwhile: see `reserve`).
    pub(crate) fn release(
        &mut self,
        now_ms: Millis,
        a: AgentRef,
        media: MediaIdx,
        (id, ticket): (&str, u64),
        not_ready: bool,
        out: &mut Vec<Output>,
    ) {
        let st = self.agent_state_mut(a);
        let before = st.held.len();
        st.held.retain(|h| (&*h.id, h.ticket) != (id, ticket));
        let released = st.held.len() < before;
        let mut set_not_ready = false;
        if let Some(login) = st.login.as_mut() {
            if let Some(m) = login.media.iter_mut().find(|m| m.media == media) {
                if released {
                    m.idle_since = now_ms;
                }
                if not_ready && m.ready {
                    m.ready = false;
                    m.reason = Some("invitation-timeout".into());
                    set_not_ready = true;
                }
            }
        }
        if set_not_ready {
            self.report_readiness(now_ms, a, media, false, Some("invitation-timeout"), out);
        }
        self.publish(a, out);
    }

    pub(crate) fn accepted(&mut self, a: AgentRef, id: &str) {
        if let Some(h) = self.agent_state_mut(a).held.iter_mut().find(|h| &*h.id == id) {
            h.accepted = true;
        }
    }

    /// A desktop connection of `a` closed: with none left, the login
    /// session starts (login-session-timeout).
    pub(crate) fn desktop_gone(&mut self, now_ms: Millis, origin: Origin, a: AgentRef, out: &mut Vec<Output>) {
        let timeout = self.params.agents.login_session_timeout_ms;
        let Some(login) = self.agent_state_mut(a).login.as_mut() else { return };
        let before = login.conns.len();
        login.conns.retain(|o| *o != origin);
        if login.conns.len() == before || !login.conns.is_empty() {
            return;
        }
        if timeout == 0 {
            self.logout(now_ms, a, "connection lost", None, out);
            return;
        }
        login.lost_at = now_ms;
        self.timers.set(Timer::LoginSession(a), now_ms + timeout);
        // No desktop: its invitations go back to their queues now, and
        // nothing can be offered to it meanwhile.
        self.revoke_invitations(a, out);
        self.publish(a, out);
    }

    /// Asks the owners to end `a`'s unanswered invitations; their releases
    /// change its holdings (an invitation accepted meanwhile stays).
    fn revoke_invitations(&mut self, a: AgentRef, out: &mut Vec<Output>) {
        let st = self.agent_state(a);
        for h in st.held.iter().filter(|h| !h.accepted) {
            let to = crate::id::owner_of(&h.id, self.params.shards);
            out.push(Output::Peer { to, msg: PeerMsg::Revoke { agent: a, id: h.id.clone() } });
        }
    }

    fn media_list(&self, a: AgentRef) -> KvList {
        let mut l = KvList::new();
        if let Some(login) = &self.agent_state(a).login {
            for m in &login.media {
                l.push(self.media_name(a.tenant, m.media), Value::Int(m.capacity as i64));
            }
        }
        l
    }

    /// One agent's state (docs/protocol.md "Agent state").
    pub(crate) fn describe_agent(&self, a: AgentRef) -> KvList {
        let st = self.agent_state(a);
        let mut l = KvList::new();
        l.push("agent_id", Value::Str(self.agent_login_id(a).into()));
        l.push("tenant", Value::Str(self.catalog.tenant_at(a.tenant).name.clone()));
        match &st.login {
            None => l.push("state", Value::Str("logged-out".into())),
            Some(login) => {
                let state = if login.conns.is_empty() { "disconnected" } else { "logged-in" };
                l.push("state", Value::Str(state.into()));
                l.push("place", Value::Str(self.place_name(a.tenant, login.place).into()));
                l.push("logged_in_at", Value::Int(login.at));
                l.push("do_not_disturb", Value::Int(login.dnd as i64));
                l.push("connections", Value::Int(login.conns.len() as i64));
                let mut media = KvList::new();
                for m in &login.media {
                    let mut e = KvList::new();
                    e.push("capacity", Value::Int(m.capacity as i64));
                    e.push("ready", Value::Int(m.ready as i64));
                    e.push("held", Value::Int(st.held_for(m.media) as i64));
                    e.push("idle_since", Value::Int(m.idle_since));
                    if let Some(r) = &m.reason {
                        e.push("reason", Value::Str(r.to_string()));
                    }
                    media.push(self.media_name(a.tenant, m.media), Value::List(e));
                }
                l.push("media", Value::List(media));
            }
        }
        let mut held = KvList::new();
        for h in &st.held {
            held.push(&*h.id, Value::Str(if h.accepted { "handling" } else { "invited" }.into()));
        }
        l.push("interactions", Value::List(held));
        l
    }

    /// The agents homed here, of `tenant`, described, by agent index.
    pub(crate) fn homed_agents(&self, tenant: TenantIdx) -> Vec<(AgentIdx, KvList)> {
        let n = self.catalog.tenant_at(tenant).agents.len() as AgentIdx;
        (0..n)
            .map(|agent| AgentRef { tenant, agent })
            .filter(|&a| home_of(a, self.params.shards) == self.params.shard)
            .filter(|a| !self.catalog.tenant_at(tenant).agents[a.agent as usize].retired)
            .map(|a| (a.agent, self.describe_agent(a)))
            .collect()
    }
}

impl Shard {
    /// RequestGetAgentState for every agent of a tenant: each shard
    /// describes the agents homed there.
    pub(crate) fn start_agent_states(&mut self, caller: &Caller, tenant: &str, out: &mut Vec<Output>) -> Reply {
        let t = self.tenant_idx(tenant)?;
        let op = self.next_op;
        self.next_op += 1;
        self.homes.state_ops.insert(op, (caller.clone(), self.params.shards, Vec::new()));
        for to in 0..self.params.shards {
            out.push(Output::Peer { to, msg: PeerMsg::AgentStates { op, tenant: t } });
        }
        Ok(None)
    }

    pub(crate) fn agent_state_list(&mut self, op: u64, states: Vec<(AgentIdx, KvList)>, out: &mut Vec<Output>) {
        let Some((_, waiting, all)) = self.homes.state_ops.get_mut(&op) else { return };
        all.extend(states);
        *waiting -= 1;
        if *waiting > 0 {
            return;
        }
        let (caller, _, mut all) = self.homes.state_ops.remove(&op).expect("present");
        all.sort_by_key(|(a, _)| *a);
        let total = all.len();
        // Stay well inside a frame: agents past the room are counted in
        // Total but not listed.
        let room = self.params.max_frame.saturating_sub(1024);
        let mut used = 0;
        let mut f = Frame::new(msg_type::EVENT_AGENT_STATE, caller.ref_id);
        let mut listed = Vec::new();
        for (_, l) in all {
            let size = crate::proto::frame::encoded_list_len(&l) + 8;
            if used + size > room {
                break;
            }
            used += size;
            listed.push(l);
        }
        f.push(attr::COUNT, listed.len() as i64);
        f.push(attr::TOTAL, total as i64);
        for l in listed {
            f.push(attr::AGENT_STATE, l);
        }
        out.push(Output::Reply { origin: caller.origin, frame: f });
    }
}

/// An agent's state on its home shard, for tests and tools.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentView {
    /// Logged in (possibly waiting for a desktop to reconnect).
    pub logged_in: bool,
    /// Desktop connections open.
    pub connections: usize,
    pub dnd: bool,
    /// Media logged in on: (media, capacity, ready).
    pub media: Vec<(MediaIdx, u16, bool)>,
    /// Interactions held: (id, media, accepted, ticket of the offer).
    pub held: Vec<(String, MediaIdx, bool, u64)>,
}

impl Shard {
    /// The state of `a`, if this is its home shard.
    pub fn agent_view(&self, a: AgentRef) -> Option<AgentView> {
        if home_of(a, self.params.shards) != self.params.shard {
            return None;
        }
        let st = self.agent_state(a);
        let login = st.login.as_ref();
        Some(AgentView {
            logged_in: login.is_some(),
            connections: login.map_or(0, |l| l.conns.len()),
            dnd: login.is_some_and(|l| l.dnd),
            media: login.map_or(Vec::new(), |l| l.media.iter().map(|m| (m.media, m.capacity, m.ready)).collect()),
            held: st.held.iter().map(|h| (h.id.to_string(), h.media, h.accepted, h.ticket)).collect(),
        })
    }
}
