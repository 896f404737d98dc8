//! `ixn-bench fuzz`: a mutation fuzzer over real TCP connections.
//!
//! It starts its own `ixn-server` (`setup.rs` writes a configuration that
//! reaches much of it) and drives many connections of every client type at
//! once from one thread: media servers, agent desktops, routing engines,
//! reporting engines, proxies and operators. Each sends valid requests of
//! every message type chosen from what it has seen (`gen.rs`): interaction
//! ids from answers and events, client-given ids from a small pool,
//! pipelined requests about one id (submit, stop, submit again without
//! waiting), logins, answers to invitations, holds, transfers, leaves,
//! pulls, deliveries, finds, snapshots, subscriptions. A fraction of the
//! connections mutate a fraction of their frames (`mutate.rs`): bit flips,
//! attributes of the wrong type, duplicated or unknown attributes,
//! truncated bodies, oversize values, unknown message types, huge or tiny
//! lengths, bad versions, garbage. Connections come and go: closed with FIN
//! or with RST (SO_LINGER 0), sometimes in the middle of a frame; some
//! flood the server with pipelined requests, some stop reading, and bursts
//! of short-lived connections pass the connection limit. The population is
//! kept near [`gen::LIVE_TARGET`] live interactions, so a long run stays in
//! one regime.
//!
//! Oracles, checked all along:
//!
//! - (a) the server process does not exit, its log shows no panic, and
//!   every shard answers: control connections, at least one on each shard
//!   (found by the shard that owns the id of a probe submission), ping
//!   every half second and now and then ask for the queue depths (which
//!   cross every shard); each must be answered within the deadline;
//! - (b) on every connection whose byte stream the fuzzer did not break,
//!   every request gets exactly one answer, by reference id, within the
//!   deadline, of a type the request allows; an EventError with reference
//!   id 0 (a framing error) on such a connection is a failure, and so is
//!   the server closing it (unless the log shows why: its output buffer,
//!   the connection limit, the write timeout or its heartbeat timeout);
//! - (c) every EventError has an int ErrorCode and a non-empty ErrorText,
//!   and none has code 99 (Internal);
//! - after a fatal frame (a length or version the server must refuse) the
//!   server sends that EventError and closes the connection by the
//!   deadline;
//! - at the end, the answers still due arrive, and SIGTERM stops the server
//!   with status 0.
//!
//! On a failure it prints the seed, the reason and the server log's tail,
//! and writes the last frames sent and received (with the bytes of each
//! frame sent) to `fuzz-frames.txt` in its directory, which it keeps. The
//! seed fixes the configuration and every random stream; the fuzzer also
//! reacts to the server's answers and their timing, so a replay with
//! `--seed` usually, not always, meets the same fault.

#[path = "fuzz/conn.rs"]
mod conn;
#[path = "fuzz/gen.rs"]
mod gen;
#[path = "fuzz/history.rs"]
mod history;
#[path = "fuzz/mutate.rs"]
mod mutate;
#[path = "fuzz/rng.rs"]
mod rng;
#[path = "fuzz/server.rs"]
mod server;
#[path = "fuzz/setup.rs"]
mod setup;

use std::collections::{BTreeMap, HashSet};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ixn::client::Client;
use ixn_shard::proto::frame::{Frame, HEADER_LEN};
use ixn_shard::proto::{attr, msg_type, ErrorCode, Request};

use conn::{answers_of, Conn, Pending, Stream};
use gen::{Follow, Planned, Role, Seat, World};
use history::History;
use mutate::Effect;
use rng::Rng;
use server::ServerProcess;

#[derive(clap::Args, Debug, Clone)]
pub struct FuzzArgs {
    /// How long to fuzz, in minutes (fractions allowed: 0.1 is 6 s).
    #[arg(long)]
    minutes: f64,
    /// The seed of every random choice; default: a fresh one (printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Shards (cores 0..N) the server runs.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// The ixn-server binary; default: the one next to ixn-bench.
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Keep the server's directory (configuration, database, log, frames)
    /// here; default: a temporary directory, removed after a passing run.
    #[arg(long)]
    keep_dir: Option<PathBuf>,
    /// Fuzzing connections open at once (the control connections aside).
    #[arg(long, default_value_t = 24)]
    connections: usize,
    /// Milliseconds a request may wait for its answer.
    #[arg(long, default_value_t = 10_000)]
    deadline_ms: u64,
    /// The server's log filter (IXN_LOG).
    #[arg(long, default_value = "warn")]
    log_filter: String,
    /// Submit with generated ids only (no client-given ids), to get past a
    /// fault of client-given ids while it is being fixed.
    #[arg(long)]
    no_client_ids: bool,
}

/// What a run is given.
#[derive(Clone, Debug)]
pub struct Options {
    pub duration: Duration,
    pub seed: u64,
    pub shards: usize,
    pub server_bin: PathBuf,
    pub keep_dir: Option<PathBuf>,
    pub connections: usize,
    pub deadline: Duration,
    pub log_filter: String,
    /// Whether submissions may carry client-given ids.
    pub client_ids: bool,
}

impl Options {
    /// Defaults for a run of `duration` on `shards` shards.
    pub fn new(server_bin: PathBuf, seed: u64, shards: usize, duration: Duration) -> Options {
        Options {
            duration,
            seed,
            shards,
            server_bin,
            keep_dir: None,
            connections: 24,
            deadline: Duration::from_secs(10),
            log_filter: "warn".into(),
            client_ids: true,
        }
    }
}

/// A seed from the clock and the process id.
pub fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let mut r = Rng::new(nanos as u64 ^ ((std::process::id() as u64) << 32));
    r.next_u64() % 1_000_000_000
}

