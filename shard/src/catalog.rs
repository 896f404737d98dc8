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
/// Index of a view within its tenant.
pub type ViewIdx = u32;
/// Index of a workbin within its tenant.
pub type WorkbinIdx = u16;

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
    /// The views on this queue (indexes into [`Tenant::views`]).
    pub views: Vec<ViewIdx>,
    /// The built-in routing strategy that delivers from this queue to
    /// agents, if any.
    pub strategy: Option<Strategy>,
    /// Removed by a reload: no name finds it, nothing new enters it; the
    /// interactions still in it stay, reachable by id (see
    /// [`Catalog::evolve`]).
    pub retired: bool,
}

/// Built-in routing on a queue: deliver the interactions of one of its
/// views, in view order, each to the ready agent with free capacity for its
/// media type whose skills meet the interaction's required skills, choosing
/// the agent idle the longest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Strategy {
    /// The view delivered from (resolved by [`Catalog::new`]).
    pub view: ViewIdx,
    /// Its name as configured; `None`: the queue's first view.
    pub view_name: Option<String>,
    /// The property naming the skills an interaction needs: a string
    /// `"english:5,billing:3"` (name, or name:minimum level) or a list
    /// {skill name: int minimum level}. Absent: any agent will do.
    pub skills_property: String,
}

/// The property the built-in strategy reads required skills from, unless
/// the queue names another.
pub const DEFAULT_SKILLS_PROPERTY: &str = "RequiredSkills";

/// Whose content a workbin holds: each owner of that kind has its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkbinKind {
    Agent,
    Place,
    AgentGroup,
    PlaceGroup,
}

impl WorkbinKind {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "agent" => WorkbinKind::Agent,
            "place" => WorkbinKind::Place,
            "agent-group" => WorkbinKind::AgentGroup,
            "place-group" => WorkbinKind::PlaceGroup,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            WorkbinKind::Agent => "agent",
            WorkbinKind::Place => "place",
            WorkbinKind::AgentGroup => "agent-group",
            WorkbinKind::PlaceGroup => "place-group",
        }
    }
}

/// Index of an agent within its tenant.
pub type AgentIdx = u32;
/// Index of a place within its tenant.
pub type PlaceIdx = u32;
/// Index of an agent group within its tenant.
pub type GroupIdx = u16;

/// Highest skill level; levels are 1 to this.
pub const MAX_SKILL_LEVEL: u8 = 10;

/// A person who handles interactions, as configured. Logging in, readiness
/// and delivery use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    pub login_id: String,
    /// Skill name and level (1 to [`MAX_SKILL_LEVEL`]), sorted by name.
    pub skills: Vec<(String, u8)>,
    /// How many interactions of a media type it may hold at once; a media
    /// type not listed: none.
    pub capacity: Vec<(MediaIdx, u16)>,
    pub groups: Vec<GroupIdx>,
    /// Removed by a reload: its login id no longer finds it.
    pub retired: bool,
}

/// Where an agent works (a desk, a seat): agents log in on a place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub name: String,
    /// Removed by a reload: its name no longer finds it.
    pub retired: bool,
}

/// Personal or group storage for interactions outside any queue.
#[derive(Clone, Debug)]
pub struct Workbin {
    pub name: String,
    pub kind: WorkbinKind,
}

/// A view: which interactions of one queue routing sees, in which order
/// (docs/conditions.md). No order means submission order.
#[derive(Clone, Debug)]
pub struct View {
    pub name: String,
    pub queue: QueueIdx,
    pub condition: Option<Condition>,
    pub order: Vec<OrderKey>,
    /// Made by the server for a queue that has no configured view, so every
    /// queue can be pulled from: named like the queue, no condition,
    /// submission order.
    pub implicit: bool,
    /// Removed (or replaced by a changed view of the same name) by a
    /// reload: no name finds it. Its index is still kept in step, so that
    /// every queue's view list stays what its interactions were indexed
    /// under.
    pub retired: bool,
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
    pub workbins: Vec<Workbin>,
    pub agents: Vec<Agent>,
    pub places: Vec<Place>,
    /// Agent group names; groups exist by being named by an agent.
    pub groups: Vec<String>,
    media_by_name: AHashMap<String, MediaIdx>,
    queue_by_name: AHashMap<String, QueueIdx>,
    agent_by_login: AHashMap<String, AgentIdx>,
    place_by_name: AHashMap<String, PlaceIdx>,
}

