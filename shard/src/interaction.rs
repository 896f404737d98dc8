//! The interaction as a shard holds it, and the record the database keeps.

use crate::catalog::{Catalog, MediaIdx, QueueIdx, TenantIdx};
use crate::proto::frame::Frame;
use crate::proto::msg::{attr, msg_type};
use crate::value::KvList;

/// Milliseconds since the Unix epoch; 0 means "not set".
pub type Millis = i64;

/// One live interaction, owned by exactly one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interaction {
    pub id: Box<str>,
    pub tenant: TenantIdx,
    pub media: MediaIdx,
    pub queue: QueueIdx,
    pub interaction_type: Box<str>,
    pub interaction_subtype: Box<str>,
    pub priority: i64,
    /// Name of the client application that submitted it.
    pub submitted_by: Box<str>,
    pub received_at: Millis,
    pub submitted_at: Millis,
    pub placed_in_queue_at: Millis,
    pub moved_to_queue_at: Millis,
    pub delivered_at: Millis,
    pub assigned_at: Millis,
    pub held_at: Millis,
    pub completed_at: Millis,
    pub properties: KvList,
    /// Number of changes made since submission (0 after submit). Stored, so
    /// a restart shows which acknowledged change is the last one kept.
    pub version: i64,
    /// Whether a row for it has been sent to storage (an insert, then
    /// upserts); false only before the first write.
    pub stored: bool,
}

fn opt(ms: Millis) -> Option<i64> {
    (ms != 0).then_some(ms)
}

/// The database form of an interaction: names instead of catalog indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InteractionRecord {
    pub id: String,
    pub tenant: String,
    pub media_type: String,
    pub interaction_type: String,
    pub interaction_subtype: String,
    pub queue: String,
    pub priority: i64,
    pub submitted_by: String,
    pub received_at: Option<i64>,
    pub submitted_at: Option<i64>,
    pub placed_in_queue_at: Option<i64>,
    pub moved_to_queue_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub assigned_at: Option<i64>,
    pub held_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub properties: KvList,
    pub version: i64,
    /// Set when the interaction is in a workbin: who owns that workbin's
    /// content (an agent, place or group name); `queue` then names the
    /// workbin. `None` when it is in a queue.
    pub workbin_owner: Option<String>,
}

impl InteractionRecord {
    /// The catalog indexes of the tenant, media type and queue the record
    /// names; the error says which one the catalog lacks.
    pub fn resolve(&self, catalog: &Catalog) -> Result<(TenantIdx, MediaIdx, QueueIdx), String> {
        let tenant = catalog.tenant(&self.tenant).ok_or_else(|| format!("unknown tenant '{}'", self.tenant))?;
        let t = catalog.tenant_at(tenant);
        let media =
            t.media_type(&self.media_type).ok_or_else(|| format!("unknown media type '{}'", self.media_type))?;
        let queue = t.queue(&self.queue).ok_or_else(|| format!("unknown queue '{}'", self.queue))?;
        Ok((tenant, media, queue))
    }
}

impl Interaction {
    /// The record to store for this interaction.
    pub fn to_record(&self, catalog: &Catalog) -> InteractionRecord {
        let t = catalog.tenant_at(self.tenant);
        InteractionRecord {
            id: self.id.to_string(),
            tenant: t.name.clone(),
            media_type: t.media[self.media as usize].name.clone(),
            interaction_type: self.interaction_type.to_string(),
            interaction_subtype: self.interaction_subtype.to_string(),
            queue: t.queues[self.queue as usize].name.clone(),
            priority: self.priority,
            submitted_by: self.submitted_by.to_string(),
            received_at: opt(self.received_at),
            submitted_at: opt(self.submitted_at),
            placed_in_queue_at: opt(self.placed_in_queue_at),
            moved_to_queue_at: opt(self.moved_to_queue_at),
            delivered_at: opt(self.delivered_at),
            assigned_at: opt(self.assigned_at),
            held_at: opt(self.held_at),
            completed_at: opt(self.completed_at),
            properties: self.properties.clone(),
            version: self.version,
        }
    }

    /// Rebuilds an interaction from its stored record; the error says which
    /// configured object the record names and the catalog lacks.
    pub fn from_record(r: InteractionRecord, catalog: &Catalog) -> Result<Interaction, String> {
        let (tenant, media, queue) = InteractionRecord::resolve(&r, catalog)?;
        Ok(Interaction {
            id: r.id.into(),
            tenant,
            media,
            queue,
            interaction_type: r.interaction_type.into(),
            interaction_subtype: r.interaction_subtype.into(),
            priority: r.priority,
            submitted_by: r.submitted_by.into(),
            received_at: r.received_at.unwrap_or(0),
            submitted_at: r.submitted_at.unwrap_or(0),
            placed_in_queue_at: r.placed_in_queue_at.unwrap_or(0),
            moved_to_queue_at: r.moved_to_queue_at.unwrap_or(0),
            delivered_at: r.delivered_at.unwrap_or(0),
            assigned_at: r.assigned_at.unwrap_or(0),
            held_at: r.held_at.unwrap_or(0),
            completed_at: r.completed_at.unwrap_or(0),
            properties: r.properties,
            version: r.version,
            stored: true,
        })
    }

    /// EventInteractionProperties describing this interaction.
    pub fn to_frame(&self, catalog: &Catalog, ref_id: u32) -> Frame {
        let t = catalog.tenant_at(self.tenant);
        let q = &t.queues[self.queue as usize];
        let mut f = Frame::new(msg_type::EVENT_INTERACTION_PROPERTIES, ref_id)
            .with(attr::INTERACTION_ID, &*self.id)
            .with(attr::TENANT, t.name.as_str())
            .with(attr::MEDIA_TYPE, t.media[self.media as usize].name.as_str())
            .with(attr::INTERACTION_TYPE, &*self.interaction_type)
            .with(attr::INTERACTION_SUBTYPE, &*self.interaction_subtype)
            .with(attr::QUEUE, q.name.as_str())
            .with(attr::BUSINESS_PROCESS, t.processes[q.process as usize].name.as_str())
            .with(attr::PRIORITY, self.priority)
            .with(attr::SUBMITTED_BY, &*self.submitted_by)
            .with(attr::VERSION, self.version);
        let times = [
            (attr::RECEIVED_AT, self.received_at),
            (attr::SUBMITTED_AT, self.submitted_at),
            (attr::PLACED_IN_QUEUE_AT, self.placed_in_queue_at),
            (attr::MOVED_TO_QUEUE_AT, self.moved_to_queue_at),
            (attr::DELIVERED_AT, self.delivered_at),
            (attr::ASSIGNED_AT, self.assigned_at),
            (attr::HELD_AT, self.held_at),
            (attr::COMPLETED_AT, self.completed_at),
        ];
        for (id, ms) in times {
            if ms != 0 {
                f.push(id, ms);
            }
        }
        f.push(attr::PROPERTIES, self.properties.clone());
        f
    }
}
