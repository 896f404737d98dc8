//! What the deterministic simulations share: a seeded generator, the seed
//! runner (fixed seeds, then fresh random seeds for a time box), and a
//! simulated node: pure [`Shard`]s joined by a mesh of FIFO channels,
//! storage that completes writes in a random order (each interaction's in
//! order, as the server's writers do), fails some, holds some back for a
//! long time, and keeps a model of the database, so the node can crash and
//! be rebuilt from it with any shard count.
//!
//! After every input the node audits the shard that handled it
//! ([`Shard::audit`]) and checks the capacity rule
//! ([`check_capacity_growth`]); a failure panics with the seed and the
//! inputs that led to it.
//!
//! Environment: `IXN_SIM_SEED=S` replays one seed; `IXN_SIM_SEEDS=N` sets
//! how many fixed seeds run (0, 1, ... N-1); `IXN_SIM_SECONDS=X` how long
//! fresh random seeds run after them (default [`DEFAULT_SECONDS`]);
//! `IXN_SIM_TRACE=1` prints every input.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ixn_shard::audit::check_capacity_growth;
use ixn_shard::catalog::Catalog;
use ixn_shard::id::owner_of;
use ixn_shard::interaction::InteractionRecord;
use ixn_shard::machine::{Input, Output, Shard, ShardParams, StoreOp};
use ixn_shard::peer::PeerMsg;
use ixn_shard::proto::{msg_type, Request};
use ixn_shard::report::Published;

/// Seconds of fresh random seeds in a plain `cargo test`.
pub const DEFAULT_SECONDS: f64 = 3.0;

/// Inputs kept to show what led to a failure.
const HISTORY: usize = 60;

/// splitmix64: small, fast and good enough to pick histories.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        (!v.is_empty()).then(|| &v[self.below(v.len() as u64) as usize])
    }
}

/// How often each situation the simulations mean to reach was reached,
/// over all runs of this test binary.
static COVERAGE: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());

/// Counts one occurrence of `situation`.
pub fn cover(situation: &'static str) {
    *COVERAGE.lock().unwrap_or_else(|e| e.into_inner()).entry(situation).or_default() += 1;
}

fn covered(situation: &str) -> u64 {
    COVERAGE.lock().unwrap_or_else(|e| e.into_inner()).get(situation).copied().unwrap_or(0)
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    let v = std::env::var(name).ok()?;
    Some(v.parse().unwrap_or_else(|_| panic!("{name}={v} is not a number")))
}

/// A seed no earlier run used: the process's random hash keys and the clock.
fn fresh_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}

/// Runs `run` for the fixed seeds `0..fixed` (or `IXN_SIM_SEEDS`), then
/// for fresh random seeds until `IXN_SIM_SECONDS` have passed; with
/// `IXN_SIM_SEED` only that seed. A failing seed is printed with how to
/// replay it and how many seeds ran before it. After 50 seeds or more,
/// each of the `situations` must have been reached (see [`cover`]): a
/// simulation that stopped reaching what it is for fails.
pub fn run_seeds(file: &str, test: &str, fixed: u64, situations: &[&str], run: impl Fn(u64)) {
    if let Some(seed) = env_number::<u64>("IXN_SIM_SEED") {
        run(seed);
        return;
    }
    let fixed = env_number("IXN_SIM_SEEDS").unwrap_or(fixed);
    let seconds = env_number("IXN_SIM_SECONDS").unwrap_or(DEFAULT_SECONDS);
    let start = Instant::now();
    let mut ran = 0u64;
    let one = |seed: u64, ran: u64| {
        if catch_unwind(AssertUnwindSafe(|| run(seed))).is_err() {
            panic!(
                "{test}: seed {seed} failed (seed number {} of this run, after {:.1} s); replay with \
                 IXN_SIM_SEED={seed} cargo test -p ixn-shard --test {file} {test}",
                ran + 1,
                start.elapsed().as_secs_f64()
            );
        }
    };
    for seed in 0..fixed {
        one(seed, ran);
        ran += 1;
    }
    let fixed_time = start.elapsed();
    let until = fixed_time + Duration::from_secs_f64(seconds);
    let mut random = 0;
    while start.elapsed() < until {
        one(fresh_seed(), ran);
        ran += 1;
        random += 1;
    }
    eprintln!(
        "{test}: {fixed} fixed seeds in {:.1} s, then {random} random seeds in {:.1} s: all passed",
        fixed_time.as_secs_f64(),
        (start.elapsed() - fixed_time).as_secs_f64()
    );
    for situation in situations {
        let n = covered(situation);
        eprintln!("{test}: {situation}: {n} times");
        assert!(n > 0 || ran < 50, "{test}: in {ran} seeds the simulation never reached: {situation}");
    }
}