/// `ixn-bench fuzz`.
pub fn fuzz(a: FuzzArgs) -> Result<(), String> {
    if !(a.minutes > 0.0 && a.minutes.is_finite()) {
        return Err("--minutes must be more than 0".into());
    }
    if a.shards == 0 || a.connections == 0 {
        return Err("--shards and --connections must be at least 1".into());
    }
    let server_bin = match a.server_bin {
        Some(p) => p,
        None => std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("ixn-server")))
            .filter(|p| p.exists())
            .ok_or("no ixn-server next to ixn-bench: give --server-bin")?,
    };
    let mut o = Options::new(
        server_bin,
        a.seed.unwrap_or_else(fresh_seed),
        a.shards,
        Duration::from_secs_f64(a.minutes * 60.0),
    );
    o.keep_dir = a.keep_dir;
    o.connections = a.connections;
    o.deadline = Duration::from_millis(a.deadline_ms);
    o.log_filter = a.log_filter;
    o.client_ids = !a.no_client_ids;
    match run(&o) {
        Ok(s) => {
            println!("{s}");
            Ok(())
        }
        Err(f) => {
            eprintln!("{f}");
            Err(format!("fuzz failed; replay with --seed {} --shards {}", o.seed, o.shards))
        }
    }
}

/// What a passing run did.
pub struct Summary {
    pub seed: u64,
    pub shards: usize,
    pub elapsed: Duration,
    pub stats: Stats,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.stats;
        writeln!(
            f,
            "fuzz passed: seed {} on {} shard(s), {:.1} s: {} connections ({} reset, {} short-lived), {} requests sent ({} mutated: {} framed, {} fatal, {} breaking the stream), {} answers, {} unsolicited events ({} for sessions), {} floods",
            self.seed,
            self.shards,
            self.elapsed.as_secs_f64(),
            s.connections,
            s.resets,
            s.ghosts,
            s.sent,
            s.mutated_framed + s.mutated_fatal + s.mutated_desync,
            s.mutated_framed,
            s.mutated_fatal,
            s.mutated_desync,
            s.answers,
            s.events,
            s.session_events,
            s.floods
        )?;
        writeln!(
            f,
            "  submissions acknowledged {}, invitations {}, accepts acknowledged {}, pulled {}, fatal closes seen {}, connections the server dropped for a logged reason {}; drain {:.1} s, stop {:.1} s",
            s.submitted,
            s.invites,
            s.accepted,
            s.pulled,
            s.fatal_closes,
            s.excused_closes,
            s.drain.as_secs_f64(),
            s.stop.as_secs_f64()
        )?;
        let codes: Vec<String> = s.errors.iter().map(|(c, n)| format!("{c}: {n}")).collect();
        write!(f, "  EventError by code: {}", codes.join(", "))
    }
}

/// Why a run failed, with what it takes to look into it.
pub struct Failure {
    pub seed: u64,
    pub shards: usize,
    pub elapsed: Duration,
    pub reason: String,
    pub log_tail: String,
    pub frames_file: Option<PathBuf>,
    pub dir: PathBuf,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "FUZZ FAILURE after {:.1} s, seed {} on {} shard(s)",
            self.elapsed.as_secs_f64(),
            self.seed,
            self.shards
        )?;
        writeln!(f, "reason: {}", self.reason)?;
        writeln!(f, "replay: ixn-bench fuzz --seed {} --shards {} --minutes M", self.seed, self.shards)?;
        if let Some(p) = &self.frames_file {
            writeln!(f, "last frames sent and received: {}", p.display())?;
        }
        writeln!(f, "server directory (configuration, log, database): {}", self.dir.display())?;
        write!(f, "----- server log, last lines -----\n{}\n----- end of server log -----", self.log_tail)
    }
}

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

#[derive(Default)]
pub struct Stats {
    pub connections: u64,
    pub resets: u64,
    pub ghosts: u64,
    pub sent: u64,
    pub mutated_framed: u64,
    pub mutated_fatal: u64,
    pub mutated_desync: u64,
    pub answers: u64,
    pub events: u64,
    /// Unsolicited events for a session other than a connection's own.
    pub session_events: u64,
    pub floods: u64,
    pub submitted: u64,
    pub invites: u64,
    pub accepted: u64,
    pub pulled: u64,
    pub fatal_closes: u64,
    pub excused_closes: u64,
    pub errors: BTreeMap<i64, u64>,
    /// Time the answers still due took to arrive at the end.
    pub drain: Duration,
    /// Time the server took to stop on SIGTERM.
    pub stop: Duration,
}

/// A failure found while running: why, and on which connection.
struct Fail {
    reason: String,
    conn: Option<u64>,
}

fn fail<T>(conn: Option<u64>, reason: String) -> Result<T, Fail> {
    Err(Fail { reason, conn })
}

/// Runs the fuzzer against a server it starts; the server is stopped (or
/// killed) when it returns.
pub fn run(o: &Options) -> Result<Summary, Box<Failure>> {
    let dir = match &o.keep_dir {
        Some(d) => d.clone(),
        None => {
            static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::env::temp_dir().join(format!("ixn-fuzz-{}-{}-{}-{n}", o.seed, o.shards, std::process::id()))
        }
    };
    let early = |reason: String| {
        Box::new(Failure {
            seed: o.seed,
            shards: o.shards,
            elapsed: Duration::ZERO,
            reason,
            log_tail: std::fs::read_to_string(dir.join("server.log")).unwrap_or_default(),
            frames_file: None,
            dir: dir.clone(),
        })
    };
    let _ = std::fs::remove_dir_all(dir.join("data"));
    std::fs::create_dir_all(&dir).map_err(|e| early(format!("cannot create {}: {e}", dir.display())))?;
    let mut rng = Rng::new(o.seed);
    let variant = setup::Variant::draw(&mut rng);
    let config = dir.join("ixn.toml");
    std::fs::write(&config, setup::config_text(&dir.join("data"), o.shards, &variant))
        .map_err(|e| early(format!("cannot write {}: {e}", config.display())))?;
    eprintln!(
        "fuzz: seed {} on {} shard(s) for {:.1} s, {} connections; {variant}; server {}",
        o.seed,
        o.shards,
        o.duration.as_secs_f64(),
        o.connections,
        o.server_bin.display()
    );
    let server = ServerProcess::start(&o.server_bin, &config, &o.log_filter).map_err(early)?;
    let mut f = Fuzzer::new(o, rng, server);
    let outcome = f.run();
    let elapsed = f.start.elapsed();
    match outcome {
        Ok(()) => {
            if o.keep_dir.is_none() {
                let _ = std::fs::remove_dir_all(&dir);
            }
            Ok(Summary { seed: o.seed, shards: o.shards, elapsed, stats: f.stats })
        }
        Err(fl) => {
            f.server.kill();
            let frames = dir.join("fuzz-frames.txt");
            let header = format!(
                "# ixn-bench fuzz failure\n# seed {} on {} shard(s), after {:.3} s\n# {variant}\n# reason: {}\n# failing connection: {}",
                o.seed,
                o.shards,
                elapsed.as_secs_f64(),
                fl.reason,
                fl.conn.map(|c| format!("c{c}")).unwrap_or_else(|| "none in particular".into())
            );
            let frames_file = f.history.write(&frames, &header, fl.conn).ok().map(|_| frames);
            Err(Box::new(Failure {
                seed: o.seed,
                shards: o.shards,
                elapsed,
                reason: fl.reason,
                log_tail: f.server.log_tail(60),
                frames_file,
                dir,
            }))
        }
    }
}

