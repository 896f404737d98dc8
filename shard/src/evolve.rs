//! A reload's catalog: a new configuration laid over the running catalog
//! so that every object keeps its index for the life of the process.
//!
//! Interactions, agent states, view indexes, events in flight and messages
//! between shards all name objects by index. A reload therefore never moves
//! or drops an entry: an object that stays keeps its index (its settings
//! change in place), a new one is appended, and a removed one stays in its
//! slot marked `retired`, where no name finds it. Any catalog made later
//! names everything an earlier one could, so a shard, a connection or the
//! event logger holding a newer catalog than the one an index was made
//! under is always right.
//!
//! A view whose queue, condition or order changes gets a new slot (its
//! index has to be built afresh) and the old slot retires. A retired view
//! stays in its queue's view list and in step with the queue's
//! interactions until the next restart, so that taking an interaction out
//! of its views always finds it where it was put. A queue's view list only
//! grows at its end, so a view's position in it is stable too (answers
//! gathered from shards across a reload line up).
//!
//! What a reload may not change (it needs a restart): the tenants
//! themselves (added, removed, renamed, reordered), a tenant's media types
//! and its workbins.

use crate::catalog::{Agent, Catalog, GroupIdx, Place, Queue, QueueIdx, Strategy, Tenant, View, ViewIdx};

/// What a reload changed, object kind by object kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// "agents: 1 added (a9), 0 removed, 1 changed (a2)".
    pub fn describe(&self, kind: &str) -> String {
        let list = |l: &[String]| if l.is_empty() { String::new() } else { format!(" ({})", l.join(", ")) };
        format!(
            "{kind}: {} added{}, {} removed{}, {} changed{}",
            self.added.len(),
            list(&self.added),
            self.removed.len(),
            list(&self.removed),
            self.changed.len(),
            list(&self.changed)
        )
    }
}

/// The changes of one reload, over every tenant.
#[derive(Clone, Debug, Default)]
pub struct Evolution {
    pub queues: Changes,
    pub views: Changes,
    pub agents: Changes,
    pub places: Changes,
}

impl Evolution {
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty() && self.views.is_empty() && self.agents.is_empty() && self.places.is_empty()
    }

    pub fn describe(&self) -> String {
        [
            self.queues.describe("queues"),
            self.views.describe("views"),
            self.agents.describe("agents"),
            self.places.describe("places"),
        ]
        .join("; ")
    }
}

impl Catalog {
    /// `next` (a catalog built from the reloaded file) laid over `self`:
    /// the catalog to run with from now on and what changed. Errors name a
    /// change only a restart applies; then nothing changes.
    pub fn evolve(&self, next: &Catalog) -> Result<(Catalog, Evolution), String> {
        let names = |c: &Catalog| c.tenants.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        if names(self) != names(next) {
            return Err(format!(
                "the tenants changed ({} before, {} now): a restart applies that",
                names(self).join(", "),
                names(next).join(", ")
            ));
        }
        let mut evolution = Evolution::default();
        let mut tenants = Vec::with_capacity(self.tenants.len());
        for (old, new) in self.tenants.iter().zip(&next.tenants) {
            tenants.push(evolve_tenant(old, new, &mut evolution).map_err(|e| format!("tenant '{}': {e}", old.name))?);
        }
        let mut catalog = self.clone();
        catalog.tenants = tenants;
        catalog.enable_submit = next.enable_submit;
        catalog.handled_at_restart_workbin = next.handled_at_restart_workbin.clone();
        debug_assert!(catalog.extends(self));
        Ok((catalog, evolution))
    }

    /// What a reload runs with while the shards build the indexes of the
    /// views `next` adds: `self` (the catalog in force) with `next`'s added
    /// queues and views at their indexes, none of them found by name yet
    /// (nothing enters an added queue, no one pulls from an added view),
    /// and nothing else changed. Once every shard has built them, `next`
    /// follows, and they hold everything already.
    pub fn staged(&self, next: &Catalog) -> Catalog {
        debug_assert!(next.extends(self));
        let mut c = self.clone();
        for (t, n) in c.tenants.iter_mut().zip(&next.tenants) {
            t.processes = n.processes.clone();
            let first_queue = t.queues.len();
            for q in &n.queues[first_queue..] {
                t.queues.push(Queue { retired: true, next: None, strategy: None, views: Vec::new(), ..q.clone() });
            }
            let first_view = t.views.len();
            for (i, v) in n.views[first_view..].iter().enumerate() {
                t.views.push(View { retired: true, ..v.clone() });
                t.queues[v.queue as usize].views.push((first_view + i) as ViewIdx);
            }
        }
        debug_assert!(c.extends(self) && next.extends(&c));
        c
    }

