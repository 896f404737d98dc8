//! `ixn-perf backlog`: a large backlog held by the shard state machines, in
//! process: no server, no network, no database.
//!
//! Builds `--shards` [`Shard`]s on the embedded default catalog and routes
//! their peer messages through a queue, as the server's mesh does (a shard
//! may send to itself). Submits `--interactions` interactions without
//! properties (priorities 0 to 9 in turn; every 1000th of media type
//! `email`, the others `chat`), completing every storage write as it comes,
//! in rounds of `--batch`, so the submits become visible in the views the
//! way a server's committed writes do. Then it measures:
//!
//! - the heap the backlog takes: live bytes of a counting allocator (the
//!   system allocator's requested sizes, not its overhead) after the fill
//!   minus before, per interaction, with the slab, the id table, the ids and
//!   the view index all counted;
//! - pulls of 1 and of 10 from `inbound-by-priority`: each reply must be in
//!   view order (priority descending, then submission order, then shard) and
//!   continue where the previous one stopped; afterwards no unpulled
//!   interaction may come before the last one pulled;
//! - two finds (a full scan each): `priority = 9 AND submitted_at > 0`
//!   limit 100 (a tenth matches) and `media_type = 'email'` limit 10000 (a
//!   thousandth matches);
//! - a snapshot of the whole backlog (`priority >= 0`, max_snapshot = N),
//!   read in pages of 1000, every entry checked once.

use std::alloc::{GlobalAlloc, Layout};

/// The allocator underneath: the server's, so timings are comparable.
static UNDERNEATH: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::cmp::Reverse;
use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ixn_shard::catalog::Catalog;
use ixn_shard::interaction::{Interaction, Place};
use ixn_shard::machine::{Caller, Input, Origin, Output, Shard, ShardParams};
use ixn_shard::proto::frame::Frame;
use ixn_shard::proto::msg::{attr, msg_type, ClientType};
use ixn_shard::proto::request::{error_of, Request, Submit};
use ixn_shard::{KvList, Value};

/// mimalloc (the server's allocator), counting live bytes and allocations.
pub struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static LIVE_ALLOCS: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

