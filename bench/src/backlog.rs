//! `ixn-bench backlog`: a large backlog in a running server.
//!
//! 1. Fill: `--clients` media-server connections submit `--interactions`
//!    interactions without properties to `inbound` (windowed, like
//!    `submit`): priorities 0 to 9 in turn, every 1000th of media type
//!    `email` (the selective find below), the others `chat`. Then
//!    RequestGetQueueDepth must count them all in `inbound` and in its view.
//! 2. Pulls: for `--duration` seconds, `--pullers` routing-engine
//!    connections pull `--pull-count` at a time from `inbound-by-priority`,
//!    one request at a time each. Every reply must be in view order as far
//!    as a client can see it (priority never rises, within a reply and from
//!    one reply to the next of the same puller; the submission order of
//!    equal priorities is not visible from outside), and no id may be
//!    pulled twice. Pulled interactions stay locked for the server's
//!    routing-timeout (720 minutes by default): they are not given back.
//! 3. A snapshot of the whole backlog (`priority >= 0`; the server needs
//!    max-interactions-per-snapshot >= the backlog), timed to its answer
//!    and then read in pages of 1000, every entry checked once; released.
//!    Meanwhile `--probes` other operator connections each ask for the
//!    queue depth (a request every shard answers) one at a time: their
//!    latency while the snapshot is taken is set beside their latency in
//!    the 2 s before it, when nothing else runs.
//! 4. Two finds, each a scan of the whole backlog: `priority = 9 AND
//!    submitted_at > 0` limit 100 (a tenth matches) and `media_type =
//!    'email'` limit 10000 (a thousandth matches).
//!
//! The JSON has the brief's fields for the pulls (ops_per_sec = pull
//! requests per second, latency of one pull) and the other figures beside.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ixn::client::{submit_request, Client, ClientError};
use ixn_shard::proto::request::error_of;
use ixn_shard::proto::{attr, msg_type, ClientType, Frame, Request};
use ixn_shard::{KvList, Value};
use serde_json::json;

const VIEW: &str = "inbound-by-priority";
const QUEUE: &str = "inbound";
/// Every this many submits, one is of media type `email`.
const EMAIL_EVERY: u64 = 1000;
const ROUTER: &str = "bench-router";

#[derive(clap::Args, Debug, Clone)]
pub struct BacklogArgs {
    #[arg(long, default_value = "127.0.0.1:7120")]
    server: String,
    /// Interactions to queue.
    #[arg(long, default_value_t = 1_000_000)]
    interactions: u64,
    /// Media-server connections filling the queue, one thread each.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Outstanding submits per connection.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Interactions per pull (1 to 1000); a list (`10,1`) runs one pull
    /// phase of --duration per count, in that order. The brief's fields
    /// (ops_per_sec, p50_us...) are those of the first.
    #[arg(long, value_delimiter = ',', default_value = "10")]
    pull_count: Vec<u32>,
    /// Routing-engine connections pulling, one thread each.
    #[arg(long, default_value_t = 1)]
    pullers: usize,
    /// Seconds of pulls, per pull count.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Credential, when the server lists clients (the bench registers as
    /// media-server `bench`, routing-engine `bench-router` and operator
    /// `bench-operator`).
    #[arg(long)]
    credential: Option<String>,
    /// Connections measuring other clients' latency around the snapshot.
    #[arg(long, default_value_t = 2)]
    probes: usize,
    /// Times each find is made (first and median reported).
    #[arg(long, default_value_t = 3)]
    find_repeat: usize,
    /// Process id of the server, when it runs on this machine: its VmRSS is
    /// read from /proc before and after the fill and at the end.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the result object here.
    #[arg(long)]
    json: Option<String>,
}