    /// Whether `self` has view indexes `before` has not (a reload that
    /// adds or changes a view: their indexes are built before they are
    /// used).
    pub fn adds_views(&self, before: &Catalog) -> bool {
        self.tenants.iter().zip(&before.tenants).any(|(t, b)| t.views.len() > b.views.len())
    }

    /// Whether every object of `before` is in `self` at the same index
    /// (what a shard checks before it takes a reloaded catalog).
    pub fn extends(&self, before: &Catalog) -> bool {
        self.tenants.len() == before.tenants.len()
            && self.tenants.iter().zip(&before.tenants).all(|(t, b)| {
                t.name == b.name
                    && t.media.len() == b.media.len()
                    && t.workbins.len() == b.workbins.len()
                    && prefix(&t.queues, &b.queues, |x, y| {
                        x.name == y.name && prefix(&x.views, &y.views, |a, b| a == b)
                    })
                    && prefix(&t.views, &b.views, |x, y| x.name == y.name && x.queue == y.queue)
                    && prefix(&t.agents, &b.agents, |x, y| x.login_id == y.login_id)
                    && prefix(&t.places, &b.places, |x, y| x.name == y.name)
                    && prefix(&t.groups, &b.groups, |x, y| x == y)
            })
    }
}

fn prefix<T>(now: &[T], before: &[T], same: impl Fn(&T, &T) -> bool) -> bool {
    now.len() >= before.len() && now.iter().zip(before).all(|(x, y)| same(x, y))
}

fn evolve_tenant(old: &Tenant, new: &Tenant, ev: &mut Evolution) -> Result<Tenant, String> {
    let media = |t: &Tenant| t.media.iter().map(|m| (m.name.clone(), m.enabled)).collect::<Vec<_>>();
    if media(old) != media(new) {
        return Err("its media types changed: a restart applies that".into());
    }
    let workbins = |t: &Tenant| t.workbins.iter().map(|w| (w.name.clone(), w.kind)).collect::<Vec<_>>();
    if workbins(old) != workbins(new) {
        return Err("its workbins changed: a restart applies that".into());
    }
    let mut t = old.clone();
    for p in &new.processes {
        if !t.processes.iter().any(|x| x.name == p.name) {
            t.processes.push(p.clone());
        }
    }
    let queue_map = evolve_queues(&mut t, new, &mut ev.queues);
    let view_map = evolve_views(&mut t, new, &queue_map, &mut ev.views);
    link_queues(&mut t, new, &queue_map, &view_map, &mut ev.queues);
    evolve_agents(&mut t, new, &mut ev.agents);
    evolve_places(&mut t, new, &mut ev.places);
    t.rebuild_lookups();
    Ok(t)
}

/// Queues by name; returns each of `new`'s queues' index in `t`.
fn evolve_queues(t: &mut Tenant, new: &Tenant, ch: &mut Changes) -> Vec<QueueIdx> {
    let was_live: Vec<bool> = t.queues.iter().map(|q| !q.retired).collect();
    for q in &mut t.queues {
        q.retired = true;
    }
    let mut map = Vec::with_capacity(new.queues.len());
    for nq in &new.queues {
        let process = t.processes.iter().position(|p| p.name == new.processes[nq.process as usize].name);
        let process = process.expect("every process of the new catalog was added") as u16;
        let idx = match t.queues.iter().position(|q| q.name == nq.name) {
            Some(i) => {
                if was_live.get(i) != Some(&true) {
                    ch.added.push(nq.name.clone());
                }
                i
            }
            None => {
                ch.added.push(nq.name.clone());
                t.queues.push(Queue {
                    name: nq.name.clone(),
                    process,
                    next: None,
                    views: Vec::new(),
                    strategy: None,
                    retired: false,
                });
                t.queues.len() - 1
            }
        };
        t.queues[idx].retired = false;
        t.queues[idx].process = process;
        map.push(idx as QueueIdx);
    }
    for (i, q) in t.queues.iter_mut().enumerate() {
        if q.retired {
            if was_live.get(i) == Some(&true) {
                ch.removed.push(q.name.clone());
            }
            q.next = None;
            q.strategy = None;
        }
    }
    map
}

