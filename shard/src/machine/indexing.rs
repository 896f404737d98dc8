//! The one path by which a shard's interactions change: the store, the
//! view indexes, the queue counts and the lock table, kept in agreement.
//!
//! A view index holds an interaction under a key computed from its fields
//! (order) and only if it meets the view's condition; both can depend on
//! any field, `version` and properties included. An index entry is found
//! again only by recomputing its key, so a field must never change while
//! the interaction is indexed. Everything that changes an interaction goes
//! through this module: [`Shard::modify`] takes it out of its views and
//! counts, applies the change and puts it back, in one step.
//!
//! The compiler keeps it so: the store hands out `&mut Interaction`, and
//! inserts or removes interactions, only against a [`Reindex`] token, which
//! only this module can make; the index state ([`Index`]) has private
//! fields. Code elsewhere reads freely and changes through these methods.
//!
//! The same path tells scans in progress (scan.rs) before anything they
//! read changes, so each keeps seeing the shard as at its cut.

use std::collections::BTreeSet;

use crate::catalog::{TenantIdx, ViewIdx};
use crate::interaction::{Interaction, Millis, Names, Place};
use crate::peer::{Holder, LockKind, PeerMsg};
use crate::store::Slot;
use crate::symbols::Sym;
use crate::timers::Timer;
use crate::view::ViewIndex;

use super::{views_holding, Lock, Output, QueueCount, Shard};

/// Proof that the caller keeps the indexes in step with a change: needed
/// to change, add or remove an interaction in the store. Only this module
/// can make one.
pub(crate) struct Reindex(());

/// The view indexes, queue counts and locks of one shard.
pub(crate) struct Index {
    /// `views[tenant][view]`.
    views: Vec<Vec<ViewIndex>>,
    /// `depth[tenant][queue]`.
    depth: Vec<Vec<QueueCount>>,
    /// `waiting[tenant][queue]`: the unlocked interactions of each queue by
    /// (placed_in_queue_at, tie), for the age of the oldest waiting.
    waiting: Vec<Vec<BTreeSet<(Millis, u64)>>>,
    /// Their deadlines are in the shard's timer table.
    locks: ahash::AHashMap<Slot, Lock>,
    /// Views a reload added whose index is being built, slice by slice,
    /// with the slot the build has reached: such a view holds exactly the
    /// interactions of its queue at slots below it that meet its condition
    /// (attach and detach skip the others; the build takes them in turn).
    building: Vec<Build>,
}

#[derive(Clone, Copy, Debug)]
struct Build {
    tenant: TenantIdx,
    view: ViewIdx,
    below: Slot,
}

impl Index {
    pub(crate) fn new(catalog: &crate::catalog::Catalog) -> Self {
        Index {
            views: catalog.tenants.iter().map(|t| t.views.iter().map(ViewIndex::new).collect()).collect(),
            depth: catalog.tenants.iter().map(|t| vec![QueueCount::default(); t.queues.len()]).collect(),
            waiting: catalog.tenants.iter().map(|t| vec![BTreeSet::new(); t.queues.len()]).collect(),
            locks: ahash::AHashMap::new(),
            building: Vec::new(),
        }
    }

    /// Whether `slot` is in the part of view `v` built so far (all of it
    /// unless a build is under way).
    fn built(&self, tenant: TenantIdx, v: ViewIdx, slot: Slot) -> bool {
        self.building.iter().all(|b| b.tenant != tenant || b.view != v || slot < b.below)
    }

    /// Views whose index is still being built.
    pub(crate) fn building(&self) -> usize {
        self.building.len()
    }

    /// One view's index on this shard.
    pub(crate) fn view(&self, tenant: TenantIdx, view: ViewIdx) -> &ViewIndex {
        &self.views[tenant as usize][view as usize]
    }

    /// The counts of each queue of `tenant` on this shard.
    pub(crate) fn queue_counts(&self, tenant: TenantIdx) -> &[QueueCount] {
        &self.depth[tenant as usize]
    }

