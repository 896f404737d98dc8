//! The configured objects a shard needs: tenants, their media types,
//! business processes and queues. Built once at start from the configuration
//! and shared read-only by every shard; interactions refer to them by index.

use ahash::AHashMap;

use crate::condition::{parse_order, Condition, OrderKey};

/// Index of a tenant in the catalog.
pub type TenantIdx = u16;
/// Index of a media type within its tenant.
pub type MediaIdx = u16;
/// Index of a queue within its tenant.
pub type QueueIdx = u32;

#[derive(Clone, Debug)]
pub struct MediaType {
    pub name: String,
    pub enabled: bool,
}

#[derive(Clone, Debug)]
pub struct Queue {
    pub name: String,
    /// Index of the business process in the tenant.
    pub process: u16,
    /// The queue the workflow moves an interaction to next, if any.
    pub next: Option<QueueIdx>,
}

/// A view: which interactions of one queue routing sees, in which order
/// (docs/conditions.md). No order means submission order.
#[derive(Clone, Debug)]
pub struct View {
    pub name: String,
    pub queue: QueueIdx,
    pub condition: Option<Condition>,
    pub order: Vec<OrderKey>,
}

#[derive(Clone, Debug)]
pub struct BusinessProcess {
    pub name: String,
}

#[derive(Clone, Debug)]
pub struct Tenant {
    pub name: String,
    pub media: Vec<MediaType>,
    pub processes: Vec<BusinessProcess>,
    pub queues: Vec<Queue>,
    pub views: Vec<View>,
    media_by_name: AHashMap<String, MediaIdx>,
    queue_by_name: AHashMap<String, QueueIdx>,
}

impl Tenant {
    pub fn new(name: impl Into<String>) -> Self {
        Tenant {
            name: name.into(),
            media: Vec::new(),
            processes: Vec::new(),
            queues: Vec::new(),
            views: Vec::new(),
            media_by_name: AHashMap::new(),
            queue_by_name: AHashMap::new(),
        }
    }

    /// Adds a media type; returns an error text if the name is taken.
    pub fn add_media(&mut self, name: &str, enabled: bool) -> Result<MediaIdx, String> {
        if self.media_by_name.contains_key(name) {
            return Err(format!("media type '{name}' is defined twice in tenant '{}'", self.name));
        }
        let idx = self.media.len() as MediaIdx;
        self.media.push(MediaType { name: name.into(), enabled });
        self.media_by_name.insert(name.into(), idx);
        Ok(idx)
    }

    /// Adds a business process with its queues (names must be unique in the
    /// tenant). `next` names are resolved by [`Tenant::link_next`].
    pub fn add_process(&mut self, name: &str, queues: &[&str]) -> Result<u16, String> {
        if self.processes.iter().any(|p| p.name == name) {
            return Err(format!("business process '{name}' is defined twice in tenant '{}'", self.name));
        }
        let process = self.processes.len() as u16;
        self.processes.push(BusinessProcess { name: name.into() });
        for q in queues {
            if self.queue_by_name.contains_key(*q) {
                return Err(format!("queue '{q}' is defined twice in tenant '{}'", self.name));
            }
            let idx = self.queues.len() as QueueIdx;
            self.queues.push(Queue { name: (*q).into(), process, next: None });
            self.queue_by_name.insert((*q).into(), idx);
        }
        Ok(process)
    }

    /// Sets the queue that follows `queue` in the workflow.
    pub fn link_next(&mut self, queue: &str, next: &str) -> Result<(), String> {
        let q = self.queue(queue).ok_or_else(|| format!("unknown queue '{queue}'"))?;
        let n = self.queue(next).ok_or_else(|| format!("queue '{queue}' names unknown next queue '{next}'"))?;
        self.queues[q as usize].next = Some(n);
        Ok(())
    }

    /// Adds a view on `queue`. Errors name what is wrong; a condition or
    /// order that does not parse says at which character.
    pub fn add_view(
        &mut self,
        queue: &str,
        name: &str,
        condition: Option<&str>,
        order: Option<&str>,
    ) -> Result<(), String> {
        let q = self.queue(queue).ok_or_else(|| format!("view '{name}' names unknown queue '{queue}'"))?;
        if self.views.iter().any(|v| v.name == name) {
            return Err(format!("view '{name}' is defined twice in tenant '{}'", self.name));
        }
        let condition =
            condition.map(|c| Condition::parse(c).map_err(|e| format!("view '{name}': condition {e}"))).transpose()?;
        let order = order
            .map(|o| parse_order(o).map_err(|e| format!("view '{name}': order {e}")))
            .transpose()?
            .unwrap_or_default();
        self.views.push(View { name: name.into(), queue: q, condition, order });
        Ok(())
    }

    pub fn view(&self, name: &str) -> Option<&View> {
        self.views.iter().find(|v| v.name == name)
    }

    pub fn media_type(&self, name: &str) -> Option<MediaIdx> {
        self.media_by_name.get(name).copied()
    }

    pub fn queue(&self, name: &str) -> Option<QueueIdx> {
        self.queue_by_name.get(name).copied()
    }
}

#[derive(Clone, Debug)]
pub struct Catalog {
    pub tenants: Vec<Tenant>,
    /// `[cluster-settings] enable-submit`: whether this node creates
    /// interactions at all.
    pub enable_submit: bool,
    tenant_by_name: AHashMap<String, TenantIdx>,
}

impl Catalog {
    pub fn new(tenants: Vec<Tenant>, enable_submit: bool) -> Result<Self, String> {
        let mut tenant_by_name = AHashMap::new();
        for (i, t) in tenants.iter().enumerate() {
            if tenant_by_name.insert(t.name.clone(), i as TenantIdx).is_some() {
                return Err(format!("tenant '{}' is defined twice", t.name));
            }
        }
        Ok(Catalog { tenants, enable_submit, tenant_by_name })
    }

    /// The embedded default (README, "Quick start"): tenant `default`, media
    /// types chat, email, sms, workitem enabled and voice disabled, business
    /// process `default` with queues `inbound` and `done`, and the view
    /// `inbound-by-priority` on `inbound` (priority descending, then
    /// submission order).
    pub fn embedded_default() -> Self {
        let mut t = Tenant::new("default");
        for m in ["chat", "email", "sms", "workitem"] {
            t.add_media(m, true).expect("unique");
        }
        t.add_media("voice", false).expect("unique");
        t.add_process("default", &["inbound", "done"]).expect("unique");
        t.add_view("inbound", "inbound-by-priority", None, Some("priority DESC")).expect("valid view");
        Catalog::new(vec![t], true).expect("unique")
    }

    pub fn tenant(&self, name: &str) -> Option<TenantIdx> {
        self.tenant_by_name.get(name).copied()
    }

    pub fn tenant_at(&self, idx: TenantIdx) -> &Tenant {
        &self.tenants[idx as usize]
    }
}
