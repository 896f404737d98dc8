//! The reporting state: what a Stat Server keeps, agents' states and queue
//! depths, as the released events say it is.
//!
//! The reporter applies every event it releases, in number order, so the
//! tally is the state *as of the last released number*: a subscriber that
//! gets it, and then every event after that number, sees each change once.
//! Memory runs ahead of it (changes whose writes are in flight), which is
//! why the state is not read from memory.
//!
//! A shard tallies what it owns: the interactions it owns (counted in the
//! queue they are in; an interaction being handled stays in its queue) and
//! the agents homed on it. The subscription's coordinator adds the shards'
//! tallies up.

use std::collections::BTreeMap;

use ahash::AHashMap;

use crate::catalog::{AgentIdx, Catalog, MediaIdx, PlaceIdx, QueueIdx, TenantIdx};
use crate::event::{Event, Location, Subject, What};
use crate::interaction::IxId;

/// One logged-in agent, as its events left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentView {
    pub place: PlaceIdx,
    pub dnd: bool,
    /// Media types logged in on: capacity and readiness.
    pub media: Vec<MediaView>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaView {
    pub media: MediaIdx,
    pub capacity: u16,
    pub ready: bool,
}

/// A shard's part of the state, sent to the subscription's coordinator.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ShardState {
    /// Interactions in each queue, by tenant then queue (the tenants a
    /// subscription covers; others empty).
    pub depth: Vec<Vec<u64>>,
    /// Logged-in agents homed on the shard.
    pub agents: Vec<((TenantIdx, AgentIdx), AgentView)>,
}

impl ShardState {
    /// Adds another shard's part.
    pub fn add(&mut self, other: ShardState) {
        if self.depth.is_empty() {
            self.depth = other.depth;
        } else {
            for (mine, theirs) in self.depth.iter_mut().zip(other.depth) {
                // A part made after a reload added queues is longer.
                if mine.len() < theirs.len() {
                    mine.resize(theirs.len(), 0);
                }
                for (a, b) in mine.iter_mut().zip(theirs) {
                    *a += b;
                }
            }
        }
        self.agents.extend(other.agents);
        self.agents.sort_by_key(|(k, _)| *k);
    }
}

/// The state as of the last released event of one shard.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Whether it follows the events: only while every event is made (the
    /// event log on, or events kept for resuming after a first
    /// subscription). Else it is filled from memory when a subscription
    /// asks for it.
    active: bool,
    depth: Vec<Vec<i64>>,
    /// The queue each interaction is counted in, for those placed by an
    /// event since the tally started. An event's location is where the
    /// interaction was when the change was made, which for a stop made
    /// while a move was in flight is where that move was taking it; if the
    /// move then failed, its event was never released, and the stop must
    /// count the interaction out of where it is counted.
    located: AHashMap<IxId, QueueIdx>,
    agents: BTreeMap<(TenantIdx, AgentIdx), AgentView>,
}