impl Tenant {
    pub fn new(name: impl Into<String>) -> Self {
        Tenant {
            name: name.into(),
            media: Vec::new(),
            processes: Vec::new(),
            queues: Vec::new(),
            views: Vec::new(),
            workbins: Vec::new(),
            agents: Vec::new(),
            places: Vec::new(),
            groups: Vec::new(),
            media_by_name: AHashMap::new(),
            queue_by_name: AHashMap::new(),
            agent_by_login: AHashMap::new(),
            place_by_name: AHashMap::new(),
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
            if self.queue_by_name.contains_key(*q) || self.workbin(q).is_some() {
                return Err(format!("queue '{q}' is defined twice in tenant '{}'", self.name));
            }
            let idx = self.queues.len() as QueueIdx;
            self.queues.push(Queue {
                name: (*q).into(),
                process,
                next: None,
                views: Vec::new(),
                strategy: None,
                retired: false,
            });
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
        self.queues[q as usize].views.push(self.views.len() as ViewIdx);
        self.views.push(View { name: name.into(), queue: q, condition, order, implicit: false, retired: false });
        Ok(())
    }

    /// Gives `queue` the built-in strategy, delivering from `view` (a view
    /// of that queue; `None`: its first view, resolved with the implicit
    /// views by [`Catalog::new`]).
    pub fn set_strategy(
        &mut self,
        queue: &str,
        view: Option<&str>,
        skills_property: Option<&str>,
    ) -> Result<(), String> {
        let q = self.queue(queue).ok_or_else(|| format!("strategy names unknown queue '{queue}'"))?;
        let skills_property = skills_property.unwrap_or(DEFAULT_SKILLS_PROPERTY);
        if skills_property.is_empty() {
            return Err(format!("queue '{queue}': skills-property must not be empty"));
        }
        self.queues[q as usize].strategy =
            Some(Strategy { view: 0, view_name: view.map(str::to_string), skills_property: skills_property.into() });
        Ok(())
    }

    /// Resolves each strategy's view (after the implicit views exist).
    fn resolve_strategies(&mut self) -> Result<(), String> {
        for q in 0..self.queues.len() {
            let Some(s) = &self.queues[q].strategy else { continue };
            let qname = &self.queues[q].name;
            let view = match &s.view_name {
                None => *self.queues[q].views.first().expect("every queue has a view after add_implicit_views"),
                Some(name) => {
                    let v = self
                        .view_idx(name)
                        .ok_or_else(|| format!("queue '{qname}': strategy-view names unknown view '{name}'"))?;
                    if self.views[v as usize].queue != q as QueueIdx {
                        return Err(format!("queue '{qname}': strategy-view '{name}' is a view of another queue"));
                    }
                    v
                }
            };
            self.queues[q].strategy.as_mut().expect("checked").view = view;
        }
        Ok(())
    }

    /// The queues with a built-in strategy.
    pub fn strategy_queues(&self) -> impl Iterator<Item = (QueueIdx, &Strategy)> {
        self.queues.iter().enumerate().filter_map(|(i, q)| q.strategy.as_ref().map(|s| (i as QueueIdx, s)))
    }

    /// Adds a workbin; its name must not be a queue's or another workbin's.
    pub fn add_workbin(&mut self, name: &str, kind: WorkbinKind) -> Result<WorkbinIdx, String> {
        if self.queue(name).is_some() || self.workbin(name).is_some() {
            return Err(format!("workbin '{name}' has the name of a queue or workbin of tenant '{}'", self.name));
        }
        self.workbins.push(Workbin { name: name.into(), kind });
        Ok((self.workbins.len() - 1) as WorkbinIdx)
    }

    /// Adds an agent. `skills` are (name, level 1-10); `capacity` is (media
    /// type name, most held at once); `groups` are group names, created on
    /// first use. Errors name what is wrong.
    pub fn add_agent(
        &mut self,
        login_id: &str,
        skills: &[(&str, i64)],
        capacity: &[(&str, i64)],
        groups: &[&str],
    ) -> Result<AgentIdx, String> {
        if login_id.is_empty() || login_id.len() > 255 {
            return Err(format!("agent login id '{login_id}' must be 1 to 255 bytes"));
        }
        if self.agent_by_login.contains_key(login_id) {
            return Err(format!("agent '{login_id}' is defined twice in tenant '{}'", self.name));
        }
        let mut sk = Vec::with_capacity(skills.len());
        for &(name, level) in skills {
            if !(1..=MAX_SKILL_LEVEL as i64).contains(&level) {
                return Err(format!("agent '{login_id}': skill '{name}' level {level} is not 1 to {MAX_SKILL_LEVEL}"));
            }
            sk.push((name.to_string(), level as u8));
        }
        sk.sort();
        let mut cap = Vec::with_capacity(capacity.len());
        for &(media, n) in capacity {
            let m = self.media_type(media).ok_or_else(|| {
                format!("agent '{login_id}': capacity names unknown media type '{media}' of tenant '{}'", self.name)
            })?;
            if !(0..=u16::MAX as i64).contains(&n) {
                return Err(format!("agent '{login_id}': capacity for '{media}' must be 0 to {}", u16::MAX));
            }
            cap.push((m, n as u16));
        }
        let mut gs = Vec::with_capacity(groups.len());
        for g in groups {
            let idx = match self.groups.iter().position(|x| x == g) {
                Some(i) => i,
                None => {
                    self.groups.push(g.to_string());
                    self.groups.len() - 1
                }
            };
            gs.push(idx as GroupIdx);
        }
        let idx = self.agents.len() as AgentIdx;
        self.agents.push(Agent { login_id: login_id.into(), skills: sk, capacity: cap, groups: gs, retired: false });
        self.agent_by_login.insert(login_id.into(), idx);
        Ok(idx)
    }

    pub fn add_place(&mut self, name: &str) -> Result<PlaceIdx, String> {
        if name.is_empty() || name.len() > 255 {
            return Err(format!("place name '{name}' must be 1 to 255 bytes"));
        }
        if self.place_by_name.contains_key(name) {
            return Err(format!("place '{name}' is defined twice in tenant '{}'", self.name));
        }
        let idx = self.places.len() as PlaceIdx;
        self.places.push(Place { name: name.into(), retired: false });
        self.place_by_name.insert(name.into(), idx);
        Ok(idx)
    }

    pub fn agent(&self, login_id: &str) -> Option<AgentIdx> {
        self.agent_by_login.get(login_id).copied()
    }

    pub fn place(&self, name: &str) -> Option<PlaceIdx> {
        self.place_by_name.get(name).copied()
    }

    /// Gives every queue without a configured view its implicit view
    /// (named like the queue; skipped if a configured view has that name).
    fn add_implicit_views(&mut self) {
        for q in 0..self.queues.len() {
            let name = self.queues[q].name.clone();
            if self.queues[q].views.is_empty() && self.view(&name).is_none() {
                self.queues[q].views.push(self.views.len() as ViewIdx);
                let view = View {
                    name,
                    queue: q as QueueIdx,
                    condition: None,
                    order: Vec::new(),
                    implicit: true,
                    retired: false,
                };
                self.views.push(view);
            }
        }
    }

    /// The view named `name` (a removed one is not found).
    pub fn view(&self, name: &str) -> Option<&View> {
        self.views.iter().find(|v| v.name == name && !v.retired)
    }

    pub fn view_idx(&self, name: &str) -> Option<ViewIdx> {
        self.views.iter().position(|v| v.name == name && !v.retired).map(|i| i as ViewIdx)
    }

    /// Makes the name lookups again from the objects not removed (after
    /// a reload laid a new configuration over this tenant).
    pub(crate) fn rebuild_lookups(&mut self) {
        self.queue_by_name = by_name(&self.queues, |q| (&q.name, q.retired));
        self.agent_by_login = by_name(&self.agents, |a| (&a.login_id, a.retired));
        self.place_by_name = by_name(&self.places, |p| (&p.name, p.retired));
    }

    pub fn workbin(&self, name: &str) -> Option<WorkbinIdx> {
        self.workbins.iter().position(|w| w.name == name).map(|i| i as WorkbinIdx)
    }

    pub fn media_type(&self, name: &str) -> Option<MediaIdx> {
        self.media_by_name.get(name).copied()
    }

    pub fn queue(&self, name: &str) -> Option<QueueIdx> {
        self.queue_by_name.get(name).copied()
    }
}

/// The index of each object not removed, by its name.
fn by_name<T>(objects: &[T], name_and_retired: impl Fn(&T) -> (&String, bool)) -> AHashMap<String, u32> {
    objects
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match name_and_retired(o) {
            (name, false) => Some((name.clone(), i as u32)),
            (_, true) => None,
        })
        .collect()
}