/// A connection that only checks its shard answers.
struct Control {
    conn: Conn,
    shard: u16,
    next_ping: Instant,
}

/// A short-lived raw connection: part of a flood of connections, or a
/// frame begun and never finished.
struct Ghost {
    stream: TcpStream,
    close_at: Instant,
    reset: bool,
}

struct Fuzzer<'o> {
    o: &'o Options,
    rng: Rng,
    start: Instant,
    server: ServerProcess,
    /// The server's address, parsed.
    addr: std::net::SocketAddr,
    world: World,
    history: History,
    stats: Stats,
    slots: Vec<Option<Conn>>,
    controls: Vec<Control>,
    ghosts: Vec<Ghost>,
    serial: u64,
    /// Peer ports the server's log shows it dropped for a reason the
    /// fuzzer accepts (output buffer, connection limit).
    excused: HashSet<u16>,
    /// Connections the server closed although their stream was whole:
    /// (serial, port, when, what was waiting); a failure unless the log
    /// excuses them soon.
    suspects: Vec<(u64, u16, Instant, String)>,
    next_watch: Instant,
    next_ghosts: Instant,
    /// No connect before this (after one timed out).
    connect_after: Instant,
    /// When a control connection last got an answer: tells a lost answer
    /// (the shards answer meanwhile) from a stalled server.
    last_control_answer: Instant,
}

/// How often the process and the log are looked at.
const WATCH_EVERY: Duration = Duration::from_millis(200);
/// How often each control connection pings.
const PING_EVERY: Duration = Duration::from_millis(500);
/// How long the log may take to show why the server closed a connection.
const EXCUSE_GRACE: Duration = Duration::from_secs(2);
/// A connect that takes longer is given up (a full accept queue drops the
/// SYN and the kernel retries a second later), and no connect is tried for
/// `CONNECT_BACKOFF`, so that the loop and its oracles go on.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(50);
const CONNECT_BACKOFF: Duration = Duration::from_millis(200);
/// Bytes a connection may have unsent before it waits.
const MAX_UNSENT: usize = 256 << 10;

impl<'o> Fuzzer<'o> {
    fn new(o: &'o Options, rng: Rng, server: ServerProcess) -> Fuzzer<'o> {
        let now = Instant::now();
        Fuzzer {
            o,
            rng,
            start: now,
            addr: server.addr.parse().expect("the server prints its address as IP:port"),
            server,
            world: World::new(o.client_ids),
            history: History::default(),
            stats: Stats::default(),
            slots: (0..o.connections).map(|_| None).collect(),
            controls: Vec::new(),
            ghosts: Vec::new(),
            serial: 0,
            excused: HashSet::new(),
            suspects: Vec::new(),
            next_watch: now,
            next_ghosts: now + Duration::from_millis(500),
            connect_after: now,
            last_control_answer: now,
        }
    }

    fn at(&self) -> Duration {
        self.start.elapsed()
    }

    fn run(&mut self) -> Result<(), Fail> {
        self.open_controls()?;
        let end = Instant::now() + self.o.duration;
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            self.fill_slots(now)?;
            self.act(now);
            self.churn_ghosts(now);
            self.io_round(Duration::from_millis(5))?;
            self.check_deadlines(Instant::now())?;
            self.ping_controls(Instant::now());
            self.watch(Instant::now())?;
        }
        self.finish()
    }

    // ----- control connections (oracle a) ----------------------------------

    /// Opens operator connections until each shard has one, learning each
    /// one's shard from the id of a probe submission (a submission stays on
    /// its connection's shard).
    fn open_controls(&mut self) -> Result<(), Fail> {
        let shards = self.o.shards as u16;
        let mut have = vec![0usize; shards as usize];
        for _ in 0..64 * shards as usize {
            if have.iter().all(|n| *n >= 1) {
                break;
            }
            let (name, password) = Role::Control.client();
            let mut c =
                Client::connect_as(self.server.addr.as_str(), Role::Control.client_type(), name, Some(password))
                    .or_else(|e| fail(None, format!("a control connection failed to register: {e}")))?;
            let probe = ixn::client::submit_request("default", setup::PROBE_QUEUE, "chat", 0, Default::default());
            let id = c.submit(probe).or_else(|e| fail(None, format!("a control probe submission failed: {e}")))?;
            let _ = c.stop(&id, Some("probe"));
            let shard = ixn_shard::id::owner_of(&id, shards);
            if have[shard as usize] >= 1 {
                continue;
            }
            have[shard as usize] += 1;
            let (stream, rest, _) = c.into_parts();
            self.serial += 1;
            let conn = Conn::adopt(self.serial, Role::Control, stream, rest, self.rng.fork(), Instant::now())
                .or_else(|e| fail(None, format!("control connection: {e}")))?;
            self.history.note(
                self.at(),
                conn.serial,
                format!("control connection on shard {shard}, port {}", conn.port),
            );
            self.controls.push(Control { conn, shard, next_ping: Instant::now() });
        }
        if have.contains(&0) {
            return fail(None, format!("64 connections per shard all landed on other shards: {have:?}"));
        }
        Ok(())
    }

