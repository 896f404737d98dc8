//! The interaction as a shard holds it, and the record the database keeps.

use crate::catalog::{Catalog, MediaIdx, QueueIdx, TenantIdx, WorkbinIdx};
use crate::condition::{Condition, Scalar};
use crate::packed::{PackedList, PackedScalar};
use crate::proto::frame::Frame;
use crate::proto::msg::{attr, msg_type};
use crate::symbols::{Sym, Symbols};
use crate::value::{KvList, Value};

/// Milliseconds since the Unix epoch; 0 means "not set".
pub type Millis = i64;

/// Where an interaction waits: a queue, or a workbin's content for one owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Queue(QueueIdx),
    Workbin { workbin: WorkbinIdx, owner: Sym },
}

/// Times set once an agent is involved; most queued interactions
/// have none, so they live behind one pointer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandlingTimes {
    pub delivered_at: Millis,
    pub assigned_at: Millis,
    pub held_at: Millis,
    /// The agent (login id) handling it, once an invitation was accepted;
    /// stored, so a restart knows what was being handled.
    pub assigned_to: Option<Sym>,
}

/// An interaction id as a shard keeps it: a generated id (always 16 ASCII
/// characters) inline, a client-given one on the heap. Reads as `&str`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum IxId {
    Generated([u8; crate::id::ID_LEN]),
    Client(Box<str>),
}

impl IxId {
    pub fn new(id: &str) -> IxId {
        match <[u8; crate::id::ID_LEN]>::try_from(id.as_bytes()) {
            Ok(bytes) if crate::id::decode(id).is_some() => IxId::Generated(bytes),
            _ => IxId::Client(id.into()),
        }
    }
}

impl std::ops::Deref for IxId {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            // Only ever built from a decoded (ASCII) generated id.
            IxId::Generated(b) => std::str::from_utf8(b).expect("generated ids are ASCII"),
            IxId::Client(s) => s,
        }
    }
}

impl std::fmt::Debug for IxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl std::fmt::Display for IxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

/// One live interaction, owned by exactly one shard.
///
/// Kept small because a backlog holds millions (target: under 200 bytes
/// per queued interaction, view index included; measured by
/// `ixn-perf backlog`): names are interned [`Sym`]s, properties are
/// packed in one allocation ([`PackedList`]), handling times are boxed,
/// both absent when empty, and the lock, if any, lives in the shard's
/// lock table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interaction {
    pub id: IxId,
    /// Shared with the records of writes in flight (a write carries the
    /// properties without copying them); a change replaces them whole.
    pub properties: PackedList,
    pub handling: Option<Box<HandlingTimes>>,
    pub priority: i64,
    pub received_at: Millis,
    pub submitted_at: Millis,
    pub placed_in_queue_at: Millis,
    pub moved_to_queue_at: Millis,
    /// Breaks ties in view order: submission order (see [`tie_at`]).
    pub tie: u64,
    /// Number of changes made since submission (0 after submit). Stored, so
    /// a restart shows which acknowledged change is the last one kept.
    pub version: u32,
    pub tenant: TenantIdx,
    pub media: MediaIdx,
    pub place: Place,
    pub interaction_type: Sym,
    pub interaction_subtype: Sym,
    /// The client application that submitted it.
    pub submitted_by: Sym,
    /// Whether a row for it has been sent to storage (an insert, then
    /// upserts); false only before the first write.
    pub stored: bool,
    /// Whether its submission is committed, so views and search may show
    /// it. A submit is indexed only when its write is durable.
    pub visible: bool,
}

/// Bits of a tie below the microsecond: a shard's sequence within one
/// microsecond.
pub const TIE_SEQ_BITS: u32 = 13;

/// The tie-breaker of view order: the submission time in microseconds since
/// the id epoch (2024-01-01), shifted left [`TIE_SEQ_BITS`], plus the
/// shard's sequence within that microsecond. A shard never repeats one
/// (see `Shard`'s tie clock), so ties follow submission order; across
/// shards they follow the clock to the microsecond, which a client that
/// waits for one acknowledgement before its next submit always sees in
/// order. Stored (`submit_order`), so the order survives a restart. Fits in
/// 63 bits until 2059.
pub fn tie_at(now_us: i64) -> u64 {
    (((now_us - crate::id::ID_EPOCH_MS * 1000).max(0)) as u64) << TIE_SEQ_BITS
}