    /// When the longest-waiting unlocked interaction of a queue on this
    /// shard was placed in it.
    pub(crate) fn oldest_waiting(&self, tenant: TenantIdx, queue: crate::catalog::QueueIdx) -> Option<Millis> {
        self.waiting[tenant as usize][queue as usize].first().map(|&(at, _)| at)
    }

    pub(crate) fn lock(&self, slot: Slot) -> Option<&Lock> {
        self.locks.get(&slot)
    }

    pub(crate) fn is_locked(&self, slot: Slot) -> bool {
        self.locks.contains_key(&slot)
    }

    pub(crate) fn locks(&self) -> impl Iterator<Item = (Slot, &Lock)> {
        self.locks.iter().map(|(&s, l)| (s, l))
    }
}

impl Shard {
    /// Changes the interaction at `slot` with `change`: it leaves its views
    /// and counts first and enters them again after, under keys and
    /// conditions computed from its new fields. Its id and tie must stay.
    pub(crate) fn modify<R>(
        &mut self,
        slot: Slot,
        out: &mut Vec<Output>,
        change: impl FnOnce(&mut Interaction) -> R,
    ) -> R {
        self.before_change(slot);
        self.detach(slot);
        let r = self.change_detached(slot, change);
        self.attach(slot, out);
        r
    }

    /// [`Shard::modify`] that also ends any lock on the interaction.
    pub(crate) fn modify_unlocked<R>(
        &mut self,
        slot: Slot,
        out: &mut Vec<Output>,
        change: impl FnOnce(&mut Interaction) -> R,
    ) -> R {
        self.before_change(slot);
        self.detach(slot);
        self.drop_lock(slot);
        let r = self.change_detached(slot, change);
        self.attach(slot, out);
        r
    }

    fn change_detached<R>(&mut self, slot: Slot, change: impl FnOnce(&mut Interaction) -> R) -> R {
        let ix = self.store.get_mut(slot, &Reindex(()));
        let (id, tie, names) = (ix.id.clone(), ix.tie, names_of(ix));
        let r = change(ix);
        assert!(ix.id == id && ix.tie == tie, "interaction {id}: id or tie changed in place");
        let now = names_of(ix);
        // New users first, so a name kept through the change never drops to none.
        for s in now.into_iter().flatten() {
            self.syms.acquire(s);
        }
        self.release_names(names);
        r
    }

    /// The interaction no longer uses `names`: those with no user left
    /// retire at the end of the step ([`Shard::retire_names`]).
    pub(super) fn release_names(&mut self, names: [Option<Sym>; 5]) {
        for s in names.into_iter().flatten() {
            if self.syms.release(s) {
                self.unused_names.push(s);
            }
        }
    }

    /// Names left with no user during this step retire: they wait for
    /// every write now in flight, the writes this step made included,
    /// which may hold copies naming them (a stop's, a change's undo).
    pub(super) fn retire_names(&mut self) {
        while let Some(s) = self.unused_names.pop() {
            if let Some(freed) = self.retiring.retire(s, self.next_token, self.pending.len()) {
                self.free_names(freed);
            }
        }
    }

    /// Frees retired names still unused. A name whose last user left in
    /// this very step is not freed: it was used again since its
    /// retirement, copies made meanwhile (a stop's, a failed change's) may
    /// name it, and it retires anew at the end of the step, waiting for
    /// the writes in flight now.
    pub(super) fn free_names(&mut self, names: Vec<Sym>) {
        for s in names {
            if !self.unused_names.contains(&s) {
                self.syms.free_if_unused(s);
            }
        }
    }

    /// Marks the row of `slot` as stored; returns whether it was before.
    /// No view depends on it.
    pub(crate) fn mark_stored(&mut self, slot: Slot) -> bool {
        std::mem::replace(&mut self.store.get_mut(slot, &Reindex(())).stored, true)
    }

    /// A committed submit becomes visible: it enters its queue's views.
    pub(crate) fn reveal(&mut self, slot: Slot, out: &mut Vec<Output>) {
        self.modify(slot, out, |ix| {
            assert!(!ix.visible, "interaction {} revealed twice", ix.id);
            ix.visible = true;
        });
    }

