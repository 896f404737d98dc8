//! Requests that span every shard, coordinated by the shard that holds the
//! client's connection, and the other shards' side of them.
//!
//! **Pull in global view order** (invariant 4; docs/architecture.md). A
//! view's interactions live on every shard, each shard keeping its part in
//! a B-tree. To take the next `n`:
//! 1. the coordinator asks every shard for the first `n` entries of its
//!    part (key, tie, id) — each shard's *view head*;
//! 2. it merges the heads and picks the first `n` by (key, tie, shard):
//!    the first `n` of the single sorted list of the whole view, because
//!    any entry of the global first `n` is among the first `n` of its shard;
//! 3. it asks each owning shard to lock the picked ones *if each is still in
//!    the view with the same key*; a shard answers with those it locked;
//! 4. if another client took some meanwhile (or a key changed), it repeats
//!    from step 1 for the rest, at most [`MAX_PULL_ROUNDS`] times.
//!
//! There is no global lock: a lock is taken on the owning shard, one
//! interaction at a time, so two routing clients can never both get one
//! interaction, and a conflict costs the loser one more round.
//!
//! **Snapshots** cut every shard at one instant: each shard, when asked,
//! takes its cut (scan.rs: from then on it keeps seeing its interactions as
//! they were then) and holds back every input that would change an
//! interaction until the coordinator, having heard from all shards, sends
//! `Thaw`. At the moment the last shard takes its cut, every shard is held,
//! so the cuts together are the state of the node at that moment. The hold
//! lasts one round trip; the scans themselves run afterwards, in slices,
//! while the shards serve other requests.
//!
//! Finds and workbin reads scan each shard in slices too, each shard at its
//! own cut, without holding anything.

use std::sync::Arc;

use ahash::{AHashMap, AHashSet};

use crate::catalog::{TenantIdx, ViewIdx};
use crate::condition::Condition;
use crate::interaction::Millis;
use crate::machine::{Caller, ClientTypes, Origin, Output, Shard};
use crate::peer::{Filter, Head, Holder, IdList, LockKind, PeerMsg, QueueDepth, ScanMode};
use crate::proto::frame::{encode_attr, encoded_list_len, Frame};
use crate::proto::msg::{attr, msg_type, ClientType, ErrorCode};
use crate::proto::request::{event_ack, event_error, ProtoError, MAX_FIND_LIMIT};
use crate::store::Slot;
use crate::timers::Timer;
use crate::value::{KvList, Value};

/// A pull that keeps losing races gives up after this many rounds and
/// returns what it has.
pub const MAX_PULL_ROUNDS: u32 = 16;

/// Snapshots one connection may hold at once: each holds memory on its
/// shard until released.
pub const MAX_SNAPSHOTS_PER_CONNECTION: usize = 64;

/// Searches and snapshots one shard coordinates at once: each scans every
/// shard, and a shard keeps a session (and its changes since the cut) for
/// each.
pub const MAX_SCANS_PER_SHARD: usize = 8;

/// Room kept in a frame for the attributes besides the interactions.
const FRAME_MARGIN: usize = 256;

/// Global view order of heads from several shards: key, tie, then shard.
fn view_order(a: &Head, sa: u16, b: &Head, sb: u16) -> std::cmp::Ordering {
    (&a.key, a.tie, sa).cmp(&(&b.key, b.tie, sb))
}