    /// Each control connection pings every half second (a ping answers from
    /// the connection's own shard) and, every other second or so, asks for
    /// the queue depths (which go through every shard); one of each may be
    /// in flight, so a shard that stops answering is told from cross-shard
    /// work that stops.
    fn ping_controls(&mut self, now: Instant) {
        for c in &mut self.controls {
            if now < c.next_ping {
                continue;
            }
            c.next_ping = now + PING_EVERY;
            let waiting = |name: &str| c.conn.pending.values().any(|p| p.name == name);
            let mut requests = Vec::new();
            if !waiting("RequestPing") {
                requests.push(Request::Ping);
            }
            if !waiting("RequestGetQueueDepth") && c.conn.rng.chance(0.25) {
                requests.push(Request::GetQueueDepth { tenant: "default".into() });
            }
            for request in requests {
                let r = c.conn.take_ref();
                let frame = request.encode(r);
                let bytes = frame.encode();
                self.history.sent(self.start.elapsed(), c.conn.serial, &frame, None, &bytes);
                let end = c.conn.send(&bytes);
                let expect = Some(answers_of(frame.msg_type));
                let pending =
                    Pending { sent_at: None, end, name: request.name(), expect, follow: Follow::Nothing, session: 0 };
                c.conn.pending.insert(r, pending);
            }
        }
    }

    // ----- fuzzing connections ---------------------------------------------

    /// Replaces closed or expired connections with new ones.
    fn fill_slots(&mut self, now: Instant) -> Result<(), Fail> {
        for i in 0..self.slots.len() {
            let expired = match &self.slots[i] {
                None => true,
                Some(c) => now >= c.ends_at || (c.eof && !c.checked()),
            };
            if !expired {
                continue;
            }
            if let Some(c) = self.slots[i].take() {
                self.close(c);
            }
            // Spread the openings: at most a few per round.
            if self.rng.chance(0.5) {
                self.slots[i] = self.open(now);
            }
        }
        Ok(())
    }

    /// Closes a connection the way its generator draws: FIN, RST, or RST in
    /// the middle of a frame. One the server closed is just dropped.
    fn close(&mut self, mut c: Conn) {
        if c.eof {
            return;
        }
        let at = self.at();
        match c.rng.below(4) {
            0 => {
                self.history.note(at, c.serial, "close (FIN)".into());
                c.close_gracefully();
            }
            1 => {
                // Half a frame, then a reset.
                let bytes = Request::Ping.encode(c.take_ref()).encode();
                let cut = c.rng.range(1, bytes.len() as u64 - 1) as usize;
                c.send(&bytes[..cut]);
                c.write_some();
                self.history.note(at, c.serial, format!("reset after {cut} bytes of a frame"));
                self.stats.resets += 1;
                c.close_with_reset();
            }
            _ => {
                self.history.note(at, c.serial, format!("reset with {} requests in flight", c.pending.len()));
                self.stats.resets += 1;
                c.close_with_reset();
            }
        }
    }