    /// Adds an interaction to the store and to its views and counts.
    pub(crate) fn admit(&mut self, ix: Interaction, out: &mut Vec<Output>) -> Slot {
        for s in names_of(&ix).into_iter().flatten() {
            self.syms.acquire(s);
        }
        let slot = self.store.insert(ix, &Reindex(()));
        self.after_admit(slot);
        self.attach(slot, out);
        slot
    }

    /// Removes an interaction from its views, counts and locks, then from
    /// the store.
    pub(crate) fn evict(&mut self, slot: Slot) -> Interaction {
        self.before_change(slot);
        self.detach(slot);
        self.drop_lock(slot);
        let ix = self.store.remove(slot, &Reindex(()));
        self.release_names(names_of(&ix));
        ix
    }

    /// Locks a visible, unlocked interaction to `holder`: it leaves its
    /// views (it stays counted in its queue, as locked).
    pub(crate) fn lock(&mut self, slot: Slot, holder: Holder, kind: LockKind, deadline: Millis, out: &mut Vec<Output>) {
        assert!(!self.index.locks.contains_key(&slot), "interaction {} locked twice", self.store.get(slot).id);
        self.before_change(slot);
        self.detach(slot);
        if deadline != 0 {
            self.timers.set(Timer::Lock(slot), deadline);
        }
        self.index.locks.insert(slot, Lock { holder, kind, deadline });
        self.attach(slot, out);
    }

    /// Ends the lock on `slot`; the interaction is back in its views, at
    /// the place its key gives it (its original place unless it changed).
    pub(crate) fn unlock(&mut self, slot: Slot, out: &mut Vec<Output>) {
        if !self.index.locks.contains_key(&slot) {
            return;
        }
        self.before_change(slot);
        self.detach(slot);
        self.drop_lock(slot);
        self.attach(slot, out);
    }

    /// Forgets the lock entry of `slot`; only between detach and attach,
    /// since the lock decides what those count and index.
    fn drop_lock(&mut self, slot: Slot) {
        if let Some(l) = self.index.locks.remove(&slot) {
            if l.deadline != 0 {
                self.timers.cancel(Timer::Lock(slot));
            }
        }
    }

    /// Counts a visible interaction in its queue and, unless locked, enters
    /// it in the queue's views whose condition it meets. Pulls and
    /// strategies waiting on those views are told.
    fn attach(&mut self, slot: Slot, out: &mut Vec<Output>) {
        let Shard { store, index, catalog, syms, coord, routing, .. } = self;
        let ix = store.get(slot);
        let Place::Queue(q) = ix.place else { return };
        if !ix.visible {
            return;
        }
        let count = &mut index.depth[ix.tenant as usize][q as usize];
        count.interactions += 1;
        if index.locks.contains_key(&slot) {
            count.locked += 1;
            return;
        }
        let fresh = index.waiting[ix.tenant as usize][q as usize].insert((ix.placed_in_queue_at, ix.tie));
        assert!(fresh, "interaction {} attached twice", ix.id);
        let n = Names { catalog, syms };
        for v in views_holding(ix, q, n) {
            if !index.built(ix.tenant, v, slot) {
                continue;
            }
            let view = &mut index.views[ix.tenant as usize][v as usize];
            view.insert(view.key(ix, n), ix.tie);
            if let Some(w) = coord.view_filled(ix.tenant, v) {
                for (to, op) in w {
                    out.push(Output::Peer { to, msg: PeerMsg::ViewFilled { op } });
                }
            }
            if let Some(to) = routing.strategy_woken(ix.tenant, v) {
                out.push(Output::Peer { to, msg: PeerMsg::StrategyWake { tenant: ix.tenant, view: v } });
            }
        }
    }