/// The tie of a stored interaction whose row has no `submit_order` (written
/// before the column existed): its submission millisecond, then for a
/// generated id the id's sequence, for a client-given id (after those) a
/// fixed hash of the id.
pub fn tie_of(id: &str, submitted_at: Millis) -> u64 {
    let base = tie_at(submitted_at * 1000);
    match crate::id::decode(id) {
        Some(p) => base + (p.seq.min(0xfff) as u64),
        None => base + 0x1000 + (crate::id::fnv1a(id.as_bytes()) & 0xfff),
    }
}

/// What a shard needs to turn interactions into names: the catalog and its
/// interned names.
#[derive(Clone, Copy)]
pub struct Names<'a> {
    pub catalog: &'a Catalog,
    pub syms: &'a Symbols,
}

/// A field of an interaction, as conditions, orders and interaction lists
/// name it; any other name is a property key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    Id,
    Tenant,
    MediaType,
    Type,
    Subtype,
    Queue,
    BusinessProcess,
    Workbin,
    WorkbinOwner,
    Priority,
    SubmittedBy,
    ReceivedAt,
    SubmittedAt,
    PlacedInQueueAt,
    MovedToQueueAt,
    DeliveredAt,
    AssignedAt,
    HeldAt,
    Version,
    Property(Box<str>),
}

impl Field {
    pub fn parse(name: &str) -> Field {
        Field::known(name).unwrap_or_else(|| Field::Property(name.into()))
    }

    /// The field `name` names, or `None` for a property key.
    pub fn known(name: &str) -> Option<Field> {
        Some(match name {
            "id" => Field::Id,
            "tenant" => Field::Tenant,
            "media_type" => Field::MediaType,
            "type" | "interaction_type" => Field::Type,
            "subtype" | "interaction_subtype" => Field::Subtype,
            "queue" => Field::Queue,
            "business_process" => Field::BusinessProcess,
            "workbin" => Field::Workbin,
            "workbin_owner" => Field::WorkbinOwner,
            "priority" => Field::Priority,
            "submitted_by" => Field::SubmittedBy,
            "received_at" => Field::ReceivedAt,
            "submitted_at" => Field::SubmittedAt,
            "placed_in_queue_at" => Field::PlacedInQueueAt,
            "moved_to_queue_at" => Field::MovedToQueueAt,
            "delivered_at" => Field::DeliveredAt,
            "assigned_at" => Field::AssignedAt,
            "held_at" => Field::HeldAt,
            "version" => Field::Version,
            _ => return None,
        })
    }

    /// Whether every interaction has this field as an integer.
    pub fn is_int(&self) -> bool {
        matches!(
            self,
            Field::Priority
                | Field::ReceivedAt
                | Field::SubmittedAt
                | Field::PlacedInQueueAt
                | Field::MovedToQueueAt
                | Field::DeliveredAt
                | Field::AssignedAt
                | Field::HeldAt
                | Field::Version
        )
    }
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
    /// Shared with the interaction it was made from (see
    /// [`Interaction::properties`]).
    pub properties: PackedList,
    pub version: i64,
    /// Set when the interaction is in a workbin: who owns that workbin's
    /// content (an agent, place or group name); `queue` then names the
    /// workbin. `None` when it is in a queue.
    pub workbin_owner: Option<String>,
    /// The interaction's place in submission order (its tie-breaker in
    /// views, see [`Interaction::tie`]): kept so the order survives a
    /// restart exactly. `None` in rows written before it existed: then
    /// derived from the id and `submitted_at`.
    pub submit_order: Option<i64>,
    /// The login id of the agent handling the interaction (it accepted an
    /// invitation), `None` while nobody handles it. Schema version 3.
    pub assigned_to: Option<String>,
}