/// Views by name, queue, condition and order; returns each of `new`'s
/// views' index in `t`.
fn evolve_views(t: &mut Tenant, new: &Tenant, queue_map: &[QueueIdx], ch: &mut Changes) -> Vec<ViewIdx> {
    let was_live: Vec<bool> = t.views.iter().map(|v| !v.retired).collect();
    for v in &mut t.views {
        v.retired = true;
    }
    let mut map = Vec::with_capacity(new.views.len());
    for nv in &new.views {
        let queue = queue_map[nv.queue as usize];
        let same = |v: &View| {
            v.name == nv.name
                && v.queue == queue
                && v.condition == nv.condition
                && v.order == nv.order
                && v.implicit == nv.implicit
        };
        let live_before = |name: &str| t.views.iter().zip(&was_live).any(|(v, &l)| l && v.name == name);
        let idx = match t.views.iter().position(same) {
            Some(i) if was_live.get(i) == Some(&true) => i,
            found => {
                if live_before(&nv.name) {
                    ch.changed.push(nv.name.clone());
                } else {
                    ch.added.push(nv.name.clone());
                }
                match found {
                    Some(i) => i,
                    None => {
                        t.views.push(View { queue, retired: false, ..nv.clone() });
                        let idx = (t.views.len() - 1) as ViewIdx;
                        t.queues[queue as usize].views.push(idx);
                        idx as usize
                    }
                }
            }
        };
        t.views[idx].retired = false;
        map.push(idx as ViewIdx);
    }
    for (i, v) in t.views.iter().enumerate() {
        let replaced = new.views.iter().any(|n| n.name == v.name);
        if v.retired && was_live.get(i) == Some(&true) && !replaced {
            ch.removed.push(v.name.clone());
        }
    }
    map
}

/// Next queues and strategies, from `new`, in `t`'s indexes.
fn link_queues(t: &mut Tenant, new: &Tenant, queue_map: &[QueueIdx], view_map: &[ViewIdx], ch: &mut Changes) {
    for (nq, &q) in new.queues.iter().zip(queue_map) {
        let next = nq.next.map(|n| queue_map[n as usize]);
        let strategy = nq.strategy.as_ref().map(|s| Strategy { view: view_map[s.view as usize], ..s.clone() });
        let queue = &mut t.queues[q as usize];
        let added = ch.added.contains(&queue.name);
        if !added && (queue.next != next || queue.strategy != strategy) {
            ch.changed.push(queue.name.clone());
        }
        queue.next = next;
        queue.strategy = strategy;
    }
}

fn evolve_agents(t: &mut Tenant, new: &Tenant, ch: &mut Changes) {
    let was_live: Vec<bool> = t.agents.iter().map(|a| !a.retired).collect();
    for a in &mut t.agents {
        a.retired = true;
    }
    for na in &new.agents {
        let groups: Vec<GroupIdx> = na
            .groups
            .iter()
            .map(|&g| {
                let name = &new.groups[g as usize];
                match t.groups.iter().position(|x| x == name) {
                    Some(i) => i as GroupIdx,
                    None => {
                        t.groups.push(name.clone());
                        (t.groups.len() - 1) as GroupIdx
                    }
                }
            })
            .collect();
        let agent = Agent { groups, ..na.clone() };
        match t.agents.iter().position(|a| a.login_id == na.login_id) {
            Some(i) => {
                if was_live.get(i) != Some(&true) {
                    ch.added.push(na.login_id.clone());
                } else if t.agents[i] != (Agent { retired: true, ..agent.clone() }) {
                    ch.changed.push(na.login_id.clone());
                }
                t.agents[i] = agent;
            }
            None => {
                ch.added.push(na.login_id.clone());
                t.agents.push(agent);
            }
        }
    }
    for (a, was) in t.agents.iter().zip(&was_live) {
        if a.retired && *was {
            ch.removed.push(a.login_id.clone());
        }
    }
}

