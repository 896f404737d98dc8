//! Interned names: the interaction types, client names, workbin owners and
//! agents a shard's interactions carry, stored once and referred to by
//! number so an interaction carries 4 bytes instead of a string for each.
//!
//! Clients choose these names, so the table must not only grow: each name
//! counts the live interactions that use it (`machine/indexing.rs` counts,
//! since every interaction enters, changes and leaves the store there), and
//! a name no interaction uses is freed. Not at once, though: a write still
//! in flight may hold a copy of an interaction as it was (to restore it if
//! the write fails), naming it. So a name whose count falls to zero waits
//! in a [`Retiring`] batch until every write that was in flight at that
//! moment has completed, and is freed then unless it is in use again. The
//! number of names held is bounded ([`MAX_NAMES`]); a request that would add
//! one past it is refused.

use std::sync::Arc;

use ahash::AHashMap;

/// A name's number in its shard's [`Symbols`].
pub type Sym = u32;

/// Most distinct names a shard keeps at once by default
/// ([`ShardParams::max_names`]): far more than a contact center's types,
/// clients, agents, places and groups; a client inventing names meets this
/// bound, not the memory's.
///
/// [`ShardParams::max_names`]: crate::machine::ShardParams::max_names
pub const MAX_NAMES: usize = 100_000;

#[derive(Default, Debug)]
pub struct Symbols {
    /// `None`: a free number.
    names: Vec<Option<Arc<str>>>,
    /// How many live interactions use each name.
    refs: Vec<u32>,
    by_name: AHashMap<Arc<str>, Sym>,
    free: Vec<Sym>,
}

impl Symbols {
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of `name`, adding it on first use (with no user yet).
    pub fn intern(&mut self, name: &str) -> Sym {
        if let Some(&s) = self.by_name.get(name) {
            return s;
        }
        let name: Arc<str> = name.into();
        let s = match self.free.pop() {
            Some(s) => {
                self.names[s as usize] = Some(name.clone());
                s
            }
            None => {
                self.names.push(Some(name.clone()));
                self.refs.push(0);
                (self.names.len() - 1) as Sym
            }
        };
        self.by_name.insert(name, s);
        s
    }

    pub fn name(&self, s: Sym) -> &str {
        self.names[s as usize].as_deref().expect("a live name")
    }

    /// The number of `name` if it is held.
    pub fn lookup(&self, name: &str) -> Option<Sym> {
        self.by_name.get(name).copied()
    }

    /// One more interaction uses `s`.
    pub(crate) fn acquire(&mut self, s: Sym) {
        assert!(self.names[s as usize].is_some(), "a freed name used: {s}");
        self.refs[s as usize] += 1;
    }

    /// One interaction fewer uses `s`; returns whether none does now.
    pub(crate) fn release(&mut self, s: Sym) -> bool {
        let r = &mut self.refs[s as usize];
        assert!(*r > 0, "name {s} released more often than acquired");
        *r -= 1;
        *r == 0
    }

    /// Frees `s` if no interaction uses it (it may be in use again since it
    /// was retired).
    pub(crate) fn free_if_unused(&mut self, s: Sym) {
        if self.refs[s as usize] != 0 {
            return;
        }
        if let Some(name) = self.names[s as usize].take() {
            self.by_name.remove(&name);
            self.free.push(s);
        }
    }

    /// How many interactions use `s`.
    pub fn users(&self, s: Sym) -> u32 {
        self.refs[s as usize]
    }

    /// Names held now.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Every held name and its number.
    pub fn iter(&self) -> impl Iterator<Item = (Sym, &str)> {
        self.names.iter().enumerate().filter_map(|(i, n)| n.as_deref().map(|n| (i as Sym, n)))
    }
}

/// Names whose last user left while writes were in flight: freed once the
/// writes that may hold copies naming them have completed.
#[derive(Default, Debug)]
pub(crate) struct Retiring {
    /// Fixed: waits for the writes in flight when it was sealed.
    sealed: Option<Batch>,
    /// Still taking names; its boundary moves with each.
    open: Option<Batch>,
    /// The batch each retired name waits in: its latest retirement. A name
    /// used again and retired again waits in a later batch, and the earlier
    /// one must not free it.
    latest: AHashMap<Sym, u64>,
    next_batch: u64,
}

#[derive(Debug)]
struct Batch {
    id: u64,
    /// Writes with tokens below this were in flight when the last name
    /// joined.
    boundary: u64,
    /// How many of those have not completed.
    waiting: usize,
    names: Vec<Sym>,
}

impl Retiring {
    /// `s` has no user; `next_token` is the next write's token and
    /// `in_flight` the number of writes in flight (all below it). Returns
    /// names that may be freed now.
    pub(crate) fn retire(&mut self, s: Sym, next_token: u64, in_flight: usize) -> Option<Vec<Sym>> {
        if in_flight == 0 && self.sealed.is_none() && self.open.is_none() {
            self.latest.remove(&s);
            return Some(vec![s]);
        }
        if self.open.is_none() {
            self.next_batch += 1;
        }
        let id = self.next_batch;
        let open = self.open.get_or_insert(Batch { id, boundary: 0, waiting: 0, names: Vec::new() });
        self.latest.insert(s, open.id);
        open.boundary = next_token;
        open.waiting = in_flight;
        open.names.push(s);
        if self.sealed.is_none() {
            self.sealed = self.open.take();
        }
        self.ready()
    }

    /// The write with `token` completed. Returns names that may be freed.
    pub(crate) fn completed(&mut self, token: u64) -> Option<Vec<Sym>> {
        for b in [&mut self.sealed, &mut self.open].into_iter().flatten() {
            if token < b.boundary {
                assert!(b.waiting > 0, "a write completed twice");
                b.waiting -= 1;
            }
        }
        self.ready()
    }

    /// The sealed batch's names once its writes have completed; the open
    /// batch is sealed in its place.
    fn ready(&mut self) -> Option<Vec<Sym>> {
        let mut freed: Option<Vec<Sym>> = None;
        while self.sealed.as_ref().is_some_and(|b| b.waiting == 0) {
            let b = self.sealed.take().expect("checked");
            for s in b.names {
                if self.latest.get(&s) == Some(&b.id) {
                    self.latest.remove(&s);
                    freed.get_or_insert_with(Vec::new).push(s);
                }
            }
            self.sealed = self.open.take();
        }
        freed
    }

    /// Names waiting to be freed.
    pub(crate) fn len(&self) -> usize {
        [&self.sealed, &self.open].into_iter().flatten().map(|b| b.names.len()).sum()
    }
}