/// An input in one line: requests by who sent them and what they ask.
pub fn describe(input: &Input) -> String {
    let mut line = match input {
        Input::Request { caller, request } => {
            let who = format!(
                "{:?} {}:{} ref {}",
                caller.client_type, caller.origin.shard, caller.origin.conn, caller.ref_id
            );
            match request {
                Request::Submit(s) => format!(
                    "{who}: Submit id {:?} queue {} priority {} properties {:?}",
                    s.id, s.queue, s.priority, s.properties
                ),
                other => format!("{who}: {other:?}"),
            }
        }
        other => format!("{other:?}"),
    };
    if line.len() > 300 {
        let mut end = 300;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push_str("...");
    }
    line
}

/// What clients change and are acknowledged for in a row: its place,
/// priority and properties (and what never changes).
fn client_fields(r: &InteractionRecord) -> impl PartialEq + '_ {
    (&r.id, r.version, &r.queue, &r.workbin_owner, r.priority, &r.properties, r.submit_order, r.placed_in_queue_at)
}

/// A write in one line.
pub fn describe_op(op: &StoreOp) -> String {
    match op {
        StoreOp::Insert(r) => format!("Insert {} version {} order {:?}", r.id, r.version, r.submit_order),
        StoreOp::Upsert(r) => {
            format!("Upsert {} version {} order {:?} queue {}", r.id, r.version, r.submit_order, r.queue)
        }
        StoreOp::Delete(id) => format!("Delete {id}"),
        StoreOp::Log(key) => format!("Log events of {key}"),
    }
}

/// A write sent to storage and not completed yet.
#[derive(Clone, Debug)]
pub struct Write {
    pub shard: u16,
    pub token: u64,
    pub op: StoreOp,
    /// Its completion is held back (an unknown outcome) until released.
    pub held: bool,
    /// Sent by a request (not by a storage completion: the delete that
    /// removes what a failed submit may have left).
    pub requested: bool,
    /// The submission it writes (its `submit_order`); for a delete, the
    /// one the last row sent before it named.
    pub order: Option<i64>,
    /// The events it stores in the event log (with the log on).
    pub log: Vec<Arc<Published>>,
}

/// The last acknowledged write of an interaction id: what a client was
/// told is in the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acked {
    /// Submitted or changed: this row (or a later one of the same
    /// submission) must be there.
    Live(Box<InteractionRecord>),
    /// Stopped: the submission with this `submit_order` must not come back.
    Stopped { submit_order: Option<i64> },
}

/// How storage misbehaves, in percent of writes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Completes with ok = false: the database did not apply it.
    pub fail: u64,
    /// Held back until released (or a crash, at which it may or may not
    /// have landed).
    pub hold: u64,
}

