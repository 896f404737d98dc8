//! `ixn-bench peer`: the durable workloads of `submit` and `cycle`, run
//! against a peer system instead of ixn, so `bench/peers-report.sh` can put
//! them side by side in one run.
//!
//! - `enqueue`: `--producers` connections, each keeping `--window` items in
//!   flight; an item counts once the peer acknowledged it (for Redis: the
//!   LPUSH reply, which with `appendfsync always` comes after the fsync).
//! - `cycle`: the same producers, and `--consumers` connections that take
//!   items and acknowledge them (Redis: LMOVE to a processing list, then
//!   LREM; a BLMOVE waits when the queue is empty), each keeping `--window`
//!   takes in flight; a cycle counts when its
//!   acknowledgement is answered.
//!
//! After the load the bench reads back what the peer holds and counts
//! **lost** items (acknowledged but neither consumed nor held) and
//! **duplicated** ones (consumed or held more than once). With
//! `--server-pid` it also reports the peer's CPU time over the run (from
//! /proc/PID/stat, all its threads), and always its own (getrusage), so a
//! reader can see whether the generator was the limit.
//!
//! Redis is spoken directly (RESP2 over TCP, pipelined): no client
//! library between the bench and the wire.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use odbc_api::Cursor;
use serde_json::json;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// Redis: LPUSH; LMOVE (BLMOVE when empty) to a processing list, then LREM.
    Redis,
    /// RabbitMQ, a durable classic queue: persistent messages, publisher
    /// confirms, manual acks (`--addr` is an amqp:// URI).
    RabbitmqClassic,
    /// RabbitMQ, a quorum queue: the same otherwise.
    RabbitmqQuorum,
    /// PostgreSQL through ODBC (`--addr` is the connection string): INSERT
    /// of `--batch` rows per commit; DELETE ... FOR UPDATE SKIP LOCKED
    /// LIMIT `--batch` RETURNING, one commit per take.
    Postgres,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Enqueue,
    Cycle,
}

#[derive(clap::Args, Debug, Clone)]
pub struct PeerArgs {
    /// The peer system.
    #[arg(value_enum)]
    system: System,
    #[arg(long, value_enum, default_value = "enqueue")]
    workload: Workload,
    /// The peer's address.
    #[arg(long, default_value = "127.0.0.1:6379")]
    addr: String,
    /// Producer connections, one thread each.
    #[arg(long, default_value_t = 8)]
    producers: usize,
    /// Consumer connections (cycle), one thread each.
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Items (or takes) in flight per connection.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// PostgreSQL: rows per INSERT (one commit) and per take.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Items per second to aim for, all producers together (0: as fast as
    /// the peer takes them): latency at a given load.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Cycle: most items enqueued and not yet consumed; producers wait
    /// above it, so the rate is the consumers' and the queue stays short
    /// (0: producers × window).
    #[arg(long, default_value_t = 0)]
    max_backlog: i64,
    /// Bytes of payload per item besides its id.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// The peer's process id, to report its CPU time over the run.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the result object here.
    #[arg(long)]
    json: Option<String>,
}

/// A Redis connection with pipelined requests.
struct Resp {
    out: TcpStream,
    inp: BufReader<TcpStream>,
    line: String,
}

/// One RESP reply, as much as the bench needs of it.
#[derive(Debug, PartialEq)]
enum Reply {
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
    Status(String),
}

impl Resp {
    fn connect(addr: &str) -> Result<Resp, String> {
        let s = TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        let inp = BufReader::with_capacity(64 << 10, s.try_clone().map_err(|e| e.to_string())?);
        Ok(Resp { out: s, inp, line: String::new() })
    }

    /// Appends one command to `buf` (sent by [`Resp::send`]).
    fn command(buf: &mut Vec<u8>, args: &[&[u8]]) {
        buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
    }

    fn send(&mut self, buf: &mut Vec<u8>) -> Result<(), String> {
        self.out.write_all(buf).map_err(|e| format!("redis write: {e}"))?;
        buf.clear();
        Ok(())
    }

    fn read(&mut self) -> Result<Reply, String> {
        read_reply(&mut self.inp, &mut self.line)
    }