/// Bytes an INTERACTION attribute holding `l` takes in a frame.
fn attr_len(l: &KvList) -> usize {
    7 + encoded_list_len(l)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PullPhase {
    Reading,
    Locking,
    /// The view was empty everywhere: waiting for `ViewFilled` or the
    /// deadline.
    Waiting,
}

#[derive(Debug)]
pub(crate) struct PullOp {
    caller: Caller,
    tenant: TenantIdx,
    view: ViewIdx,
    want: u32,
    got: Vec<(Head, u16, KvList)>,
    candidates: Vec<(Head, u16)>,
    outstanding: u16,
    missed: u32,
    phase: PullPhase,
    /// When a waiting pull gives up (0: it does not wait).
    deadline: Millis,
    /// An entry arrived while reading or locking: read again, do not wait.
    dirty: bool,
    rounds: u32,
}

#[derive(Debug)]
enum ScanWhat {
    Find,
    Workbin,
    Snapshot { snapshot: u64, lock: bool },
}

/// Part of one shard's answer to a scan, in submission order, merged from
/// `next` on.
#[derive(Debug)]
struct ScanChunk {
    ties: Vec<u64>,
    ids: IdList,
    described: Vec<KvList>,
    next: usize,
}

/// One shard's answer to a scan as it arrives.
#[derive(Debug, Default)]
struct ScanPart {
    chunks: std::collections::VecDeque<ScanChunk>,
    done: bool,
}

impl ScanPart {
    /// The tie of the next entry not merged yet, if it has arrived.
    fn front(&mut self) -> Option<u64> {
        while self.chunks.front().is_some_and(|c| c.next == c.ties.len()) {
            self.chunks.pop_front();
        }
        self.chunks.front().map(|c| c.ties[c.next])
    }
}

#[derive(Debug)]
pub(crate) struct ScanOp {
    caller: Caller,
    what: ScanWhat,
    limit: u32,
    outstanding: u16,
    /// Each shard's answer, by shard, merged as its parts arrive: a merge
    /// step is bounded by the part that arrived, never the whole list.
    parts: Vec<ScanPart>,
    /// Merged so far, in submission order across shards: ids, each one's
    /// shard and, for a find, its description; at most `limit`.
    ids: IdList,
    shards: Vec<u16>,
    described: Vec<KvList>,
    /// Past `limit`: the ids of each shard (a locking snapshot unlocks them).
    extra: Vec<IdList>,
    total: u64,
    /// The client left; a snapshot still thaws the shards, but is not kept.
    orphaned: bool,
    /// Snapshot: shards that have not taken their cut yet.
    cuts_outstanding: u16,
}

impl ScanOp {
    /// Merges what has arrived, in submission order (tie, then shard), as
    /// far as every shard still answering has sent (an entry can be placed
    /// only once every such shard's next entry is known), at most `budget`
    /// entries. Returns whether more could be merged now.
    fn merge(&mut self, budget: usize) -> bool {
        for _ in 0..budget {
            let mut best: Option<(u64, usize)> = None;
            for (shard, p) in self.parts.iter_mut().enumerate() {
                match p.front() {
                    Some(tie) if best.is_none_or(|(b, _)| tie < b) => best = Some((tie, shard)),
                    Some(_) => {}
                    None if p.done => {}
                    None => return false, // this shard's next entry is yet to come
                }
            }
            let Some((_, shard)) = best else { return false };
            let c = self.parts[shard].chunks.front_mut().expect("it has a front");
            let (i, id) = (c.next, c.ids.get(c.next));
            c.next += 1;
            if self.shards.len() < self.limit as usize {
                self.ids.push(id);
                self.shards.push(shard as u16);
                if let Some(d) = c.described.get_mut(i) {
                    self.described.push(std::mem::take(d));
                }
            } else {
                self.extra[shard].push(id);
            }
        }
        true
    }
}

/// Bytes `start..end` of one shard's Described buffer.
type Span = (u16, u32, u32);

#[derive(Debug)]
pub(crate) struct DescribeOp {
    caller: Caller,
    start: u32,
    total: u64,
    /// Each entry's id, and where its encoded description lies in
    /// `answers`; none or empty: gone.
    items: Vec<(Box<str>, Option<Span>)>,
    /// For each shard, the positions in `items` of the ids asked of it.
    positions: Vec<Vec<usize>>,
    /// Each shard's Described buffer.
    answers: Vec<Vec<u8>>,
    outstanding: u16,
}

#[derive(Debug)]
pub(crate) struct DepthOp {
    caller: Caller,
    tenant: TenantIdx,
    sum: Vec<QueueDepth>,
    outstanding: u16,
}

/// A request in progress on its coordinating shard.
#[derive(Debug)]
pub(crate) enum Op {
    Pull(PullOp),
    Scan(ScanOp),
    Describe(DescribeOp),
    Depth(DepthOp),
    /// A locking snapshot's release, waiting for every shard's unlock.
    Release {
        caller: Caller,
        outstanding: u16,
    },
}

impl Op {
    fn caller(&self) -> &Caller {
        match self {
            Op::Pull(o) => &o.caller,
            Op::Scan(o) => &o.caller,
            Op::Describe(o) => &o.caller,
            Op::Depth(o) => &o.caller,
            Op::Release { caller, .. } => caller,
        }
    }
}

/// The cross-shard coordinator of one shard: the requests its clients
/// made that span every shard (pulls, searches, snapshots, depth, the
/// releases of locking snapshots), the snapshots they hold, the clients
/// that hold locks anywhere, and the pulls of any shard waiting on this
/// shard's views. Its fields are private to this module: only coord.rs
/// changes them.
#[derive(Debug, Default)]
pub(crate) struct Coordinator {
    /// Requests coordinated here, by op number.
    ops: AHashMap<u64, Op>,
    snapshots: AHashMap<u64, Snapshot>,
    /// Clients of this shard that have pulled or taken a locking snapshot:
    /// only their closing sends every shard an unlock.
    lockers: AHashSet<Origin>,
    /// Pulls waiting for an entry in a view here: (coordinating shard, op).
    watchers: AHashMap<(TenantIdx, ViewIdx), Vec<(u16, u64)>>,
}

impl Coordinator {
    /// Requests coordinated here and not answered yet.
    pub(crate) fn pending(&self) -> usize {
        self.ops.len()
    }

    /// Pulls waiting on this shard's views.
    pub(crate) fn watchers(&self) -> usize {
        self.watchers.values().map(Vec::len).sum()
    }

    /// The deadline of pull `op` if it may wait (the audit of the timer
    /// table); `None`: no such pull, or it does not wait.
    pub(crate) fn pull_deadline(&self, op: u64) -> Option<Millis> {
        match self.ops.get(&op) {
            Some(Op::Pull(p)) if p.deadline != 0 => Some(p.deadline),
            _ => None,
        }
    }

    /// An entry entered `view` of `tenant` here: the pulls waiting on it,
    /// each told once.
    pub(crate) fn view_filled(&mut self, tenant: TenantIdx, view: ViewIdx) -> Option<Vec<(u16, u64)>> {
        if self.watchers.is_empty() {
            return None;
        }
        self.watchers.remove(&(tenant, view))
    }
}

/// A taken snapshot, kept on the shard of the connection that took it.
#[derive(Debug)]
pub struct Snapshot {
    owner: Origin,
    /// The ids in snapshot order, and the shard of each.
    ids: IdList,
    shards: Vec<u16>,
    locked: bool,
}

type Reply = Result<Option<Frame>, ProtoError>;

fn invalid_condition(e: impl std::fmt::Display) -> ProtoError {
    ProtoError::new(ErrorCode::InvalidCondition, format!("condition {e}"))
}

impl Shard {
    fn broadcast(&self, msg: PeerMsg, out: &mut Vec<Output>) {
        for to in 0..self.params.shards {
            out.push(Output::Peer { to, msg: msg.clone() });
        }
    }

    fn new_op(&mut self, op: Op) -> u64 {
        let id = self.next_op;
        self.next_op += 1;
        self.coord.ops.insert(id, op);
        id
    }

    /// Ends `origin`'s locks of `kind` on the listed ids, each list sent to
    /// its shard (`by_shard[shard]`).
    fn unlock_ids(origin: Origin, kind: LockKind, by_shard: Vec<IdList>, out: &mut Vec<Output>) {
        for (to, ids) in by_shard.into_iter().enumerate() {
            if !ids.is_empty() {
                let msg = PeerMsg::Unlock { origin, kind: Some(kind), ids: Some(ids), confirm: None };
                out.push(Output::Peer { to: to as u16, msg });
            }
        }
    }

    /// Whether an attribute of `n` bytes still fits in an answer that has
    /// `used` bytes of interactions.
    fn fits(&self, used: usize, n: usize) -> bool {
        used + n + FRAME_MARGIN <= self.params.max_frame
    }

    fn reply(out: &mut Vec<Output>, caller: &Caller, frame: Frame) {
        out.push(Output::Reply { origin: caller.origin, frame });
    }

    // ----- pull -----------------------------------------------------------

    pub(crate) fn start_pull(
        &mut self,
        now_ms: Millis,
        caller: &Caller,
        tenant: &str,
        view: &str,
        count: u32,
        out: &mut Vec<Output>,
    ) -> Reply {
        if !matches!(caller.client_type, ClientType::RoutingEngine | ClientType::Operator | ClientType::Proxy) {
            return Err(ProtoError::new(
                ErrorCode::NotPermitted,
                format!("a {} client may not pull; routing engines do", caller.client_type.name()),
            ));
        }
        let t = self.tenant_idx(tenant)?;
        let v = self.catalog.tenant_at(t).view_idx(view).ok_or_else(|| {
            ProtoError::new(ErrorCode::UnknownView, format!("unknown view '{view}' in tenant '{tenant}'"))
        })?;
        let hold = self.params.pull_hold_ms;
        self.coord.lockers.insert(caller.origin);
        let deadline = if hold > 0 { now_ms + hold } else { 0 };
        let op = self.new_op(Op::Pull(PullOp {
            caller: caller.clone(),
            tenant: t,
            view: v,
            want: count,
            got: Vec::new(),
            candidates: Vec::new(),
            outstanding: 0,
            missed: 0,
            phase: PullPhase::Reading,
            deadline,
            dirty: false,
            rounds: 0,
        }));
        if deadline != 0 {
            self.timers.set(Timer::Pull(op), deadline);
        }
        self.pull_read(op, out);
        Ok(None)
    }

    fn pull_op(&mut self, op: u64) -> Option<&mut PullOp> {
        match self.coord.ops.get_mut(&op) {
            Some(Op::Pull(p)) => Some(p),
            _ => None,
        }
    }

    fn pull_read(&mut self, op: u64, out: &mut Vec<Output>) {
        let shards = self.params.shards;
        let p = self.pull_op(op).expect("a pull in progress");
        p.phase = PullPhase::Reading;
        p.outstanding = shards;
        p.candidates.clear();
        p.dirty = false;
        p.rounds += 1;
        let msg = PeerMsg::PullRead {
            op,
            tenant: p.tenant,
            view: p.view,
            n: p.want - p.got.len() as u32,
            watch: p.deadline != 0,
        };
        self.broadcast(msg, out);
    }

    fn pull_heads(&mut self, now_ms: Millis, from: u16, op: u64, heads: Vec<Head>, out: &mut Vec<Output>) {
        let Some(p) = self.pull_op(op) else { return };
        debug_assert_eq!(p.phase, PullPhase::Reading);
        p.candidates.extend(heads.into_iter().map(|h| (h, from)));
        p.outstanding -= 1;
        if p.outstanding > 0 {
            return;
        }
        let need = (p.want - p.got.len() as u32) as usize;
        let mut picked = std::mem::take(&mut p.candidates);
        picked.sort_by(|(a, sa), (b, sb)| view_order(a, *sa, b, *sb));
        picked.truncate(need);
        if picked.is_empty() {
            if !p.got.is_empty() || p.deadline == 0 || now_ms >= p.deadline {
                self.pull_finish(op, out);
            } else if p.dirty {
                self.pull_read(op, out);
            } else {
                p.phase = PullPhase::Waiting;
            }
            return;
        }
        let mut by_shard: Vec<Vec<Head>> = vec![Vec::new(); self.params.shards as usize];
        for (h, s) in picked {
            by_shard[s as usize].push(h);
        }
        let p = self.pull_op(op).expect("a pull in progress");
        p.phase = PullPhase::Locking;
        p.missed = 0;
        p.outstanding = by_shard.iter().filter(|h| !h.is_empty()).count() as u16;
        let holder = Holder { origin: p.caller.origin, name: p.caller.client_name.clone() };
        let (tenant, view) = (p.tenant, p.view);
        for (to, heads) in by_shard.into_iter().enumerate() {
            if !heads.is_empty() {
                let msg = PeerMsg::PullLock { op, tenant, view, holder: holder.clone(), heads };
                out.push(Output::Peer { to: to as u16, msg });
            }
        }
    }

    fn pull_locked(&mut self, from: u16, op: u64, got: Vec<(Head, KvList)>, missed: u32, out: &mut Vec<Output>) {
        let Some(p) = self.pull_op(op) else { return };
        debug_assert_eq!(p.phase, PullPhase::Locking);
        p.got.extend(got.into_iter().map(|(h, l)| (h, from, l)));
        p.missed += missed;
        p.outstanding -= 1;
        if p.outstanding > 0 {
            return;
        }
        // Lost a race, or something arrived: read again for the rest. A
        // waiting pull that got nothing goes back to reading (and waiting).
        let short = (p.got.len() as u32) < p.want;
        let again = (short && (p.missed > 0 || p.dirty)) || (p.got.is_empty() && p.deadline != 0);
        if again && p.rounds < MAX_PULL_ROUNDS {
            self.pull_read(op, out);
        } else {
            self.pull_finish(op, out);
        }
    }

    /// A waiting pull leaves watchers on the shards whose part of the view
    /// was empty; they must not pile up while a view stays empty.
    fn unwatch(&self, op: u64, p: &PullOp, out: &mut Vec<Output>) {
        if p.deadline != 0 {
            self.broadcast(PeerMsg::Unwatch { op, tenant: p.tenant, view: p.view }, out);
        }
    }

    fn view_filled(&mut self, op: u64, out: &mut Vec<Output>) {
        let Some(p) = self.pull_op(op) else { return };
        match p.phase {
            PullPhase::Waiting => self.pull_read(op, out),
            PullPhase::Reading | PullPhase::Locking => p.dirty = true,
        }
    }

    /// Answers a pull with what it locked, in view order. What does not fit
    /// in one frame is unlocked again, never silently kept.
    fn pull_finish(&mut self, op: u64, out: &mut Vec<Output>) {
        let Some(Op::Pull(mut p)) = self.coord.ops.remove(&op) else { return };
        self.timers.cancel(Timer::Pull(op));
        self.unwatch(op, &p, out);
        p.got.sort_by(|(a, sa, _), (b, sb, _)| view_order(a, *sa, b, *sb));
        let mut f = Frame::new(msg_type::EVENT_PULLED_INTERACTIONS, p.caller.ref_id);
        let mut size = 0;
        let mut count = 0i64;
        let mut left: Vec<IdList> = vec![IdList::new(); self.params.shards as usize];
        let mut full = false;
        for (h, shard, l) in p.got {
            let n = attr_len(&l);
            // Once one does not fit, the rest go back too, so the answer
            // stays a prefix of the view's order.
            full = full || !self.fits(size, n);
            if full {
                left[shard as usize].push(&h.id);
                continue;
            }
            size += n;
            count += 1;
            f.push(attr::INTERACTION, l);
        }
        f.push(attr::COUNT, count);
        Self::unlock_ids(p.caller.origin, LockKind::Routing, left, out);
        Self::reply(out, &p.caller, f);
    }

    /// A pull's hold time is up: waiting, it answers with nothing. Reading
    /// or locking, it answers when that round ends (a round that finds
    /// nothing past the deadline does not wait again).
    pub(crate) fn pull_expired(&mut self, op: u64, out: &mut Vec<Output>) {
        if self.pull_op(op).is_some_and(|p| p.phase == PullPhase::Waiting) {
            self.pull_finish(op, out);
        }
    }

    // ----- find, workbin content, snapshots -------------------------------

    pub(crate) fn start_find(
        &mut self,
        caller: &Caller,
        tenant: Option<&str>,
        condition: &str,
        limit: u32,
        out: &mut Vec<Output>,
    ) -> Reply {
        Self::may_scan(caller, self.params.find_clients, "search interactions", "find-client-types")?;
        let condition = Arc::new(Condition::parse(condition).map_err(invalid_condition)?);
        let tenant = tenant.map(|t| self.tenant_idx(t)).transpose()?;
        let filter = Filter::Condition { tenant, condition };
        self.start_scan(caller, ScanWhat::Find, filter, limit, ScanMode::Find, out)?;
        Ok(None)
    }

    pub(crate) fn start_workbin_content(
        &mut self,
        caller: &Caller,
        tenant: &str,
        workbin: &str,
        owner: &str,
        out: &mut Vec<Output>,
    ) -> Reply {
        let t = self.tenant_idx(tenant)?;
        let w = self.workbin_idx(t, workbin)?;
        let filter = Filter::Workbin { tenant: t, workbin: w, owner: owner.into() };
        self.start_scan(caller, ScanWhat::Workbin, filter, MAX_FIND_LIMIT, ScanMode::Find, out)?;
        Ok(None)
    }

    pub(crate) fn start_snapshot(
        &mut self,
        caller: &Caller,
        tenant: Option<&str>,
        condition: &str,
        lock: bool,
        limit: Option<u32>,
        out: &mut Vec<Output>,
    ) -> Reply {
        Self::may_scan(caller, self.params.snapshot_clients, "take snapshots", "snapshot-client-types")?;
        let condition = Arc::new(Condition::parse(condition).map_err(invalid_condition)?);
        let tenant = tenant.map(|t| self.tenant_idx(t)).transpose()?;
        let taking = |o: &Op| matches!(o, Op::Scan(s) if s.caller.origin == caller.origin && matches!(s.what, ScanWhat::Snapshot { .. }));
        let open = self.coord.snapshots.values().filter(|s| s.owner == caller.origin).count()
            + self.coord.ops.values().filter(|o| taking(o)).count();
        if open >= MAX_SNAPSHOTS_PER_CONNECTION {
            return Err(ProtoError::new(
                ErrorCode::InvalidValue,
                format!("this connection holds {open} snapshots, the most allowed; release one first"),
            ));
        }
        let limit = limit.unwrap_or(u32::MAX).min(self.params.max_snapshot);
        // Unique in the node: the coordinating shard in the high bits.
        let snapshot = ((self.params.shard as u64) << 40) | self.next_op;
        let holder = lock.then(|| Holder { origin: caller.origin, name: caller.client_name.clone() });
        if lock {
            self.coord.lockers.insert(caller.origin);
        }
        let mode = ScanMode::Snapshot { snapshot, lock: holder };
        let filter = Filter::Condition { tenant, condition };
        self.start_scan(caller, ScanWhat::Snapshot { snapshot, lock }, filter, limit, mode, out)?;
        Ok(None)
    }

    fn may_scan(caller: &Caller, allowed: ClientTypes, what: &str, option: &str) -> Result<(), ProtoError> {
        if allowed.contains(caller.client_type) {
            return Ok(());
        }
        Err(ProtoError::new(
            ErrorCode::NotPermitted,
            format!("a {} client may not {what} ({option} = {:?})", caller.client_type.name(), allowed.names()),
        ))
    }

    fn start_scan(
        &mut self,
        caller: &Caller,
        what: ScanWhat,
        filter: Filter,
        limit: u32,
        mode: ScanMode,
        out: &mut Vec<Output>,
    ) -> Result<(), ProtoError> {
        let running = self.coord.ops.values().filter(|o| matches!(o, Op::Scan(_))).count();
        if running >= MAX_SCANS_PER_SHARD {
            return Err(ProtoError::new(
                ErrorCode::Overloaded,
                format!("{running} searches and snapshots are in progress on this shard, the most allowed; retry"),
            ));
        }
        let op = self.new_op(Op::Scan(ScanOp {
            caller: caller.clone(),
            what,
            limit,
            outstanding: self.params.shards,
            parts: (0..self.params.shards).map(|_| ScanPart::default()).collect(),
            ids: IdList::new(),
            shards: Vec::new(),
            described: Vec::new(),
            extra: vec![IdList::new(); self.params.shards as usize],
            total: 0,
            orphaned: false,
            cuts_outstanding: self.params.shards,
        }));
        self.broadcast(PeerMsg::Scan { op, filter, limit, mode }, out);
        Ok(())
    }

    /// A shard has taken a snapshot's cut; once all have, they may go on.
    fn cut_taken(&mut self, op: u64, out: &mut Vec<Output>) {
        let Some(Op::Scan(s)) = self.coord.ops.get_mut(&op) else { return };
        s.cuts_outstanding -= 1;
        if s.cuts_outstanding == 0 {
            self.broadcast(PeerMsg::Thaw { op }, out);
        }
    }

    fn scanned(
        &mut self,
        from: u16,
        op: u64,
        part: (Vec<u64>, IdList, Vec<KvList>),
        total: u64,
        last: bool,
        out: &mut Vec<Output>,
    ) {
        let Some(Op::Scan(s)) = self.coord.ops.get_mut(&op) else { return };
        let (ties, ids, described) = part;
        assert_eq!(ties.len(), ids.len(), "one tie per id");
        let p = &mut s.parts[from as usize];
        assert!(!p.done, "a part after the last from shard {from}");
        p.chunks.push_back(ScanChunk { ties, ids, described, next: 0 });
        if last {
            p.done = true;
            s.total += total;
            s.outstanding -= 1;
        }
        self.merge_scan(op, out);
    }

    /// Merges a scan's parts for one step's worth; asks for another step if
    /// more can be merged now; answers once everything is merged.
    pub(crate) fn merge_scan(&mut self, op: u64, out: &mut Vec<Output>) {
        let Some(Op::Scan(s)) = self.coord.ops.get_mut(&op) else { return };
        if s.merge(crate::scan::MERGE_CHUNK) {
            out.push(Output::Peer { to: self.params.shard, msg: PeerMsg::ScanMerge { op } });
        } else if s.outstanding == 0 {
            self.scan_finish(op, out);
        }
    }

    fn scan_finish(&mut self, op: u64, out: &mut Vec<Output>) {
        let Some(Op::Scan(s)) = self.coord.ops.remove(&op) else { return };
        assert!(s.parts.iter().all(|p| p.done && p.chunks.iter().all(|c| c.next == c.ties.len())));
        match s.what {
            ScanWhat::Find | ScanWhat::Workbin => {
                let t = if matches!(s.what, ScanWhat::Find) {
                    msg_type::EVENT_INTERACTIONS_FOUND
                } else {
                    msg_type::EVENT_WORKBIN_CONTENT
                };
                let mut f = Frame::new(t, s.caller.ref_id);
                let mut size = 0;
                let mut count = 0i64;
                for l in s.described {
                    let n = attr_len(&l);
                    if !self.fits(size, n) {
                        break;
                    }
                    size += n;
                    count += 1;
                    f.push(attr::INTERACTION, l);
                }
                f.push(attr::COUNT, count);
                f.push(attr::TOTAL, s.total as i64);
                Self::reply(out, &s.caller, f);
            }
            ScanWhat::Snapshot { snapshot, lock } => {
                if lock && s.extra.iter().any(|l| !l.is_empty()) {
                    Self::unlock_ids(s.caller.origin, LockKind::Snapshot(snapshot), s.extra, out);
                }
                if s.orphaned {
                    return Self::reply(out, &s.caller, closed_before_answer(&s.caller));
                }
                let (ids, shards) = (s.ids, s.shards);
                let f = Frame::new(msg_type::EVENT_SNAPSHOT_TAKEN, s.caller.ref_id)
                    .with(attr::SNAPSHOT_ID, snapshot as i64)
                    .with(attr::COUNT, ids.len() as i64)
                    .with(attr::TOTAL, s.total as i64);
                let snap = Snapshot { owner: s.caller.origin, ids, shards, locked: lock };
                self.coord.snapshots.insert(snapshot, snap);
                Self::reply(out, &s.caller, f);
            }
        }
    }

    fn own_snapshot(&self, caller: &Caller, snapshot: u64) -> Result<&Snapshot, ProtoError> {
        self.coord.snapshots.get(&snapshot).filter(|s| s.owner == caller.origin).ok_or_else(|| {
            ProtoError::new(
                ErrorCode::UnknownSnapshot,
                format!("no snapshot {snapshot} on this connection (released, or never taken here)"),
            )
        })
    }

    pub(crate) fn start_snapshot_page(
        &mut self,
        caller: &Caller,
        snapshot: u64,
        start: u32,
        count: u32,
        out: &mut Vec<Output>,
    ) -> Reply {
        let snap = self.own_snapshot(caller, snapshot)?;
        let total = snap.ids.len() as u64;
        let from = (start as usize).min(snap.ids.len());
        let to = (from + count as usize).min(snap.ids.len());
        let mut positions = vec![Vec::new(); self.params.shards as usize];
        let mut ids: Vec<Vec<Box<str>>> = vec![Vec::new(); self.params.shards as usize];
        let mut items = Vec::with_capacity(to - from);
        for (i, at) in (from..to).enumerate() {
            let (shard, id) = (snap.shards[at], snap.ids.get(at));
            positions[shard as usize].push(i);
            ids[shard as usize].push(id.into());
            items.push((id.into(), None));
        }
        let outstanding = ids.iter().filter(|v| !v.is_empty()).count() as u16;
        let answers = vec![Vec::new(); self.params.shards as usize];
        let d = DescribeOp { caller: caller.clone(), start, total, items, positions, answers, outstanding };
        if outstanding == 0 {
            self.page_finish(d, out);
            return Ok(None);
        }
        let op = self.new_op(Op::Describe(d));
        for (to, ids) in ids.into_iter().enumerate() {
            if !ids.is_empty() {
                out.push(Output::Peer { to: to as u16, msg: PeerMsg::Describe { op, ids } });
            }
        }
        Ok(None)
    }

    fn described(&mut self, from: u16, op: u64, encoded: Vec<u8>, ends: Vec<u32>, out: &mut Vec<Output>) {
        let Some(Op::Describe(d)) = self.coord.ops.get_mut(&op) else { return };
        let positions = std::mem::take(&mut d.positions[from as usize]);
        assert_eq!(positions.len(), ends.len(), "one description per id asked");
        let mut start = 0;
        for (pos, end) in positions.into_iter().zip(ends) {
            d.items[pos].1 = Some((from, start, end));
            start = end;
        }
        d.answers[from as usize] = encoded;
        d.outstanding -= 1;
        if d.outstanding == 0 {
            let Some(Op::Describe(d)) = self.coord.ops.remove(&op) else { unreachable!() };
            self.page_finish(d, out);
        }
    }

    /// EventSnapshotInteractions: one INTERACTION per entry of the page, in
    /// snapshot order; an interaction gone since is `id` and `gone = 1`.
    fn page_finish(&self, d: DescribeOp, out: &mut Vec<Output>) {
        let mut f = Frame::new(msg_type::EVENT_SNAPSHOT_INTERACTIONS, d.caller.ref_id);
        let mut gone = Vec::new();
        let mut count = 0i64;
        for (id, at) in d.items {
            let bytes = match at {
                Some((shard, start, end)) if end > start => &d.answers[shard as usize][start as usize..end as usize],
                _ => {
                    let mut l = KvList::new();
                    l.push("id", Value::Str(id.to_string()));
                    l.push("gone", Value::Int(1));
                    gone.clear();
                    encode_attr(attr::INTERACTION, &Value::List(l), &mut gone);
                    &gone[..]
                }
            };
            if !self.fits(f.raw.len(), bytes.len()) {
                break;
            }
            count += 1;
            f.raw.extend_from_slice(bytes);
        }
        f.push(attr::START, d.start as i64);
        f.push(attr::COUNT, count);
        f.push(attr::TOTAL, d.total as i64);
        Self::reply(out, &d.caller, f);
    }

    /// Releases a snapshot. A locking one is acknowledged only when every
    /// shard has ended its locks, so any request made after the
    /// acknowledgement sees them gone.
    pub(crate) fn release_snapshot(&mut self, caller: &Caller, snapshot: u64, out: &mut Vec<Output>) -> Reply {
        let locked = self.own_snapshot(caller, snapshot)?.locked;
        self.coord.snapshots.remove(&snapshot);
        if !locked {
            return Ok(Some(event_ack(caller.ref_id)));
        }
        let op = self.new_op(Op::Release { caller: caller.clone(), outstanding: self.params.shards });
        let kind = Some(LockKind::Snapshot(snapshot));
        self.broadcast(PeerMsg::Unlock { origin: caller.origin, kind, ids: None, confirm: Some(op) }, out);
        Ok(None)
    }

    fn unlocked(&mut self, op: u64, out: &mut Vec<Output>) {
        let Some(Op::Release { outstanding, .. }) = self.coord.ops.get_mut(&op) else { return };
        *outstanding -= 1;
        if *outstanding == 0 {
            let Some(Op::Release { caller, .. }) = self.coord.ops.remove(&op) else { unreachable!() };
            Self::reply(out, &caller, event_ack(caller.ref_id));
        }
    }

    // ----- queue depth ----------------------------------------------------

    pub(crate) fn start_queue_depth(&mut self, caller: &Caller, tenant: &str, out: &mut Vec<Output>) -> Reply {
        let t = self.tenant_idx(tenant)?;
        let sum = self
            .catalog
            .tenant_at(t)
            .queues
            .iter()
            .map(|q| QueueDepth { views: vec![0; q.views.len()], ..Default::default() })
            .collect();
        let op =
            self.new_op(Op::Depth(DepthOp { caller: caller.clone(), tenant: t, sum, outstanding: self.params.shards }));
        self.broadcast(PeerMsg::QueueDepth { op, tenant: t }, out);
        Ok(None)
    }

    fn queue_depths(&mut self, op: u64, queues: Vec<QueueDepth>, out: &mut Vec<Output>) {
        let Some(Op::Depth(d)) = self.coord.ops.get_mut(&op) else { return };
        for (s, q) in d.sum.iter_mut().zip(queues) {
            s.interactions += q.interactions;
            s.locked += q.locked;
            for (a, b) in s.views.iter_mut().zip(q.views) {
                *a += b;
            }
        }
        d.outstanding -= 1;
        if d.outstanding > 0 {
            return;
        }
        let Some(Op::Depth(d)) = self.coord.ops.remove(&op) else { unreachable!() };
        let t = self.catalog.tenant_at(d.tenant);
        let mut f = Frame::new(msg_type::EVENT_QUEUE_DEPTH, d.caller.ref_id);
        for (q, s) in t.queues.iter().zip(d.sum) {
            // A queue a reload removed is listed while it still holds
            // interactions (reachable by id), so they are not forgotten.
            if q.retired && s.interactions == 0 {
                continue;
            }
            let mut views = KvList::new();
            for (&v, n) in q.views.iter().zip(s.views) {
                if !t.views[v as usize].retired {
                    views.push(t.views[v as usize].name.as_str(), Value::Int(n as i64));
                }
            }
            let mut l = KvList::new();
            l.push("queue", Value::Str(q.name.clone()));
            if q.retired {
                l.push("removed", Value::Int(1));
            }
            l.push("interactions", Value::Int(s.interactions as i64));
            l.push("locked", Value::Int(s.locked as i64));
            l.push("views", Value::List(views));
            f.push(attr::QUEUE_DEPTH, l);
        }
        Self::reply(out, &d.caller, f);
    }

    // ----- connections closing ----------------------------------------------

    /// A client's connection closed: its pulls and reads stop, its
    /// snapshots go, and every lock it held ends (on every shard; sent after
    /// any lock request of its own, so FIFO channels make this final).
    /// A client closed (a connection, or one session of a connection): the
    /// requests it has in flight here end. Each still gets its one answer
    /// (an error), which a session's connection sends and a closed
    /// connection drops: a session closes while its connection goes on.
    pub(crate) fn conn_closed(&mut self, origin: Origin, out: &mut Vec<Output>) {
        let mut mine: Vec<u64> =
            self.coord.ops.iter().filter(|(_, o)| o.caller().origin == origin).map(|(&i, _)| i).collect();
        mine.sort_unstable();
        for op in mine {
            match self.coord.ops.get_mut(&op) {
                // A snapshot's cut must still be thawed: let it finish
                // (its answer is the error below, then).
                Some(Op::Scan(s)) if matches!(s.what, ScanWhat::Snapshot { .. }) => s.orphaned = true,
                _ => {
                    let Some(o) = self.coord.ops.remove(&op) else { continue };
                    self.timers.cancel(Timer::Pull(op));
                    Self::reply(out, o.caller(), closed_before_answer(o.caller()));
                    if let Op::Pull(p) = o {
                        self.unwatch(op, &p, out);
                    }
                }
            }
        }
        self.coord.snapshots.retain(|_, s| s.owner != origin);
        if self.coord.lockers.remove(&origin) {
            self.broadcast(PeerMsg::Unlock { origin, kind: None, ids: None, confirm: None }, out);
        }
    }

    // ----- the other shards' side ---------------------------------------------

    pub(crate) fn handle_peer(&mut self, now_ms: Millis, from: u16, msg: PeerMsg, out: &mut Vec<Output>) {
        match msg {
            PeerMsg::PullRead { op, tenant, view, n, watch } => {
                let index = &self.index.view(tenant, view);
                let heads: Vec<Head> = index
                    .head(n as usize)
                    .into_iter()
                    .map(|(key, tie)| {
                        let slot = self.store.find_tie(tie).expect("a view entry's tie is held");
                        Head { key, tie, id: (*self.store.get(slot).id).into() }
                    })
                    .collect();
                if heads.is_empty() && watch {
                    self.coord.watchers.entry((tenant, view)).or_default().push((from, op));
                }
                out.push(Output::Peer { to: from, msg: PeerMsg::PullHeads { op, heads } });
            }
            PeerMsg::PullHeads { op, heads } => self.pull_heads(now_ms, from, op, heads, out),
            PeerMsg::PullLock { op, tenant, view, holder, heads } => {
                let deadline = now_ms + self.params.routing_timeout_ms;
                let mut got = Vec::with_capacity(heads.len());
                let mut missed = 0;
                for h in heads {
                    let slot = self.store.find(&h.id);
                    let ok = slot.is_some_and(|s| self.store.get(s).tie == h.tie)
                        && self.index.view(tenant, view).contains(&h.key, h.tie);
                    match slot {
                        Some(slot) if ok => {
                            self.lock(slot, holder.clone(), LockKind::Routing, deadline, out);
                            got.push((h, self.describe(slot)));
                        }
                        _ => missed += 1,
                    }
                }
                out.push(Output::Peer { to: from, msg: PeerMsg::PullLocked { op, got, missed } });
            }
            PeerMsg::PullLocked { op, got, missed } => self.pull_locked(from, op, got, missed, out),
            PeerMsg::ViewFilled { op } => self.view_filled(op, out),
            PeerMsg::Unwatch { op, tenant, view } => {
                if let Some(w) = self.coord.watchers.get_mut(&(tenant, view)) {
                    w.retain(|&(coord, o)| (coord, o) != (from, op));
                    if w.is_empty() {
                        self.coord.watchers.remove(&(tenant, view));
                    }
                }
            }
            PeerMsg::Scan { op, filter, limit, mode } => {
                let snapshot = matches!(mode, ScanMode::Snapshot { .. });
                if self.open_scan(from, op, filter, limit, mode) {
                    out.push(Output::Peer { to: self.params.shard, msg: PeerMsg::ScanSlice { coord: from, op } });
                }
                if snapshot {
                    // Hold every change until all shards have their cut.
                    self.frozen += 1;
                    out.push(Output::Peer { to: from, msg: PeerMsg::CutTaken { op } });
                }
            }
            PeerMsg::CutTaken { op } => self.cut_taken(op, out),
            PeerMsg::ScanSlice { coord, op } => self.scan_slice(coord, op, out),
            PeerMsg::ScanMerge { op } => self.merge_scan(op, out),
            PeerMsg::BuildViews => self.build_views(out),
            PeerMsg::Scanned { op, ties, ids, described, total, last } => {
                self.scanned(from, op, (ties, ids, described), total, last, out)
            }
            PeerMsg::Thaw { op } => {
                assert!(self.frozen > 0, "thaw without a cut");
                self.frozen -= 1;
                if self.run_scan(from, op) {
                    out.push(Output::Peer { to: self.params.shard, msg: PeerMsg::ScanSlice { coord: from, op } });
                }
            }
            PeerMsg::Describe { op, ids } => {
                let mut encoded = Vec::new();
                let mut ends = Vec::with_capacity(ids.len());
                for id in &ids {
                    if let Some(slot) = self.store.find(id).filter(|&s| self.store.get(s).visible) {
                        encode_attr(attr::INTERACTION, &Value::List(self.describe(slot)), &mut encoded);
                    }
                    ends.push(u32::try_from(encoded.len()).expect("a page under 4 GiB"));
                }
                out.push(Output::Peer { to: from, msg: PeerMsg::Described { op, encoded, ends } });
            }
            PeerMsg::Described { op, encoded, ends } => self.described(from, op, encoded, ends, out),
            PeerMsg::Unlock { origin, kind, ids, confirm } => {
                self.unlock_for(origin, kind, ids, out);
                if let Some(op) = confirm {
                    out.push(Output::Peer { to: from, msg: PeerMsg::Unlocked { op } });
                }
            }
            PeerMsg::Unlocked { op } => self.unlocked(op, out),
            PeerMsg::QueueDepth { op, tenant } => {
                let t = self.catalog.tenant_at(tenant);
                let queues = t
                    .queues
                    .iter()
                    .zip(self.index.queue_counts(tenant))
                    .map(|(q, c)| QueueDepth {
                        interactions: c.interactions,
                        locked: c.locked,
                        views: q.views.iter().map(|&v| self.index.view(tenant, v).len() as u64).collect(),
                    })
                    .collect();
                out.push(Output::Peer { to: from, msg: PeerMsg::QueueDepths { op, queues } });
            }
            PeerMsg::QueueDepths { op, queues } => self.queue_depths(op, queues, out),
            PeerMsg::AgentAvail { agent, avail } => self.agent_avail(agent, avail, out),
            PeerMsg::RouteRead { op, tenant, view, n } => self.route_read(from, op, tenant, view, n, out),
            PeerMsg::RouteHeads { op, heads } => self.route_heads(from, op, heads, out),
            PeerMsg::StrategyWake { tenant, view } => self.wake_routes(tenant, Some(view), out),
            PeerMsg::Offer { op, tenant, view, head, agent, media } => {
                self.offer(from, op, tenant, view, head, agent, media, out)
            }
            PeerMsg::OfferDone { op, agent, media, outcome } => self.offer_done(op, agent, media, outcome, out),
            PeerMsg::Reserve { ticket, id, agent, media } => self.reserve(from, ticket, id, agent, media, out),
            PeerMsg::Reserved { ticket, id: _, agent, result } => self.reserved(now_ms, ticket, agent, result, out),
            PeerMsg::Release { agent, media, id, ticket, not_ready } => {
                self.release(now_ms, agent, media, (&id, ticket), not_ready, out)
            }
            PeerMsg::Accepted { agent, id } => self.accepted(agent, &id),
            PeerMsg::Republish { agent } => self.republish(agent, out),
            PeerMsg::Revoke { agent, id } => self.revoke(now_ms, agent, &id, out),
            PeerMsg::LoginClaim { op, agent, place, control, seats } => {
                self.ledger_claim(from, op, agent, place, control, seats, out)
            }
            PeerMsg::LoginClaimed { op, result } => self.login_claimed(now_ms, op, result, out),
            PeerMsg::LoginFree { agent } => self.ledger_free(agent),
            PeerMsg::DesktopGone { origin, agent } => self.desktop_gone(now_ms, origin, agent, out),
            PeerMsg::AgentStates { op, tenant } => {
                let states = self.homed_agents(tenant);
                out.push(Output::Peer { to: from, msg: PeerMsg::AgentStateList { op, states } });
            }
            PeerMsg::AgentStateList { op, states } => self.agent_state_list(op, states, out),
            m @ (PeerMsg::Subscribe { .. }
            | PeerMsg::Subscribed { .. }
            | PeerMsg::SubscribeGo { .. }
            | PeerMsg::SubscribeLive { .. }
            | PeerMsg::Unsubscribe { .. }) => self.handle_subscription(from, m, out),
        }
    }

    /// Ends locks held by the connection `origin`: of one kind or all, on
    /// the listed interactions or on all.
    fn unlock_for(&mut self, origin: Origin, kind: Option<LockKind>, ids: Option<IdList>, out: &mut Vec<Output>) {
        let matches = |l: &crate::machine::Lock| l.holder.origin == origin && kind.is_none_or(|k| k == l.kind);
        let mut slots: Vec<Slot> = match ids {
            Some(ids) => ids
                .iter()
                .filter_map(|id| self.store.find(id))
                .filter(|s| self.index.lock(*s).is_some_and(matches))
                .collect(),
            None => self.index.locks().filter(|(_, l)| matches(l)).map(|(s, _)| s).collect(),
        };
        slots.sort_unstable();
        for slot in slots {
            self.unlock(slot, out);
        }
    }
}

/// The answer to a request whose client closed before it was answered.
fn closed_before_answer(caller: &Caller) -> Frame {
    let text = "the client closed (its session or connection) before this request was answered; nothing was taken";
    event_error(caller.ref_id, &ProtoError::new(ErrorCode::NotRegistered, text))
}