/// The resident set of process `pid` in KiB (VmRSS in /proc/PID/status).
fn rss_kib(pid: Option<u32>) -> Result<Option<u64>, String> {
    let Some(pid) = pid else { return Ok(None) };
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:")).ok_or_else(|| format!("{path} has no VmRSS"))?;
    let kib = line.split_whitespace().nth(1).and_then(|v| v.parse().ok());
    kib.map(Some).ok_or_else(|| format!("{path}: cannot read '{line}'"))
}

fn connect(a: &BacklogArgs, t: ClientType, name: &str) -> Result<Client, String> {
    Client::connect_as(a.server.as_str(), t, name, a.credential.as_deref())
        .map_err(|e| format!("cannot register at {} as {name}: {e}", a.server))
}

/// The Interaction lists of an answer, in order.
fn listed(f: &Frame) -> Vec<&KvList> {
    f.attrs.iter().filter(|x| x.id == attr::INTERACTION).filter_map(|x| x.value.as_list()).collect()
}

fn str_of<'a>(l: &'a KvList, k: &str) -> Option<&'a str> {
    l.get(k).and_then(Value::as_str)
}

fn int_of(l: &KvList, k: &str) -> Option<i64> {
    l.get(k).and_then(Value::as_int)
}

fn attr_int(f: &Frame, id: u16, what: &str) -> Result<i64, String> {
    f.get_int(id).ok_or_else(|| format!("{} has no {what}", msg_type::name(f.msg_type)))
}

/// Latency of RequestGetQueueDepth, asked one at a time on one connection,
/// recorded into `quiet` until `phase` becomes 1, into `busy` while it is 1,
/// and not at all after (2: stop).
fn probe(a: &BacklogArgs, phase: &std::sync::atomic::AtomicU8) -> Result<(Histogram<u64>, Histogram<u64>), String> {
    use std::sync::atomic::Ordering;
    let mut c = connect(a, ClientType::Operator, "bench-operator")?;
    let req = Request::GetQueueDepth { tenant: "default".into() };
    let mut quiet = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut busy = quiet.clone();
    loop {
        let p = phase.load(Ordering::SeqCst);
        if p >= 2 {
            return Ok((quiet, busy));
        }
        let t = Instant::now();
        call(&mut c, &req, msg_type::EVENT_QUEUE_DEPTH)?;
        let us = t.elapsed().as_micros().max(1) as u64;
        // Counted in the phase it started in: a request that began before
        // the snapshot and waited for it shows in `quiet`.
        if p == 0 { &mut quiet } else { &mut busy }.record(us).ok();
    }
}

fn call(c: &mut Client, r: &Request, want: u16) -> Result<Frame, String> {
    let f = c.call(r).map_err(|e| format!("{}: {e}", r.name()))?;
    if f.msg_type != want {
        return Err(format!("{}: expected {}, got {}", r.name(), msg_type::name(want), msg_type::name(f.msg_type)));
    }
    Ok(f)
}