    fn call(&mut self, args: &[&[u8]]) -> Result<Reply, String> {
        let mut buf = Vec::new();
        Resp::command(&mut buf, args);
        self.send(&mut buf)?;
        self.read()
    }
}

/// Reads one RESP2 reply.
fn read_reply(inp: &mut impl BufRead, line: &mut String) -> Result<Reply, String> {
    line.clear();
    let n = inp.read_line(line).map_err(|e| format!("redis read: {e}"))?;
    if n < 3 || !line.ends_with("\r\n") {
        return Err("redis closed the connection".into());
    }
    let body = line[1..line.len() - 2].to_string();
    match line.as_bytes()[0] {
        b':' => body.parse().map(Reply::Int).map_err(|e| format!("redis integer '{body}': {e}")),
        b'+' => Ok(Reply::Status(body)),
        b'-' => Err(format!("redis error: {body}")),
        b'$' => {
            let len: i64 = body.parse().map_err(|e| format!("redis bulk length '{body}': {e}"))?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let mut data = vec![0u8; len as usize + 2];
            inp.read_exact(&mut data).map_err(|e| format!("redis read: {e}"))?;
            data.truncate(len as usize);
            Ok(Reply::Bulk(Some(data)))
        }
        b'*' => {
            let len: i64 = body.parse().map_err(|e| format!("redis array length '{body}': {e}"))?;
            if len < 0 {
                // A blocking take that timed out: a null.
                return Ok(Reply::Bulk(None));
            }
            let mut items = Vec::with_capacity(len.min(1 << 20) as usize);
            for _ in 0..len {
                items.push(read_reply(inp, line)?);
            }
            Ok(Reply::Array(items))
        }
        other => Err(format!("redis reply of unknown type '{}'", other as char)),
    }
}

/// Items enqueued and not yet consumed, shared by the load threads.
struct Backlog {
    n: std::sync::atomic::AtomicI64,
    max: i64,
}

mod rabbitmq;

impl Backlog {
    fn room(&self) -> bool {
        self.n.load(std::sync::atomic::Ordering::Relaxed) < self.max
    }

    fn add(&self, by: i64) {
        self.n.fetch_add(by, std::sync::atomic::Ordering::Relaxed);
    }
}

const QUEUE: &[u8] = b"ixn-bench:q";
const PROCESSING: &[u8] = b"ixn-bench:processing";

/// What one thread did.
#[derive(Default)]
struct Done {
    /// Items acknowledged by the peer (producers) or taken and acknowledged
    /// (consumers), by id.
    ids: Vec<String>,
    /// Of those, how many before the deadline (the rate counts these).
    in_time: usize,
    hist: Option<Histogram<u64>>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")
}