/// A simulated node.
pub struct Node {
    pub shards: Vec<Shard>,
    catalog: Arc<Catalog>,
    params: Box<dyn Fn(u16, u16) -> ShardParams>,
    /// `net[from * n + to]`: the FIFO channel from one shard to another.
    net: Vec<VecDeque<PeerMsg>>,
    /// Writes in flight, in the order they were sent.
    pub writes: Vec<Write>,
    /// The database: each interaction's row as the last applied write left it.
    pub db: BTreeMap<String, InteractionRecord>,
    /// The last row sent for each id (to know which submission a delete ends).
    last_row: HashMap<String, Option<i64>>,
    /// Each id's last acknowledged write.
    pub acked: BTreeMap<String, Acked>,
    pub faults: Faults,
    pub now: i64,
    tick_us: i64,
    pub rng: Rng,
    /// Replies, events and binds for the test to take: (shard, output).
    pub outbox: VecDeque<(u16, Output)>,
    history: VecDeque<String>,
    trace: bool,
    /// Names the run in failure messages (seed and so on).
    pub ctx: String,
    pub crashes: u32,
    /// Writes that failed so far (ok = false).
    pub failed_writes: u64,
    /// Each subscriber's cursor, as its connection keeps it: the last
    /// event number received from each shard (a reporting event of a
    /// shard must come after every earlier one the subscriber received).
    pub cursors: HashMap<ixn_shard::machine::Origin, Vec<u64>>,
    /// Each subscriber's current subscription: events of an earlier one
    /// of the same connection are dropped, as the server's connection does.
    subs: HashMap<ixn_shard::machine::Origin, u64>,
    /// Subscriptions below these ended (unsubscribed), by connection.
    ended: HashMap<ixn_shard::machine::Origin, u64>,
    /// Reads of the event log answered and not yet sent: the events and
    /// the generation of each.
    log_reads: HashMap<u64, Vec<(Arc<Published>, u64)>>,
    /// The event log: each event a committed write stored, by (run of the
    /// node, shard, number). A key stored twice fails the run.
    pub logged: BTreeMap<(u32, u16, u64), Arc<Published>>,
    /// Every event a subscriber received, by the same key.
    pub released: BTreeMap<(u32, u16, u64), Arc<Published>>,
    /// A reload's catalog each shard takes before its next input, as the
    /// server's shards do (see [`Node::publish`]).
    reloads: Vec<Option<Arc<Catalog>>>,
}

impl Node {
    pub fn new(
        n: u16,
        catalog: Arc<Catalog>,
        params: impl Fn(u16, u16) -> ShardParams + 'static,
        now: i64,
        rng: Rng,
        ctx: String,
    ) -> Node {
        let params: Box<dyn Fn(u16, u16) -> ShardParams> = Box::new(params);
        let shards = (0..n).map(|s| Shard::new(params(s, n), catalog.clone())).collect();
        Node {
            shards,
            catalog,
            params,
            net: (0..n as usize * n as usize).map(|_| VecDeque::new()).collect(),
            writes: Vec::new(),
            db: BTreeMap::new(),
            last_row: HashMap::new(),
            acked: BTreeMap::new(),
            faults: Faults::default(),
            now,
            tick_us: 0,
            rng,
            outbox: VecDeque::new(),
            history: VecDeque::new(),
            trace: std::env::var("IXN_SIM_TRACE").is_ok(),
            ctx,
            crashes: 0,
            failed_writes: 0,
            cursors: HashMap::new(),
            subs: HashMap::new(),
            ended: HashMap::new(),
            log_reads: HashMap::new(),
            logged: BTreeMap::new(),
            released: BTreeMap::new(),
            reloads: vec![None; n as usize],
        }
    }

    /// A reload publishes `catalog`: every shard takes it before its next
    /// input (or when woken, [`Node::wake`]); events are named with it
    /// from now on (it names everything an older one does).
    pub fn publish(&mut self, catalog: Arc<Catalog>) {
        self.remember(format!("reload published: {} views", catalog.tenants[0].views.len()));
        self.reloads = vec![Some(catalog.clone()); self.n() as usize];
        self.catalog = catalog;
    }

    /// The server wakes a shard when a reload is published: it takes it
    /// even with nothing else to do.
    pub fn wake(&mut self, shard: u16) {
        if let Some(catalog) = self.reloads[shard as usize].take() {
            self.input(shard, Input::Reconfigure { catalog });
        }
    }

    /// Whether every shard took the last reload and built every view it
    /// added (what the reloader waits for).
    pub fn reload_done(&self) -> bool {
        self.reloads.iter().all(Option::is_none) && self.shards.iter().all(|s| s.building_views() == 0)
    }