    /// Undoes [`Shard::attach`], with the fields the interaction has now:
    /// they are the ones attach saw, since nothing changes them in between.
    fn detach(&mut self, slot: Slot) {
        let Shard { store, index, catalog, syms, .. } = self;
        let ix = store.get(slot);
        let Place::Queue(q) = ix.place else { return };
        if !ix.visible {
            return;
        }
        let count = &mut index.depth[ix.tenant as usize][q as usize];
        assert!(count.interactions > 0, "queue count below zero");
        count.interactions -= 1;
        if index.locks.contains_key(&slot) {
            assert!(count.locked > 0, "locked count below zero");
            count.locked -= 1;
            return;
        }
        let was = index.waiting[ix.tenant as usize][q as usize].remove(&(ix.placed_in_queue_at, ix.tie));
        assert!(was, "interaction {} missing from its queue's waiting set", ix.id);
        let n = Names { catalog, syms };
        for v in views_holding(ix, q, n) {
            if !index.built(ix.tenant, v, slot) {
                continue;
            }
            let view = &mut index.views[ix.tenant as usize][v as usize];
            let removed = view.remove(view.key(ix, n), ix.tie);
            assert!(
                removed,
                "interaction {} missing from view '{}'",
                ix.id,
                catalog.tenant_at(ix.tenant).views[v as usize].name
            );
        }
    }

    /// A reload's catalog added queues and views: their counts start
    /// empty, and each new view's index is built from the interactions now
    /// in its queue, a sixteenth of [`SCAN_SLICE`](crate::scan::SCAN_SLICE)
    /// slots a step ([`PeerMsg::BuildViews`], which the shard sends itself;
    /// entering a view's ordered index costs microseconds an entry on a
    /// large backlog, far more than a scan's test), so a view added over a
    /// large backlog never holds the shard long. Views already there
    /// keep their index: a reload never changes a view in place (see
    /// evolve.rs).
    pub(super) fn index_added_objects(&mut self, out: &mut Vec<Output>) {
        let Shard { index, catalog, .. } = self;
        let was_building = !index.building.is_empty();
        for (t, tenant) in catalog.tenants.iter().enumerate() {
            assert!(index.depth[t].len() <= tenant.queues.len(), "a reload never drops a queue");
            index.depth[t].resize(tenant.queues.len(), QueueCount::default());
            index.waiting[t].resize_with(tenant.queues.len(), BTreeSet::new);
            let first = index.views[t].len();
            index.views[t].extend(tenant.views[first..].iter().map(ViewIndex::new));
            for v in first..tenant.views.len() {
                index.building.push(Build { tenant: t as TenantIdx, view: v as ViewIdx, below: 0 });
            }
        }
        if !was_building && !index.building.is_empty() {
            out.push(Output::Peer { to: self.params.shard, msg: PeerMsg::BuildViews });
        }
    }

    /// One slice of the first view being built: the interactions at the
    /// next slots enter it. Asks for the next slice while any is left; a
    /// finished view wakes the strategies and pulls waiting on it.
    pub(crate) fn build_views(&mut self, out: &mut Vec<Output>) {
        let Some(&Build { tenant, view, below }) = self.index.building.first() else { return };
        let end = self.store.slot_end().min(below.saturating_add((self.params.scan_slice / 16).max(1)));
        {
            let Shard { store, index, catalog, syms, .. } = self;
            let n = Names { catalog, syms };
            let queue = catalog.tenant_at(tenant).views[view as usize].queue;
            for slot in below..end {
                let Some(ix) = store.try_get(slot) else { continue };
                if ix.tenant != tenant
                    || ix.place != Place::Queue(queue)
                    || !ix.visible
                    || index.locks.contains_key(&slot)
                {
                    continue;
                }
                if views_holding(ix, queue, n).any(|v| v == view) {
                    let index = &mut index.views[tenant as usize][view as usize];
                    index.insert(index.key(ix, n), ix.tie);
                }
            }
            index.building[0].below = end;
        }
        if end >= self.store.slot_end() {
            self.index.building.remove(0);
            if let Some(to) = self.routing.strategy_woken(tenant, view) {
                out.push(Output::Peer { to, msg: PeerMsg::StrategyWake { tenant, view } });
            }
        }
        if !self.index.building.is_empty() {
            out.push(Output::Peer { to: self.params.shard, msg: PeerMsg::BuildViews });
        }
    }

