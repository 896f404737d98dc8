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
use crate::machine::Shard;
use crate::store::Slot;
use crate::timers::Timer;

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
        // Views, queue counts, the lock table and the interned names'
        // counts of users (machine/indexing.rs owns them and checks them).
        self.audit_index()?;
        self.audit_names()?;
        let live: BTreeSet<Slot> = self.store.iter().map(|(s, _)| s).collect();
        // Links, reservations and the dispatchers' copies (routing.rs owns
        // them and checks them).
        self.audit_routing(&live)?;
        self.audit_writes()?;
        self.audit_agents()?;
        self.audit_timers()
    }

    /// Every timer belongs to what it ends: a lock with that deadline, a
    /// link, an agent waiting out its login session, a pull that may wait.
    /// (The owners' own rules check that each of them has its timer.)
    fn audit_timers(&self) -> Result<(), String> {
        for (timer, deadline) in self.timers.iter() {
            let owned = match timer {
                Timer::Lock(slot) => self.index.lock(slot).is_some_and(|l| l.deadline == deadline),
                Timer::Pull(op) => self.coord.pull_deadline(op) == Some(deadline),
                Timer::Link(slot) => self.routing.link_deadline(slot) == Some(deadline),
                Timer::LoginSession(a) => {
                    self.homes.get(&a).and_then(|st| st.login.as_ref()).is_some_and(|l| l.conns.is_empty())
                }
            };
            if !owned {
                return Err(format!("timer {timer:?} at {deadline} ends nothing this shard has"));
            }
        }
        Ok(())
    }

    pub(crate) fn id_at(&self, slot: Slot) -> &str {
        &self.store.get(slot).id
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
        for (a, st) in self.homes.iter() {
            let name = self.agent_login_id(*a);
            if home_of(*a, self.params.shards) != self.params.shard {
                return Err(format!("agent '{name}' has state off its home shard"));
            }
            let ids: BTreeSet<&str> = st.held.iter().map(|h| &*h.id).collect();
            if ids.len() != st.held.len() {
                return Err(format!("agent '{name}' holds one interaction twice: {:?}", st.held));
            }
            let waiting = self.timers.deadline(Timer::LoginSession(*a));
            let lost = st.login.as_ref().filter(|l| l.conns.is_empty()).map(|l| l.lost_at + timeout);
            if waiting != lost.filter(|_| timeout > 0) {
                return Err(format!(
                    "agent '{name}': login session ends at {waiting:?}, desktops lost with an end at {lost:?} \
                     (timeout {timeout} ms)"
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

    /// Whether a snapshot's cut holds this shard: inputs that change
    /// interactions wait (and their answers with them) until it thaws.
    pub fn holds_inputs(&self) -> bool {
        self.frozen > 0
    }

    /// Every agent homed here that holds something or is logged in: its
    /// holdings and capacity per media type.
    pub fn capacity_use(&self) -> Vec<CapacityUse> {
        let mut uses = BTreeMap::new();
        for (a, st) in self.homes.iter() {
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
