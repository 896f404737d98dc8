//! What a shard holds now, counted for the management listener: queue and
//! view depths, the age of each queue's oldest waiting interaction, agents
//! by state. Read between inputs on the shard's own thread and sent away
//! as plain numbers; the work is bounded by the configuration's size and
//! the agents homed on the shard, never by the interactions held.

use crate::interaction::Millis;
use crate::machine::Shard;

/// One queue on one shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueGauge {
    /// Interactions in the queue that no agent or router holds.
    pub waiting: u64,
    /// Interactions in the queue that are offered, handled or pulled.
    pub locked: u64,
    /// When the longest-waiting of `waiting` was placed in the queue.
    pub oldest_waiting_at: Option<Millis>,
}

/// The agents of one tenant homed on one shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentGauge {
    pub logged_in: u64,
    /// Logged in, not do-not-disturb, ready on at least one media type.
    pub ready: u64,
    /// Logged in and not ready on any media type (or do-not-disturb).
    pub not_ready: u64,
    /// Holding at least one interaction (invited or handling).
    pub busy: u64,
    /// Logged in with no desktop connected (the login session waits).
    pub disconnected: u64,
}

/// A shard's gauges. Queues and views are listed tenant by tenant in
/// catalog order (`queues[k]` is the k-th queue of the catalog walked that
/// way), so the gauges of every shard add up index by index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    pub interactions: u64,
    pub pending_writes: u64,
    pub unreleased_events: u64,
    pub queues: Vec<QueueGauge>,
    /// Interactions each view holds (waiting ones that meet its condition).
    pub views: Vec<u64>,
    /// One per tenant.
    pub agents: Vec<AgentGauge>,
}

impl Shard {
    pub fn gauges(&self) -> Gauges {
        let catalog = self.catalog();
        let mut g = Gauges {
            interactions: self.len() as u64,
            pending_writes: self.pending_writes() as u64,
            unreleased_events: self.unreleased_events() as u64,
            ..Gauges::default()
        };
        for (t, tenant) in catalog.tenants.iter().enumerate() {
            let t = t as crate::catalog::TenantIdx;
            for (q, count) in self.index.queue_counts(t).iter().enumerate() {
                g.queues.push(QueueGauge {
                    waiting: count.interactions - count.locked,
                    locked: count.locked,
                    oldest_waiting_at: self.index.oldest_waiting(t, q as crate::catalog::QueueIdx),
                });
            }
            for v in 0..tenant.views.len() {
                g.views.push(self.index.view(t, v as crate::catalog::ViewIdx).len() as u64);
            }
        }
        g.agents = vec![AgentGauge::default(); catalog.tenants.len()];
        for (agent, state) in self.homes.iter() {
            let a = &mut g.agents[agent.tenant as usize];
            if !state.held.is_empty() {
                a.busy += 1;
            }
            let Some(login) = &state.login else { continue };
            a.logged_in += 1;
            if login.conns.is_empty() {
                a.disconnected += 1;
            }
            if !login.dnd && login.media.iter().any(|m| m.ready) {
                a.ready += 1;
            } else {
                a.not_ready += 1;
            }
        }
        g
    }
}