fn added(bytes: usize) {
    let now = LIVE_BYTES.fetch_add(bytes, Relaxed) + bytes;
    PEAK_BYTES.fetch_max(now, Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = UNDERNEATH.alloc(layout);
        if !p.is_null() {
            added(layout.size());
            LIVE_ALLOCS.fetch_add(1, Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = UNDERNEATH.alloc_zeroed(layout);
        if !p.is_null() {
            added(layout.size());
            LIVE_ALLOCS.fetch_add(1, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        UNDERNEATH.dealloc(ptr, layout);
        LIVE_BYTES.fetch_sub(layout.size(), Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = UNDERNEATH.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size >= layout.size() {
                added(new_size - layout.size());
            } else {
                LIVE_BYTES.fetch_sub(layout.size() - new_size, Relaxed);
            }
        }
        p
    }
}

fn live() -> (usize, usize) {
    (LIVE_BYTES.load(Relaxed), LIVE_ALLOCS.load(Relaxed))
}

#[derive(clap::Args)]
pub struct BacklogArgs {
    /// Interactions to queue.
    #[arg(long, default_value_t = 1_000_000)]
    interactions: usize,
    /// Shards (the server runs one per core).
    #[arg(long, default_value_t = 2)]
    shards: u16,
    /// Pulls of each size (1 and 10) to time.
    #[arg(long, default_value_t = 10_000)]
    pulls: usize,
    /// Submits fed between two rounds of storage completions (the server's
    /// writes in flight).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Times each find is run (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Write the result as one JSON object to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

const TENANT: &str = "default";
const VIEW: &str = "inbound-by-priority";
/// Every this many submits, one is of media type `email` (the selective find).
const EMAIL_EVERY: usize = 1000;
/// 2026-01-01 in microseconds: the simulated clock starts here and moves one
/// microsecond per input.
const START_US: i64 = 1_767_225_600_000_000;

/// The shards and the messages between them.
struct Mesh {
    shards: Vec<Shard>,
    now_us: i64,
    queue: VecDeque<(u16, Input)>,
    out: Vec<Output>,
    replies: Vec<(Origin, Frame)>,
    writes: Vec<(u16, u64)>,
    produced: u64,
    consumed: u64,
}

impl Mesh {
    fn new(shards: u16, max_snapshot: u32) -> Mesh {
        let catalog = Arc::new(Catalog::embedded_default());
        let shards = (0..shards)
            .map(|s| {
                let mut p = ShardParams::new(1, s, shards);
                p.max_snapshot = max_snapshot;
                Shard::new(p, catalog.clone())
            })
            .collect();
        Mesh {
            shards,
            now_us: START_US,
            queue: VecDeque::new(),
            out: Vec::new(),
            replies: Vec::new(),
            writes: Vec::new(),
            produced: 0,
            consumed: 0,
        }
    }

    /// One input into shard `to`; its outputs go where the server sends
    /// them: replies aside, writes to the completion list, peer messages to
    /// the back of the queue.
    fn deliver(&mut self, to: u16, input: Input) {
        self.now_us += 1;
        let mut out = std::mem::take(&mut self.out);
        self.shards[to as usize].handle_at(self.now_us, input, &mut out);
        self.produced += out.len() as u64;
        for o in out.drain(..) {
            self.consumed += 1;
            match o {
                Output::Reply { origin, frame } => self.replies.push((origin, frame)),
                Output::Store { token, op, .. } => {
                    drop(op);
                    self.writes.push((to, token));
                }
                Output::Peer { to: dest, msg } => self.queue.push_back((dest, Input::Peer { from: to, msg })),
                Output::Event { .. }
                | Output::Report { .. }
                | Output::Cursor { .. }
                | Output::Unsubscribed { .. }
                | Output::ReadLog { .. }
                | Output::SendLog { .. }
                | Output::Replay { .. }
                | Output::Bind { .. } => {}
            }
        }
        self.out = out;
    }

    /// Delivers queued peer messages and completes writes (successfully)
    /// until nothing is left to do.
    fn settle(&mut self) {
        loop {
            while let Some((to, input)) = self.queue.pop_front() {
                self.deliver(to, input);
            }
            if self.writes.is_empty() {
                return;
            }
            for (shard, token) in std::mem::take(&mut self.writes) {
                self.deliver(shard, Input::StorageDone { token, ok: true });
            }
        }
    }

    /// One request from `caller` at its shard; returns its only answer.
    fn call(&mut self, caller: &Caller, request: Request) -> Result<Frame, String> {
        self.deliver(caller.origin.shard, Input::Request { caller: caller.clone(), request });
        self.settle();
        let mut answers = std::mem::take(&mut self.replies);
        let n = answers.len();
        let (origin, f) = answers.pop().ok_or("a request got no answer")?;
        if n != 1 || origin != caller.origin || f.ref_id != caller.ref_id {
            return Err(format!("expected one answer to ref {}, got {n}", caller.ref_id));
        }
        if let Some(e) = error_of(&f) {
            return Err(e.to_string());
        }
        Ok(f)
    }

    fn interaction(&self, id: &str) -> Option<(u16, &Interaction)> {
        let s = ixn_shard::id::owner_of(id, self.shards.len() as u16);
        self.shards[s as usize].get(id).map(|ix| (s, ix))
    }
}

/// Position in `inbound-by-priority`: priority descending, then submission
/// order (the tie), then shard: the order pulls must follow.
type ViewPos = (Reverse<i64>, u64, u16);

fn pos(shard: u16, ix: &Interaction) -> ViewPos {
    (Reverse(ix.priority), ix.tie, shard)
}

fn ids_of(f: &Frame) -> Vec<String> {
    f.lists(attr::INTERACTION).iter().filter_map(|l| l.get("id").and_then(Value::as_str).map(str::to_string)).collect()
}

fn int_of(f: &Frame, id: u16, what: &str) -> Result<i64, String> {
    f.get_int(id).ok_or_else(|| format!("{} has no {what}", msg_type::name(f.msg_type)))
}

fn expect_type(f: &Frame, t: u16) -> Result<(), String> {
    if f.msg_type != t {
        return Err(format!("expected {}, got {}", msg_type::name(t), msg_type::name(f.msg_type)));
    }
    Ok(())
}

struct Lat {
    us: Vec<f64>,
}

impl Lat {
    fn new() -> Lat {
        Lat { us: Vec::new() }
    }
    fn add(&mut self, d: Duration) {
        self.us.push(d.as_secs_f64() * 1e6);
    }
    fn q(&mut self, p: f64) -> f64 {
        if self.us.is_empty() {
            return 0.0;
        }
        self.us.sort_by(f64::total_cmp);
        self.us[((self.us.len() - 1) as f64 * p).round() as usize]
    }
}

struct PullRun {
    size: u32,
    pulls: usize,
    pulled: usize,
    secs: f64,
    p50: f64,
    p99: f64,
    p999: f64,
}

fn caller(shard: u16, conn: u64, ref_id: u32, client_type: ClientType, name: &Arc<str>) -> Caller {
    Caller {
        origin: Origin { shard, conn, session: 0 },
        ref_id,
        client_type,
        client_name: name.clone(),
        agent: None,
        tenants: ixn_shard::machine::TenantScope::all(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn mib(b: usize) -> f64 {
    b as f64 / (1 << 20) as f64
}

pub fn run(a: BacklogArgs) -> Result<(), String> {
    let n = a.interactions;
    if n == 0 || a.shards == 0 || a.batch == 0 || a.repeat == 0 {
        return Err("--interactions, --shards, --batch and --repeat must be at least 1".into());
    }
    let max_snapshot = u32::try_from(n).map_err(|_| "--interactions must fit in 32 bits")?;
    let shards = a.shards;
    let media_name: Arc<str> = "bench".into();
    let router_name: Arc<str> = "router".into();
    let operator_name: Arc<str> = "operator".into();

    // ----- fill ----------------------------------------------------------
    let mut mesh = Mesh::new(shards, max_snapshot);
    let (before_bytes, before_allocs) = live();
    let fill_started = Instant::now();
    let (mut acked, mut errors, mut first_error) = (0usize, 0usize, None::<String>);
    let mut i = 0usize;
    while i < n {
        let end = (i + a.batch).min(n);
        for k in i..end {
            let s = (k % shards as usize) as u16;
            let media = if k % EMAIL_EVERY == EMAIL_EVERY - 1 { "email" } else { "chat" };
            let submit = Submit {
                tenant: TENANT.into(),
                media_type: media.into(),
                interaction_type: "Inbound".into(),
                interaction_subtype: "InboundNew".into(),
                queue: "inbound".into(),
                priority: (k % 10) as i64,
                properties: KvList::new(),
                id: None,
                received_at_ms: None,
            };
            let c = caller(s, 1, k as u32, ClientType::MediaServer, &media_name);
            mesh.deliver(s, Input::Request { caller: c, request: Request::Submit(Box::new(submit)) });
        }
        mesh.settle();
        for (_, f) in mesh.replies.drain(..) {
            match (f.msg_type, error_of(&f)) {
                (msg_type::EVENT_ACK, _) => acked += 1,
                (_, Some(e)) => {
                    errors += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                }
                (t, None) => return Err(format!("unexpected {} to a submit", msg_type::name(t))),
            }
        }
        i = end;
    }
    let fill_secs = fill_started.elapsed().as_secs_f64();
    if let Some(e) = first_error {
        return Err(format!("{errors} submit(s) failed; first: {e}"));
    }
    if acked != n {
        return Err(format!("{acked} of {n} submits acknowledged"));
    }
    // Nothing may be left in flight: every output handled, every write
    // completed, every coordinated request answered.
    let pending_writes: usize = mesh.shards.iter().map(Shard::pending_writes).sum();
    let pending_ops: usize = mesh.shards.iter().map(Shard::pending_ops).sum();
    let outstanding = mesh.produced - mesh.consumed + mesh.queue.len() as u64 + mesh.writes.len() as u64;
    if pending_writes + pending_ops != 0 || outstanding != 0 {
        return Err(format!(
            "left in flight after the fill: {pending_writes} write(s), {pending_ops} op(s), {outstanding} output(s)"
        ));
    }
    // The mesh's scratch buffers are the harness's, not the backlog's.
    mesh.queue = VecDeque::new();
    mesh.out = Vec::new();
    mesh.replies = Vec::new();
    mesh.writes = Vec::new();
    let (after_bytes, after_allocs) = live();
    let backlog_bytes = after_bytes.saturating_sub(before_bytes);
    let per_ix = backlog_bytes as f64 / n as f64;
    let allocs_per_ix = (after_allocs.saturating_sub(before_allocs)) as f64 / n as f64;
    let held: usize = mesh.shards.iter().map(Shard::len).sum();
    if held != n {
        return Err(format!("the shards hold {held} interactions, not {n}"));
    }

    // The queue depth, through the coordinated request.
    let op = caller(0, 3, 1, ClientType::Operator, &operator_name);
    let f = mesh.call(&op, Request::GetQueueDepth { tenant: TENANT.into() })?;
    expect_type(&f, msg_type::EVENT_QUEUE_DEPTH)?;
    let inbound = f
        .attrs
        .iter()
        .filter_map(|a| a.value.as_list())
        .find(|l| l.get("queue").and_then(Value::as_str) == Some("inbound"))
        .ok_or("EventQueueDepth lists no inbound queue")?;
    let depth = inbound.get("interactions").and_then(Value::as_int).unwrap_or(-1);
    let in_view = inbound.get("views").and_then(Value::as_list).and_then(|v| v.get(VIEW)).and_then(Value::as_int);
    if depth != n as i64 || in_view != Some(n as i64) {
        return Err(format!("queue depth says inbound holds {depth}, {VIEW} {in_view:?}; expected {n}"));
    }

    // ----- pulls -----------------------------------------------------------
    let mut last: Option<ViewPos> = None;
    let mut pulled_total = 0usize;
    let mut runs = Vec::new();
    let mut ref_id = 10u32;
    for size in [1u32, 10] {
        let mut lat = Lat::new();
        let mut pulled = 0usize;
        let started = Instant::now();
        for p in 0..a.pulls {
            ref_id += 1;
            let s = (p % shards as usize) as u16;
            let c = caller(s, 2, ref_id, ClientType::RoutingEngine, &router_name);
            let t = Instant::now();
            let f = mesh.call(&c, Request::Pull { tenant: TENANT.into(), view: VIEW.into(), count: size })?;
            lat.add(t.elapsed());
            expect_type(&f, msg_type::EVENT_PULLED_INTERACTIONS)?;
            let ids = ids_of(&f);
            if ids.len() as i64 != int_of(&f, attr::COUNT, "Count")? {
                return Err("a pull's Count differs from the interactions it lists".into());
            }
            if ids.is_empty() {
                break; // the view is empty
            }
            for id in &ids {
                let (shard, ix) = mesh.interaction(id).ok_or_else(|| format!("pulled {id}, which no shard has"))?;
                if mesh.shards[shard as usize].lock_of(id).is_none() {
                    return Err(format!("pulled {id} is not locked"));
                }
                let here = pos(shard, ix);
                if last.is_some_and(|l| l >= here) {
                    return Err(format!(
                        "pull out of view order: {id} (priority {}, tie {}, shard {shard}) came after {last:?}",
                        ix.priority, ix.tie
                    ));
                }
                last = Some(here);
            }
            pulled += ids.len();
        }
        let secs = started.elapsed().as_secs_f64();
        pulled_total += pulled;
        runs.push(PullRun {
            size,
            pulls: lat.us.len(),
            pulled,
            secs,
            p50: lat.q(0.5),
            p99: lat.q(0.99),
            p999: lat.q(0.999),
        });
    }
    // Nothing unpulled may come before the last one pulled, and exactly the
    // pulled ones are locked.
    let mut locked = 0usize;
    for (s, shard) in mesh.shards.iter().enumerate() {
        for ix in shard.interactions() {
            if shard.lock_of(&ix.id).is_some() {
                locked += 1;
            } else if matches!(ix.place, Place::Queue(_)) && last.is_some_and(|l| pos(s as u16, ix) <= l) {
                return Err(format!("{} was skipped by the pulls", ix.id));
            }
        }
    }
    if locked != pulled_total {
        return Err(format!("{locked} interactions are locked, but {pulled_total} were pulled"));
    }

    // ----- finds -------------------------------------------------------------
    let finds = [("priority = 9 AND submitted_at > 0", 100u32), ("media_type = 'email'", 10_000)];
    let mut find_results = Vec::new();
    for (cond, limit) in finds {
        let mut times = Vec::new();
        let (mut count, mut total) = (0, 0);
        for _ in 0..a.repeat {
            ref_id += 1;
            let c = caller(0, 3, ref_id, ClientType::Operator, &operator_name);
            let t = Instant::now();
            let f = mesh.call(&c, Request::FindInteractions { tenant: None, condition: cond.into(), limit })?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            expect_type(&f, msg_type::EVENT_INTERACTIONS_FOUND)?;
            count = int_of(&f, attr::COUNT, "Count")?;
            total = int_of(&f, attr::TOTAL, "Total")?;
            if ids_of(&f).len() as i64 != count {
                return Err(format!("find '{cond}': Count differs from the interactions listed"));
            }
        }
        find_results.push((cond, limit, count, total, median(times.clone()), times));
    }
    let want_p9 = (0..n).filter(|k| k % 10 == 9).count() as i64;
    let want_email = (n / EMAIL_EVERY) as i64;
    if find_results[0].3 != want_p9 || find_results[0].2 != want_p9.min(100) {
        return Err(format!(
            "find priority = 9: count {} total {}, expected total {want_p9}",
            find_results[0].2, find_results[0].3
        ));
    }
    if find_results[1].3 != want_email || find_results[1].2 != want_email.min(10_000) {
        return Err(format!(
            "find email: count {} total {}, expected {want_email}",
            find_results[1].2, find_results[1].3
        ));
    }

    // ----- snapshot of the whole backlog -----------------------------------------
    let (pre_snap_bytes, _) = live();
    ref_id += 1;
    let c = caller(0, 3, ref_id, ClientType::Operator, &operator_name);
    let t = Instant::now();
    let f = mesh.call(
        &c,
        Request::TakeSnapshot { tenant: None, condition: "priority >= 0".into(), lock: false, limit: None },
    )?;
    let take_ms = t.elapsed().as_secs_f64() * 1000.0;
    expect_type(&f, msg_type::EVENT_SNAPSHOT_TAKEN)?;
    let snap_bytes = live().0.saturating_sub(pre_snap_bytes);
    let snapshot = int_of(&f, attr::SNAPSHOT_ID, "SnapshotId")? as u64;
    let snap_count = int_of(&f, attr::COUNT, "Count")?;
    let snap_total = int_of(&f, attr::TOTAL, "Total")?;
    if snap_count != n as i64 || snap_total != n as i64 {
        return Err(format!("snapshot holds {snap_count} of {snap_total}; expected {n} of {n}"));
    }
    let mut seen: HashSet<String> = HashSet::with_capacity(n);
    let mut last_tie: Option<(u64, u16)> = None;
    let mut pages = 0usize;
    let t = Instant::now();
    let mut page_lat = Lat::new();
    loop {
        ref_id += 1;
        let c = caller(0, 3, ref_id, ClientType::Operator, &operator_name);
        let start = u32::try_from(seen.len()).map_err(|_| "snapshot too large")?;
        let tp = Instant::now();
        let f = mesh.call(&c, Request::GetSnapshotInteractions { snapshot, start, count: 1000 })?;
        page_lat.add(tp.elapsed());
        expect_type(&f, msg_type::EVENT_SNAPSHOT_INTERACTIONS)?;
        let ids = ids_of(&f);
        if ids.is_empty() {
            break;
        }
        pages += 1;
        for id in ids {
            // Snapshot order is submission order (tie, then shard).
            let (shard, ix) =
                mesh.interaction(&id).ok_or_else(|| format!("snapshot lists {id}, which no shard has"))?;
            let here = (ix.tie, shard);
            if last_tie.is_some_and(|l| l >= here) {
                return Err(format!("snapshot entry {id} is out of submission order"));
            }
            last_tie = Some(here);
            if !seen.insert(id) {
                return Err("the snapshot lists an interaction twice".into());
            }
        }
    }
    let read_ms = t.elapsed().as_secs_f64() * 1000.0;
    if seen.len() != n {
        return Err(format!("reading the snapshot gave {} entries, not {n}", seen.len()));
    }
    drop(seen);
    ref_id += 1;
    let c = caller(0, 3, ref_id, ClientType::Operator, &operator_name);
    mesh.call(&c, Request::ReleaseSnapshot { snapshot })?;

    // ----- report ----------------------------------------------------------------
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let ix_size = std::mem::size_of::<Option<Interaction>>();
    println!(
        "backlog (in process, {shards} shard(s), embedded default catalog, no properties): {n} interactions queued"
    );
    println!("  fill: {n} submits + writes completed in {fill_secs:.2} s ({:.0}/s)", n as f64 / fill_secs);
    println!(
        "  heap: {backlog_bytes} bytes ({:.1} MiB) = {per_ix:.1} bytes per interaction, {allocs_per_ix:.2} allocations per interaction (slot {ix_size} bytes)",
        mib(backlog_bytes)
    );
    println!("  in flight after fill: 0 writes, 0 ops, 0 outputs (of {} produced)", mesh.produced);
    println!(
        "  {:<44} {:>9} {:>11} {:>12} {:>9} {:>9} {:>9}",
        "operation", "count", "per sec", "ixns/s", "p50 us", "p99 us", "p99.9 us"
    );
    for r in &runs {
        println!(
            "  {:<44} {:>9} {:>11.0} {:>12.0} {:>9.1} {:>9.1} {:>9.1}",
            format!("pull {} from {VIEW}", r.size),
            r.pulls,
            r.pulls as f64 / r.secs,
            r.pulled as f64 / r.secs,
            r.p50,
            r.p99,
            r.p999
        );
    }
    println!("  pulls: {pulled_total} interactions pulled in view order, none skipped");
    println!("  {:<44} {:>9} {:>11} {:>12}", "find (full scan)", "count", "total", "median ms");
    for (cond, limit, count, total, med, _) in &find_results {
        println!("  {:<44} {count:>9} {total:>11} {med:>12.1}", format!("{cond} (limit {limit})"));
    }
    let page_p50 = page_lat.q(0.5);
    let page_p99 = page_lat.q(0.99);
    println!(
        "  snapshot priority >= 0: take {take_ms:.1} ms ({n} entries, {:.1} MiB held, {:.1} bytes per entry); read {pages} pages of 1000 in {read_ms:.1} ms (page p50 {:.2} ms, p99 {:.2} ms)",
        mib(snap_bytes),
        snap_bytes as f64 / n as f64,
        page_p50 / 1000.0,
        page_p99 / 1000.0
    );
    println!("  heap peak: {:.1} MiB; cores: {cores}", mib(PEAK_BYTES.load(Relaxed)));
    if let Some(path) = a.json {
        let pulls: Vec<_> = runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "count": r.size,
                    "pulls": r.pulls,
                    "pulled": r.pulled,
                    "seconds": r.secs,
                    "pulls_per_sec": r.pulls as f64 / r.secs,
                    "interactions_per_sec": r.pulled as f64 / r.secs,
                    "p50_us": r.p50,
                    "p99_us": r.p99,
                    "p999_us": r.p999,
                })
            })
            .collect();
        let finds: Vec<_> = find_results
            .iter()
            .map(|(cond, limit, count, total, med, times)| {
                serde_json::json!({"condition": cond, "limit": limit, "count": count, "total": total, "median_ms": med, "ms": times})
            })
            .collect();
        let j = serde_json::json!({
            "bench": "backlog",
            "in_process": true,
            "interactions": n,
            "shards": shards,
            "fill_seconds": fill_secs,
            "fill_per_sec": n as f64 / fill_secs,
            "heap_bytes": backlog_bytes,
            "bytes_per_interaction": per_ix,
            "allocations_per_interaction": allocs_per_ix,
            "slot_bytes": ix_size,
            "outputs_produced": mesh.produced,
            "outputs_outstanding": 0,
            "pulls": pulls,
            "pulled_in_order": pulled_total,
            "finds": finds,
            "snapshot_take_ms": take_ms,
            "snapshot_entries": n,
            "snapshot_heap_bytes": snap_bytes,
            "snapshot_pages": pages,
            "snapshot_read_ms": read_ms,
            "snapshot_page_p50_us": page_p50,
            "snapshot_page_p99_us": page_p99,
            "heap_peak_bytes": PEAK_BYTES.load(Relaxed),
            "cores": cores,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&j).unwrap() + "\n")
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
