//! A full check of one shard's state: every invariant that can be stated
//! over the state of a single shard, recomputed from scratch.
//!
//! The state machine keeps derived state beside its interactions (view
//! indexes keyed by values of the interactions, queue counts, locks, links,
//! reservations, agents' holdings and the availability the dispatcher was
//! told). Each rule here recomputes the derived state from what it derives
//! from and compares. The simulations call [`Shard::audit`] after every
//! input, so a step that leaves the state inconsistent is caught at that
//! step, not later when something trips over it (a stale view key, say,
//! panics only at the next pull). It costs time proportional to the
//! shard's whole state: for tests and tools, never on the server's path.
//!
//! Invariants that span shards (an owner's link and the agent's holding on
//! its home) are the simulations' to check; [`Shard::capacity_use`] and
//! [`check_capacity_growth`] give them what they need for the capacity
//! rule, which is about a change, not a state.

use std::collections::{BTreeMap, BTreeSet};

use crate::agent::{home_of, AgentRef};
use crate::catalog::MediaIdx;
use crate::interaction::Place;
use crate::machine::Shard;
use crate::peer::LockKind;
use crate::routing::LinkState;
use crate::store::Slot;
use crate::view::ViewKey;

/// One agent's use of one media type, on its home shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapacityUse {
    pub agent: AgentRef,
    pub media: MediaIdx,
    /// Interactions of this media type it holds (invited or handling).
    pub held: u16,
    /// Its capacity; `None` when it is not logged in on the media type.
    pub capacity: Option<u16>,
}

impl Shard {
    /// Checks every invariant of this shard's state; the error names the
    /// first one broken and the interaction or agent concerned.
    pub fn audit(&self) -> Result<(), String> {
        let live: BTreeSet<Slot> = self.store.iter().map(|(s, _)| s).collect();
        self.audit_views()?;
        self.audit_counts()?;
        self.audit_locks(&live)?;
        self.audit_links(&live)?;
        self.audit_reservations()?;
        self.audit_writes()?;
        self.audit_agents()?;
        self.audit_dispatch()?;
        Ok(())
    }

    fn id_at(&self, slot: Slot) -> &str {
        &self.store.get(slot).id
    }

    /// Each view index holds exactly the visible, unlocked interactions of
    /// its queue that meet its condition, each under the key computed from
    /// its fields now.
    fn audit_views(&self) -> Result<(), String> {
        let names = self.names();
        for (t, tenant) in self.catalog.tenants.iter().enumerate() {
            for (v, view) in tenant.views.iter().enumerate() {
                let index = &self.views[t][v];
                let mut expected: BTreeMap<u64, (ViewKey, Slot)> = BTreeMap::new();
                for (slot, ix) in self.store.iter() {
                    let held = ix.tenant as usize == t
                        && ix.visible
                        && ix.place == Place::Queue(view.queue)
                        && !self.locks.contains_key(&slot)
                        && view.condition.as_ref().is_none_or(|c| ix.matches(c, names));
                    if held {
                        expected.insert(ix.tie, (index.key(ix, names), slot));
                    }
                }
                let entries = index.head(index.len());
                if entries.len() != index.len() {
                    return Err(format!("view '{}': head lists {} of {} entries", view.name, entries.len(), index.len()));
                }
                for (key, tie) in &entries {
                    let Some((want, slot)) = expected.remove(tie) else {
                        let why = match self.store.find_tie(*tie) {
                            None => "no interaction has this tie".to_string(),
                            Some(s) => format!("{} should not be in it ({})", self.id_at(s), self.why_out(s, t, v)),
                        };
                        return Err(format!("view '{}' holds tie {tie} under {key:?}: {why}", view.name));
                    };
                    if want != *key {
                        return Err(format!(
                            "view '{}' holds {} under the stale key {key:?}; its key is now {want:?}",
                            view.name,
                            self.id_at(slot)
                        ));
                    }
                }
                if let Some((tie, (key, slot))) = expected.into_iter().next() {
                    return Err(format!(
                        "view '{}' lacks {} (key {key:?}, tie {tie}), which is in its queue, visible, unlocked and \
                         meets its condition",
                        view.name,
                        self.id_at(slot)
                    ));
                }
            }
        }
        Ok(())
    }

