//! `ixn-bench cycle`: whole interaction cycles through the built-in
//! routing.
//!
//! 1. Setup: agents `agent1`..`agentA` each get an agent-desktop
//!    connection, log in on place K (agent K) with media `chat` at capacity
//!    C (the server caps it at the configured capacity; the bench reads
//!    the capacity it got back with RequestGetAgentState) and become ready
//!    for chat. The agent connections are then driven in non-blocking mode
//!    by a few threads (`--agent-threads`), each waiting on its share of
//!    the sockets with epoll(7) and buffering frames itself, so a thousand
//!    agents cost four threads, not a thousand.
//! 2. Load, for `--duration` seconds: `--media-servers` media-server
//!    connections (one thread each) submit chat interactions to `inbound`
//!    with up to `--window` submits unanswered each, or paced to `--rate`
//!    per second in all, and never more than `--max-open` interactions
//!    submitted and not yet stopped in all (default: the agents' total
//!    capacity, so the queue stays short and the latencies measure routing,
//!    not queueing).
//! 3. Every EventInvite is accepted at once (RequestAccept with its
//!    ticket); after the accept's EventAck the interaction is handled for
//!    `--handle-ms` and then stopped (RequestStopProcessing, reason
//!    `handled`). A cycle is complete at the stop's EventAck.
//! 4. Drain: when the time is up the media servers stop submitting and
//!    wait for their answers; the bench then waits up to `--drain` seconds
//!    for every acknowledged submission to be completed, and logs every
//!    agent out.
//!
//! Checks (brief section 3, invariants 2 and 3, as far as a client sees
//! them): every acknowledged submission must be completed exactly once
//! (`lost`: never completed within the drain; `duplicates`: completed
//! twice, invited after its completion, or invited to a second agent while
//! a first one still held it), and no agent may ever hold more interactions
//! (invited or handled) than its capacity (`capacity_violations`). An
//! agent's hold on an interaction ends, as far as the bench counts, when it
//! sends the stop (the server frees the unit when it processes the stop,
//! before the stop is committed and answered, so the next invitation may
//! arrive before the stop's EventAck), when it is revoked, or when the
//! accept fails.
//!
//! Latencies: submit to invite (from the moment the RequestSubmit was sent
//! to the arrival of its EventInvite; the two are matched by interaction
//! id, known from the submit's EventAck, which may be read after the
//! invitation) and invite to accept-ack (from the arrival of the EventInvite
//! to the arrival of the accept's EventAck; the accept is sent at once).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::epoll::{self, Epoll};

use hdrhistogram::Histogram;
use ixn::client::{submit_request, Client};
use ixn_shard::proto::frame::{decode_body, split_frame, Frame, ABSOLUTE_MAX_FRAME};
use ixn_shard::proto::request::error_of;
use ixn_shard::proto::{attr, msg_type, ClientType, ErrorCode, Request};
use ixn_shard::{KvList, Value};
use serde_json::json;

/// The media-server client the submissions come from (as `submit`).
const MEDIA_CLIENT: &str = "bench";
/// The agent-desktop client every agent connection registers as.
const DESKTOP_CLIENT: &str = "bench-desktop";
/// Locks the interaction table is split over.
const TRACK_SHARDS: usize = 64;
/// How long the agents' logouts may take at the end.
const LOGOUT_WAIT: Duration = Duration::from_secs(3);

#[derive(clap::Args, Debug, Clone)]
pub struct CycleArgs {
    #[arg(long, default_value = "127.0.0.1:7120")]
    server: String,
    /// Agents `agent1`..`agentA`, agent K on place `placeK`.
    #[arg(long, default_value_t = 10)]
    agents: u32,
    /// Chat capacity each agent logs in with (the server caps it at the
    /// configured one).
    #[arg(long, default_value_t = 3)]
    capacity: u16,
    /// Media-server connections submitting, one thread each.
    #[arg(long, default_value_t = 2)]
    media_servers: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Milliseconds an accepted interaction is handled before it is
    /// stopped; 0: stopped as soon as the accept's EventAck arrives.
    #[arg(long, default_value_t = 0)]
    handle_ms: u64,
    /// Total submissions per second to aim at; 0: as fast as the window
    /// and --max-open allow.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Submits unanswered per media-server connection.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Most interactions submitted and not yet stopped, in all (default:
    /// the agents' total capacity).
    #[arg(long)]
    max_open: Option<u64>,
    /// Threads driving the agent connections (each polls its share).
    #[arg(long, default_value_t = 4)]
    agent_threads: usize,
    /// Seconds to wait, after the load, for acknowledged submissions to
    /// be completed; those still open then are `lost`.
    #[arg(long, default_value_t = 5)]
    drain: u64,
    #[arg(long, default_value = "default")]
    tenant: String,
    /// Queue to submit into (it needs the built-in strategy).
    #[arg(long, default_value = "inbound")]
    queue: String,
    #[arg(long, default_value = "chat")]
    media: String,
    /// Credential, when the server lists clients: the bench registers as
    /// media-server `bench` and agent-desktop `bench-desktop`, both with it.
    #[arg(long)]
    credential: Option<String>,
    /// Write the result object here.
    #[arg(long)]
    json: Option<String>,
    /// The server's process id (on this machine): its CPU time over the
    /// load and the drain is reported (`server_cpu_s`), with the bench's.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Connect every media server and desktop over TLS (the server's
    /// tls-listen port), trusting the CA certificates in this PEM file.
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
    /// The name the server's certificate must be valid for.
    #[arg(long, default_value = "localhost")]
    tls_name: String,
}