    /// A new connection to the server, unless connecting is backing off.
    fn connect(&mut self, now: Instant) -> Option<TcpStream> {
        if now < self.connect_after {
            return None;
        }
        match TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT) {
            Ok(s) => Some(s),
            Err(e) => {
                self.history.note(self.at(), 0, format!("connect failed: {e}"));
                self.connect_after = Instant::now() + CONNECT_BACKOFF;
                None
            }
        }
    }

    /// Opens a fuzzing connection and queues its registration.
    fn open(&mut self, now: Instant) -> Option<Conn> {
        let stream = self.connect(now)?;
        let role = Role::FUZZING[self.rng.weighted(&[5, 5, 3, 2, 1, 2])];
        self.serial += 1;
        let mut c = Conn::new(self.serial, role, stream, self.rng.fork(), now).ok()?;
        self.stats.connections += 1;
        let r = &mut c.rng;
        c.window = *r.pick(&[1, 2, 4, 4, 8, 16]);
        c.mutation_rate = if r.chance(0.5) { 0.0 } else { *r.pick(&[0.05, 0.1, 0.2, 0.4]) };
        c.ends_at = now + Duration::from_millis(r.range(500, 15_000));
        c.trickle = r.chance(0.05).then(|| r.range(1, 7) as usize);
        // Heartbeats (protocol 6.8): mostly a valid timeout, kept; some
        // connections then go silent, and a few ask for a refused value.
        if r.chance(0.15) {
            c.heartbeat_ms =
                Some(if r.chance(0.9) { r.range(1000, 3000) as i64 } else { *r.pick(&[5, -1, 86_400_001]) });
            c.keeps_heartbeat = r.chance(0.7);
        }
        self.history.note(
            self.at(),
            c.serial,
            format!(
                "open {role:?} port {} window {} mutation rate {} trickle {:?} heartbeat {:?} kept {}",
                c.port, c.window, c.mutation_rate, c.trickle, c.heartbeat_ms, c.keeps_heartbeat
            ),
        );
        // The opening: requests before registering (20), a wrong password
        // (22), a second registration (21).
        let mut opening = Vec::new();
        if c.rng.chance(0.08) {
            opening.push(Planned { request: Request::Ping, follow: Follow::Nothing });
        }
        if c.rng.chance(0.05) {
            opening.push(gen::register(&mut c.rng, role, true));
        }
        opening.push(gen::register(&mut c.rng, role, false));
        if c.rng.chance(0.03) {
            opening.push(gen::register(&mut c.rng, role, false));
        }
        for p in opening {
            self.send_planned(&mut c, p, now, false);
        }
        c.registered = true;
        Some(c)
    }

    /// Lets each connection whose turn it is send its next requests.
    fn act(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            let Some(mut c) = self.slots[i].take() else { continue };
            self.act_one(&mut c, now);
            self.slots[i] = Some(c);
        }
    }

    fn act_one(&mut self, c: &mut Conn, now: Instant) {
        if c.eof || c.deaf || matches!(c.state, Stream::Doomed { .. }) || c.unsent() > MAX_UNSENT {
            return;
        }
        for p in std::mem::take(&mut c.reactions) {
            self.send_planned(c, p, now, true);
        }
        if !c.keeps_heartbeat {
            return;
        }
        if let Some(ms) = c.heartbeat_ms.filter(|ms| *ms > 0) {
            // The client's duty: something at least every third of the timeout.
            if now.saturating_duration_since(c.last_sent) >= Duration::from_millis(ms as u64 / 3) {
                self.send_planned(c, Planned { request: Request::Ping, follow: Follow::Nothing }, now, false);
            }
        }
        if now < c.next_action || c.pending.len() >= c.window {
            return;
        }
        c.next_action = now + Duration::from_millis(if c.rng.chance(0.3) { 0 } else { c.rng.range(1, 40) });
        match c.rng.below(1000) {
            0 | 1 => self.flood(c, now),
            2 => self.go_deaf(c, now),
            3..=22 => self.session_step(c, now),
            _ => {
                let seat = Seat {
                    role: c.role,
                    agent: c.agent,
                    invites: &c.invites,
                    handling: &c.handling,
                    pulled: &c.pulled,
                    snapshots: &c.snapshots,
                    subscribed: c.subscribed,
                };
                let planned = gen::next_requests(&mut c.rng, &self.world, &seat);
                for p in planned {
                    if !self.send_planned(c, p, now, true) {
                        break;
                    }
                }
            }
        }
    }

    /// Hundreds of pipelined requests at once: the server must stop reading
    /// at `max-pending-requests` and answer them all.
    fn flood(&mut self, c: &mut Conn, now: Instant) {
        self.stats.floods += 1;
        let n = c.rng.range(100, 600);
        self.history.note(self.at(), c.serial, format!("flood of {n} requests"));
        for _ in 0..n {
            let p = gen::flood_request(&mut c.rng, &self.world, c.role);
            if !self.send_planned(c, p, now, true) {
                break;
            }
        }
    }

    /// Opens, closes or switches sessions of the connection (protocol 6.9):
    /// many clients on one connection, each of its own. Now and then a
    /// request names a session that is not open (error 20).
    fn session_step(&mut self, c: &mut Conn, now: Instant) {
        let open: Vec<u32> = c.open_sessions.iter().copied().collect();
        let n = c.rng.range(1, 9) as u32;
        let planned = match c.rng.below(10) {
            0..=3 => {
                let (name, password) = c.role.client();
                let request = Request::RegisterClient {
                    client_type: c.role.client_type(),
                    name: name.into(),
                    credential: Some(password.into()),
                };
                Some(Planned::with(request, Follow::OpenSession(n)))
            }
            4 | 5 if !open.is_empty() => {
                Some(Planned::with(Request::CloseSession, Follow::CloseSession(*c.rng.pick(&open))))
            }
            6 => Some(Planned::with(Request::CloseSession, Follow::CloseSession(n))),
            _ => {
                c.session = match c.rng.below(8) {
                    0 => n,
                    1 | 2 => 0,
                    _ if open.is_empty() => 0,
                    _ => *c.rng.pick(&open),
                };
                None
            }
        };
        self.history.note(self.at(), c.serial, format!("sessions {open:?}, acting for {}", c.session));
        if let Some(p) = planned {
            self.send_planned(c, p, now, true);
        }
    }

    /// Sends requests with big answers and stops reading: the server must
    /// drop the connection when its output passes `max-output-buffer`.
    fn go_deaf(&mut self, c: &mut Conn, now: Instant) {
        let n = c.rng.range(10, 30);
        self.history.note(self.at(), c.serial, format!("stops reading after {n} requests with big answers"));
        for _ in 0..n {
            let request = gen::heavy_request(&mut c.rng);
            self.send_planned(c, Planned { request, follow: Follow::Nothing }, now, false);
        }
        c.deaf = true;
        // Its answers are not read, so nothing is checked on it any more.
        c.state = Stream::Broken;
        c.ends_at = now + Duration::from_millis(c.rng.range(1000, 5000));
    }

    /// Encodes, maybe mutates, and queues one request; records it. Returns
    /// false when the stream is no longer usable for more requests.
    fn send_planned(&mut self, c: &mut Conn, p: Planned, now: Instant, may_mutate: bool) -> bool {
        let r = c.take_ref();
        let mut frame = p.request.encode(r);
        let session = match p.follow {
            Follow::OpenSession(n) | Follow::CloseSession(n) => n,
            Follow::Register => 0,
            _ => c.session,
        };
        if let (Request::RegisterClient { .. }, Some(ms), 0) = (&p.request, c.heartbeat_ms, session) {
            frame.push(attr::HEARTBEAT_TIMEOUT, ms);
        }
        if session != 0 {
            frame.push(attr::SESSION_ID, session as i64);
        }
        let mut bytes = frame.encode();
        let mut effect = Effect::Framed;
        let mut kind = None;
        if bytes.len() > setup::MAX_FRAME {
            // A valid request that the frame limit refuses: fatal.
            effect = Effect::Fatal(ErrorCode::FrameTooLarge);
            kind = Some("over-the-frame-limit");
        } else if may_mutate && c.mutation_rate > 0.0 && c.rng.chance(c.mutation_rate) {
            let stream_breaking = c.rng.chance(0.3);
            let m = mutate::mutate(&mut c.rng, &frame, stream_breaking);
            bytes = m.bytes;
            effect = m.effect;
            kind = Some(m.kind);
        }
        self.history.sent(self.start.elapsed(), c.serial, &frame, kind, &bytes);
        self.stats.sent += 1;
        match effect {
            Effect::Framed => {
                if kind.is_some() {
                    self.stats.mutated_framed += 1;
                }
                let expect = if kind.is_none() { Some(answers_of(frame.msg_type)) } else { None };
                let end = c.send(&bytes);
                let name = p.request.name();
                c.pending.insert(r, Pending { sent_at: None, end, name, expect, follow: p.follow, session });
                true
            }
            Effect::Fatal(code) => {
                self.stats.mutated_fatal += 1;
                let end = c.send(&bytes);
                if c.state == Stream::Clean {
                    c.state = Stream::Doomed { since: None, end, code };
                }
                false
            }
            Effect::Desync => {
                self.stats.mutated_desync += 1;
                c.send(&bytes);
                c.state = Stream::Broken;
                // Often end it with a reset soon after.
                if c.rng.chance(0.5) {
                    c.ends_at = c.ends_at.min(now + Duration::from_millis(c.rng.range(0, 500)));
                }
                true
            }
        }
    }

    // ----- short-lived connections -------------------------------------------

    /// Now and then a burst of connections that live a moment: some send half
    /// a frame or a registration, all close with FIN or RST; together with
    /// the others they pass the shard's connection limit.
    fn churn_ghosts(&mut self, now: Instant) {
        let at = self.start.elapsed();
        self.ghosts.retain_mut(|g| {
            if now < g.close_at {
                return true;
            }
            if g.reset {
                let linger = libc::linger { l_onoff: 1, l_linger: 0 };
                // SAFETY: setsockopt on an open socket of ours, closed
                // right after, when the ghost is dropped.
                unsafe {
                    use std::os::fd::AsRawFd;
                    libc::setsockopt(
                        g.stream.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        &linger as *const libc::linger as *const libc::c_void,
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    );
                }
            }
            false
        });
        if now < self.next_ghosts {
            return;
        }
        self.next_ghosts = now + Duration::from_millis(self.rng.range(500, 4000));
        let n = if self.rng.chance(0.3) { self.rng.range(20, 60) } else { self.rng.range(1, 4) };
        self.history.note(at, 0, format!("{n} short-lived connections"));
        for _ in 0..n {
            let Some(mut stream) = self.connect(now) else { break };
            self.stats.ghosts += 1;
            let _ = stream.set_nonblocking(true);
            let (name, password) = Role::MediaServer.client();
            let register = Request::RegisterClient {
                client_type: Role::MediaServer.client_type(),
                name: name.into(),
                credential: Some(password.into()),
            }
            .encode(1)
            .encode();
            let bytes = match self.rng.below(4) {
                0 => Vec::new(),
                1 => register,
                2 => register[..self.rng.range(1, register.len() as u64 - 1) as usize].to_vec(),
                _ => {
                    // A header that promises a body that never comes.
                    let mut b = register;
                    let length = self.rng.range(HEADER_LEN as u64 + 1, setup::MAX_FRAME as u64) as u32;
                    b[..4].copy_from_slice(&length.to_le_bytes());
                    b.truncate(HEADER_LEN + 3);
                    b
                }
            };
            let _ = std::io::Write::write(&mut stream, &bytes);
            let close_at = now + Duration::from_millis(self.rng.range(0, 3000));
            self.ghosts.push(Ghost { stream, close_at, reset: self.rng.chance(0.6) });
        }
    }

    // ----- input and output --------------------------------------------------

    /// One poll over every connection, then reads, frames and writes.
    fn io_round(&mut self, timeout: Duration) -> Result<(), Fail> {
        let mut fds = Vec::with_capacity(self.slots.len() + self.controls.len());
        for c in self.slots.iter().flatten() {
            if !c.eof {
                fds.push((c.fd(), c.unsent() > 0));
            }
        }
        for c in &self.controls {
            fds.push((c.conn.fd(), c.conn.unsent() > 0));
        }
        if fds.is_empty() {
            std::thread::sleep(timeout);
            return Ok(());
        }
        conn::poll(&fds, timeout);
        let now = Instant::now();
        for i in 0..self.slots.len() {
            let Some(mut c) = self.slots[i].take() else { continue };
            let r = self.service(&mut c, now);
            self.slots[i] = Some(c);
            r?;
        }
        // Taken out while serviced, so that `service` may borrow the fuzzer.
        let mut controls = std::mem::take(&mut self.controls);
        let mut result = Ok(());
        for ctl in controls.iter_mut() {
            result = self.service(&mut ctl.conn, now);
            if result.is_ok() && ctl.conn.eof {
                result = fail(
                    Some(ctl.conn.serial),
                    format!("the server closed the control connection on shard {}", ctl.shard),
                );
            }
            if result.is_err() {
                break;
            }
        }
        self.controls = controls;
        result
    }

    /// Writes, reads and handles what arrived on one connection.
    fn service(&mut self, c: &mut Conn, now: Instant) -> Result<(), Fail> {
        if c.eof {
            return Ok(());
        }
        c.write_some();
        if c.deaf {
            return Ok(());
        }
        c.read_some();
        loop {
            let frame = match c.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return fail(Some(c.serial), e),
            };
            self.history.received(self.start.elapsed(), c.serial, &frame);
            self.handle(c, frame, now)?;
        }
        if c.eof {
            self.on_server_close(c, now);
        }
        Ok(())
    }

    /// The server closed `c`: expected after a fatal frame; judged later
    /// (against the log) on a clean connection.
    fn on_server_close(&mut self, c: &mut Conn, now: Instant) {
        match c.state {
            Stream::Doomed { .. } => {
                self.stats.fatal_closes += 1;
                c.state = Stream::Broken;
            }
            Stream::Clean if c.role != Role::Control => {
                let waiting = c
                    .oldest_pending(now)
                    .map(|(r, p, _)| format!("{} (ref {r}) and {} more", p.name, c.pending.len() - 1));
                self.history.note(self.at(), c.serial, "the server closed the connection".into());
                self.suspects.push((c.serial, c.port, now, waiting.unwrap_or_else(|| "nothing".into())));
                c.state = Stream::Broken;
            }
            _ => {}
        }
    }

    /// Checks one frame from the server and learns from it.
    fn handle(&mut self, c: &mut Conn, f: Frame, now: Instant) -> Result<(), Fail> {
        if f.msg_type == msg_type::EVENT_ERROR {
            let code = f.get_int(attr::ERROR_CODE);
            let text = f.get_str(attr::ERROR_TEXT);
            match (code, text) {
                (Some(99), _) => {
                    return fail(Some(c.serial), format!("EventError 99 (Internal): {}", text.unwrap_or("")))
                }
                (Some(code), Some(t)) if !t.is_empty() => *self.stats.errors.entry(code).or_default() += 1,
                _ => {
                    return fail(
                        Some(c.serial),
                        format!("an EventError without an int ErrorCode and a text: {}", history::describe(&f)),
                    )
                }
            }
        }
        if f.ref_id == 0 {
            return self.unsolicited(c, &f);
        }
        self.stats.answers += 1;
        c.last_answer = Some(now);
        if c.role == Role::Control {
            self.last_control_answer = now;
            if f.msg_type == msg_type::EVENT_QUEUE_DEPTH {
                let live: i64 = f.lists(attr::QUEUE_DEPTH).iter().filter_map(|q| q.get("interactions")?.as_int()).sum();
                self.world.crowded = live > gen::LIVE_TARGET;
            }
        }
        let Some(p) = c.pending.remove(&f.ref_id) else {
            if c.checked() {
                return fail(
                    Some(c.serial),
                    format!(
                        "{} with reference id {} that no request waits for (a second answer?)",
                        msg_type::name(f.msg_type),
                        f.ref_id
                    ),
                );
            }
            return Ok(());
        };
        if let (Some(expect), true) = (p.expect, c.checked()) {
            if !expect.contains(&f.msg_type) {
                return fail(
                    Some(c.serial),
                    format!("{} (ref {}) was answered with {}", p.name, f.ref_id, msg_type::name(f.msg_type)),
                );
            }
            let answered_for = f.get_int(attr::SESSION_ID).unwrap_or(0);
            if answered_for != p.session as i64 {
                return fail(
                    Some(c.serial),
                    format!(
                        "{} (ref {}) of session {} was answered for session {answered_for}: {}",
                        p.name,
                        f.ref_id,
                        p.session,
                        history::describe(&f)
                    ),
                );
            }
        }
        for l in f.lists(attr::INTERACTION) {
            if let Some(id) = l.get("id").and_then(|v| v.as_str()) {
                self.world.remember(id);
                if f.msg_type == msg_type::EVENT_PULLED_INTERACTIONS {
                    self.stats.pulled += 1;
                    c.pulled.push(id.to_string());
                }
            }
        }
        if c.pulled.len() > 64 {
            c.pulled.drain(..32);
        }
        self.follow(c, &f, p.follow, now);
        Ok(())
    }

    /// What an answer changes for the connection.
    fn follow(&mut self, c: &mut Conn, f: &Frame, follow: Follow, _now: Instant) {
        let ok = f.msg_type != msg_type::EVENT_ERROR;
        match follow {
            Follow::Nothing | Follow::Register => {}
            Follow::Submit if ok => {
                if let Some(id) = f.get_str(attr::INTERACTION_ID) {
                    self.stats.submitted += 1;
                    self.world.remember(id);
                }
            }
            Follow::Login { tenant, agent } if ok => c.agent = Some((tenant, agent)),
            Follow::Logout if ok => {
                c.agent = None;
                c.invites.clear();
            }
            Follow::Accept { id } => {
                c.invites.retain(|(i, _)| *i != id);
                if ok {
                    self.stats.accepted += 1;
                    if let Some(p) = gen::after_accept(&mut c.rng, id.clone()) {
                        c.reactions.push(p);
                    }
                    c.handling.push(id);
                    if c.handling.len() > 32 {
                        c.handling.remove(0);
                    }
                }
            }
            Follow::Routed { id } => c.pulled.retain(|i| *i != id),
            Follow::Snapshot if ok => {
                if let Some(s) = f.get_int(attr::SNAPSHOT_ID) {
                    c.snapshots.push(s as u64);
                }
            }
            Follow::Release { snapshot } => c.snapshots.retain(|s| *s != snapshot),
            Follow::Workbin { id, tenant, workbin, owner } if ok => {
                c.handling.retain(|i| *i != id);
                self.world.remember_workbin(id, tenant, workbin, owner);
            }
            Follow::Sweep if ok => {
                for l in f.lists(attr::INTERACTION) {
                    if let Some(id) = l.get("id").and_then(|v| v.as_str()) {
                        c.pulled.retain(|i| i != id);
                        let stop = Request::StopProcessing { id: id.to_string(), reason: Some("sweep".into()) };
                        c.reactions.push(Planned { request: stop, follow: Follow::Nothing });
                    }
                }
            }
            Follow::OpenSession(n) if ok => {
                c.open_sessions.insert(n);
            }
            Follow::CloseSession(n) if ok => {
                c.open_sessions.remove(&n);
            }
            Follow::Subscribe if ok => c.subscribed = true,
            Follow::Unsubscribe if ok => c.subscribed = false,
            _ => {}
        }
    }

    /// Events with reference id 0.
    fn unsolicited(&mut self, c: &mut Conn, f: &Frame) -> Result<(), Fail> {
        if f.msg_type == msg_type::EVENT_ERROR {
            return match c.state {
                Stream::Clean => fail(
                    Some(c.serial),
                    format!("a framing error on a connection that sent only whole frames: {}", history::describe(f)),
                ),
                Stream::Doomed { code, .. } if f.get_int(attr::ERROR_CODE) != Some(code.code()) => fail(
                    Some(c.serial),
                    format!(
                        "after a fatal frame the server answered {} instead of code {}",
                        history::describe(f),
                        code.code()
                    ),
                ),
                _ => Ok(()),
            };
        }
        self.stats.events += 1;
        // Events go to open sessions only: none before a session's opening
        // was answered, none after its close was. Checked on connections
        // whose frames are never mutated (a mutated frame may open or close
        // a session unknown to the fuzzer).
        if let Some(n) = f.get_int(attr::SESSION_ID) {
            self.stats.session_events += 1;
            if c.mutation_rate == 0.0 && !c.open_sessions.contains(&(n as u32)) {
                return fail(
                    Some(c.serial),
                    format!(
                        "an event for session {n}, which is not open (open: {:?}): {}",
                        c.open_sessions,
                        history::describe(f)
                    ),
                );
            }
        }
        if let Some(cursor) = f.get_str(attr::EVENT_CURSOR) {
            self.world.remember_cursor(cursor);
        }
        let id = f.get_str(attr::INTERACTION_ID).map(str::to_string);
        if let Some(id) = &id {
            self.world.remember(id);
        }
        match (f.msg_type, id) {
            (msg_type::EVENT_INVITE, Some(id)) => {
                self.stats.invites += 1;
                let ticket = f.get_int(attr::TICKET).unwrap_or(1).max(1) as u64;
                c.invites.push((id.clone(), ticket));
                if c.invites.len() > 32 {
                    c.invites.remove(0);
                }
                // Most invitations are answered at once; the rest wait for a
                // later turn or for the delivering timeout.
                let roll = c.rng.below(10);
                if roll < 7 {
                    c.reactions.push(gen::answer_invite(&mut c.rng, id, ticket, roll < 6));
                }
            }
            (msg_type::EVENT_REVOKED, Some(id)) => {
                c.invites.retain(|(i, _)| *i != id);
                c.handling.retain(|i| *i != id);
            }
            (msg_type::EVENT_LOGGED_OUT, _) => {
                c.agent = None;
                c.invites.clear();
            }
            _ => {}
        }
        Ok(())
    }

    // ----- oracles -----------------------------------------------------------

    /// Every request on a clean connection answered in time; every fatal
    /// frame followed by a close in time.
    fn check_deadlines(&mut self, now: Instant) -> Result<(), Fail> {
        let deadline = self.o.deadline;
        for c in self.slots.iter().flatten() {
            match c.state {
                Stream::Clean => {
                    if let Some((r, p, waited)) = c.oldest_pending(now) {
                        if waited > deadline {
                            return fail(
                                Some(c.serial),
                                format!(
                                    "no answer to {} (ref {r}) on a {:?} connection after {:.1} s (the control connections were last answered {:.1} s ago)",
                                    p.name,
                                    c.role,
                                    waited.as_secs_f64(),
                                    now.saturating_duration_since(self.last_control_answer).as_secs_f64()
                                ),
                            );
                        }
                    }
                }
                Stream::Doomed { since: Some(since), code, .. }
                    if now.saturating_duration_since(since) > deadline && !c.eof =>
                {
                    return fail(
                        Some(c.serial),
                        format!(
                            "the server kept the connection open {:.1} s after a fatal frame (code {})",
                            deadline.as_secs_f64(),
                            code.code()
                        ),
                    );
                }
                _ => {}
            }
        }
        for c in &self.controls {
            if let Some((r, p, waited)) = c.conn.oldest_pending(now) {
                if waited > deadline {
                    return fail(
                        Some(c.conn.serial),
                        format!(
                            "shard {} stopped answering: no answer to {} (ref {r}) on its control connection after {:.1} s; that connection's last answer came {}",
                            c.shard,
                            p.name,
                            waited.as_secs_f64(),
                            match c.conn.last_answer {
                                Some(t) => format!("{:.1} s ago", now.saturating_duration_since(t).as_secs_f64()),
                                None => "never".into(),
                            }
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// The process is up, its log tells of no panic, and the connections it
    /// closed were closed for a reason it logged.
    fn watch(&mut self, now: Instant) -> Result<(), Fail> {
        if now < self.next_watch {
            return Ok(());
        }
        self.next_watch = now + WATCH_EVERY;
        let found = self.server.scan_log();
        if let Some(line) = found.panic {
            return fail(None, format!("the server log tells of a panic: {line}"));
        }
        if let Some(status) = self.server.exited() {
            return fail(None, format!("ixn-server exited: {status}"));
        }
        self.excused.extend(found.excused_ports);
        let mut still = Vec::new();
        for (serial, port, when, waiting) in std::mem::take(&mut self.suspects) {
            if self.excused.contains(&port) {
                self.stats.excused_closes += 1;
            } else if now.duration_since(when) > EXCUSE_GRACE {
                return fail(
                    Some(serial),
                    format!("the server closed a connection that sent only whole frames (port {port}), with {waiting} waiting, and logged no reason for it (1024, 1027, 1029 or 1030)"),
                );
            } else {
                still.push((serial, port, when, waiting));
            }
        }
        self.suspects = still;
        Ok(())
    }

    /// The end: no new requests; the answers still due must come; each shard
    /// answers a last ping; SIGTERM stops the server with status 0.
    fn finish(&mut self) -> Result<(), Fail> {
        let drain_start = Instant::now();
        let until = drain_start + self.o.deadline + Duration::from_secs(1);
        for c in &mut self.controls {
            c.next_ping = Instant::now();
        }
        self.ping_controls(Instant::now());
        while Instant::now() < until {
            let due = self.slots.iter().flatten().any(|c| c.checked() && !c.pending.is_empty())
                || self.controls.iter().any(|c| !c.conn.pending.is_empty());
            if !due && self.suspects.is_empty() {
                break;
            }
            self.io_round(Duration::from_millis(10))?;
            self.check_deadlines(Instant::now())?;
            self.watch(Instant::now())?;
        }
        self.check_deadlines(Instant::now() + self.o.deadline)?;
        for c in self.slots.iter_mut() {
            if let Some(c) = c.take() {
                c.close_with_reset();
            }
        }
        self.ghosts.clear();
        self.watch(Instant::now() + WATCH_EVERY)?;
        self.stats.drain = drain_start.elapsed();
        let timeout = Duration::from_secs(30);
        let stop_start = Instant::now();
        let stopped = self.server.terminate(timeout);
        self.stats.stop = stop_start.elapsed();
        match stopped {
            Ok(status) if status.success() => {}
            Ok(status) => return fail(None, format!("ixn-server stopped on SIGTERM with {status}")),
            Err(e) => return fail(None, e),
        }
        if let Some(line) = self.server.scan_log().panic {
            return fail(None, format!("the server log tells of a panic: {line}"));
        }
        Ok(())
    }
}