/// A producer: LPUSH with `window` in flight until `deadline`.
fn redis_producer(
    a: &PeerArgs,
    p: usize,
    start: Instant,
    deadline: Instant,
    backlog: &Backlog,
) -> Result<Done, String> {
    let mut r = Resp::connect(&a.addr)?;
    let mut items = Items::new(a, p, start);
    let mut hist = histogram();
    let mut ids = Vec::new();
    let mut inflight = std::collections::VecDeque::new();
    let mut buf = Vec::new();
    loop {
        let open = Instant::now() < deadline;
        while open && inflight.len() < a.window {
            let Some((id, item)) = items.take(a, backlog) else { break };
            Resp::command(&mut buf, &[b"LPUSH", QUEUE, item.as_bytes()]);
            inflight.push_back((id, Instant::now()));
        }
        if !buf.is_empty() {
            r.send(&mut buf)?;
        }
        if open && inflight.is_empty() {
            // Waiting for the consumers to catch up.
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        let Some((id, sent)) = inflight.pop_front() else { break };
        match r.read()? {
            Reply::Int(_) => {
                hist.record(sent.elapsed().as_micros().max(1) as u64).ok();
                ids.push(id);
            }
            other => return Err(format!("LPUSH answered {other:?}")),
        }
    }
    let in_time = ids.len();
    Ok(Done { ids, in_time, hist: Some(hist) })
}

/// A consumer: LMOVE to the processing list, then LREM, `window` takes in
/// flight; when the queue is empty, one BLMOVE (50 ms) waits for the next
/// item, since a blocking take holds the whole connection. Runs until
/// `deadline`, then until two blocking takes in a row find nothing.
fn redis_consumer(a: &PeerArgs, start: Instant, deadline: Instant, backlog: &Backlog) -> Result<Done, String> {
    let mut r = Resp::connect(&a.addr)?;
    let mut hist = histogram();
    let mut ids = Vec::new();
    // Replies come in the order sent: a take (blocking or not), or an
    // acknowledgement.
    enum Sent {
        Take {
            blocking: bool,
        },
        /// The item's id and when it was enqueued (µs since the start).
        Ack(String, u64),
    }
    let mut inflight = std::collections::VecDeque::new();
    let mut takes = 0usize;
    let mut buf = Vec::new();
    let mut starving = false;
    let mut empty_waits = 0;
    let mut in_time = 0;
    loop {
        let open = Instant::now() < deadline;
        if open || empty_waits < 2 {
            if starving && takes == 0 {
                Resp::command(&mut buf, &[b"BLMOVE", QUEUE, PROCESSING, b"RIGHT", b"LEFT", b"0.05"]);
                inflight.push_back(Sent::Take { blocking: true });
                takes += 1;
            }
            while !starving && takes < a.window {
                Resp::command(&mut buf, &[b"LMOVE", QUEUE, PROCESSING, b"RIGHT", b"LEFT"]);
                inflight.push_back(Sent::Take { blocking: false });
                takes += 1;
            }
        }
        if !buf.is_empty() {
            r.send(&mut buf)?;
        }
        let Some(sent) = inflight.pop_front() else { break };
        let reply = r.read()?;
        match (sent, reply) {
            (Sent::Take { .. }, Reply::Bulk(Some(item))) => {
                takes -= 1;
                starving = false;
                empty_waits = 0;
                Resp::command(&mut buf, &[b"LREM", PROCESSING, b"1", &item]);
                let (id, sent_us) = item_id(&item);
                inflight.push_back(Sent::Ack(id, sent_us));
            }
            (Sent::Take { blocking }, Reply::Bulk(None)) => {
                takes -= 1;
                starving = true;
                if blocking && !open {
                    empty_waits += 1;
                }
            }
            (Sent::Ack(id, sent_us), Reply::Int(1)) => {
                // Enqueue to acknowledged consumption: the whole cycle.
                let now_us = start.elapsed().as_micros() as u64;
                hist.record(now_us.saturating_sub(sent_us).max(1)).ok();
                ids.push(id);
                backlog.add(-1);
                if Instant::now() <= deadline {
                    in_time += 1;
                }
            }
            (_, other) => return Err(format!("unexpected redis reply {other:?}")),
        }
    }
    Ok(Done { ids, in_time, hist: Some(hist) })
}

/// Every item id left in `list`.
fn redis_left(a: &PeerArgs, list: &[u8]) -> Result<Vec<String>, String> {
    let mut r = Resp::connect(&a.addr)?;
    match r.call(&[b"LRANGE", list, b"0", b"-1"])? {
        Reply::Array(items) => Ok(items
            .into_iter()
            .filter_map(|i| match i {
                Reply::Bulk(Some(b)) => Some(item_id(&b).0),
                _ => None,
            })
            .collect()),
        other => Err(format!("LRANGE answered {other:?}")),
    }
}

/// CPU seconds (user + system) process `pid` used so far, all threads.
pub(crate) fn proc_cpu_s(pid: u32) -> Result<f64, String> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    // Fields after the command (in parentheses, which may hold spaces).
    let rest = &text[text.rfind(')').ok_or("bad stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        f[11].parse::<u64>().map_err(|e| e.to_string())? + f[12].parse::<u64>().map_err(|e| e.to_string())?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks as f64 / hz)
}

/// CPU seconds this process used so far.
pub(crate) fn own_cpu_s() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

pub fn peer(a: PeerArgs) -> Result<(), String> {
    match a.system {
        System::Redis => redis(a),
        System::Postgres => postgres(a),
        System::RabbitmqClassic => rabbitmq(a, false),
        System::RabbitmqQuorum => rabbitmq(a, true),
    }
}

fn rabbitmq(a: PeerArgs, quorum: bool) -> Result<(), String> {
    rabbitmq::reset(&a, quorum)?;
    let peer = Peer {
        name: if quorum { "rabbitmq-quorum" } else { "rabbitmq-classic" },
        config: format!(
            "{} durable queue, persistent messages, publisher confirms with {} unconfirmed per producer{}",
            if quorum { "quorum" } else { "classic" },
            a.window,
            if a.workload == Workload::Cycle { format!("; manual acks, prefetch {}", a.window) } else { String::new() }
        ),
        produce: rabbitmq::producer,
        consume: rabbitmq::consumer,
        left: rabbitmq::left,
    };
    run(&a, &peer)
}

fn redis(a: PeerArgs) -> Result<(), String> {
    let mut admin = Resp::connect(&a.addr)?;
    admin.call(&[b"DEL", QUEUE, PROCESSING])?;
    let fsync = match admin.call(&[b"CONFIG", b"GET", b"appendfsync"])? {
        Reply::Array(v) => match v.get(1) {
            Some(Reply::Bulk(Some(b))) => String::from_utf8_lossy(b).into_owned(),
            _ => "?".into(),
        },
        _ => "?".into(),
    };
    let peer = Peer {
        name: "redis",
        config: format!(
            "appendfsync {fsync}; LPUSH{}; pipelined, window {}",
            if a.workload == Workload::Cycle { ", LMOVE + LREM" } else { "" },
            a.window
        ),
        produce: redis_producer,
        consume: redis_consumer,
        left: |a| Ok(redis_left(a, QUEUE)?.into_iter().chain(redis_left(a, PROCESSING)?).collect()),
    };
    let r = run(&a, &peer);
    admin.call(&[b"DEL", QUEUE, PROCESSING])?;
    r
}

/// A peer system's side of the workloads.
struct Peer {
    name: &'static str,
    /// How it was configured, for the report.
    config: String,
    produce: fn(&PeerArgs, usize, Instant, Instant, &Backlog) -> Result<Done, String>,
    consume: fn(&PeerArgs, Instant, Instant, &Backlog) -> Result<Done, String>,
    /// The ids of every item the peer still holds.
    left: fn(&PeerArgs) -> Result<Vec<String>, String>,
}

/// Runs the workload against `peer`, checks what it holds after, reports.
fn run(a: &PeerArgs, peer: &Peer) -> Result<(), String> {
    let server_cpu0 = a.server_pid.map(proc_cpu_s).transpose()?;
    let own_cpu0 = own_cpu_s();
    let max = match (a.workload, a.max_backlog) {
        (Workload::Enqueue, _) => i64::MAX,
        (Workload::Cycle, 0) => (a.producers * a.window.max(a.batch)) as i64,
        (Workload::Cycle, m) => m,
    };
    let backlog = std::sync::Arc::new(Backlog { n: 0.into(), max });
    let start = Instant::now();
    let deadline = start + Duration::from_secs(a.duration);
    let producers: Vec<_> = (0..a.producers)
        .map(|p| {
            let (a, backlog, produce) = (a.clone(), backlog.clone(), peer.produce);
            std::thread::spawn(move || produce(&a, p, start, deadline, &backlog))
        })
        .collect();
    let consumers: Vec<_> = if a.workload == Workload::Cycle {
        (0..a.consumers.max(1))
            .map(|_| {
                let (a, backlog, consume) = (a.clone(), backlog.clone(), peer.consume);
                std::thread::spawn(move || consume(&a, start, deadline, &backlog))
            })
            .collect()
    } else {
        Vec::new()
    };
    let join = |hs: Vec<std::thread::JoinHandle<Result<Done, String>>>| -> Result<Done, String> {
        let mut all = Done { ids: Vec::new(), in_time: 0, hist: Some(histogram()) };
        for h in hs {
            let d = h.join().map_err(|_| "a load thread panicked".to_string())??;
            all.ids.extend(d.ids);
            all.in_time += d.in_time;
            if let (Some(h), Some(a)) = (d.hist, all.hist.as_mut()) {
                a.add(&h).expect("same bounds");
            }
        }
        Ok(all)
    };
    let produced = join(producers)?;
    let produced_s = start.elapsed().as_secs_f64();
    let consumed = join(consumers)?;
    let server_cpu = match (a.server_pid, server_cpu0) {
        (Some(pid), Some(c0)) => Some(proc_cpu_s(pid)? - c0),
        _ => None,
    };
    let own_cpu = own_cpu_s() - own_cpu0;
    // Every acknowledged item must be consumed or still held, once.
    let mut seen: HashMap<String, u32> = HashMap::with_capacity(produced.ids.len());
    for id in consumed.ids.iter().cloned().chain((peer.left)(a)?) {
        *seen.entry(id).or_default() += 1;
    }
    let lost = produced.ids.iter().filter(|id| !seen.contains_key(*id)).count() as u64;
    let duplicated = seen.values().filter(|&&n| n > 1).count() as u64;
    // Cycles count until the deadline; the drain after it is only checked.
    let (count, secs, hist, what) = match a.workload {
        Workload::Enqueue => (produced.ids.len(), produced_s, produced.hist.expect("set"), "enqueued"),
        Workload::Cycle => (consumed.in_time, a.duration as f64, consumed.hist.expect("set"), "cycles"),
    };
    let rate = count as f64 / secs;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let per_op_us = |cpu: f64| cpu * 1e6 / count.max(1) as f64;
    println!(
        "peer {} ({}) {:?}: {count} {what} in {secs:.1} s = {rate:.0}/s; latency p50 {} us, p99 {} us; \
         lost {lost}, duplicated {duplicated}; server CPU {}; bench CPU {own_cpu:.1} s",
        peer.name,
        peer.config,
        a.workload,
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        server_cpu
            .map(|c| format!("{c:.1} s ({:.1} us per op)", per_op_us(c)))
            .unwrap_or_else(|| "not measured".into()),
    );
    let out = json!({
        "scenario": format!("peer-{:?}", a.workload).to_lowercase(),
        "system": peer.name,
        "config": peer.config,
        "target": a.addr,
        "duration_s": secs,
        "clients": a.producers + if a.workload == Workload::Cycle { a.consumers } else { 0 },
        "producers": a.producers,
        "consumers": if a.workload == Workload::Cycle { a.consumers } else { 0 },
        "window": a.window,
        "count": count,
        "ops_per_sec": rate,
        "p50_us": hist.value_at_quantile(0.50),
        "p99_us": hist.value_at_quantile(0.99),
        "p999_us": hist.value_at_quantile(0.999),
        "max_us": hist.max(),
        "errors": 0,
        "lost": lost,
        "duplicated": duplicated,
        "server_cpu_s": server_cpu,
        "bench_cpu_s": own_cpu,
        "cores": cores,
    });
    if let Some(path) = &a.json {
        std::fs::write(path, format!("{out}\n")).map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    if lost > 0 || duplicated > 0 {
        return Err(format!("{lost} items lost, {duplicated} duplicated"));
    }
    Ok(())
}

// ----- PostgreSQL ---------------------------------------------------------------

const PG_TABLE: &str = "ixn_bench_q";

fn pg_connect(a: &PeerArgs) -> Result<odbc_api::Connection<'static>, String> {
    let env = odbc_api::environment().map_err(|e| format!("ODBC environment: {e}"))?;
    env.connect_with_connection_string(&a.addr, odbc_api::ConnectionOptions::default())
        .map_err(|e| format!("cannot connect to PostgreSQL ({}): {e}", a.addr))
}

fn pg_exec(conn: &odbc_api::Connection<'_>, sql: &str) -> Result<(), String> {
    conn.execute(sql, (), None).map(drop).map_err(|e| format!("{sql}: {e}"))
}

/// The text of the first column of every row `sql` returns.
fn pg_texts(conn: &odbc_api::Connection<'_>, sql: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let Some(mut cursor) = conn.execute(sql, (), None).map_err(|e| format!("{sql}: {e}"))? else {
        return Ok(out);
    };
    let mut buf = Vec::new();
    while let Some(mut row) = cursor.next_row().map_err(|e| format!("{sql}: {e}"))? {
        buf.clear();
        row.get_text(1, &mut buf).map_err(|e| format!("{sql}: {e}"))?;
        out.push(buf.clone());
    }
    Ok(out)
}

fn pg_setting(conn: &odbc_api::Connection<'_>, name: &str) -> String {
    pg_texts(conn, &format!("SHOW {name}"))
        .ok()
        .and_then(|v| v.into_iter().next())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|| "?".into())
}