struct FillResult {
    hist: Histogram<u64>,
    acked: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Submits the interactions `i`, `i + clients`, `i + 2 * clients`... below
/// `n`, with a window of outstanding requests.
fn fill_client(i: usize, a: &BacklogArgs) -> Result<FillResult, String> {
    let mut c = connect(a, ClientType::MediaServer, "bench")?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut inflight: HashMap<u32, Instant> = HashMap::with_capacity(a.window * 2);
    let mut answers = Vec::with_capacity(a.window);
    let (mut acked, mut errors, mut first_error) = (0u64, 0u64, None);
    let mut k = i as u64;
    loop {
        while inflight.len() < a.window && k < a.interactions {
            let media = if k % EMAIL_EVERY == EMAIL_EVERY - 1 { "email" } else { "chat" };
            let s = submit_request("default", QUEUE, media, (k % 10) as i64, KvList::new());
            k += a.clients as u64;
            let r = c.queue(&Request::Submit(Box::new(s)));
            inflight.insert(r, Instant::now());
        }
        c.flush().map_err(|e| format!("fill client {i}: {e}"))?;
        if inflight.is_empty() {
            break;
        }
        // Every answer already read is taken before the window is filled
        // again: the replacements go out in one write (as `submit` does).
        c.recv_waiting(&mut answers).map_err(|e| format!("fill client {i}: {e}"))?;
        for f in answers.drain(..) {
            let Some(sent) = inflight.remove(&f.ref_id) else {
                return Err(format!("fill client {i}: answer for unknown reference id {}", f.ref_id));
            };
            hist.record(sent.elapsed().as_micros().max(1) as u64).ok();
            match (f.msg_type, error_of(&f)) {
                (msg_type::EVENT_ACK, _) => acked += 1,
                (_, Some(e)) => {
                    errors += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                }
                (t, None) => return Err(format!("fill client {i}: unexpected {}", msg_type::name(t))),
            }
        }
    }
    Ok(FillResult { hist, acked, errors, first_error })
}

struct PullResult {
    hist: Histogram<u64>,
    pulls: u64,
    ids: Vec<String>,
    errors: u64,
    first_error: Option<String>,
    /// Order violations seen (described).
    disorder: Vec<String>,
    drained: bool,
    /// Priority of the last interaction pulled.
    last_priority: i64,
    /// Kept open until the end: closing it would end its routing locks and
    /// put the pulled interactions back.
    conn: Client,
}

/// One pull run's figures.
struct PullRun {
    count: u32,
    secs: f64,
    pulls: u64,
    pulled: u64,
    hist: Histogram<u64>,
    drained: bool,
}

/// Pulls `count` at a time until `deadline`; no priority may exceed
/// `floor`, the lowest one pulled before this run.
fn puller(i: usize, a: &BacklogArgs, count: u32, floor: i64, deadline: Instant) -> Result<PullResult, String> {
    let mut r = PullResult {
        hist: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
        pulls: 0,
        ids: Vec::new(),
        errors: 0,
        first_error: None,
        disorder: Vec::new(),
        drained: false,
        last_priority: floor,
        conn: connect(a, ClientType::RoutingEngine, ROUTER)?,
    };
    let req = Request::Pull { tenant: "default".into(), view: VIEW.into(), count };
    while Instant::now() < deadline {
        let t = Instant::now();
        let f = match r.conn.call(&req) {
            Ok(f) => f,
            Err(ClientError::Server(e)) => {
                r.errors += 1;
                r.first_error.get_or_insert_with(|| format!("puller {i}: {e}"));
                continue;
            }
            Err(e) => return Err(format!("puller {i}: {e}")),
        };
        r.hist.record(t.elapsed().as_micros().max(1) as u64).ok();
        r.pulls += 1;
        if f.msg_type != msg_type::EVENT_PULLED_INTERACTIONS {
            return Err(format!("puller {i}: RequestPull answered with {}", msg_type::name(f.msg_type)));
        }
        let got = listed(&f);
        if attr_int(&f, attr::COUNT, "Count")? != got.len() as i64 {
            r.disorder.push(format!("a pull's Count is not the number of interactions it lists ({})", got.len()));
        }
        if got.is_empty() {
            r.drained = true;
            break;
        }
        for l in got {
            let id = str_of(l, "id").ok_or_else(|| format!("puller {i}: a pulled interaction has no id"))?;
            let p = int_of(l, "priority").ok_or_else(|| format!("puller {i}: {id} has no priority"))?;
            if p > r.last_priority {
                r.disorder.push(format!("{id} (priority {p}) pulled after priority {}", r.last_priority));
            }
            if str_of(l, "queue") != Some(QUEUE) || str_of(l, "locked_by") != Some(ROUTER) {
                r.disorder.push(format!(
                    "{id} pulled with queue {:?}, locked_by {:?}",
                    str_of(l, "queue"),
                    str_of(l, "locked_by")
                ));
            }
            r.last_priority = p;
            r.ids.push(id.to_string());
        }
    }
    Ok(r)
}

pub fn backlog(a: BacklogArgs) -> Result<(), String> {
    if a.clients == 0 || a.pullers == 0 || a.window == 0 || a.interactions == 0 || a.find_repeat == 0 {
        return Err("--interactions, --clients, --pullers, --window and --find-repeat must be at least 1".into());
    }
    if a.pull_count.is_empty() || a.pull_count.iter().any(|c| !(1..=1000).contains(c)) {
        return Err("--pull-count must be 1 to 1000".into());
    }
    let n = a.interactions;
    let mut op = connect(&a, ClientType::Operator, "bench-operator")?;
    op.set_read_timeout(Some(Duration::from_secs(600))).map_err(|e| e.to_string())?;
    let depth_req = Request::GetQueueDepth { tenant: "default".into() };
    let inbound_depth = |op: &mut Client| -> Result<(i64, i64, i64), String> {
        let f = call(op, &depth_req, msg_type::EVENT_QUEUE_DEPTH)?;
        let q = f
            .attrs
            .iter()
            .filter(|x| x.id == attr::QUEUE_DEPTH)
            .filter_map(|x| x.value.as_list())
            .find(|l| str_of(l, "queue") == Some(QUEUE))
            .ok_or("EventQueueDepth lists no queue inbound")?;
        let view = q.get("views").and_then(Value::as_list).and_then(|v| int_of(v, VIEW)).unwrap_or(-1);
        Ok((int_of(q, "interactions").unwrap_or(-1), int_of(q, "locked").unwrap_or(-1), view))
    };
    let (before, _, _) = inbound_depth(&mut op)?;
    if before != 0 {
        return Err(format!("inbound already holds {before} interactions: start the server on an empty database"));
    }

    let rss_before = rss_kib(a.server_pid)?;

    // ----- 1. fill -------------------------------------------------------------
    println!("backlog: filling inbound with {n} interactions from {} connections (window {})", a.clients, a.window);
    let started = Instant::now();
    let threads: Vec<_> = (0..a.clients)
        .map(|i| {
            let a = a.clone();
            std::thread::spawn(move || fill_client(i, &a))
        })
        .collect();
    let mut fill_hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let (mut acked, mut errors, mut first_error) = (0u64, 0u64, None::<String>);
    for t in threads {
        let r = t.join().map_err(|_| "a fill thread panicked".to_string())??;
        fill_hist.add(&r.hist).expect("same bounds");
        acked += r.acked;
        errors += r.errors;
        first_error = first_error.or(r.first_error);
    }
    let fill_secs = started.elapsed().as_secs_f64();
    let (depth, _, in_view) = inbound_depth(&mut op)?;
    let lost = acked.saturating_sub(depth.max(0) as u64);
    println!(
        "  fill: {acked} acked in {fill_secs:.1} s = {:.0}/s (ack p50 {} us, p99 {} us); errors {errors}; queue depth {depth}, in {VIEW} {in_view}",
        acked as f64 / fill_secs,
        fill_hist.value_at_quantile(0.5),
        fill_hist.value_at_quantile(0.99)
    );
    if let Some(e) = &first_error {
        println!("  first fill error: {e}");
    }
    if depth != n as i64 || in_view != n as i64 {
        return Err(format!("after the fill inbound holds {depth} ({in_view} in {VIEW}), not {n}"));
    }
    let rss_filled = rss_kib(a.server_pid)?;
    let rss_per_ix = rss_before.zip(rss_filled).map(|(b, f)| (f as f64 - b as f64) * 1024.0 / n as f64);
    if let (Some(b), Some(f), Some(per)) = (rss_before, rss_filled, rss_per_ix) {
        println!("  server VmRSS: {b} KiB before the fill, {f} KiB after = {per:.1} bytes per interaction");
    }

    // ----- 2. pulls --------------------------------------------------------------
    // One run per --pull-count, one after the other; every puller's
    // connection stays open to the end, so what it pulled stays locked.
    let mut pulled: HashSet<String> = HashSet::new();
    let mut disorder = Vec::new();
    let mut twice = 0u64;
    let mut routers = Vec::new();
    let mut runs = Vec::new();
    // Every pull of a later run comes after every earlier pull in view order.
    let mut floor = i64::MAX;
    for &count in &a.pull_count {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(a.duration);
        let threads: Vec<_> = (0..a.pullers)
            .map(|i| {
                let a = a.clone();
                std::thread::spawn(move || puller(i, &a, count, floor, deadline))
            })
            .collect();
        let mut results = Vec::new();
        for t in threads {
            results.push(t.join().map_err(|_| "a pull thread panicked".to_string())??);
        }
        let secs = started.elapsed().as_secs_f64();
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
        let (mut pulls, mut got, mut drained) = (0u64, 0u64, false);
        for r in results {
            routers.push(r.conn);
            hist.add(&r.hist).expect("same bounds");
            pulls += r.pulls;
            errors += r.errors;
            if let Some(e) = r.first_error {
                first_error.get_or_insert(e);
            }
            drained |= r.drained;
            disorder.extend(r.disorder);
            floor = floor.min(r.last_priority);
            got += r.ids.len() as u64;
            for id in r.ids {
                if !pulled.insert(id) {
                    twice += 1;
                }
            }
        }
        println!(
            "  pulls of {count} from {VIEW}, {} puller(s): {pulls} pulls in {secs:.1} s = {:.0} pulls/s, {:.0} interactions/s; latency p50 {} us, p99 {} us, p99.9 {} us, max {} us{}",
            a.pullers,
            pulls as f64 / secs,
            got as f64 / secs,
            hist.value_at_quantile(0.5),
            hist.value_at_quantile(0.99),
            hist.value_at_quantile(0.999),
            hist.max(),
            if drained { " (the view ran empty)" } else { "" }
        );
        runs.push(PullRun { count, secs, pulls, pulled: got, hist, drained });
        if drained {
            break;
        }
    }
    let pulled_n = pulled.len() as u64 + twice;
    let (_, locked, left_in_view) = inbound_depth(&mut op)?;
    println!(
        "  pull checks: {pulled_n} pulled, {twice} twice, {} order or content violation(s); inbound now {locked} locked, {left_in_view} in {VIEW}",
        disorder.len()
    );
    for d in disorder.iter().take(5) {
        println!("    {d}");
    }
    if locked != pulled_n as i64 || left_in_view != n as i64 - pulled_n as i64 {
        disorder.push(format!(
            "queue depth after the pulls: {locked} locked and {left_in_view} in the view; expected {pulled_n} and {}",
            n - pulled_n
        ));
        println!("    {}", disorder.last().unwrap());
    }

    // ----- 3. snapshot of the whole backlog ------------------------------------------
    let phase = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0));
    let probes: Vec<_> = (0..a.probes)
        .map(|_| {
            let (a, phase) = (a.clone(), phase.clone());
            std::thread::spawn(move || probe(&a, &phase))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    phase.store(1, std::sync::atomic::Ordering::SeqCst);
    let t = Instant::now();
    let take = Request::TakeSnapshot { tenant: None, condition: "priority >= 0".into(), lock: false, limit: None };
    let f = call(&mut op, &take, msg_type::EVENT_SNAPSHOT_TAKEN)?;
    let take_ms = t.elapsed().as_secs_f64() * 1000.0;
    phase.store(2, std::sync::atomic::Ordering::SeqCst);
    let mut quiet = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut busy = quiet.clone();
    for p in probes {
        let (q, b) = p.join().map_err(|_| "a probe thread panicked".to_string())??;
        quiet.add(&q).expect("same bounds");
        busy.add(&b).expect("same bounds");
    }
    println!(
        "  other clients (queue depth, {} connections): before the snapshot p50 / p99 / max {} / {} / {} us ({} requests); while it is taken {} / {} / {} us ({} requests)",
        a.probes,
        quiet.value_at_quantile(0.5),
        quiet.value_at_quantile(0.99),
        quiet.max(),
        quiet.len(),
        busy.value_at_quantile(0.5),
        busy.value_at_quantile(0.99),
        busy.max(),
        busy.len()
    );
    let snapshot = attr_int(&f, attr::SNAPSHOT_ID, "SnapshotId")? as u64;
    let snap_count = attr_int(&f, attr::COUNT, "Count")?;
    let snap_total = attr_int(&f, attr::TOTAL, "Total")?;
    let mut seen: HashSet<String> = HashSet::with_capacity(snap_count.max(0) as usize);
    let (mut pages, mut gone, mut dup) = (0u64, 0u64, 0u64);
    let mut page_hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let t = Instant::now();
    loop {
        let start = u32::try_from(seen.len() as u64 + dup).map_err(|_| "snapshot too large")?;
        let tp = Instant::now();
        let req = Request::GetSnapshotInteractions { snapshot, start, count: 1000 };
        let f = call(&mut op, &req, msg_type::EVENT_SNAPSHOT_INTERACTIONS)?;
        page_hist.record(tp.elapsed().as_micros().max(1) as u64).ok();
        let got = listed(&f);
        if got.is_empty() {
            break;
        }
        pages += 1;
        for l in got {
            if int_of(l, "gone") == Some(1) {
                gone += 1;
            }
            let id = str_of(l, "id").ok_or("a snapshot entry has no id")?;
            if !seen.insert(id.to_string()) {
                dup += 1;
            }
        }
    }
    let read_ms = t.elapsed().as_secs_f64() * 1000.0;
    let read = seen.len() as u64 + dup;
    drop(seen);
    call(&mut op, &Request::ReleaseSnapshot { snapshot }, msg_type::EVENT_ACK)?;
    println!(
        "  snapshot priority >= 0: taken in {take_ms:.1} ms, {snap_count} of {snap_total}; read {read} in {pages} pages of 1000 in {read_ms:.0} ms (page p50 {} us, p99 {} us); {gone} gone, {dup} twice",
        page_hist.value_at_quantile(0.5),
        page_hist.value_at_quantile(0.99)
    );
    let mut problems = disorder.len() as u64 + twice;
    if snap_count != n as i64 || snap_total != n as i64 || read != n || gone + dup > 0 {
        problems += 1;
        println!("    expected {n} of {n} entries, each once (max-interactions-per-snapshot must be >= {n})");
    }

    // ----- 4. finds --------------------------------------------------------------
    let want_p9 = (0..n).filter(|k| k % 10 == 9).count() as i64;
    let want_email = (n / EMAIL_EVERY) as i64;
    let mut finds = Vec::new();
    for (cond, limit, want_total) in
        [("priority = 9 AND submitted_at > 0", 100u32, want_p9), ("media_type = 'email'", 10_000, want_email)]
    {
        let req = Request::FindInteractions { tenant: None, condition: cond.into(), limit };
        let mut ms = Vec::new();
        let mut ok = true;
        let (mut count, mut total) = (0, 0);
        for _ in 0..a.find_repeat {
            let t = Instant::now();
            let f = call(&mut op, &req, msg_type::EVENT_INTERACTIONS_FOUND)?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            count = attr_int(&f, attr::COUNT, "Count")?;
            total = attr_int(&f, attr::TOTAL, "Total")?;
            ok &= total == want_total && count == want_total.min(limit as i64) && listed(&f).len() as i64 == count;
        }
        let mut sorted = ms.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        println!(
            "  find {cond} (limit {limit}): {count} listed of {total}; first {:.1} ms, median of {} {median:.1} ms{}",
            ms[0],
            ms.len(),
            if ok { String::new() } else { format!(" (expected {} of {want_total})", want_total.min(limit as i64)) }
        );
        if !ok {
            problems += 1;
        }
        finds.push(json!({
            "condition": cond, "limit": limit, "count": count, "total": total,
            "first_ms": ms[0], "median_ms": median, "ms": ms,
        }));
    }
    if let Some(e) = &first_error {
        println!("  first error: {e}");
    }
    let rss_end = rss_kib(a.server_pid)?;
    if let Some(e) = rss_end {
        println!("  server VmRSS at the end: {e} KiB");
    }

    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let first = &runs[0];
    let pull_runs: Vec<_> = runs
        .iter()
        .map(|r| {
            json!({
                "count": r.count, "seconds": r.secs, "pulls": r.pulls, "pulled": r.pulled,
                "pulls_per_sec": r.pulls as f64 / r.secs, "interactions_per_sec": r.pulled as f64 / r.secs,
                "p50_us": r.hist.value_at_quantile(0.5), "p99_us": r.hist.value_at_quantile(0.99),
                "p999_us": r.hist.value_at_quantile(0.999), "max_us": r.hist.max(), "view_drained": r.drained,
            })
        })
        .collect();
    let mut out = json!({
        "scenario": "backlog",
        "target": a.server,
        "duration_s": first.secs,
        "clients": a.clients,
        "ops_per_sec": first.pulls as f64 / first.secs,
        "p50_us": first.hist.value_at_quantile(0.50),
        "p99_us": first.hist.value_at_quantile(0.99),
        "p999_us": first.hist.value_at_quantile(0.999),
        "max_us": first.hist.max(),
        "errors": errors,
        "lost": lost,
        "cores": cores,
    });
    let extra = json!({
        "interactions": n,
        "window": a.window,
        "fill_seconds": fill_secs,
        "fill_acked": acked,
        "fill_per_sec": acked as f64 / fill_secs,
        "fill_p50_us": fill_hist.value_at_quantile(0.5),
        "fill_p99_us": fill_hist.value_at_quantile(0.99),
    });
    let snap = json!({
        "queue_depth": depth,
        "pull_count": first.count,
        "pullers": a.pullers,
        "pulled_per_sec": first.pulled as f64 / first.secs,
        "pull_runs": pull_runs,
        "pulled": pulled_n,
        "pulled_twice": twice,
        "order_violations": disorder.len(),
        "snapshot_take_ms": take_ms,
        "probe_quiet": {"requests": quiet.len(), "p50_us": quiet.value_at_quantile(0.5), "p99_us": quiet.value_at_quantile(0.99), "max_us": quiet.max()},
        "probe_during_snapshot": {"requests": busy.len(), "p50_us": busy.value_at_quantile(0.5), "p99_us": busy.value_at_quantile(0.99), "max_us": busy.max()},
        "snapshot_count": snap_count,
        "snapshot_total": snap_total,
        "snapshot_read_ms": read_ms,
        "snapshot_read": read,
        "snapshot_pages": pages,
        "snapshot_page_p50_us": page_hist.value_at_quantile(0.5),
        "snapshot_page_p99_us": page_hist.value_at_quantile(0.99),
        "finds": finds,
        "problems": problems,
        "server_rss_kib_before_fill": rss_before,
        "server_rss_kib_after_fill": rss_filled,
        "server_rss_kib_end": rss_end,
        "server_rss_bytes_per_interaction": rss_per_ix,
    });
    for part in [extra, snap] {
        if let serde_json::Value::Object(m) = part {
            out.as_object_mut().expect("an object").extend(m);
        }
    }
    if let Some(path) = &a.json {
        std::fs::write(path, format!("{out}\n")).map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    // Only now may the routing connections close (their locks end).
    drop(routers);
    if problems > 0 {
        return Err(format!("{problems} check(s) failed (see above)"));
    }
    Ok(())
}