    /// Why the interaction at `slot` does not belong in view `v`.
    fn why_out(&self, slot: Slot, t: usize, v: usize) -> String {
        let ix = self.store.get(slot);
        let view = &self.catalog.tenants[t].views[v];
        if ix.tenant as usize != t || ix.place != Place::Queue(view.queue) {
            "it is not in the view's queue".into()
        } else if !ix.visible {
            "its submit is not committed".into()
        } else if let Some(l) = self.locks.get(&slot) {
            format!("it is locked ({:?})", l.kind)
        } else {
            "it does not meet the view's condition".into()
        }
    }

    /// Each queue's counts: its visible interactions, and how many of them
    /// are locked.
    fn audit_counts(&self) -> Result<(), String> {
        let mut counted = vec![];
        for tenant in &self.catalog.tenants {
            counted.push(vec![(0u64, 0u64); tenant.queues.len()]);
        }
        for (slot, ix) in self.store.iter() {
            if let (Place::Queue(q), true) = (ix.place, ix.visible) {
                let c = &mut counted[ix.tenant as usize][q as usize];
                c.0 += 1;
                c.1 += self.locks.contains_key(&slot) as u64;
            }
        }
        for (t, tenant) in self.catalog.tenants.iter().enumerate() {
            for (q, queue) in tenant.queues.iter().enumerate() {
                let have = self.depth[t][q];
                let (interactions, locked) = counted[t][q];
                if (have.interactions, have.locked) != (interactions, locked) {
                    return Err(format!(
                        "queue '{}' counts {} interactions, {} locked; it holds {interactions}, {locked} locked",
                        queue.name, have.interactions, have.locked
                    ));
                }
            }
        }
        Ok(())
    }