/// The items of producer `p`, and the one pacing rule every producer
/// follows: it sends while the backlog has room and, with `--rate`, while
/// it is within its share of the rate.
struct Items {
    p: usize,
    /// Items made so far.
    seq: u64,
    start: Instant,
    payload: String,
}

impl Items {
    fn new(a: &PeerArgs, p: usize, start: Instant) -> Items {
        Items { p, seq: 0, start, payload: "x".repeat(a.payload) }
    }

    /// Whether the next item may be sent now: the backlog has room and
    /// fewer items were made than its share of `--rate` since the start,
    /// plus one (no bound without `--rate`).
    fn may_send(&self, a: &PeerArgs, backlog: &Backlog) -> bool {
        let allowed = if a.rate == 0 {
            u64::MAX
        } else {
            (self.start.elapsed().as_secs_f64() * a.rate as f64 / a.producers as f64) as u64 + 1
        };
        backlog.room() && self.seq < allowed
    }

    /// The next item: its id, and the item, which carries the time it was
    /// made (µs since the start) so a consumer measures the whole cycle
    /// from it. The caller counts it in the backlog.
    fn make(&mut self) -> (String, String) {
        self.seq += 1;
        let id = format!("p{}-{}", self.p, self.seq);
        let item = format!("{id}|{}|{}", self.start.elapsed().as_micros(), self.payload);
        (id, item)
    }