#[derive(Clone, Debug)]
pub struct Catalog {
    pub tenants: Vec<Tenant>,
    /// `[cluster-settings] enable-submit`: whether this node creates
    /// interactions at all.
    pub enable_submit: bool,
    /// `[settings] handled-at-restart`: where interactions that agents were
    /// handling go when the server restarts. `None`: back to their queue;
    /// `Some(w)`: the handling agent's content of workbin `w` (a workbin of
    /// kind agent, in every tenant that has one by that name).
    pub handled_at_restart_workbin: Option<String>,
    tenant_by_name: AHashMap<String, TenantIdx>,
}

impl Catalog {
    pub fn new(mut tenants: Vec<Tenant>, enable_submit: bool) -> Result<Self, String> {
        let mut tenant_by_name = AHashMap::new();
        for t in &mut tenants {
            t.add_implicit_views();
            t.resolve_strategies().map_err(|e| format!("tenant '{}': {e}", t.name))?;
        }
        for (i, t) in tenants.iter().enumerate() {
            if tenant_by_name.insert(t.name.clone(), i as TenantIdx).is_some() {
                return Err(format!("tenant '{}' is defined twice", t.name));
            }
        }
        Ok(Catalog { tenants, enable_submit, handled_at_restart_workbin: None, tenant_by_name })
    }