/// A connection registered as `t` (named `name`), over TLS with `--tls-ca`.
fn connect(a: &CycleArgs, t: ClientType, name: &str) -> Result<Client, String> {
    registered(a, t, name).map(|(c, _)| c)
}

/// [`connect`], with the registration's answer.
fn registered(a: &CycleArgs, t: ClientType, name: &str) -> Result<(Client, Frame), String> {
    let tls = a.tls_ca.as_deref().map(|ca| (ca, a.tls_name.as_str()));
    crate::registered(&a.server, tls, t, name, a.credential.as_deref())
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(d.as_micros().max(1) as u64);
}

/// Submit-to-invite latencies of one thread: all of them, and by the
/// second of the load they were measured in (for the report's timeline).
pub(crate) struct Latencies {
    pub hist: Histogram<u64>,
    pub timeline: Option<crate::report::Timeline>,
}

impl Latencies {
    fn new() -> Latencies {
        Latencies { hist: histogram(), timeline: None }
    }

    /// `load_start`: when the load began (none yet: the timeline skips it).
    fn record(&mut self, load_start: Option<Instant>, at: Instant, d: Duration) {
        record(&mut self.hist, d);
        if let Some(s) = load_start {
            self.timeline.get_or_insert_with(|| crate::report::Timeline::new(s)).record(at, d);
        }
    }
}

// ----- what every thread shares ------------------------------------------------

/// One interaction as the bench has seen it.
#[derive(Default)]
struct Track {
    /// When its RequestSubmit was sent (known at its EventAck).
    sent: Option<Instant>,
    /// When its first EventInvite arrived, if before its EventAck was read.
    invited: Option<Instant>,
    /// Submit to invite recorded.
    measured: bool,
    acked: bool,
    /// The agent it is offered to or handled by, as far as the bench knows.
    holder: Option<u32>,
    /// Stops acknowledged.
    completed: u32,
}

struct Shared {
    tracks: Vec<Mutex<HashMap<Box<str>, Track>>>,
    /// Interactions submitted and not yet stopped.
    open: AtomicI64,
    acked: AtomicU64,
    acked_completed: AtomicU64,
    duplicates: AtomicU64,
    /// Microseconds from `base` to the last stop's EventAck.
    last_completion_us: AtomicU64,
    base: Instant,
    /// When the media servers started submitting.
    load_start: std::sync::OnceLock<Instant>,
    /// Media servers waiting for room under --max-open.
    room: (Mutex<()>, Condvar),
    stop_agents: AtomicBool,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            tracks: (0..TRACK_SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            open: AtomicI64::new(0),
            acked: AtomicU64::new(0),
            acked_completed: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            last_completion_us: AtomicU64::new(0),
            base: Instant::now(),
            load_start: std::sync::OnceLock::new(),
            room: (Mutex::new(()), Condvar::new()),
            stop_agents: AtomicBool::new(false),
        }
    }

    fn with<R>(&self, id: &str, f: impl FnOnce(&mut Track) -> R) -> R {
        // FNV-1a: ids differ in their last characters.
        let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        let mut map = self.tracks[(h % TRACK_SHARDS as u64) as usize].lock().expect("track lock");
        let t = match map.get_mut(id) {
            Some(t) => t,
            None => map.entry(id.into()).or_default(),
        };
        f(t)
    }

    /// A submit's EventAck.
    fn acked(&self, id: &str, sent: Instant, submit_to_invite: &mut Latencies) {
        self.with(id, |t| {
            t.acked = true;
            t.sent = Some(sent);
            if !t.measured {
                if let Some(inv) = t.invited {
                    let d = inv.saturating_duration_since(sent);
                    submit_to_invite.record(self.load_start.get().copied(), Instant::now(), d);
                    t.measured = true;
                }
            }
            if t.completed > 0 {
                self.acked_completed.fetch_add(1, Ordering::Relaxed);
            }
            self.acked.fetch_add(1, Ordering::Relaxed);
        });
    }

    fn invited(&self, id: &str, agent: u32, now: Instant, submit_to_invite: &mut Latencies) {
        self.with(id, |t| {
            if t.completed > 0 || t.holder.is_some_and(|h| h != agent) {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            t.holder = Some(agent);
            if !t.measured {
                match t.sent {
                    Some(sent) => {
                        let d = now.saturating_duration_since(sent);
                        submit_to_invite.record(self.load_start.get().copied(), now, d);
                        t.measured = true;
                    }
                    None => {
                        t.invited.get_or_insert(now);
                    }
                }
            }
        });
    }

    /// `agent` no longer holds `id`.
    fn released(&self, id: &str, agent: u32) {
        self.with(id, |t| {
            if t.holder == Some(agent) {
                t.holder = None;
            }
        });
    }

    /// A stop's EventAck.
    fn completed(&self, id: &str, now: Instant) {
        self.with(id, |t| {
            t.completed += 1;
            t.holder = None;
            if t.completed > 1 {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
            } else if t.acked {
                self.acked_completed.fetch_add(1, Ordering::Relaxed);
            }
        });
        self.last_completion_us.fetch_max(now.duration_since(self.base).as_micros() as u64, Ordering::Relaxed);
        self.open.fetch_sub(1, Ordering::Relaxed);
        let _g = self.room.0.lock().expect("room lock");
        self.room.1.notify_all();
    }

    /// Waits (up to `at_most`) until fewer than `max_open` are open.
    fn wait_for_room(&self, max_open: i64, at_most: Duration) {
        let g = self.room.0.lock().expect("room lock");
        if self.open.load(Ordering::Relaxed) >= max_open {
            let _ = self.room.1.wait_timeout(g, at_most);
        }
    }

    /// Interactions the agents were offered that no media server of this
    /// run acknowledged (a backlog from before the run).
    fn foreign(&self) -> u64 {
        self.tracks.iter().map(|m| m.lock().expect("track lock").values().filter(|t| !t.acked).count() as u64).sum()
    }
}