    /// The next item, counted in the backlog, when it may be sent now.
    fn take(&mut self, a: &PeerArgs, backlog: &Backlog) -> Option<(String, String)> {
        if !self.may_send(a, backlog) {
            return None;
        }
        backlog.add(1);
        Some(self.make())
    }
}

/// An item's id and the time it was made (µs since the start).
fn item_id(item: &[u8]) -> (String, u64) {
    let mut fields = item.split(|&b| b == b'|');
    let id = String::from_utf8_lossy(fields.next().unwrap_or(&[])).into_owned();
    let sent_us = fields.next().and_then(|t| std::str::from_utf8(t).ok()?.parse().ok()).unwrap_or(0);
    (id, sent_us)
}

/// A producer: INSERT of `--batch` rows per statement, each one commit
/// (autocommit), until `deadline`. One statement in flight: ODBC waits.
fn pg_producer(a: &PeerArgs, p: usize, start: Instant, deadline: Instant, backlog: &Backlog) -> Result<Done, String> {
    let conn = pg_connect(a)?;
    let batch = a.batch.max(1);
    let values = vec!["(?)"; batch].join(",");
    let mut insert = conn
        .prepare(&format!("INSERT INTO {PG_TABLE} (item) VALUES {values}"))
        .map_err(|e| format!("prepare INSERT: {e}"))?;
    let mut items = Items::new(a, p, start);
    let mut hist = histogram();
    let mut ids = Vec::new();
    while Instant::now() < deadline {
        if !items.may_send(a, backlog) {
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        backlog.add(batch as i64);
        let mut batch_ids = Vec::with_capacity(batch);
        let params: Vec<odbc_api::parameter::VarCharBox> = (0..batch)
            .map(|_| {
                let (id, item) = items.make();
                batch_ids.push(id);
                odbc_api::parameter::VarCharBox::from_string(item)
            })
            .collect();
        let sent = Instant::now();
        insert.execute(&params[..]).map_err(|e| format!("INSERT: {e}"))?;
        let us = sent.elapsed().as_micros().max(1) as u64;
        for _ in 0..batch {
            hist.record(us).ok();
        }
        ids.extend(batch_ids);
    }
    let in_time = ids.len();
    Ok(Done { ids, in_time, hist: Some(hist) })
}

/// A consumer: DELETE of up to `--batch` rows taken with FOR UPDATE SKIP
/// LOCKED, RETURNING them: the take and its acknowledgement in one commit.
fn pg_consumer(a: &PeerArgs, start: Instant, deadline: Instant, backlog: &Backlog) -> Result<Done, String> {
    let conn = pg_connect(a)?;
    // As a query (WITH ... SELECT): psqlODBC gives no cursor over a bare
    // DELETE ... RETURNING ("invalid cursor state").
    let sql = format!(
        "WITH taken AS (DELETE FROM {PG_TABLE} WHERE id IN (SELECT id FROM {PG_TABLE} ORDER BY id FOR UPDATE SKIP \
         LOCKED LIMIT {}) RETURNING item) SELECT item FROM taken",
        a.batch.max(1)
    );
    let mut hist = histogram();
    let mut ids = Vec::new();
    let mut in_time = 0;
    let mut empty_after = 0;
    loop {
        let items = pg_texts(&conn, &sql)?;
        let now_us = start.elapsed().as_micros() as u64;
        let open = Instant::now() <= deadline;
        if items.is_empty() {
            if !open {
                empty_after += 1;
                if empty_after >= 20 {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        empty_after = 0;
        for item in items {
            let (id, sent_us) = item_id(&item);
            hist.record(now_us.saturating_sub(sent_us).max(1)).ok();
            ids.push(id);
            backlog.add(-1);
            if open {
                in_time += 1;
            }
        }
    }
    Ok(Done { ids, in_time, hist: Some(hist) })
}

fn postgres(a: PeerArgs) -> Result<(), String> {
    let admin = pg_connect(&a)?;
    pg_exec(&admin, &format!("CREATE TABLE IF NOT EXISTS {PG_TABLE} (id bigserial PRIMARY KEY, item text NOT NULL)"))?;
    pg_exec(&admin, &format!("TRUNCATE {PG_TABLE}"))?;
    let peer = Peer {
        name: "postgres",
        config: format!(
            "fsync {}, synchronous_commit {}; INSERT of {} row(s) per commit{}",
            pg_setting(&admin, "fsync"),
            pg_setting(&admin, "synchronous_commit"),
            a.batch.max(1),
            if a.workload == Workload::Cycle {
                format!("; DELETE ... FOR UPDATE SKIP LOCKED LIMIT {} RETURNING", a.batch.max(1))
            } else {
                String::new()
            }
        ),
        produce: pg_producer,
        consume: pg_consumer,
        left: |a| {
            let conn = pg_connect(a)?;
            Ok(pg_texts(&conn, &format!("SELECT item FROM {PG_TABLE}"))?.iter().map(|i| item_id(i).0).collect())
        },
    };
    let r = run(&a, &peer);
    pg_exec(&admin, &format!("DROP TABLE {PG_TABLE}"))?;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Vec<Result<Reply, String>> {
        let mut inp = std::io::Cursor::new(bytes.to_vec());
        let mut line = String::new();
        let mut all = Vec::new();
        while (inp.position() as usize) < bytes.len() {
            let r = read_reply(&mut inp, &mut line);
            let stop = r.is_err();
            all.push(r);
            if stop {
                break;
            }
        }
        all
    }

    #[test]
    fn resp_replies_parse_as_redis_sends_them() {
        let got = parse(b":12\r\n+OK\r\n$3\r\nab|\r\n$-1\r\n*-1\r\n*2\r\n$1\r\nx\r\n:-3\r\n");
        assert_eq!(
            got,
            vec![
                Ok(Reply::Int(12)),
                Ok(Reply::Status("OK".into())),
                Ok(Reply::Bulk(Some(b"ab|".to_vec()))),
                Ok(Reply::Bulk(None)),
                Ok(Reply::Bulk(None)),
                Ok(Reply::Array(vec![Reply::Bulk(Some(b"x".to_vec())), Reply::Int(-3)])),
            ]
        );
        assert_eq!(parse(b"-ERR wrong\r\n"), vec![Err("redis error: ERR wrong".into())]);
        assert!(parse(b":1").iter().all(|r| r.is_err()), "a cut reply is an error");
    }

    #[test]
    fn commands_are_resp_arrays_of_bulk_strings() {
        let mut buf = Vec::new();
        Resp::command(&mut buf, &[b"LPUSH", b"q", b"a b"]);
        assert_eq!(buf, b"*3\r\n$5\r\nLPUSH\r\n$1\r\nq\r\n$3\r\na b\r\n");
    }
}