    /// Checks that every name's count of users is the number of interactions
    /// using it (and of copies pinned by writes in flight), and that every
    /// name an interaction uses is held.
    pub fn audit_names(&self) -> Result<(), String> {
        let mut users: ahash::AHashMap<Sym, u32> = ahash::AHashMap::new();
        for (_, ix) in self.store.iter() {
            for s in names_of(ix).into_iter().flatten() {
                *users.entry(s).or_default() += 1;
            }
        }
        for names in self.pending.values().filter_map(|p| p.pinned) {
            for s in names.into_iter().flatten() {
                *users.entry(s).or_default() += 1;
            }
        }
        for (s, name) in self.syms.iter() {
            let want = users.remove(&s).unwrap_or(0);
            if self.syms.users(s) != want {
                return Err(format!("name '{name}' counts {} users, {want} interactions use it", self.syms.users(s)));
            }
        }
        match users.keys().next() {
            Some(s) => Err(format!("an interaction uses name number {s}, which is not held")),
            None => Ok(()),
        }
    }

    /// Checks that the indexes agree with the interactions: every view holds
    /// exactly the visible, unlocked interactions of its queue that meet its
    /// condition, each under the key its fields give now; the counts match;
    /// every lock is on a live interaction. For tests and simulations: it
    /// costs a pass over everything.
    pub fn audit_index(&self) -> Result<(), String> {
        let n = self.names();
        let mut want: Vec<Vec<BTreeSet<(crate::view::ViewKey, u64)>>> =
            self.index.views.iter().map(|t| t.iter().map(|_| BTreeSet::new()).collect()).collect();
        let mut depth: Vec<Vec<QueueCount>> =
            self.index.depth.iter().map(|t| vec![QueueCount::default(); t.len()]).collect();
        for (slot, ix) in self.store.iter() {
            let locked = self.index.locks.contains_key(&slot);
            let Place::Queue(q) = ix.place else { continue };
            if !ix.visible {
                if locked {
                    return Err(format!("interaction {} is locked before it is visible", ix.id));
                }
                continue;
            }
            let count = &mut depth[ix.tenant as usize][q as usize];
            count.interactions += 1;
            if locked {
                count.locked += 1;
                continue;
            }
            for v in views_holding(ix, q, n).filter(|&v| self.index.built(ix.tenant, v, slot)) {
                let key = self.index.views[ix.tenant as usize][v as usize].key(ix, n);
                want[ix.tenant as usize][v as usize].insert((key, ix.tie));
            }
        }
        for (t, views) in self.index.views.iter().enumerate() {
            for (v, index) in views.iter().enumerate() {
                let have: BTreeSet<_> = index.head(index.len()).into_iter().collect();
                let want = &want[t][v];
                if &have != want {
                    let name = &self.catalog.tenant_at(t as TenantIdx).views[v].name;
                    let extra = have.difference(want).count();
                    let missing = want.difference(&have).count();
                    return Err(format!("view '{name}': {extra} stale or extra entries, {missing} missing"));
                }
            }
        }
        for (t, (have, want)) in self.index.depth.iter().zip(&depth).enumerate() {
            for (q, (h, w)) in have.iter().zip(want).enumerate() {
                if (h.interactions, h.locked) != (w.interactions, w.locked) {
                    let name = &self.catalog.tenant_at(t as TenantIdx).queues[q].name;
                    return Err(format!("queue '{name}' counts {h:?}, its interactions give {w:?}"));
                }
            }
        }
        for (&slot, lock) in &self.index.locks {
            if !self.store.is_live(slot) {
                return Err(format!("a lock ({:?}) on a slot that holds no interaction", lock.kind));
            }
            let timer = self.timers.deadline(Timer::Lock(slot));
            if timer != (lock.deadline != 0).then_some(lock.deadline) {
                return Err(format!("a lock with deadline {} has the timer {timer:?}", lock.deadline));
            }
        }
        Ok(())
    }
}

/// The interned names an interaction uses: type, subtype, submitter,
/// workbin owner, handling agent.
pub(super) fn names_of(ix: &Interaction) -> [Option<Sym>; 5] {
    let owner = match ix.place {
        Place::Workbin { owner, .. } => Some(owner),
        Place::Queue(_) => None,
    };
    let agent = ix.handling.as_deref().and_then(|h| h.assigned_to);
    [Some(ix.interaction_type), Some(ix.interaction_subtype), Some(ix.submitted_by), owner, agent]
}
