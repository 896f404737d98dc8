//! Scans of all of a shard's interactions (RequestFindInteractions,
//! RequestGetWorkbinContent, RequestTakeSnapshot), in bounded slices.
//!
//! A scan looks at every interaction, so with a million of them it is long
//! work; done in one step it would hold the shard, and every client of it,
//! for that long. A scan is therefore a session that examines at most
//! [`SCAN_SLICE`] slots (by default) per step ([`PeerMsg::ScanSlice`], which the shard
//! sends itself; the server runs other work between two slices).
//!
//! A session sees the shard **as it was at its cut**, the moment it began,
//! whatever changes in between: before anything changes an interaction the
//! slicer has not reached yet, `indexing.rs` asks this module to remember
//! what the scan would have made of it then ([`Shard::before_change`]); an
//! interaction added after the cut is remembered as absent
//! ([`Shard::after_admit`]). Slots past the store's end at the cut are all
//! newer. So a find answers with one shard's state at one instant, and a
//! snapshot, whose shards all take their cut while every shard is held
//! (coord.rs), with the whole node's.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use ahash::AHashMap;

use crate::interaction::{Interaction, IxId, Place};
use crate::machine::{Output, Shard};
use crate::peer::{Filter, IdList, LockKind, PeerMsg, ScanMode};
use crate::store::Slot;
use crate::value::KvList;

/// Matches one step sends: a long list goes in parts, each its own step.
/// Taking a match off a heap of a million costs a microsecond or more in
/// cache misses, hence a smaller part than a slice.
pub const SEND_CHUNK: usize = 1024;

/// Entries a coordinator merges in one step (cheap: one comparison per
/// shard each).
pub const MERGE_CHUNK: usize = 8192;

/// Slots one slice examines by default ([`ShardParams::scan_slice`]): a
/// slice costs well under a millisecond.
///
/// [`ShardParams::scan_slice`]: crate::machine::ShardParams::scan_slice
pub const SCAN_SLICE: u32 = 4096;

/// One match: the interaction's tie (submission order, unique in the
/// shard) and its id. Ordered by tie, so the heap keeps the first ones.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Hit {
    tie: u64,
    id: IxId,
}

impl Ord for Hit {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.tie.cmp(&other.tie)
    }
}

impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The scans in progress on this shard: changed only by scan.rs.
#[derive(Debug, Default)]
pub(crate) struct Scans {
    sessions: Vec<ScanSession>,
}

/// A scan in progress on this shard.
#[derive(Debug)]
struct ScanSession {
    /// The coordinating shard and its op: where the answer goes.
    coord: u16,
    op: u64,
    filter: Filter,

    limit: u32,
    mode: ScanMode,
    /// The next slot to examine.
    cursor: Slot,
    /// The store's end at the cut: later slots hold only newer interactions.
    end: Slot,
    /// Slicing has begun (a snapshot waits for the coordinator's Thaw).
    running: bool,
    /// For slots not examined yet that changed since the cut: what the scan
    /// makes of each as it was at the cut (`None`: no match, or absent).
    shadow: AHashMap<Slot, Option<Hit>>,
    /// The first `limit` matches in submission order (largest on top).
    best: BinaryHeap<Hit>,
    /// Once the scan is done: the matches not yet moved into `sending`
    /// (moved a step's worth at a time: building a heap of a million at
    /// once would hold the shard), then the matches to send, smallest on top.
    to_order: Vec<Hit>,
    sending: Option<BinaryHeap<Reverse<Hit>>>,
    total: u64,
}

impl Shard {
    /// Takes the cut of a scan for `coord`'s `op`. A find starts slicing at
    /// once; a snapshot when [`Shard::run_scan`] is called (at Thaw).
    pub(crate) fn open_scan(&mut self, coord: u16, op: u64, filter: Filter, limit: u32, mode: ScanMode) -> bool {
        let running = matches!(mode, ScanMode::Find);
        self.scans.sessions.push(ScanSession {
            coord,
            op,
            filter,
            limit,
            mode,
            cursor: 0,
            end: self.store.slot_end(),
            running,
            shadow: AHashMap::new(),
            // Reserved at once (memory is touched only as it fills): growing
            // a heap of a million by doubling would copy it all in one step.
            best: BinaryHeap::with_capacity((limit as usize).min(self.store.len()).saturating_add(1)),
            to_order: Vec::new(),
            sending: None,
            total: 0,
        });
        running
    }

    /// A snapshot's cut is taken on every shard: its slicing may begin.
    /// Returns whether this shard has that session.
    pub(crate) fn run_scan(&mut self, coord: u16, op: u64) -> bool {
        match self.scans.sessions.iter_mut().find(|s| (s.coord, s.op) == (coord, op)) {
            Some(s) => {
                s.running = true;
                true
            }
            None => false,
        }
    }

    /// The next step of the scan for `coord`'s `op`: examines up to
    /// `scan_slice` slots, or once all are examined sends up to
    /// [`SEND_CHUNK`] matches to the coordinator, then asks for the next
    /// step until everything is sent.
    pub(crate) fn scan_slice(&mut self, coord: u16, op: u64, out: &mut Vec<Output>) {
        let Some(i) = self.scans.sessions.iter().position(|s| (s.coord, s.op) == (coord, op)) else { return };
        assert!(self.scans.sessions[i].running, "a slice of a scan whose cut is not released");
        if self.scans.sessions[i].cursor == self.scans.sessions[i].end {
            self.send_matches(i, out);
            return;
        }
        let (start, end) = {
            let s = &self.scans.sessions[i];
            (s.cursor, s.end.min(s.cursor.saturating_add(self.params.scan_slice.max(1))))
        };
        for slot in start..end {
            let hit = match self.scans.sessions[i].shadow.remove(&slot) {
                Some(at_cut) => at_cut,
                None => self.verdict(&self.scans.sessions[i], slot),
            };
            let s = &mut self.scans.sessions[i];
            if let Some(hit) = hit {
                s.total += 1;
                s.best.push(hit);
                if s.best.len() > s.limit as usize {
                    s.best.pop();
                }
            }
        }
        self.scans.sessions[i].cursor = end;
        out.push(Output::Peer { to: self.params.shard, msg: PeerMsg::ScanSlice { coord, op } });
    }