impl Tally {
    /// An empty tally for `catalog`'s queues.
    pub fn new(catalog: &Catalog) -> Tally {
        let depth = catalog.tenants.iter().map(|t| vec![0; t.queues.len()]).collect();
        Tally { active: false, depth, located: AHashMap::new(), agents: BTreeMap::new() }
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Starts following events from this state: queue depths (by tenant,
    /// by queue) and logged-in agents.
    pub fn start(&mut self, depth: Vec<Vec<i64>>, agents: BTreeMap<(TenantIdx, AgentIdx), AgentView>) {
        debug_assert_eq!(depth.len(), self.depth.len());
        self.depth = depth;
        self.agents = agents;
        self.active = true;
    }

    /// Starts following events from nothing (a server starting with the
    /// event log on: loaded interactions are counted as they load).
    pub fn start_empty(&mut self) {
        self.active = true;
    }

    /// Room for the queues a reload's catalog added (counted from 0).
    pub fn extend(&mut self, catalog: &Catalog) {
        for (d, t) in self.depth.iter_mut().zip(&catalog.tenants) {
            d.resize(t.queues.len().max(d.len()), 0);
        }
    }

    /// An interaction loaded at start into `queue`.
    pub fn loaded(&mut self, tenant: TenantIdx, queue: QueueIdx) {
        if self.active {
            self.depth[tenant as usize][queue as usize] += 1;
        }
    }

    /// Applies a released event.
    pub fn apply(&mut self, e: &Event) {
        if !self.active {
            return;
        }
        match &e.subject {
            Subject::Interaction { id, at, .. } => self.interaction(e.tenant, id, at, &e.what),
            Subject::Agent(a) => self.agent((e.tenant, *a), &e.what),
        }
    }

    fn count(&mut self, tenant: TenantIdx, q: QueueIdx, by: i64) {
        let d = &mut self.depth[tenant as usize][q as usize];
        *d += by;
        debug_assert!(*d >= 0, "queue {q} of tenant {tenant} tallied below zero");
    }

    fn interaction(&mut self, tenant: TenantIdx, id: &IxId, at: &Location, what: &What) {
        let queue = match at {
            Location::Queue(q) => Some(*q),
            Location::Workbin { .. } => None,
        };
        // Out of where it is counted: where an event put it, else (counted
        // when the tally started) where the event says it was.
        let out_of = |tally: &mut Tally, said: Option<QueueIdx>| {
            if let Some(q) = tally.located.remove(id).or(said) {
                tally.count(tenant, q, -1);
            }
        };
        match what {
            // Counted from its EventPlacedInQueue, which follows.
            What::Submitted => {}
            What::PlacedInQueue { from } => {
                out_of(self, *from);
                if let Some(q) = queue {
                    self.count(tenant, q, 1);
                    self.located.insert(id.clone(), q);
                }
            }
            What::PlacedInWorkbin { from } => out_of(self, *from),
            What::ProcessingStopped { .. } => out_of(self, queue),
            _ => {}
        }
    }

    fn agent(&mut self, key: (TenantIdx, AgentIdx), what: &What) {
        match what {
            What::AgentLogin { place, media, .. } => {
                let media =
                    media.iter().map(|&(media, capacity)| MediaView { media, capacity, ready: false }).collect();
                self.agents.insert(key, AgentView { place: *place, dnd: false, media });
            }
            What::AgentLogout { .. } => {
                self.agents.remove(&key);
            }
            _ => {
                let Some(a) = self.agents.get_mut(&key) else { return };
                match what {
                    What::ReadyForMedia { media, .. } | What::NotReadyForMedia { media, .. } => {
                        let ready = matches!(what, What::ReadyForMedia { .. });
                        a.media.iter_mut().filter(|m| m.media == *media).for_each(|m| m.ready = ready);
                    }
                    What::MediaAdded { media, capacity } => {
                        a.media.retain(|m| m.media != *media);
                        a.media.push(MediaView { media: *media, capacity: *capacity, ready: false });
                    }
                    What::MediaRemoved { media } => a.media.retain(|m| m.media != *media),
                    What::DoNotDisturb { on } => a.dnd = *on,
                    _ => {}
                }
            }
        }
    }

    /// The state of the tenants `tenant` names (all when `None`).
    pub fn state(&self, tenant: Option<TenantIdx>) -> ShardState {
        let covers = |t: TenantIdx| tenant.is_none_or(|x| x == t);
        ShardState {
            depth: self
                .depth
                .iter()
                .enumerate()
                .map(
                    |(t, d)| {
                        if covers(t as TenantIdx) {
                            d.iter().map(|&n| n.max(0) as u64).collect()
                        } else {
                            Vec::new()
                        }
                    },
                )
                .collect(),
            agents: self.agents.iter().filter(|(k, _)| covers(k.0)).map(|(k, v)| (*k, v.clone())).collect(),
        }
    }
}