    /// The embedded default (README, "Quick start"): tenant `default`, media
    /// types chat, email, sms, workitem enabled and voice disabled, business
    /// process `default` with queues `inbound` (next: `done`) and `done`, the view
    /// `inbound-by-priority` on `inbound` (priority descending, then
    /// submission order), the implicit view `done`, two workbins:
    /// `personal` (per agent) and `team` (per agent group), and agents
    /// `agent1` to `agent10` (skill `english` 5, capacity chat 3 and email 1,
    /// group `agents`) with places `place1` to `place10`; queue `inbound`
    /// has the built-in strategy, delivering from `inbound-by-priority`.
    pub fn embedded_default() -> Self {
        let mut t = Tenant::new("default");
        for m in ["chat", "email", "sms", "workitem"] {
            t.add_media(m, true).expect("unique");
        }
        t.add_media("voice", false).expect("unique");
        t.add_process("default", &["inbound", "done"]).expect("unique");
        t.link_next("inbound", "done").expect("both queues exist");
        t.add_view("inbound", "inbound-by-priority", None, Some("priority DESC")).expect("valid view");
        t.set_strategy("inbound", Some("inbound-by-priority"), None).expect("inbound exists");
        t.add_workbin("personal", WorkbinKind::Agent).expect("unique");
        t.add_workbin("team", WorkbinKind::AgentGroup).expect("unique");
        for i in 1..=10 {
            let login = format!("agent{i}");
            t.add_agent(&login, &[("english", 5)], &[("chat", 3), ("email", 1)], &["agents"]).expect("valid agent");
            t.add_place(&format!("place{i}")).expect("unique");
        }
        Catalog::new(vec![t], true).expect("unique")
    }

    pub fn tenant(&self, name: &str) -> Option<TenantIdx> {
        self.tenant_by_name.get(name).copied()
    }

    pub fn tenant_at(&self, idx: TenantIdx) -> &Tenant {
        &self.tenants[idx as usize]
    }
}