    /// Locks are on live, visible interactions; an agent's lock goes with
    /// a link to that agent or a strategy's reservation for it in flight.
    fn audit_locks(&self, live: &BTreeSet<Slot>) -> Result<(), String> {
        for (slot, lock) in &self.locks {
            if !live.contains(slot) {
                return Err(format!("a lock ({:?}) on slot {slot}, which holds no interaction", lock.kind));
            }
            let id = self.id_at(*slot);
            if !self.store.get(*slot).visible {
                return Err(format!("{id} is locked ({:?}) before its submit is committed", lock.kind));
            }
            let LockKind::Agent(agent) = lock.kind else { continue };
            let linked = self.links.get(slot).is_some_and(|l| l.agent == agent);
            let reserving = self.reserving.get(id).and_then(|t| self.reservations.get(t)).is_some_and(|r| {
                r.agent == agent && matches!(r.via, crate::routing::Via::Strategy { .. })
            });
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
        let mut deadlines = BTreeSet::new();
        for (slot, link) in &self.links {
            if !live.contains(slot) {
                return Err(format!("a link to agent {:?} on slot {slot}, which holds no interaction", link.agent));
            }
            let id = self.id_at(*slot);
            let kind = self.locks.get(slot).map(|l| l.kind);
            if kind != Some(LockKind::Agent(link.agent)) {
                return Err(format!("{id} is linked to agent {:?} but locked {kind:?}", link.agent));
            }
            deadlines.insert((link.deadline, *slot));
        }
        if deadlines != self.link_deadlines {
            return Err(format!("link deadlines {:?} differ from the links' {deadlines:?}", self.link_deadlines));
        }
        for (slot, ix) in self.store.iter() {
            let assigned = ix.handling.as_deref().and_then(|h| h.assigned_to).map(|s| self.syms.name(s));
            let handler = self
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
        if self.reservations.len() != self.reserving.len() {
            return Err(format!(
                "{} reservations by ticket, {} by id",
                self.reservations.len(),
                self.reserving.len()
            ));
        }
        for (ticket, r) in &self.reservations {
            if self.reserving.get(&r.id) != Some(ticket) {
                return Err(format!("reservation {ticket} of {} is not listed under its id", r.id));
            }
        }
        Ok(())
    }

    /// Each interaction's last write in flight is a pending write; an
    /// interaction whose submit is not committed has one.
    fn audit_writes(&self) -> Result<(), String> {
        for (id, token) in &self.last_write {
            if !self.pending.contains_key(token) {
                return Err(format!("{id}'s last write {token} is not in flight"));
            }
        }
        for (_, ix) in self.store.iter() {
            if !ix.visible && !self.last_write.contains_key(&ix.id) {
                return Err(format!("{} is not visible, yet no write of it is in flight", ix.id));
            }
        }
        Ok(())
    }

    /// Agents homed here: each interaction held once; login sessions
    /// waiting exactly for agents with no desktop; the availability last
    /// sent to the dispatcher is the agent's availability now.
    fn audit_agents(&self) -> Result<(), String> {
        let timeout = self.params.agents.login_session_timeout_ms;
        for (a, st) in &self.agents {
            let name = self.agent_login_id(*a);
            if home_of(*a, self.params.shards) != self.params.shard {
                return Err(format!("agent '{name}' has state off its home shard"));
            }
            let ids: BTreeSet<&str> = st.held.iter().map(|h| &*h.id).collect();
            if ids.len() != st.held.len() {
                return Err(format!("agent '{name}' holds one interaction twice: {:?}", st.held));
            }
            let waiting = self.session_deadlines.iter().filter(|(_, x)| x == a).count();
            let lost = st.login.as_ref().is_some_and(|l| l.conns.is_empty());
            if waiting != usize::from(lost && timeout > 0) {
                return Err(format!(
                    "agent '{name}': {waiting} login sessions waiting, desktops lost: {lost} (timeout {timeout} ms)"
                ));
            }
            let strategies = self.catalog.tenant_at(a.tenant).strategy_queues().next().is_some();
            let now = self.availability_of(*a);
            if strategies && st.published != now {
                return Err(format!(
                    "agent '{name}': the dispatcher was told {:?}, its availability is {now:?}",
                    st.published
                ));
            }
        }
        Ok(())
    }

    /// What agent `a` can take, restated from the reservation rule: logged
    /// in with a desktop, not in do-not-disturb, and per media type ready
    /// with holdings below capacity.
    fn availability_of(&self, a: AgentRef) -> crate::peer::Availability {
        let st = self.agent_state(a);
        let Some(login) = st.login.as_ref().filter(|l| !l.dnd && !l.conns.is_empty()) else { return Vec::new() };
        login
            .media
            .iter()
            .filter(|m| m.ready && st.held_for(m.media) < m.capacity)
            .map(|m| (m.media, m.capacity - st.held_for(m.media), m.idle_since))
            .collect()
    }

    /// The dispatcher's index of agents by media type matches its copy of
    /// their availability.
    fn audit_dispatch(&self) -> Result<(), String> {
        for (tenant, d) in &self.dispatch {
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

    /// Whether a snapshot's cut holds this shard: inputs that change
    /// interactions wait (and their answers with them) until it thaws.
    pub fn holds_inputs(&self) -> bool {
        self.frozen > 0
    }

    /// Every agent homed here that holds something or is logged in: its
    /// holdings and capacity per media type.
    pub fn capacity_use(&self) -> Vec<CapacityUse> {
        let mut uses = BTreeMap::new();
        for (a, st) in &self.agents {
            for h in &st.held {
                let u = uses.entry((*a, h.media)).or_insert(CapacityUse {
                    agent: *a,
                    media: h.media,
                    held: 0,
                    capacity: None,
                });
                u.held += 1;
            }
            for m in st.login.iter().flat_map(|l| &l.media) {
                uses.entry((*a, m.media))
                    .or_insert(CapacityUse { agent: *a, media: m.media, held: 0, capacity: None })
                    .capacity = Some(m.capacity);
            }
        }
        uses.into_values().collect()
    }
}

/// The capacity rule, over one step: capacity may drop below what an agent
/// holds (a login with less, a media type removed and added again), but
/// holdings grow only by a reservation, and a reservation is taken only
/// below capacity. So a holding that grew is within the capacity it grew
/// under.
pub fn check_capacity_growth(before: &[CapacityUse], after: &[CapacityUse]) -> Result<(), String> {
    for u in after {
        let was = before.iter().find(|b| (b.agent, b.media) == (u.agent, u.media)).map_or(0, |b| b.held);
        if u.held > was && u.capacity.is_none_or(|c| u.held > c) {
            return Err(format!(
                "agent {:?} grew to hold {} of media {} (capacity {:?}): an offer was taken at or over capacity",
                u.agent, u.held, u.media, u.capacity
            ));
        }
    }
    Ok(())
}