impl InteractionRecord {
    /// Checks that the catalog has the tenant, media type and queue or
    /// workbin the record names; the error says which one it lacks.
    pub fn resolve(&self, catalog: &Catalog) -> Result<(), String> {
        let tenant = catalog.tenant(&self.tenant).ok_or_else(|| format!("unknown tenant '{}'", self.tenant))?;
        let t = catalog.tenant_at(tenant);
        t.media_type(&self.media_type).ok_or_else(|| format!("unknown media type '{}'", self.media_type))?;
        match self.workbin_owner {
            None => t.queue(&self.queue).map(drop).ok_or_else(|| format!("unknown queue '{}'", self.queue)),
            Some(_) => t.workbin(&self.queue).map(drop).ok_or_else(|| format!("unknown workbin '{}'", self.queue)),
        }
    }
}

impl Interaction {
    /// The properties decoded (a copy: allocates). What reads one
    /// property uses [`PackedList::scalar`] or [`PackedList::value`] on
    /// the field instead.
    pub fn properties(&self) -> KvList {
        self.properties.unpack()
    }

    /// Forgets which agent handles it (the agent's link has ended).
    pub fn clear_assignment(&mut self) {
        if let Some(h) = self.handling.as_deref_mut() {
            h.assigned_to = None;
        }
    }

    /// Sets the properties (packed; no allocation when they are empty).
    pub fn set_properties(&mut self, p: &KvList) {
        self.properties = PackedList::pack(p);
    }

    pub fn queue(&self) -> Option<QueueIdx> {
        match self.place {
            Place::Queue(q) => Some(q),
            Place::Workbin { .. } => None,
        }
    }

    fn handling_time(&self, f: impl Fn(&HandlingTimes) -> Millis) -> Millis {
        self.handling.as_deref().map(f).unwrap_or(0)
    }

    /// The value of `field`, as conditions and orders see it.
    pub fn field<'a>(&'a self, field: &Field, n: Names<'a>) -> Option<Scalar<'a>> {
        let t = n.catalog.tenant_at(self.tenant);
        let int = |v: i64| Some(Scalar::Int(v));
        match field {
            Field::Id => Some(Scalar::Str(&self.id)),
            Field::Tenant => Some(Scalar::Str(&t.name)),
            Field::MediaType => Some(Scalar::Str(&t.media[self.media as usize].name)),
            Field::Type => Some(Scalar::Str(n.syms.name(self.interaction_type))),
            Field::Subtype => Some(Scalar::Str(n.syms.name(self.interaction_subtype))),
            Field::Queue => self.queue().map(|q| Scalar::Str(t.queues[q as usize].name.as_str())),
            Field::BusinessProcess => {
                self.queue().map(|q| Scalar::Str(t.processes[t.queues[q as usize].process as usize].name.as_str()))
            }
            Field::Workbin => match self.place {
                Place::Workbin { workbin, .. } => Some(Scalar::Str(&t.workbins[workbin as usize].name)),
                Place::Queue(_) => None,
            },
            Field::WorkbinOwner => match self.place {
                Place::Workbin { owner, .. } => Some(Scalar::Str(n.syms.name(owner))),
                Place::Queue(_) => None,
            },
            Field::Priority => int(self.priority),
            Field::SubmittedBy => Some(Scalar::Str(n.syms.name(self.submitted_by))),
            Field::ReceivedAt => int(self.received_at),
            Field::SubmittedAt => int(self.submitted_at),
            Field::PlacedInQueueAt => int(self.placed_in_queue_at),
            Field::MovedToQueueAt => int(self.moved_to_queue_at),
            Field::DeliveredAt => int(self.handling_time(|h| h.delivered_at)),
            Field::AssignedAt => int(self.handling_time(|h| h.assigned_at)),
            Field::HeldAt => int(self.handling_time(|h| h.held_at)),
            Field::Version => int(self.version as i64),
            Field::Property(k) => self.property(k),
        }
    }

    /// Whether `cond` holds for this interaction.
    pub fn matches(&self, cond: &Condition, n: Names<'_>) -> bool {
        cond.eval(&|name: &str| match Field::known(name) {
            Some(f) => self.field(&f, n),
            None => self.property(name),
        })
    }