// ----- media servers -------------------------------------------------------------

struct MediaResult {
    submit_to_invite: Latencies,
    ack: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// The media servers' connections, spread evenly over the server's shards
/// (a submission is owned by the shard of the connection that made it, so
/// which shard a connection lands on decides where the work goes; left to
/// the kernel, four connections on two shards land 4:0 one time in eight,
/// 3:1 half the time). Each new connection submits a probe to the queue
/// `done` (no strategy serves it) and stops it; its id says the shard.
/// Without a `done` queue, or with one shard, the connections are taken
/// as they come.
fn media_connections(a: &CycleArgs, shards: u16) -> Result<Vec<Client>, String> {
    let connect = || connect(a, ClientType::MediaServer, MEDIA_CLIENT).map_err(|e| format!("media server: {e}"));
    let n = a.media_servers;
    let want = |s: usize| n / shards as usize + usize::from(s < n % shards as usize);
    let mut by_shard: Vec<Vec<Client>> = (0..shards).map(|_| Vec::new()).collect();
    let mut spare = Vec::new();
    for _ in 0..n * 16 {
        if shards <= 1 || by_shard.iter().enumerate().all(|(s, v)| v.len() >= want(s)) {
            break;
        }
        let mut c = connect()?;
        let probe = ixn::client::submit_request(&a.tenant, "done", &a.media, 0, ixn_shard::KvList::new());
        let Ok(id) = c.submit(probe) else {
            spare.push(c);
            break;
        };
        let _ = c.stop(&id, Some("probe"));
        let s = ixn_shard::id::owner_of(&id, shards) as usize;
        if by_shard[s].len() < want(s) {
            by_shard[s].push(c);
        } else {
            spare.push(c);
        }
    }
    let mut out: Vec<Client> = by_shard.into_iter().flatten().collect();
    out.extend(spare.into_iter().take(n.saturating_sub(out.len())));
    while out.len() < n {
        out.push(connect()?);
    }
    Ok(out)
}

fn media_server(
    i: usize,
    mut c: Client,
    a: &CycleArgs,
    shared: &Shared,
    deadline: Instant,
    max_open: i64,
) -> Result<MediaResult, String> {
    let mut r = MediaResult { submit_to_invite: Latencies::new(), ack: histogram(), errors: 0, first_error: None };
    let mut inflight: HashMap<u32, Instant> = HashMap::with_capacity(a.window * 2);
    let mut answers = Vec::with_capacity(a.window);
    let interval = (a.rate > 0).then(|| Duration::from_secs_f64(a.media_servers as f64 / a.rate as f64));
    let mut next_send = Instant::now();
    loop {
        let now = Instant::now();
        let sending = now < deadline;
        if sending {
            // After a stall (at --max-open) go on at the rate, no burst.
            if interval.is_some() && next_send + Duration::from_millis(100) < now {
                next_send = now;
            }
            while inflight.len() < a.window
                && shared.open.load(Ordering::Relaxed) < max_open
                && interval.is_none_or(|_| Instant::now() >= next_send)
            {
                let s = submit_request(&a.tenant, &a.queue, &a.media, 0, KvList::new());
                let r = c.queue(&Request::Submit(Box::new(s)));
                shared.open.fetch_add(1, Ordering::Relaxed);
                inflight.insert(r, Instant::now());
                if let Some(iv) = interval {
                    next_send += iv;
                }
            }
            c.flush().map_err(|e| format!("media server {i}: {e}"))?;
        }
        if inflight.is_empty() {
            if !sending {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if shared.open.load(Ordering::Relaxed) >= max_open {
                shared.wait_for_room(max_open, left.min(Duration::from_millis(5)));
            } else {
                std::thread::sleep(next_send.saturating_duration_since(Instant::now()).min(left));
            }
            continue;
        }
        // Every answer already read is taken before the window is filled
        // again, so the submissions that replace them go out in one write
        // (a pipelining media server's way; see `submit` in main.rs).
        c.recv_waiting(&mut answers).map_err(|e| format!("media server {i}: {e}"))?;
        for f in answers.drain(..) {
            let Some(sent) = inflight.remove(&f.ref_id) else {
                return Err(format!("media server {i}: answer for unknown reference id {}", f.ref_id));
            };
            record(&mut r.ack, sent.elapsed());
            match (f.msg_type, error_of(&f)) {
                (msg_type::EVENT_ACK, _) => match f.get_str(attr::INTERACTION_ID) {
                    Some(id) => shared.acked(id, sent, &mut r.submit_to_invite),
                    None => return Err(format!("media server {i}: EventAck without InteractionId")),
                },
                (_, Some(e)) => {
                    shared.open.fetch_sub(1, Ordering::Relaxed);
                    r.errors += 1;
                    r.first_error.get_or_insert_with(|| format!("submit: {e}"));
                }
                (t, None) => return Err(format!("media server {i}: unexpected {}", msg_type::name(t))),
            }
        }
    }
    Ok(r)
}

// ----- agents ----------------------------------------------------------------------

enum Pending {
    Accept { id: Box<str>, invited: Instant },
    Stop { id: Box<str> },
    Logout,
}

/// One agent's desktop connection, non-blocking.
struct Desk {
    agent: u32,
    stream: TcpStream,
    /// The TLS session over `stream` (with `--tls-ca`).
    tls: Option<Box<rustls::ClientConnection>>,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
    wpos: usize,
    next_ref: u32,
    pending: Vec<(u32, Pending)>,
    /// Interactions it is invited to or handles.
    held: Vec<Box<str>>,
    capacity: u16,
    closed: bool,
    logged_out: bool,
    /// Events read during the setup, handled first.
    early: Vec<Frame>,
}

impl Desk {
    fn send(&mut self, req: &Request, p: Pending) {
        let r = self.next_ref;
        self.next_ref = self.next_ref.wrapping_add(1).max(1);
        req.encode(r).encode_into(&mut self.wbuf);
        self.pending.push((r, p));
    }

    fn wants_write(&self) -> bool {
        self.wpos < self.wbuf.len() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Writes what it can. Err: the connection is broken.
    fn flush(&mut self) -> io::Result<()> {
        if let Some(t) = &mut self.tls {
            // The session takes all the plaintext (its buffer is not
            // bounded), then as many records as the socket takes.
            t.writer().write_all(&self.wbuf[self.wpos..])?;
            self.wbuf.clear();
            self.wpos = 0;
            while t.wants_write() {
                match t.write_tls(&mut self.stream) {
                    Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "wrote nothing")),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(());
        }
        while self.wpos < self.wbuf.len() {
            match (&self.stream).write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "wrote nothing")),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
        Ok(())
    }

    /// Reads what has arrived and splits it into frames. Err: the
    /// connection ended or broke.
    fn read(&mut self, scratch: &mut [u8], frames: &mut Vec<Frame>) -> Result<(), String> {
        let mut ended = None;
        loop {
            let got = match &mut self.tls {
                None => (&self.stream).read(scratch),
                Some(t) => read_tls(t, &mut self.stream, scratch),
            };
            match got {
                Ok(0) => {
                    ended = Some("the server closed the connection".to_string());
                    break;
                }
                Ok(n) => {
                    self.rbuf.extend_from_slice(&scratch[..n]);
                    if n < scratch.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    ended = Some(format!("read error: {e}"));
                    break;
                }
            }
        }
        loop {
            match split_frame(&self.rbuf[self.rpos..], ABSOLUTE_MAX_FRAME) {
                Err(e) => return Err(format!("bad frame from the server: {e}")),
                Ok(None) => break,
                Ok(Some((h, body, total))) => {
                    let attrs = decode_body(body).map_err(|e| format!("bad frame body from the server: {}", e.0))?;
                    frames.push(Frame { msg_type: h.msg_type(), ref_id: h.ref_id(), attrs, raw: Vec::new() });
                    self.rpos += total;
                }
            }
        }
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        } else if self.rpos > 64 << 10 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        ended.map_or(Ok(()), Err)
    }
}

#[derive(Default)]
struct AgentCounts {
    invites: u64,
    accepted: u64,
    completed: u64,
    revoked: u64,
    errors: u64,
    first_error: Option<String>,
    capacity_violations: u64,
    logouts_unanswered: u64,
}

struct AgentResult {
    submit_to_invite: Latencies,
    invite_to_accept: Histogram<u64>,
    counts: AgentCounts,
}

/// Connects, logs in and makes ready one agent; returns its desk and the
/// capacity it got.
fn set_up(a: &CycleArgs, k: u32) -> Result<Desk, String> {
    let name = format!("agent{k}");
    let what = |step: &str, e: ixn::client::ClientError| format!("{name}: {step}: {e}");
    let mut c = connect(a, ClientType::AgentDesktop, DESKTOP_CLIENT).map_err(|e| format!("{name}: {e}"))?;
    let login = Request::AgentLogin {
        tenant: a.tenant.clone(),
        agent: name.clone(),
        place: format!("place{k}"),
        media: vec![(a.media.clone(), a.capacity)],
        reason: None,
    };
    c.call(&login).map_err(|e| what("login", e))?;
    let state = c
        .call(&Request::GetAgentState { tenant: a.tenant.clone(), agent: Some(name.clone()) })
        .map_err(|e| what("agent state", e))?;
    let capacity = state
        .lists(attr::AGENT_STATE)
        .first()
        .and_then(|l| l.get("media").and_then(Value::as_list).cloned())
        .and_then(|m| m.get(&a.media).and_then(Value::as_list).and_then(|x| x.get("capacity")).and_then(Value::as_int))
        .ok_or_else(|| format!("{name}: the agent state names no capacity for {}", a.media))?;
    let ready = Request::SetReady {
        tenant: a.tenant.clone(),
        agent: None,
        media: Some(a.media.clone()),
        ready: true,
        reason: None,
    };
    c.call(&ready).map_err(|e| what("ready", e))?;
    let (stream, tls, rest, early) = c.into_session_parts();
    stream.set_nonblocking(true).map_err(|e| format!("{name}: {e}"))?;
    let mut tls = tls;
    if let Some(t) = &mut tls {
        t.set_buffer_limit(None);
    }
    Ok(Desk {
        agent: k,
        stream,
        tls,
        rbuf: rest,
        rpos: 0,
        wbuf: Vec::new(),
        wpos: 0,
        next_ref: 1 << 20,
        pending: Vec::new(),
        held: Vec::new(),
        capacity: capacity as u16,
        closed: false,
        logged_out: false,
        early,
    })
}

/// Plaintext from a TLS session over a non-blocking socket: what the
/// session holds, else records read from the socket and decrypted.
/// `WouldBlock` when nothing is to be had now; `Ok(0)` when the server
/// closed the session.
fn read_tls(t: &mut rustls::ClientConnection, stream: &mut TcpStream, into: &mut [u8]) -> io::Result<usize> {
    loop {
        match t.reader().read(into) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            r => return r,
        }
        if t.read_tls(stream)? == 0 {
            return Ok(0);
        }
        t.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    }
}

