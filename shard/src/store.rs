//! A shard's interactions: a slab addressed by slot number, and two hash
//! tables that store only the slot (4 bytes per entry; the key is read from
//! the slab when comparing): one by id, one by tie (unique in a shard),
//! through which view entries lead to their interaction. Locks refer to
//! interactions by slot.

use hashbrown::HashTable;

use crate::interaction::Interaction;
use crate::machine::indexing::Reindex;

/// Position of an interaction in its shard's slab.
pub type Slot = u32;

/// Slab chunks are this many slots, allocated whole, so growing never moves
/// or copies the interactions already held.
const CHUNK: usize = 4096;

pub struct Store {
    chunks: Vec<Vec<Option<Interaction>>>,
    free: Vec<Slot>,
    table: HashTable<Slot>,
    by_tie: HashTable<Slot>,
    hasher: ahash::RandomState,
    len: usize,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        Store {
            chunks: Vec::new(),
            free: Vec::new(),
            table: HashTable::new(),
            by_tie: HashTable::new(),
            // Fixed seeds: the shard is deterministic (nothing depends on
            // the table's order, but replays stay byte-identical).
            hasher: ahash::RandomState::with_seeds(1, 2, 3, 4),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn hash(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    fn cell(&self, slot: Slot) -> &Option<Interaction> {
        &self.chunks[slot as usize / CHUNK][slot as usize % CHUNK]
    }

    fn cell_mut(&mut self, slot: Slot) -> &mut Option<Interaction> {
        &mut self.chunks[slot as usize / CHUNK][slot as usize % CHUNK]
    }

    /// The slot of `id`, if this shard holds it.
    pub fn find(&self, id: &str) -> Option<Slot> {
        let h = self.hash(id);
        let chunks = &self.chunks;
        self.table
            .find(h, |&s| chunks[s as usize / CHUNK][s as usize % CHUNK].as_ref().is_some_and(|ix| &*ix.id == id))
            .copied()
    }

    /// The slot of the interaction with this tie, if this shard holds it.
    pub fn find_tie(&self, tie: u64) -> Option<Slot> {
        let chunks = &self.chunks;
        self.by_tie
            .find(self.hasher.hash_one(tie), |&s| {
                chunks[s as usize / CHUNK][s as usize % CHUNK].as_ref().is_some_and(|ix| ix.tie == tie)
            })
            .copied()
    }

    pub fn get(&self, slot: Slot) -> &Interaction {
        self.cell(slot).as_ref().expect("a live slot")
    }

    /// One past the last slot ever used: every interaction added later has
    /// a slot at or past it, or a slot freed before.
    pub fn slot_end(&self) -> Slot {
        match self.chunks.last() {
            None => 0,
            Some(last) => ((self.chunks.len() - 1) * CHUNK + last.len()) as Slot,
        }
    }

    /// The interaction at `slot`, if it holds one.
    pub fn try_get(&self, slot: Slot) -> Option<&Interaction> {
        self.chunks.get(slot as usize / CHUNK)?.get(slot as usize % CHUNK)?.as_ref()
    }

    /// Whether `slot` holds an interaction.
    pub fn is_live(&self, slot: Slot) -> bool {
        self.chunks.get(slot as usize / CHUNK).and_then(|c| c.get(slot as usize % CHUNK)).is_some_and(Option::is_some)
    }

    /// The interaction at `slot`, to change: only with a [`Reindex`], so
    /// that every change keeps the view indexes in step.
    pub(crate) fn get_mut(&mut self, slot: Slot, _: &Reindex) -> &mut Interaction {
        self.cell_mut(slot).as_mut().expect("a live slot")
    }

    pub fn by_id(&self, id: &str) -> Option<&Interaction> {
        self.find(id).map(|s| self.get(s))
    }

    /// Adds an interaction whose id and tie are not held yet; returns its slot.
    pub(crate) fn insert(&mut self, ix: Interaction, _: &Reindex) -> Slot {
        assert!(self.find(&ix.id).is_none(), "interaction {} inserted twice", ix.id);
        assert!(self.find_tie(ix.tie).is_none(), "tie {} held twice", ix.tie);
        let h = self.hash(&ix.id);
        let ht = self.hasher.hash_one(ix.tie);
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
                    self.chunks.push(Vec::with_capacity(CHUNK));
                }
                let n = self.chunks.len() - 1;
                self.chunks[n].push(None);
                (n * CHUNK + self.chunks[n].len() - 1) as Slot
            }
        };
        *self.cell_mut(slot) = Some(ix);
        let (chunks, hasher) = (&self.chunks, &self.hasher);
        self.table.insert_unique(h, slot, |&s| {
            hasher.hash_one(&*chunks[s as usize / CHUNK][s as usize % CHUNK].as_ref().expect("live").id)
        });
        self.by_tie.insert_unique(ht, slot, |&s| {
            hasher.hash_one(chunks[s as usize / CHUNK][s as usize % CHUNK].as_ref().expect("live").tie)
        });
        self.len += 1;
        slot
    }

    /// Removes the interaction at `slot` and returns it.
    pub(crate) fn remove(&mut self, slot: Slot, _: &Reindex) -> Interaction {
        let h = self.hash(&self.get(slot).id);
        let entry = self.table.find_entry(h, |&s| s == slot).expect("every live slot is in the table");
        entry.remove();
        let ht = self.hasher.hash_one(self.get(slot).tie);
        let entry = self.by_tie.find_entry(ht, |&s| s == slot).expect("every live slot is in the tie table");
        entry.remove();
        let ix = self.cell_mut(slot).take().expect("a live slot");
        self.free.push(slot);
        self.len -= 1;
        ix
    }

    /// Every live interaction with its slot, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (Slot, &Interaction)> {
        self.chunks.iter().enumerate().flat_map(|(c, chunk)| {
            chunk.iter().enumerate().filter_map(move |(i, ix)| ix.as_ref().map(|ix| ((c * CHUNK + i) as Slot, ix)))
        })
    }
}