    fn property(&self, key: &str) -> Option<Scalar<'_>> {
        match self.properties.scalar(key)? {
            PackedScalar::Int(i) => Some(Scalar::Int(i)),
            PackedScalar::Str(s) => Some(Scalar::Str(s)),
        }
    }

    /// The record to store for this interaction.
    pub fn to_record(&self, n: Names<'_>) -> InteractionRecord {
        let t = n.catalog.tenant_at(self.tenant);
        let (queue, workbin_owner) = match self.place {
            Place::Queue(q) => (t.queues[q as usize].name.clone(), None),
            Place::Workbin { workbin, owner } => {
                (t.workbins[workbin as usize].name.clone(), Some(n.syms.name(owner).to_string()))
            }
        };
        InteractionRecord {
            id: self.id.to_string(),
            tenant: t.name.clone(),
            media_type: t.media[self.media as usize].name.clone(),
            interaction_type: n.syms.name(self.interaction_type).to_string(),
            interaction_subtype: n.syms.name(self.interaction_subtype).to_string(),
            queue,
            priority: self.priority,
            submitted_by: n.syms.name(self.submitted_by).to_string(),
            received_at: opt(self.received_at),
            submitted_at: opt(self.submitted_at),
            placed_in_queue_at: opt(self.placed_in_queue_at),
            moved_to_queue_at: opt(self.moved_to_queue_at),
            delivered_at: opt(self.handling_time(|h| h.delivered_at)),
            assigned_at: opt(self.handling_time(|h| h.assigned_at)),
            held_at: opt(self.handling_time(|h| h.held_at)),
            completed_at: None,
            properties: self.properties.clone(),
            version: self.version as i64,
            workbin_owner,
            submit_order: Some(self.tie as i64),
            assigned_to: self.handling.as_deref().and_then(|h| h.assigned_to).map(|a| n.syms.name(a).to_string()),
        }
    }

    /// Rebuilds an interaction from its stored record; the error says which
    /// configured object the record names and the catalog lacks.
    pub fn from_record(r: InteractionRecord, catalog: &Catalog, syms: &mut Symbols) -> Result<Interaction, String> {
        let tenant = catalog.tenant(&r.tenant).ok_or_else(|| format!("unknown tenant '{}'", r.tenant))?;
        let t = catalog.tenant_at(tenant);
        let media = t.media_type(&r.media_type).ok_or_else(|| format!("unknown media type '{}'", r.media_type))?;
        let place = match &r.workbin_owner {
            None => Place::Queue(t.queue(&r.queue).ok_or_else(|| format!("unknown queue '{}'", r.queue))?),
            Some(owner) => Place::Workbin {
                workbin: t.workbin(&r.queue).ok_or_else(|| format!("unknown workbin '{}'", r.queue))?,
                owner: syms.intern(owner),
            },
        };
        let version = u32::try_from(r.version).map_err(|_| format!("version {} out of range", r.version))?;
        let handling = HandlingTimes {
            delivered_at: r.delivered_at.unwrap_or(0),
            assigned_at: r.assigned_at.unwrap_or(0),
            held_at: r.held_at.unwrap_or(0),
            assigned_to: r.assigned_to.as_deref().map(|a| syms.intern(a)),
        };
        let submitted_at = r.submitted_at.unwrap_or(0);
        let ix = Interaction {
            tie: match r.submit_order {
                Some(t) => u64::try_from(t).map_err(|_| format!("submit_order {t} out of range"))?,
                None => tie_of(&r.id, submitted_at),
            },
            // Copied, not moved: records are made on the thread that reads
            // the database, and what a shard keeps should be its own
            // allocation so that thread's memory can all be given back.
            id: IxId::new(&r.id),
            properties: r.properties.deep_copy(),
            handling: (handling != HandlingTimes::default()).then(|| Box::new(handling)),
            priority: r.priority,
            received_at: r.received_at.unwrap_or(0),
            submitted_at,
            placed_in_queue_at: r.placed_in_queue_at.unwrap_or(0),
            moved_to_queue_at: r.moved_to_queue_at.unwrap_or(0),
            version,
            tenant,
            media,
            place,
            interaction_type: syms.intern(&r.interaction_type),
            interaction_subtype: syms.intern(&r.interaction_subtype),
            submitted_by: syms.intern(&r.submitted_by),
            stored: true,
            visible: true,
        };
        Ok(ix)
    }

    /// EventInteractionProperties describing this interaction.
    pub fn to_frame(&self, n: Names<'_>, ref_id: u32) -> Frame {
        let mut f = Frame::new(msg_type::EVENT_INTERACTION_PROPERTIES, ref_id);
        self.push_attrs(n, &mut f);
        f
    }

    fn push_attrs(&self, n: Names<'_>, f: &mut Frame) {
        let t = n.catalog.tenant_at(self.tenant);
        f.push(attr::INTERACTION_ID, &*self.id);
        f.push(attr::TENANT, t.name.as_str());
        f.push(attr::MEDIA_TYPE, t.media[self.media as usize].name.as_str());
        f.push(attr::INTERACTION_TYPE, n.syms.name(self.interaction_type));
        f.push(attr::INTERACTION_SUBTYPE, n.syms.name(self.interaction_subtype));
        match self.place {
            Place::Queue(q) => {
                let q = &t.queues[q as usize];
                f.push(attr::QUEUE, q.name.as_str());
                f.push(attr::BUSINESS_PROCESS, t.processes[q.process as usize].name.as_str());
            }
            Place::Workbin { workbin, owner } => {
                f.push(attr::WORKBIN, t.workbins[workbin as usize].name.as_str());
                f.push(attr::WORKBIN_OWNER, n.syms.name(owner));
            }
        }
        f.push(attr::PRIORITY, self.priority);
        f.push(attr::SUBMITTED_BY, n.syms.name(self.submitted_by));
        f.push(attr::VERSION, self.version as i64);
        let times = [
            (attr::RECEIVED_AT, self.received_at),
            (attr::SUBMITTED_AT, self.submitted_at),
            (attr::PLACED_IN_QUEUE_AT, self.placed_in_queue_at),
            (attr::MOVED_TO_QUEUE_AT, self.moved_to_queue_at),
            (attr::DELIVERED_AT, self.handling_time(|h| h.delivered_at)),
            (attr::ASSIGNED_AT, self.handling_time(|h| h.assigned_at)),
            (attr::HELD_AT, self.handling_time(|h| h.held_at)),
        ];
        for (a, ms) in times {
            if ms != 0 {
                f.push(a, ms);
            }
        }
        f.push(attr::PROPERTIES, self.properties());
    }

    /// The interaction as one entry of an interaction list (attribute
    /// INTERACTION; docs/protocol.md "Interaction lists"): field names as
    /// conditions use them, unset times left out, properties last.
    /// `locked_by` names the client holding a lock on it, if any.
    pub fn summary(&self, n: Names<'_>, locked_by: Option<&str>) -> KvList {
        let t = n.catalog.tenant_at(self.tenant);
        let mut l = KvList::new();
        l.push("id", Value::Str(self.id.to_string()));
        l.push("tenant", Value::Str(t.name.clone()));
        l.push("media_type", Value::Str(t.media[self.media as usize].name.clone()));
        l.push("type", Value::Str(n.syms.name(self.interaction_type).into()));
        l.push("subtype", Value::Str(n.syms.name(self.interaction_subtype).into()));
        match self.place {
            Place::Queue(q) => {
                let q = &t.queues[q as usize];
                l.push("queue", Value::Str(q.name.clone()));
                l.push("business_process", Value::Str(t.processes[q.process as usize].name.clone()));
            }
            Place::Workbin { workbin, owner } => {
                l.push("workbin", Value::Str(t.workbins[workbin as usize].name.clone()));
                l.push("workbin_owner", Value::Str(n.syms.name(owner).into()));
            }
        }
        l.push("priority", Value::Int(self.priority));
        l.push("submitted_by", Value::Str(n.syms.name(self.submitted_by).into()));
        let times = [
            ("received_at", self.received_at),
            ("submitted_at", self.submitted_at),
            ("placed_in_queue_at", self.placed_in_queue_at),
            ("moved_to_queue_at", self.moved_to_queue_at),
            ("delivered_at", self.handling_time(|h| h.delivered_at)),
            ("assigned_at", self.handling_time(|h| h.assigned_at)),
            ("held_at", self.handling_time(|h| h.held_at)),
        ];
        for (k, ms) in times {
            if ms != 0 {
                l.push(k, Value::Int(ms));
            }
        }
        l.push("version", Value::Int(self.version as i64));
        if let Some(who) = locked_by {
            l.push("locked_by", Value::Str(who.into()));
        }
        l.push("properties", Value::List(self.properties()));
        l
    }
}