fn evolve_places(t: &mut Tenant, new: &Tenant, ch: &mut Changes) {
    let was_live: Vec<bool> = t.places.iter().map(|p| !p.retired).collect();
    for p in &mut t.places {
        p.retired = true;
    }
    for np in &new.places {
        match t.places.iter().position(|p| p.name == np.name) {
            Some(i) => {
                if was_live.get(i) != Some(&true) {
                    ch.added.push(np.name.clone());
                }
                t.places[i].retired = false;
            }
            None => {
                ch.added.push(np.name.clone());
                t.places.push(Place { name: np.name.clone(), retired: false });
            }
        }
    }
    for (p, was) in t.places.iter().zip(&was_live) {
        if p.retired && *was {
            ch.removed.push(p.name.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tenant `t`: media chat, queues (with `next` to the following one),
    /// views (name, queue, order), agents, places; strategy on the first
    /// queue.
    fn catalog(queues: &[&str], views: &[(&str, &str, &str)], agents: &[(&str, i64)], places: &[&str]) -> Catalog {
        let mut t = Tenant::new("t");
        t.add_media("chat", true).unwrap();
        t.add_process("bp", queues).unwrap();
        for w in queues.windows(2) {
            t.link_next(w[0], w[1]).unwrap();
        }
        for (name, queue, order) in views {
            t.add_view(queue, name, None, Some(order)).unwrap();
        }
        t.set_strategy(queues[0], None, None).unwrap();
        for (login, cap) in agents {
            t.add_agent(login, &[("english", 5)], &[("chat", *cap)], &["g"]).unwrap();
        }
        for p in places {
            t.add_place(p).unwrap();
        }
        Catalog::new(vec![t], true).unwrap()
    }

    #[test]
    fn objects_keep_their_index_new_ones_are_appended_and_removed_ones_retire() {
        let old = catalog(&["in", "done"], &[("by-prio", "in", "priority")], &[("a1", 1), ("a2", 1)], &["p1"]);
        let new = catalog(&["in", "vip"], &[("by-prio", "in", "priority")], &[("a2", 3), ("a3", 1)], &["p1", "p2"]);
        let (c, ev) = old.evolve(&new).unwrap();
        assert!(c.extends(&old));
        let t = c.tenant_at(0);
        let o = old.tenant_at(0);
        assert_eq!(t.queue("in"), o.queue("in"));
        assert_eq!(t.queue("done"), None, "a removed queue is not found by name");
        assert!(t.queues[o.queue("done").unwrap() as usize].retired);
        assert_eq!(t.queue("vip"), Some(2), "a new queue is appended");
        assert_eq!(t.queues[0].next, Some(2), "'in' now leads to 'vip'");
        assert_eq!(t.agent("a1"), None);
        assert!(t.agents[0].retired);
        assert_eq!(t.agent("a2"), Some(1));
        assert_eq!(t.agents[1].capacity, vec![(0, 3)], "a changed agent changes in place");
        assert_eq!(t.agent("a3"), Some(2));
        assert_eq!(t.place("p2"), Some(1));
        assert_eq!(t.view_idx("by-prio"), o.view_idx("by-prio"));
        assert_eq!(t.view_idx("done"), None, "the implicit view of a removed queue retires with it");
        assert_eq!(t.view_idx("vip"), Some(2), "the new queue's implicit view");
        assert_eq!(ev.queues.added, vec!["vip"]);
        assert_eq!(ev.queues.removed, vec!["done"]);
        assert_eq!(ev.queues.changed, vec!["in"]);
        assert_eq!(ev.agents.describe("agents"), "agents: 1 added (a3), 1 removed (a1), 1 changed (a2)");
        assert_eq!(ev.places.added, vec!["p2"]);
        assert_eq!(ev.views.removed, vec!["done"]);

        // Back as it was: every object at its first index again.
        let (back, ev) = c.evolve(&old).unwrap();
        assert!(back.extends(&c));
        let b = back.tenant_at(0);
        assert_eq!(b.queue("done"), o.queue("done"));
        assert_eq!(b.agent("a1"), Some(0));
        assert_eq!(b.view_idx("done"), o.view_idx("done"));
        assert_eq!(b.queue("vip"), None);
        assert_eq!(ev.queues.added, vec!["done"]);
        assert_eq!(ev.agents.added, vec!["a1"]);
    }

    #[test]
    fn a_changed_view_gets_a_new_index_and_the_old_one_retires_in_its_queue() {
        let old = catalog(&["in"], &[("v", "in", "priority")], &[], &[]);
        let new = catalog(&["in"], &[("v", "in", "priority DESC")], &[], &[]);
        let (c, ev) = old.evolve(&new).unwrap();
        let t = c.tenant_at(0);
        assert_eq!(t.view_idx("v"), Some(1));
        assert!(t.views[0].retired);
        assert_eq!(t.queues[0].views, vec![0, 1], "the queue keeps the retired view, the new one after it");
        assert_eq!(t.queues[0].strategy.as_ref().unwrap().view, 1, "the strategy delivers from the new view");
        assert_eq!(ev.views.changed, vec!["v"]);
        assert!(ev.views.added.is_empty() && ev.views.removed.is_empty());
        let (same, ev) = c.evolve(&new).unwrap();
        assert!(ev.is_empty(), "the same file again changes nothing: {}", ev.describe());
        assert_eq!(same.tenant_at(0).views.len(), 2);
    }

    #[test]
    fn tenants_media_types_and_workbins_need_a_restart() {
        let old = catalog(&["in"], &[], &[], &[]);
        let mut other = Tenant::new("u");
        other.add_media("chat", true).unwrap();
        other.add_process("bp", &["in"]).unwrap();
        let renamed = Catalog::new(vec![other], true).unwrap();
        assert!(old.evolve(&renamed).unwrap_err().contains("the tenants changed"));

        let mut t = Tenant::new("t");
        t.add_media("chat", true).unwrap();
        t.add_media("email", true).unwrap();
        t.add_process("bp", &["in"]).unwrap();
        let more_media = Catalog::new(vec![t], true).unwrap();
        assert!(old.evolve(&more_media).unwrap_err().contains("media types"));

        let mut t = Tenant::new("t");
        t.add_media("chat", true).unwrap();
        t.add_process("bp", &["in"]).unwrap();
        t.add_workbin("personal", crate::catalog::WorkbinKind::Agent).unwrap();
        let workbin = Catalog::new(vec![t], true).unwrap();
        assert!(old.evolve(&workbin).unwrap_err().contains("workbins"));
    }

    #[test]
    fn the_staged_catalog_hides_what_the_reload_adds_and_changes_nothing_else() {
        let old = catalog(&["in", "done"], &[("v", "in", "priority")], &[("a1", 1)], &["p1"]);
        let new = catalog(&["in", "vip"], &[("v", "in", "priority DESC")], &[("a2", 1)], &[]);
        let (next, _) = old.evolve(&new).unwrap();
        assert!(next.adds_views(&old));
        let staged = old.staged(&next);
        assert!(staged.extends(&old) && next.extends(&staged));
        let t = staged.tenant_at(0);
        assert_eq!(t.view_idx("v"), old.tenant_at(0).view_idx("v"), "the old 'v' is still the one found");
        assert_eq!(t.queue("vip"), None, "an added queue is not found yet");
        assert_eq!(t.queue("done"), Some(1), "a removed queue is still there");
        assert_eq!(t.agent("a1"), Some(0));
        assert_eq!(t.agent("a2"), None, "agents change with the final catalog");
        assert_eq!(t.views.len(), next.tenant_at(0).views.len(), "every added view has its index, to build");
        assert!(t.views[old.tenant_at(0).views.len()..].iter().all(|v| v.retired));
        assert_eq!(t.queues[0].views, next.tenant_at(0).queues[0].views);
        assert!(!next.evolve(&new).unwrap().0.adds_views(&next), "the same file again adds nothing");
    }
}