struct AgentLoop {
    tenant: String,
    desks: Vec<Desk>,
    shared: Arc<Shared>,
    handle: Duration,
    /// When to stop an accepted interaction: (when, desk, id).
    timers: BinaryHeap<Reverse<(Instant, usize, Box<str>)>>,
    submit_to_invite: Latencies,
    invite_to_accept: Histogram<u64>,
    counts: AgentCounts,
}

impl AgentLoop {
    fn error(&mut self, text: String) {
        self.counts.errors += 1;
        self.counts.first_error.get_or_insert(text);
    }

    fn stop(&mut self, i: usize, id: Box<str>) {
        let d = &mut self.desks[i];
        d.held.retain(|h| *h != id);
        self.shared.released(&id, d.agent);
        let req = Request::StopProcessing { id: id.to_string(), reason: Some("handled".into()) };
        d.send(&req, Pending::Stop { id });
    }

    fn on_frame(&mut self, i: usize, f: Frame, now: Instant) {
        let agent = self.desks[i].agent;
        if f.ref_id == 0 {
            match f.msg_type {
                msg_type::EVENT_INVITE => {
                    let Some(id) = f.get_str(attr::INTERACTION_ID) else {
                        return self.error(format!("agent{agent}: EventInvite without InteractionId"));
                    };
                    let id: Box<str> = id.into();
                    let ticket = f.get_int(attr::TICKET).map(|t| t as u64);
                    self.counts.invites += 1;
                    let d = &mut self.desks[i];
                    if d.held.contains(&id) {
                        self.shared.duplicates.fetch_add(1, Ordering::Relaxed);
                    } else {
                        if d.held.len() >= d.capacity as usize {
                            self.counts.capacity_violations += 1;
                        }
                        d.held.push(id.clone());
                    }
                    self.shared.invited(&id, agent, now, &mut self.submit_to_invite);
                    d.send(&Request::Accept { id: id.to_string(), ticket }, Pending::Accept { id, invited: now });
                }
                msg_type::EVENT_REVOKED => {
                    // The interaction is no longer this desk's (a time-out,
                    // a move or stop by someone else); its own stops get none.
                    let id = f.get_str(attr::INTERACTION_ID).unwrap_or("");
                    let d = &mut self.desks[i];
                    if let Some(pos) = d.held.iter().position(|h| &**h == id) {
                        d.held.swap_remove(pos);
                        self.counts.revoked += 1;
                        self.shared.released(id, agent);
                    }
                }
                msg_type::EVENT_LOGGED_OUT => {
                    self.desks[i].logged_out = true;
                    let reason = f.get_str(attr::REASON).unwrap_or("").to_string();
                    self.error(format!("agent{agent} was logged out by the server: {reason}"));
                }
                _ => {}
            }
            return;
        }
        let d = &mut self.desks[i];
        let Some(pos) = d.pending.iter().position(|(r, _)| *r == f.ref_id) else {
            return self.error(format!("agent{agent}: answer for unknown reference id {}", f.ref_id));
        };
        let (_, p) = d.pending.swap_remove(pos);
        let e = error_of(&f);
        match (p, e) {
            (Pending::Accept { id, invited }, None) => {
                record(&mut self.invite_to_accept, now.saturating_duration_since(invited));
                self.counts.accepted += 1;
                if self.handle.is_zero() {
                    self.stop(i, id);
                } else {
                    self.timers.push(Reverse((now + self.handle, i, id)));
                }
            }
            (Pending::Accept { id, .. }, Some(e)) => {
                d.held.retain(|h| *h != id);
                self.shared.released(&id, agent);
                self.error(format!("agent{agent}: accept {id}: {e}"));
            }
            (Pending::Stop { id }, None) => {
                self.counts.completed += 1;
                self.shared.completed(&id, now);
            }
            (Pending::Stop { id }, Some(e)) => self.error(format!("agent{agent}: stop {id}: {e}")),
            (Pending::Logout, e) => {
                d.logged_out = true;
                if let Some(e) = e.filter(|e| e.code != ErrorCode::AgentNotLoggedIn) {
                    self.error(format!("agent{agent}: logout: {e}"));
                }
            }
        }
    }