    pub fn n(&self) -> u16 {
        self.shards.len() as u16
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Moves the clock `ms` on (at least past the inputs already handled).
    pub fn advance(&mut self, ms: i64) {
        let handled_ms = (self.now * 1000 + self.tick_us) / 1000;
        self.now = (self.now + ms).max(handled_ms + 1);
        self.tick_us = 0;
    }

    /// The inputs that led here, for failure messages.
    pub fn history(&self) -> String {
        let mut s = format!("{}: the last {} inputs:\n", self.ctx, self.history.len());
        for h in &self.history {
            s.push_str("  ");
            s.push_str(h);
            s.push('\n');
        }
        s
    }

    fn remember(&mut self, line: String) {
        if self.trace {
            eprintln!("{line}");
        }
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(line);
    }

    /// Feeds `input` to `shard`, one microsecond after the previous input;
    /// then audits that shard and routes what came out. Returns whether it
    /// answered a request with EventAck.
    pub fn input(&mut self, shard: u16, input: Input) -> bool {
        if let Some(catalog) = self.reloads[shard as usize].take() {
            self.input(shard, Input::Reconfigure { catalog });
        }
        self.tick_us += 1;
        let at_us = self.now * 1000 + self.tick_us;
        self.remember(format!("{at_us} -> shard {shard}: {}", describe(&input)));
        let completion = matches!(input, Input::StorageDone { .. });
        let s = &mut self.shards[shard as usize];
        let before = s.capacity_use();
        let mut out = Vec::new();
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| s.handle_at(at_us, input, &mut out))) {
            eprintln!("{}", self.history());
            resume_unwind(e);
        }
        let s = &self.shards[shard as usize];
        if let Err(e) = s.audit().and_then(|()| check_capacity_growth(&before, &s.capacity_use())) {
            panic!("{}\n{}: shard {shard} after the last input: {e}", self.history(), self.ctx);
        }
        let mut acked = false;
        for o in out {
            if self.trace {
                match &o {
                    Output::Store { token, op, .. } => eprintln!("    <- write {token}: {}", describe_op(op)),
                    Output::Reply { frame, .. } => eprintln!(
                        "    <- answer to ref {}: {} {:?}",
                        frame.ref_id,
                        msg_type::name(frame.msg_type),
                        ixn_shard::proto::request::error_of(frame).map(|e| e.code)
                    ),
                    Output::Report { event, .. } => eprintln!(
                        "    <- event {}/{} {} {:?}",
                        event.shard,
                        event.seq,
                        msg_type::name(event.event.what.msg_type()),
                        match &event.event.subject {
                            ixn_shard::event::Subject::Interaction { id, .. } => Some(id.to_string()),
                            ixn_shard::event::Subject::Agent(_) => None,
                        }
                    ),
                    _ => {}
                }
            }
            match o {
                Output::Store { token, op, log } => self.sent(shard, token, op, log, !completion),
                Output::Peer { to, msg } => {
                    let n = self.n() as usize;
                    self.net[shard as usize * n + to as usize].push_back(msg);
                }
                Output::Replay { origin, sub, events } => {
                    for event in events {
                        self.outbox_report(shard, origin, sub, event);
                    }
                }
                Output::Report { origin, sub, event } => self.outbox_report(shard, origin, sub, event),
                Output::Cursor { origin, sub, cursor } => {
                    let ended = self.ended.get(&origin).copied().unwrap_or(0);
                    if sub >= ended && self.subs.get(&origin).is_none_or(|&s| s < sub) {
                        self.subs.insert(origin, sub);
                        self.cursors.insert(origin, cursor.seqs);
                    }
                }
                Output::Unsubscribed { origin, below } => {
                    self.ended.insert(origin, below);
                    self.subs.remove(&origin);
                    self.cursors.remove(&origin);
                }
                Output::ReadLog { token, after, upto } => {
                    // The event log as the modelled database holds it: run
                    // r is generation r + 1. Answered like a write.
                    let found: Vec<Arc<Published>> = self
                        .logged
                        .iter()
                        .filter(|((run, s, q), _)| in_log_range(&after, &upto, *run as u64 + 1, *s, *q))
                        .map(|(_, p)| p.clone())
                        .collect();
                    let keys: Vec<u64> = self
                        .logged
                        .keys()
                        .filter(|(run, s, q)| in_log_range(&after, &upto, *run as u64 + 1, *s, *q))
                        .map(|(run, _, _)| *run as u64 + 1)
                        .collect();
                    self.log_reads.insert(token, found.into_iter().zip(keys).collect());
                    self.sent(shard, token, StoreOp::Log(format!("event log read {token}")), Vec::new(), false);
                }
                Output::SendLog { origin, sub, token, after, .. } => {
                    // As the server's executor does: each event with the
                    // cursor of its run, before the subscription's cursor.
                    let events = self.log_reads.remove(&token).unwrap_or_default();
                    let mut run: (u64, Vec<u64>) = (after.generation, after.seqs);
                    for (p, generation) in events {
                        if run.0 != generation {
                            run = (generation, Vec::new());
                        }
                        if run.1.len() <= p.shard as usize {
                            run.1.resize(p.shard as usize + 1, 0);
                        }
                        run.1[p.shard as usize] = p.seq;
                        let mut frame = p.event.frame(&self.catalog);
                        let mut text = String::new();
                        ixn_shard::report::Cursor { generation, seqs: run.1.clone() }.write(&mut text);
                        frame.push(ixn_shard::proto::attr::EVENT_CURSOR, text);
                        let _ = sub;
                        self.outbox.push_back((shard, Output::Event { origin, frame }));
                    }
                }
                other => {
                    acked |= matches!(&other, Output::Reply { frame, .. } if frame.msg_type == msg_type::EVENT_ACK);
                    self.outbox.push_back((shard, other));
                }
            }
        }
        acked
    }

    /// A reporting event reaches its subscriber's connection, which moves
    /// its cursor on and turns the event into its frame, as the server's
    /// does.
    fn outbox_report(
        &mut self,
        shard: u16,
        origin: ixn_shard::machine::Origin,
        sub: u64,
        event: std::sync::Arc<ixn_shard::report::Published>,
    ) {
        if self.subs.get(&origin) != Some(&sub) {
            // Of an earlier subscription of the connection (or after it
            // unsubscribed): dropped, as the server's connection does.
            assert!(
                self.ended.contains_key(&origin) || self.subs.contains_key(&origin),
                "{}: event {}/{} before the subscriber's cursor",
                self.ctx,
                event.shard,
                event.seq
            );
            return;
        }
        let cursor = self.cursors.get_mut(&origin).unwrap_or_else(|| {
            panic!("{}: event {}/{} before the subscriber's cursor", self.ctx, event.shard, event.seq)
        });
        if self.shards[0].params().event_log {
            self.released.insert((self.crashes, event.shard, event.seq), event.clone());
        }
        let last = &mut cursor[event.shard as usize];
        assert!(
            event.seq > *last,
            "{}: event {} of shard {} reached {origin:?} after event {last}",
            self.ctx,
            event.seq,
            event.shard
        );
        *last = event.seq;
        let seqs = cursor.clone();
        let mut frame = event.event.frame(&self.catalog);
        let mut text = String::new();
        let generation = self.shards[0].params().generation;
        ixn_shard::report::Cursor { generation, seqs }.write(&mut text);
        frame.push(ixn_shard::proto::attr::EVENT_CURSOR, text);
        self.outbox.push_back((shard, Output::Event { origin, frame }));
    }

    fn sent(&mut self, shard: u16, token: u64, op: StoreOp, log: Vec<Arc<Published>>, requested: bool) {
        let order = match &op {
            StoreOp::Insert(r) | StoreOp::Upsert(r) => {
                self.last_row.insert(r.id.clone(), r.submit_order);
                r.submit_order
            }
            StoreOp::Delete(id) => self.last_row.get(id).copied().flatten(),
            StoreOp::Log(_) => None,
        };
        let held = self.faults.hold > 0 && self.rng.chance(self.faults.hold);
        if held {
            cover("a write held back");
        }
        self.writes.push(Write { shard, token, op, held, requested, order, log });
    }

    /// Indexes in `writes` of those that may complete next: the oldest of
    /// each interaction, unless held back.
    fn ready_writes(&self) -> Vec<usize> {
        let mut seen = BTreeSet::new();
        (0..self.writes.len())
            .filter(|&i| seen.insert(self.writes[i].op.id().to_string()) && !self.writes[i].held)
            .collect()
    }

    /// Whether any write is held back.
    pub fn holds(&self) -> bool {
        self.writes.iter().any(|w| w.held)
    }

    /// Ends the hold on each held write with `percent` chance.
    pub fn release_held(&mut self, percent: u64) {
        for i in 0..self.writes.len() {
            if self.writes[i].held && self.rng.chance(percent) {
                self.writes[i].held = false;
            }
        }
    }

    fn apply(db: &mut BTreeMap<String, InteractionRecord>, op: &StoreOp) {
        match op {
            StoreOp::Insert(r) | StoreOp::Upsert(r) => {
                db.insert(r.id.clone(), (**r).clone());
            }
            StoreOp::Delete(id) => {
                db.remove(id);
            }
            StoreOp::Log(_) => {}
        }
    }

    /// Stores a committed write's events in the event log.
    fn store_events(&mut self, w: &Write) {
        for p in &w.log {
            let key = (self.crashes, p.shard, p.seq);
            let before = self.logged.insert(key, p.clone());
            assert!(before.is_none(), "{}: event {key:?} stored twice in the event log", self.ctx);
        }
    }

    /// Checks the event log against what subscribers received: every
    /// event sent is stored, as it was sent.
    pub fn check_event_log(&self) {
        for (key, sent) in &self.released {
            let stored = self.logged.get(key);
            assert!(stored.is_some(), "{}: event {key:?} was sent and is not in the event log: {sent:?}", self.ctx);
            assert_eq!(stored.map(|p| &p.event), Some(&sent.event), "{}: event {key:?} logged differently", self.ctx);
        }
    }

    /// Completes the write at `i` of `writes`.
    fn complete(&mut self, i: usize) {
        let w = self.writes.remove(i);
        // A write of events alone fails only when the database refuses an
        // event row (which the server's rows never give it) or at shutdown.
        let fails = !matches!(w.op, StoreOp::Log(_)) && self.faults.fail > 0 && self.rng.chance(self.faults.fail);
        let ok = !fails;
        if !ok {
            cover("a write failed");
            self.failed_writes += 1;
        }
        if ok {
            Self::apply(&mut self.db, &w.op);
            self.store_events(&w);
        }
        // A shard held by a snapshot's cut answers only when it thaws,
        // mixed with other answers: what this write's answer was is then
        // unknown, and so is what the client was told about the id.
        let deferred = self.shards[w.shard as usize].holds_inputs();
        let acked = self.input(w.shard, Input::StorageDone { token: w.token, ok });
        let id = w.op.id().to_string();
        if deferred && ok {
            self.acked.remove(&id);
        }
        if ok && acked && !deferred && !matches!(w.op, StoreOp::Log(_)) {
            let a = match w.op {
                StoreOp::Insert(r) | StoreOp::Upsert(r) => Acked::Live(r),
                StoreOp::Delete(_) => Acked::Stopped { submit_order: w.order },
                StoreOp::Log(_) => unreachable!("left out above"),
            };
            self.acked.insert(id, a);
        }
    }

    /// Delivers one message or storage completion, chosen at random;
    /// false when nothing can move.
    pub fn deliver_one(&mut self) -> bool {
        let n = self.n() as usize;
        let busy: Vec<usize> = (0..self.net.len()).filter(|&i| !self.net[i].is_empty()).collect();
        let ready = self.ready_writes();
        let choices = busy.len() + ready.len();
        if choices == 0 {
            return false;
        }
        let c = self.rng.below(choices as u64) as usize;
        if c < busy.len() {
            let ch = busy[c];
            let msg = self.net[ch].pop_front().expect("busy");
            self.input((ch % n) as u16, Input::Peer { from: (ch / n) as u16, msg });
        } else {
            self.complete(ready[c - busy.len()]);
        }
        true
    }

    /// Delivers until nothing can move (held writes and what waits behind
    /// them stay).
    pub fn settle(&mut self) {
        let mut moves = 0;
        while self.deliver_one() {
            moves += 1;
            assert!(moves < 200_000, "{}: the node does not settle", self.ctx);
        }
    }

    /// Messages between shards in flight.
    pub fn messages(&self) -> usize {
        self.net.iter().map(VecDeque::len).sum()
    }

    /// Every shard stops at once. Each interaction's writes in flight may
    /// have landed or not (a prefix of them, in order: one writer commits
    /// one interaction's writes in order); messages, connections and
    /// answers not given are lost. A node of `shards` shards starts from
    /// the database. Returns the interactions loaded.
    pub fn crash_and_reload(&mut self, shards: u16) -> usize {
        self.remember(format!("crash: {} writes in flight; restart with {shards} shards", self.writes.len()));
        let mut by_id: BTreeMap<String, Vec<Write>> = BTreeMap::new();
        for w in std::mem::take(&mut self.writes) {
            by_id.entry(w.op.id().to_string()).or_default().push(w);
        }
        for (id, writes) in by_id {
            let landed = self.rng.below(writes.len() as u64 + 1) as usize;
            let mut landed_unanswered = false;
            cover(if landed > 0 { "a write in flight landed at a crash" } else { "a write in flight lost at a crash" });
            for w in &writes[..landed] {
                self.remember(format!("  landed unanswered: {}", describe_op(&w.op)));
                Self::apply(&mut self.db, &w.op);
                self.store_events(w);
                // A change a client asked for may be in the database though
                // its answer was lost, and so may a row the shard wrote to
                // put back what the database had refused: from now on that
                // is what it has. Not so a delete no client asked for (what
                // a failed submit may have left): it must not remove what
                // was acknowledged.
                if matches!(w.op, StoreOp::Log(_)) {
                    // Changes no row.
                } else if w.requested || !matches!(w.op, StoreOp::Delete(_)) {
                    let a = match &w.op {
                        StoreOp::Insert(r) | StoreOp::Upsert(r) => Acked::Live(r.clone()),
                        StoreOp::Delete(_) | StoreOp::Log(_) => Acked::Stopped { submit_order: w.order },
                    };
                    self.acked.insert(id.clone(), a);
                    landed_unanswered = true;
                } else if landed_unanswered {
                    // A failed submit's clean-up behind rows that only
                    // landed now: what they stored was never acknowledged.
                    self.acked.remove(&id);
                }
            }
        }
        self.outbox.clear();
        self.net = (0..shards as usize * shards as usize).map(|_| VecDeque::new()).collect();
        self.cursors.clear();
        self.subs.clear();
        self.ended.clear();
        self.crashes += 1;
        // Each run of the node has its own generation (1, 2, ...), as a
        // server's start time names its run.
        let generation = self.crashes as u64 + 1;
        self.shards = (0..shards)
            .map(|s| Shard::new(ShardParams { generation, ..(self.params)(s, shards) }, self.catalog.clone()))
            .collect();
        self.reloads = vec![None; shards as usize];
        for row in self.db.values() {
            let owner = owner_of(&row.id, shards) as usize;
            if let Err(e) = self.shards[owner].load(row.clone()) {
                panic!("{}: loading {} after a crash: {e}", self.ctx, row.id);
            }
        }
        for (s, shard) in self.shards.iter().enumerate() {
            if let Err(e) = shard.audit() {
                panic!("{}: shard {s} after loading: {e}", self.ctx);
            }
        }
        self.check_durable();
        // A load may give a submission another tie (two former shards gave
        // the same one); its later rows carry that one.
        for (id, a) in self.acked.iter_mut() {
            if let (Acked::Live(r), Some(ix)) = (a, self.shards[owner_of(id, shards) as usize].get(id)) {
                r.submit_order = Some(ix.tie as i64);
            }
        }
        for shard in &self.shards {
            for ix in shard.interactions() {
                self.last_row.insert(ix.id.to_string(), Some(ix.tie as i64));
            }
        }
        self.advance(1);
        self.db.len()
    }

    /// After a restart: every acknowledged change is in the database and
    /// loaded (its row, or a later one of the same submission), and no
    /// acknowledged stop came back.
    fn check_durable(&self) {
        for (id, a) in &self.acked {
            let row = self.db.get(id);
            let loaded = self.shards[owner_of(id, self.n()) as usize].get(id).is_some();
            match a {
                Acked::Live(want) => {
                    let Some(row) = row else {
                        panic!(
                            "{}\n{}: acknowledged {id} (version {}) lost in a crash",
                            self.history(),
                            self.ctx,
                            want.version
                        )
                    };
                    let same = row.submit_order == want.submit_order;
                    // A later change raised the version, or this is the
                    // acknowledged change as clients see it. Handling
                    // fields (invitation and assignment times, the agent)
                    // may differ at the same version: an accept that the
                    // database refused stays in memory and is written with
                    // the next row, and a refused change is put back
                    // without undoing the agent's link.
                    let newer = row.version > want.version || client_fields(row) == client_fields(want);
                    assert!(
                        same && newer,
                        "{}\n{}: {id} came back as {row:?}, older than or other than its acknowledged row {want:?}",
                        self.history(),
                        self.ctx
                    );
                    assert!(loaded, "{}: {id} is in the database but was not loaded", self.ctx);
                }
                Acked::Stopped { submit_order } => {
                    if let Some(row) = row {
                        assert!(
                            row.submit_order != *submit_order,
                            "{}\n{}: {id}, acknowledged as stopped, came back after a crash: {row:?}",
                            self.history(),
                            self.ctx
                        );
                    }
                }
            }
        }
    }

    /// While running: every acknowledged submission is live in memory (the
    /// same submission, with at least the acknowledged changes) and no
    /// acknowledged stop is, except for ids in `busy` (a request about
    /// them is unanswered, so memory may be ahead of what was acknowledged).
    pub fn check_acked_in_memory(&self, busy: &BTreeSet<String>) {
        for (id, a) in &self.acked {
            if busy.contains(id) || self.writes.iter().any(|w| w.op.id() == id) {
                continue;
            }
            let ix = self.shards[owner_of(id, self.n()) as usize].get(id);
            match a {
                Acked::Live(want) => {
                    let ix =
                        ix.unwrap_or_else(|| panic!("{}\n{}: acknowledged {id} is not live", self.history(), self.ctx));
                    assert!(
                        Some(ix.tie as i64) == want.submit_order && ix.version as i64 >= want.version,
                        "{}\n{}: {id} in memory (tie {}, version {}) is not its acknowledged submission {want:?}",
                        self.history(),
                        self.ctx,
                        ix.tie,
                        ix.version
                    );
                }
                Acked::Stopped { submit_order } => {
                    if let Some(ix) = ix {
                        assert!(
                            Some(ix.tie as i64) != *submit_order,
                            "{}\n{}: {id}, acknowledged as stopped, is live",
                            self.history(),
                            self.ctx
                        );
                    }
                }
            }
        }
    }

    /// Submissions whose row is written but not committed must not be
    /// visible to views or search (a submit enters them when committed):
    /// checked against the writes in flight.
    pub fn check_unrevealed(&self) {
        for w in &self.writes {
            if let StoreOp::Insert(r) = &w.op {
                let ix = self.shards[w.shard as usize].get(&r.id);
                if let Some(ix) = ix.filter(|ix| Some(ix.tie as i64) == r.submit_order) {
                    assert!(
                        !ix.visible,
                        "{}\n{}: {} is visible while its submit's write is in flight",
                        self.history(),
                        self.ctx,
                        r.id
                    );
                }
            }
        }
    }
}

/// Whether the event is in what a resume from the event log sends.
pub fn in_log_range(
    after: &ixn_shard::report::Cursor,
    upto: &ixn_shard::report::Cursor,
    generation: u64,
    shard: u16,
    seq: u64,
) -> bool {
    ixn_shard::report::in_log_range(after, upto, generation, shard as usize, seq)
}
