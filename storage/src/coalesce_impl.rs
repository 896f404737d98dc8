//! Coalescing a batch's ops by interaction id.
//!
//! Ops for one id arrive in order. What the batch must do for an id depends
//! only on whether the row could exist before the batch (its first op in
//! the batch is not an Insert) and on the last record, if the last op is
//! not a Delete:
//!
//! | first op   | last op       | statements                |
//! |------------|---------------|---------------------------|
//! | Insert     | Insert/Upsert | INSERT last record        |
//! | Insert     | Delete        | nothing                   |
//! | Upsert/Del | Insert/Upsert | DELETE, INSERT last record|
//! | Upsert/Del | Delete        | DELETE                    |
//!
//! Upsert is DELETE then INSERT, so it also works when the row is missing.
//!
//! A Log op (events only, for the event log's outbox) changes no row: an id
//! with only Log ops has no statements of its own, and a Log op among row
//! ops changes nothing of the table above.
//!
//! An entry (one id) is the unit the database accepts or refuses: when it
//! refuses an entry's statements (its events' outbox rows included), every
//! op of the batch for that id fails.

use std::collections::HashMap;

use ixn_shard::interaction::InteractionRecord;
use ixn_shard::machine::StoreOp;

struct Entry {
    id: String,
    /// The first row op of the batch for this id was an Insert: no row
    /// before.
    absent_before: bool,
    /// Some op of the batch changes the row (not only Log ops).
    changes_row: bool,
    /// The row after the batch (`None`: no row).
    last: Option<Box<InteractionRecord>>,
    /// The database refused this entry's statements: left out of plans.
    refused: bool,
}

/// Collects a batch's ops; [`Coalescer::plan`] says what to execute.
#[derive(Default)]
pub struct Coalescer {
    index: HashMap<String, usize>,
    entries: Vec<Entry>,
    ops: usize,
}

/// The statements a batch needs: one DELETE per id in `deletes`, then one
/// INSERT per record in `inserts`. An id appears at most once in each.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan<'a> {
    pub deletes: Vec<&'a str>,
    pub inserts: Vec<&'a InteractionRecord>,
}

impl Coalescer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next op of the batch; returns the index of its id's entry.
    pub fn push(&mut self, op: StoreOp) -> usize {
        self.ops += 1;
        let (id, last, is_insert) = match op {
            StoreOp::Insert(r) => (None, Some(r), true),
            StoreOp::Upsert(r) => (None, Some(r), false),
            StoreOp::Delete(id) => (Some(id), None, false),
            StoreOp::Log(key) => return self.push_log(key),
        };
        let key: &str = match (&id, &last) {
            (Some(id), _) => id,
            (None, Some(r)) => &r.id,
            (None, None) => unreachable!(),
        };
        if let Some(&i) = self.index.get(key) {
            let e = &mut self.entries[i];
            if !e.changes_row {
                e.changes_row = true;
                e.absent_before = is_insert;
            }
            e.last = last;
            return i;
        }
        let id = id.unwrap_or_else(|| last.as_ref().map(|r| r.id.clone()).unwrap_or_default());
        let i = self.entries.len();
        self.index.insert(id.clone(), i);
        self.entries.push(Entry { id, absent_before: is_insert, changes_row: true, last, refused: false });
        i
    }

    /// A Log op: the entry of `key`, made if it has none.
    fn push_log(&mut self, key: String) -> usize {
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let i = self.entries.len();
        self.index.insert(key.clone(), i);
        self.entries.push(Entry { id: key, absent_before: false, changes_row: false, last: None, refused: false });
        i
    }

    /// Number of entries (distinct ids) so far.
    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    /// Entry `i`: its id and the row it leaves (`None`: no row).
    pub(crate) fn entry(&self, i: usize) -> (&str, Option<&InteractionRecord>) {
        let e = &self.entries[i];
        (&e.id, e.last.as_deref())
    }

    /// Whether entry `i` changes its row (else it only carries events).
    pub(crate) fn changes_row(&self, i: usize) -> bool {
        self.entries[i].changes_row
    }

    /// Leaves entry `i` out of later plans: the database refused it.
    pub(crate) fn refuse(&mut self, i: usize) {
        self.entries[i].refused = true;
    }

    pub(crate) fn is_refused(&self, i: usize) -> bool {
        self.entries[i].refused
    }

    /// Ops pushed since the last clear.
    pub fn ops(&self) -> usize {
        self.ops
    }

    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }

    /// The statements to execute, in first-seen order of ids.
    pub fn plan(&self) -> Plan<'_> {
        let mut deletes = Vec::new();
        let mut inserts = Vec::new();
        self.plan_into(false, false, None, &mut deletes, &mut inserts);
        Plan { deletes, inserts }
    }

    /// The statements to execute where rows are written in place: `inserts`
    /// are upserts (see [`Coalescer::plan_into`]).
    pub fn plan_in_place_all(&self) -> Plan<'_> {
        let mut deletes = Vec::new();
        let mut inserts = Vec::new();
        self.plan_into(true, false, None, &mut deletes, &mut inserts);
        Plan { deletes, inserts }
    }

    /// The plan into reused vectors (cleared first), without refused
    /// entries, for the entries `only` names (all when `None`).
    ///
    /// `in_place`: an insert overwrites an existing row (an upsert), so an
    /// id the batch leaves a row for is written once, never deleted first;
    /// only ids whose row the batch removes are deleted. Otherwise an id
    /// whose row may exist before the batch is deleted before its insert.
    ///
    /// `rows_may_exist`: a retry after an attempt whose commit may have
    /// reached the database: ids whose first op was an Insert are treated
    /// as if their row may exist (deleted too), so the retry neither fails
    /// on nor leaves behind the rows that attempt wrote.
    pub(crate) fn plan_into<'a>(
        &'a self,
        in_place: bool,
        rows_may_exist: bool,
        only: Option<&[u32]>,
        deletes: &mut Vec<&'a str>,
        inserts: &mut Vec<&'a InteractionRecord>,
    ) {
        deletes.clear();
        inserts.clear();
        let mut add = |e: &'a Entry| {
            if e.refused || !e.changes_row {
                return;
            }
            let may_exist = !e.absent_before || rows_may_exist;
            let written = e.last.as_deref();
            if may_exist && !(in_place && written.is_some()) {
                deletes.push(&e.id);
            }
            if let Some(r) = written {
                inserts.push(r);
            }
        };
        match only {
            None => self.entries.iter().for_each(add),
            Some(only) => only.iter().for_each(|&i| add(&self.entries[i as usize])),
        }
    }

    pub fn clear(&mut self) {
        self.index.clear();
        self.entries.clear();
        self.ops = 0;
    }
}