    fn closed(&mut self, i: usize, why: String) {
        let d = &mut self.desks[i];
        if d.closed {
            return;
        }
        d.closed = true;
        if !d.logged_out {
            let agent = d.agent;
            self.error(format!("agent{agent}: {why}"));
        }
    }

    fn run(&mut self) -> Result<(), String> {
        let mut scratch = vec![0u8; 64 << 10];
        let mut frames = Vec::new();
        for i in 0..self.desks.len() {
            for f in std::mem::take(&mut self.desks[i].early) {
                self.on_frame(i, f, Instant::now());
            }
        }
        let mut ready = Epoll::new(self.desks.len()).map_err(|e| format!("epoll: {e}"))?;
        // What each desk's socket is watched for now (0: nothing).
        let mut watched = vec![0u32; self.desks.len()];
        let mut logout_deadline: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if logout_deadline.is_none() && self.shared.stop_agents.load(Ordering::Relaxed) {
                let req = Request::AgentLogout {
                    tenant: self.tenant.clone(),
                    agent: None,
                    reason: Some("bench done".into()),
                };
                for d in self.desks.iter_mut().filter(|d| !d.closed && !d.logged_out) {
                    d.send(&req, Pending::Logout);
                }
                logout_deadline = Some(now + LOGOUT_WAIT);
            }
            if let Some(deadline) = logout_deadline {
                let waiting = self.desks.iter().filter(|d| !d.closed && !d.logged_out).count() as u64;
                if waiting == 0 || now >= deadline {
                    self.counts.logouts_unanswered = waiting;
                    return Ok(());
                }
            } else {
                while self.timers.peek().is_some_and(|Reverse((when, _, _))| *when <= now) {
                    let Reverse((_, i, id)) = self.timers.pop().expect("peeked");
                    if !self.desks[i].closed {
                        self.stop(i, id);
                    }
                }
            }
            for i in 0..self.desks.len() {
                if self.desks[i].wants_write() && !self.desks[i].closed {
                    if let Err(e) = self.desks[i].flush() {
                        self.closed(i, format!("write error: {e}"));
                    }
                }
            }
            for (i, d) in self.desks.iter().enumerate() {
                let want = if d.closed { 0 } else { epoll::interest(d.wants_write()) };
                ready.watch(d.stream.as_raw_fd(), i as u64, watched[i], want).map_err(|e| format!("epoll: {e}"))?;
                watched[i] = want;
            }
            let wait = match (logout_deadline, self.timers.peek()) {
                (None, Some(Reverse((when, _, _)))) => when.saturating_duration_since(now),
                _ => Duration::from_millis(50),
            }
            .min(Duration::from_millis(50));
            // Round up: a timer due in 0.3 ms must not spin.
            let ms = wait.as_micros().div_ceil(1000) as libc::c_int;
            for (token, rev) in ready.wait(ms).map_err(|e| format!("epoll: {e}"))? {
                let i = token as usize;
                if self.desks[i].closed {
                    continue;
                }
                if rev & epoll::READABLE != 0 {
                    let read = self.desks[i].read(&mut scratch, &mut frames);
                    let now = Instant::now();
                    for f in frames.drain(..) {
                        self.on_frame(i, f, now);
                    }
                    if let Err(why) = read {
                        self.closed(i, why);
                        continue;
                    }
                }
                if rev & epoll::WRITABLE != 0 {
                    if let Err(e) = self.desks[i].flush() {
                        self.closed(i, format!("write error: {e}"));
                    }
                }
            }
        }
    }
}