    /// What a scan makes of the interaction at `slot` now.
    fn verdict(&self, s: &ScanSession, slot: Slot) -> Option<Hit> {
        let ix = self.store.try_get(slot)?;
        if !ix.visible {
            return None;
        }
        if matches!(s.mode, ScanMode::Snapshot { lock: Some(_), .. }) && self.index.is_locked(slot) {
            return None;
        }
        self.hits(s, ix).then(|| Hit { tie: ix.tie, id: ix.id.clone() })
    }

    fn hits(&self, s: &ScanSession, ix: &Interaction) -> bool {
        match &s.filter {
            Filter::Condition { tenant, condition } => {
                tenant.is_none_or(|t| t == ix.tenant) && ix.matches(condition, self.names())
            }
            // By name, not number: a session holds no name's number, so a
            // name freed and reused meanwhile cannot mislead it.
            Filter::Workbin { tenant, workbin, owner } => {
                ix.tenant == *tenant
                    && matches!(ix.place, Place::Workbin { workbin: w, owner: o }
                        if w == *workbin && self.syms.name(o) == &**owner)
            }
        }
    }

    /// The scan's answer, a part per step: its first matches in submission
    /// order, described as they are now for a find; locked for a locking
    /// snapshot, which keeps only those it could lock (one stopped or locked
    /// by another client since the cut is left out).
    fn send_matches(&mut self, i: usize, out: &mut Vec<Output>) {
        let s = &mut self.scans.sessions[i];
        if s.sending.is_none() {
            s.to_order = std::mem::take(&mut s.best).into_vec();
            s.sending = Some(BinaryHeap::with_capacity(s.to_order.len()));
        }
        let sending = s.sending.as_mut().expect("just made");
        if !s.to_order.is_empty() {
            // Smallest tie first: a step's worth of matches into the heap.
            let from = s.to_order.len().saturating_sub(SEND_CHUNK);
            sending.extend(s.to_order.drain(from..).map(Reverse));
            out.push(Output::Peer { to: self.params.shard, msg: PeerMsg::ScanSlice { coord: s.coord, op: s.op } });
            return;
        }
        let mut hits = Vec::with_capacity(SEND_CHUNK.min(sending.len()));
        while hits.len() < SEND_CHUNK {
            let Some(Reverse(hit)) = sending.pop() else { break };
            hits.push(hit);
        }
        let last = sending.is_empty();
        let (coord, op, total, mode) = (s.coord, s.op, s.total, s.mode.clone());
        if last {
            self.scans.sessions.swap_remove(i);
        }
        let mut ties = Vec::with_capacity(hits.len());
        let mut ids = IdList::new();
        let mut described: Vec<KvList> = Vec::new();
        for hit in hits {
            let now = self.store.find_tie(hit.tie).filter(|&slot| self.store.get(slot).id == hit.id);
            match &mode {
                ScanMode::Find => {
                    // Gone since the cut: nothing left to describe.
                    let Some(slot) = now else { continue };
                    described.push(self.describe(slot));
                }
                ScanMode::Snapshot { snapshot, lock: Some(holder) } => {
                    let Some(slot) = now.filter(|&slot| !self.index.is_locked(slot)) else { continue };
                    self.lock(slot, holder.clone(), LockKind::Snapshot(*snapshot), 0, out);
                }
                ScanMode::Snapshot { lock: None, .. } => {}
            }
            ties.push(hit.tie);
            ids.push(&hit.id);
        }
        out.push(Output::Peer { to: coord, msg: PeerMsg::Scanned { op, ties, ids, described, total, last } });
        if !last {
            out.push(Output::Peer { to: self.params.shard, msg: PeerMsg::ScanSlice { coord, op } });
        }
    }

    /// Called by `indexing.rs` before anything about the interaction at
    /// `slot` changes (fields, lock, or its removal): every scan that has
    /// not examined that slot yet remembers what it would have made of it.
    pub(crate) fn before_change(&mut self, slot: Slot) {
        for i in 0..self.scans.sessions.len() {
            let s = &self.scans.sessions[i];
            if slot < s.cursor || slot >= s.end || s.shadow.contains_key(&slot) {
                continue;
            }
            let at_cut = self.verdict(s, slot);
            self.scans.sessions[i].shadow.insert(slot, at_cut);
        }
    }

    /// Called by `indexing.rs` when an interaction is added at `slot`: for
    /// scans that have not examined that slot, it was not there at the cut
    /// (unless what was there then is remembered already).
    pub(crate) fn after_admit(&mut self, slot: Slot) {
        for s in &mut self.scans.sessions {
            if slot >= s.cursor && slot < s.end {
                s.shadow.entry(slot).or_insert(None);
            }
        }
    }

    /// Scans in progress on this shard.
    pub fn scans_in_progress(&self) -> usize {
        self.scans.sessions.len()
    }
}