/// One agent thread: sets up its agents (K with (K - 1) % threads == t),
/// says so on `ready` with their total capacity, then drives them.
fn agent_thread(
    a: CycleArgs,
    agents: Vec<u32>,
    shared: Arc<Shared>,
    ready: mpsc::Sender<Result<u64, String>>,
) -> Result<AgentResult, String> {
    let mut desks = Vec::with_capacity(agents.len());
    let mut failed = None;
    for k in agents {
        match set_up(&a, k) {
            Ok(d) => desks.push(d),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let capacity = desks.iter().map(|d| d.capacity as u64).sum();
    let _ = ready.send(match &failed {
        None => Ok(capacity),
        Some(e) => Err(e.clone()),
    });
    // After a failed setup the loop still runs, to log out the agents
    // already logged in when the main thread says stop.
    let mut l = AgentLoop {
        tenant: a.tenant.clone(),
        desks,
        shared,
        handle: Duration::from_millis(a.handle_ms),
        timers: BinaryHeap::new(),
        submit_to_invite: Latencies::new(),
        invite_to_accept: histogram(),
        counts: AgentCounts::default(),
    };
    l.run()?;
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(AgentResult { submit_to_invite: l.submit_to_invite, invite_to_accept: l.invite_to_accept, counts: l.counts })
}

// ----- the scenario ----------------------------------------------------------------

pub fn cycle(a: CycleArgs) -> Result<(), String> {
    if a.agents == 0 || a.capacity == 0 || a.media_servers == 0 || a.window == 0 || a.agent_threads == 0 {
        return Err("--agents, --capacity, --media-servers, --window and --agent-threads must be at least 1".into());
    }
    let (mut probe, reg) = registered(&a, ClientType::MediaServer, MEDIA_CLIENT)?;
    let server_shards = reg.get_int(attr::SHARD_COUNT);
    if let Ok(queues) = probe.queue_depth_in(&a.tenant) {
        let before = queues
            .iter()
            .find(|q| q.get("queue").and_then(Value::as_str) == Some(a.queue.as_str()))
            .and_then(|q| q.get("interactions").and_then(Value::as_int))
            .unwrap_or(0);
        if before > 0 {
            eprintln!(
                "ixn-bench: note: queue {} already holds {before} interaction(s); the agents take them too (counted as `foreign`)",
                a.queue
            );
        }
    }

    let shared = Arc::new(Shared::new());
    let threads = a.agent_threads.min(a.agents as usize);
    let setup_start = Instant::now();
    let (tx, rx) = mpsc::channel();
    let agent_threads: Vec<_> = (0..threads)
        .map(|t| {
            let agents: Vec<u32> = (1..=a.agents).filter(|k| (*k as usize - 1) % threads == t).collect();
            let (a, shared, tx) = (a.clone(), shared.clone(), tx.clone());
            std::thread::Builder::new()
                .name(format!("agents-{t}"))
                .spawn(move || agent_thread(a, agents, shared, tx))
                .expect("spawn an agent thread")
        })
        .collect();
    drop(tx);
    let mut capacity_total = 0u64;
    let mut setup_error = None;
    for _ in 0..threads {
        match rx.recv() {
            Ok(Ok(c)) => capacity_total += c,
            Ok(Err(e)) => {
                setup_error.get_or_insert(e);
            }
            Err(_) => {
                setup_error.get_or_insert("an agent thread ended during the setup".into());
            }
        }
    }
    if let Some(e) = setup_error {
        shared.stop_agents.store(true, Ordering::Relaxed);
        for t in agent_threads {
            let _ = t.join();
        }
        return Err(format!("agent setup failed: {e}"));
    }
    let setup_s = setup_start.elapsed().as_secs_f64();
    if capacity_total < a.agents as u64 * a.capacity as u64 {
        eprintln!(
            "ixn-bench: note: the agents got a total {} capacity of {capacity_total}, less than {} x {} (the configured capacity caps it)",
            a.media, a.agents, a.capacity
        );
    }
    let max_open = a.max_open.unwrap_or(capacity_total).max(1) as i64;

    let cpu0 = (a.server_pid.map(crate::peer::proc_cpu_s).transpose()?, crate::peer::own_cpu_s());
    let start = Instant::now();
    let _ = shared.load_start.set(start);
    let deadline = start + Duration::from_secs(a.duration);
    let progress = {
        let shared = shared.clone();
        crate::report::Progress::start("cycles completed", Duration::from_secs(a.duration), move || {
            shared.acked_completed.load(Ordering::Relaxed)
        })
    };
    let media: Vec<_> = media_connections(&a, server_shards.unwrap_or(1).max(1) as u16)?
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let (a, shared) = (a.clone(), shared.clone());
            std::thread::spawn(move || media_server(i, c, &a, &shared, deadline, max_open))
        })
        .collect();
    let mut submit_to_invite = histogram();
    let mut timeline = crate::report::Timeline::new(start);
    let mut ack = histogram();
    let (mut errors, mut first_error) = (0u64, None::<String>);
    let mut media_failure = None;
    for t in media {
        match t.join().map_err(|_| "a media-server thread panicked".to_string()).and_then(|r| r) {
            Ok(r) => {
                submit_to_invite.add(&r.submit_to_invite.hist).expect("same bounds");
                r.submit_to_invite.timeline.iter().for_each(|t| timeline.merge(t));
                ack.add(&r.ack).expect("same bounds");
                errors += r.errors;
                first_error = first_error.or(r.first_error);
            }
            Err(e) => {
                media_failure.get_or_insert(e);
            }
        }
    }
    let load_end = Instant::now();
    // Drain: every acknowledged submission completed, or time up.
    let drain_end = load_end + Duration::from_secs(a.drain);
    while shared.acked_completed.load(Ordering::Relaxed) < shared.acked.load(Ordering::Relaxed)
        && Instant::now() < drain_end
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let per_second = progress.finish();
    shared.stop_agents.store(true, Ordering::Relaxed);
    let mut invite_to_accept = histogram();
    let mut counts = AgentCounts::default();
    let mut agent_failure = None;
    for t in agent_threads {
        match t.join().map_err(|_| "an agent thread panicked".to_string()).and_then(|r| r) {
            Ok(r) => {
                submit_to_invite.add(&r.submit_to_invite.hist).expect("same bounds");
                r.submit_to_invite.timeline.iter().for_each(|t| timeline.merge(t));
                invite_to_accept.add(&r.invite_to_accept).expect("same bounds");
                let c = r.counts;
                counts.invites += c.invites;
                counts.accepted += c.accepted;
                counts.completed += c.completed;
                counts.revoked += c.revoked;
                counts.errors += c.errors;
                counts.capacity_violations += c.capacity_violations;
                counts.logouts_unanswered += c.logouts_unanswered;
                first_error = first_error.or(c.first_error);
            }
            Err(e) => {
                agent_failure.get_or_insert(e);
            }
        }
    }
    if let Some(e) = media_failure.or(agent_failure) {
        return Err(e);
    }
    errors += counts.errors;
    let server_cpu_s = match (a.server_pid, cpu0.0) {
        (Some(pid), Some(c0)) => Some(crate::peer::proc_cpu_s(pid)? - c0),
        _ => None,
    };
    let bench_cpu_s = crate::peer::own_cpu_s() - cpu0.1;

    let acked = shared.acked.load(Ordering::Relaxed);
    let completed = shared.acked_completed.load(Ordering::Relaxed);
    let lost = acked - completed.min(acked);
    let duplicates = shared.duplicates.load(Ordering::Relaxed);
    let foreign = shared.foreign();
    let last = shared.last_completion_us.load(Ordering::Relaxed);
    let end = if last > 0 { shared.base + Duration::from_micros(last) } else { load_end };
    let elapsed = end.saturating_duration_since(start).as_secs_f64().max(1e-6);
    let cycles = completed as f64 / elapsed;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p);
    let out = json!({
        "scenario": "cycle",
        "target": a.server,
        "duration_s": elapsed,
        "load_s": a.duration,
        "clients": a.agents as usize + a.media_servers,
        "agents": a.agents,
        "capacity": a.capacity,
        "capacity_total": capacity_total,
        "media_servers": a.media_servers,
        "window": a.window,
        "max_open": max_open,
        "rate_target": a.rate,
        "handle_ms": a.handle_ms,
        "agent_threads": threads,
        "setup_s": setup_s,
        "server_cpu_s": server_cpu_s,
        "bench_cpu_s": bench_cpu_s,
        "submitted": acked,
        "completed": completed,
        "cycles_per_sec": cycles,
        "p50_us": q(&submit_to_invite, 0.5),
        "p99_us": q(&submit_to_invite, 0.99),
        "p999_us": q(&submit_to_invite, 0.999),
        "max_us": submit_to_invite.max(),
        "invite_to_accept_p50_us": q(&invite_to_accept, 0.5),
        "invite_to_accept_p99_us": q(&invite_to_accept, 0.99),
        "invite_to_accept_p999_us": q(&invite_to_accept, 0.999),
        "invite_to_accept_max_us": invite_to_accept.max(),
        "submit_ack_p50_us": q(&ack, 0.5),
        "submit_ack_p99_us": q(&ack, 0.99),
        "invites": counts.invites,
        "revoked": counts.revoked,
        "errors": errors,
        "first_error": first_error,
        "lost": lost,
        "duplicates": duplicates,
        "capacity_violations": counts.capacity_violations,
        "foreign": foreign,
        "logouts_unanswered": counts.logouts_unanswered,
        "server_shards": server_shards,
        "cores": cores,
    });
    let mut out = out;
    out["tls"] = serde_json::Value::Bool(a.tls_ca.is_some());
    out["timeline"] = serde_json::Value::Array(timeline.to_json(&per_second));
    println!(
        "cycle: {completed} cycles in {elapsed:.1} s = {cycles:.0}/s ({} agents x {}, {} media servers, handle {} ms, setup {setup_s:.1} s); \
         submit->invite p50 {} us, p99 {} us, p99.9 {} us; invite->accept-ack p50 {} us, p99 {} us, p99.9 {} us; \
         errors {errors}; lost {lost}; duplicates {duplicates}; capacity violations {}",
        a.agents,
        a.capacity,
        a.media_servers,
        a.handle_ms,
        q(&submit_to_invite, 0.5),
        q(&submit_to_invite, 0.99),
        q(&submit_to_invite, 0.999),
        q(&invite_to_accept, 0.5),
        q(&invite_to_accept, 0.99),
        q(&invite_to_accept, 0.999),
        counts.capacity_violations,
    );
    if let Some(e) = &first_error {
        println!("first error: {e}");
    }
    if lost > 0 || duplicates > 0 || counts.capacity_violations > 0 {
        eprintln!(
            "ixn-bench: invariant broken: {lost} acknowledged interaction(s) never completed, {duplicates} duplicate(s), {} capacity violation(s)",
            counts.capacity_violations
        );
    }
    if let Some(path) = &a.json {
        crate::report::write(path, "ixn-bench cycle", &out, "cycles completed", "submit to EventInvite")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submit_to_invite_is_measured_whichever_comes_first() {
        let s = Shared::new();
        let mut h = Latencies::new();
        let sent = Instant::now();
        // Ack first, then the invitation.
        s.acked("A", sent, &mut h);
        s.invited("A", 1, sent + Duration::from_millis(2), &mut h);
        // The invitation first (its ack not read yet).
        s.invited("B", 2, sent + Duration::from_millis(3), &mut h);
        s.acked("B", sent, &mut h);
        assert_eq!(h.hist.len(), 2);
        assert!(h.hist.min() >= 1900 && h.hist.max() <= 3100, "{} {}", h.hist.min(), h.hist.max());
        assert_eq!(s.duplicates.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn completions_and_duplicates_are_counted() {
        let s = Shared::new();
        let mut h = Latencies::new();
        let t = Instant::now();
        s.open.store(3, Ordering::Relaxed);
        // Completed before its ack was read: still one acked completion.
        s.invited("A", 1, t, &mut h);
        s.released("A", 1);
        s.completed("A", t);
        s.acked("A", t, &mut h);
        // Offered to a second agent while the first holds it.
        s.acked("B", t, &mut h);
        s.invited("B", 1, t, &mut h);
        s.invited("B", 2, t, &mut h);
        assert_eq!(s.duplicates.load(Ordering::Relaxed), 1);
        // Revoked from agent 2, offered to agent 1 again: fine.
        s.released("B", 2);
        s.invited("B", 1, t, &mut h);
        assert_eq!(s.duplicates.load(Ordering::Relaxed), 1);
        s.completed("B", t);
        // Completed twice, and invited after its completion.
        s.completed("B", t);
        s.invited("B", 3, t, &mut h);
        assert_eq!(s.duplicates.load(Ordering::Relaxed), 3);
        // Acked, never completed: lost.
        s.acked("C", t, &mut h);
        assert_eq!(s.acked.load(Ordering::Relaxed), 3);
        assert_eq!(s.acked_completed.load(Ordering::Relaxed), 2);
        assert_eq!(s.foreign(), 0);
        s.invited("D", 1, t, &mut h);
        assert_eq!(s.foreign(), 1);
    }
}
