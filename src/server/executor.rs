//! One shard's runtime on its pinned glommio executor: the state machine,
//! the connections accepted here, the channels to the other shards, and the
//! storage completions. Everything here runs on one thread; cross-thread
//! traffic goes only through the channel mesh (shards) and the writer
//! channels and completion inbox (storage).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ahash::AHashMap;
use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::TcpListener;
use glommio::{Latency, Shares, TaskQueueHandle};
use ixn_shard::agent::AgentRef;
use ixn_shard::catalog::Catalog;

use super::conn::CatalogNow;
use ixn_shard::interaction::InteractionRecord;
use ixn_shard::machine::{Caller, Input, Origin, Output, Shard, ShardParams};
use ixn_shard::peer::PeerMsg;
use ixn_shard::proto::{ErrorCode, Frame, ProtoError, Request};
use ixn_shard::report::{Cursor, Published};
use ixn_storage::{WriteRequest, WriterHandle};

use super::auth::{AuthInbox, Verifier};
use super::conn::{self, Conn};
use super::metrics::{MetricsInbox, ShardReport, ShardStats};
use super::msgid;
use super::notify::{CompletionInbox, Inbox};
use super::reload::{ReloadInbox, Reloaded};
use crate::config::Config;
use ixn_shard::versioned::Versioned;

/// What one shard sends another.
pub enum ShardMsg {
    /// A request about an interaction the receiver owns.
    Request { caller: Caller, request: Request },
    /// The answer to a forwarded request, for a session of a connection
    /// of the receiver.
    Reply { to: Origin, frame: Frame },
    /// A message of the shards' own protocol (ixn_shard::peer).
    Peer { from: u16, msg: PeerMsg },
    /// An unsolicited event for a connection of the receiver.
    Event { to: Origin, frame: Frame },
    /// A reporting event for a subscribed connection of the receiver,
    /// which turns it into a frame.
    /// `sub`: the subscription it is for (see `Output::Report`).
    Report { to: Origin, sub: u64, event: Arc<Published> },
    /// Where a subscribed connection of the receiver starts in the stream.
    Cursor { to: Origin, sub: u64, cursor: Cursor },
    /// A subscribed connection of the receiver unsubscribed.
    Unsubscribed { to: Origin, below: u64 },
    /// Events a resuming subscriber of the receiver missed.
    Replay { to: Origin, sub: u64, events: Vec<Arc<Published>> },
    /// A session of the receiver now carries this agent (or none).
    Bind { to: Origin, agent: Option<AgentRef> },
}

/// Everything a shard needs, handed to its executor thread at start.
pub struct ShardContext {
    pub shard: u16,
    pub shards: u16,
    pub config: Arc<Config>,
    pub catalog: Arc<Catalog>,
    pub listener: OwnedFd,
    /// The TLS listener's socket for this shard, and the TLS configuration.
    pub tls_listener: Option<(OwnedFd, Arc<rustls::ServerConfig>)>,
    pub mesh: Option<MeshBuilder<ShardMsg, Full>>,
    pub writer: WriterHandle,
    pub inbox: Arc<CompletionInbox>,
    /// Scrapes of the management listener.
    pub metrics: Arc<MetricsInbox>,
    /// Wake-ups for a published reload, and what reloads publish.
    pub reloads: Arc<ReloadInbox>,
    pub board: Arc<Versioned<Reloaded>>,
    pub built: Arc<[std::sync::atomic::AtomicU64]>,
    /// Verdicts of the credential verifier, and the verifier.
    pub auth: Arc<AuthInbox>,
    pub verifier: Verifier,
    pub records: Vec<InteractionRecord>,
    pub stop: Arc<AtomicBool>,
    pub drained: Arc<AtomicUsize>,
    /// Mesh peer id of each shard, filled in as shards join the mesh (the
    /// mesh numbers peers by executor id, not by shard number).
    pub mesh_ids: Arc<Vec<AtomicUsize>>,
    /// Shards accepting connections; the main thread prints "ready" when
    /// every shard has counted itself here.
    pub started: Arc<AtomicUsize>,
    /// This run of the server, in reporting cursors: its start time (ms).
    pub generation: u64,
    /// The event log's outbox, with the log on: past `max-queue-size`
    /// events waiting there, submissions are refused.
    pub outbox: Option<Arc<ixn_storage::Outbox>>,
    /// Reads the event log back for subscribers resuming across a restart.
    pub log_reader: Option<ixn_storage::LogReader>,
}

pub struct Runtime {
    pub shard: u16,
    pub shards: u16,
    pub config: Arc<Config>,
    /// Names events by their catalog indexes when they become frames: the
    /// catalog the state machine runs with (a reload replaces both at once).
    catalog: CatalogNow,
    /// What reloads publish, and the generation of it this shard runs with.
    board: Arc<Versioned<Reloaded>>,
    board_seen: Cell<u64>,
    /// Where this shard says which generation of `board` it has applied
    /// with every added view's index built (the reloader waits on it).
    built: Arc<[std::sync::atomic::AtomicU64]>,
    built_said: Cell<u64>,
    machine: RefCell<Shard>,
    scratch: RefCell<Vec<Output>>,
    /// Messages this shard sent itself, handled after the current input.
    to_self: RefCell<VecDeque<PeerMsg>>,
    /// Slices of scans (PeerMsg::ScanSlice) this shard sent itself: run by
    /// their own task, which lets every other ready task run between two
    /// slices, so a scan of a million interactions never holds the shard.
    slices: LocalSender<PeerMsg>,
    conns: RefCell<AHashMap<u64, Rc<Conn>>>,
    next_conn: Cell<u64>,
    peers: Vec<Option<LocalSender<ShardMsg>>>,
    writer: WriterHandle,
    pub stopping: Cell<bool>,
    pub queue: TaskQueueHandle,
    max_conns: usize,
    /// The shard's one read buffer: every connection's reader reads into it
    /// for the length of one poll and handles the complete frames from it
    /// (src/server/conn.rs), so idle connections hold none.
    pub read_buf: RefCell<Vec<u8>>,
    /// `max-shard-queue`: the bound of each queue to another shard that
    /// client requests respect.
    max_shard_queue: usize,
    /// Counters the management listener reads (metrics.rs).
    pub stats: Rc<ShardStats>,
    /// Checks hashed client passwords off the shards (auth.rs).
    pub verifier: Verifier,
    /// A fingerprint of the last credential verified per client name.
    pub verified: RefCell<AHashMap<String, [u8; 32]>>,
    /// The `[[client]]` entries in force (a reload replaces them).
    pub clients: RefCell<Arc<Vec<crate::config::ClientEntry>>>,
    /// The TLS listener's configuration (a reload reads its files again).
    pub tls: RefCell<Option<Arc<rustls::ServerConfig>>>,
    /// The event log's outbox and its bound (`max-queue-size`).
    outbox: Option<(Arc<ixn_storage::Outbox>, u64)>,
    log_reader: Option<ixn_storage::LogReader>,
}

/// The least number of events that may wait behind a resuming
/// subscriber's replay before it is disconnected.
const REPLAY_SLACK: usize = 65_536;

/// The scan task queue's share of a shard's time against the main queue's
/// default of 1000, when both have work.
const SCAN_SHARES: usize = 100;

/// How often the shard's clock ticks while it has deadlines: the precision
/// of routing-timeout and pull-hold-timeout.
const TICK: Duration = Duration::from_millis(20);

/// Bytes of the shard's read buffer: the most one read takes from a socket.
const READ_BUF_LEN: usize = 64 << 10;

/// Microseconds since the Unix epoch: the only clock the shard sees.
pub fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Runtime {
    /// Sends a client's request to the shard that owns it: here, or across
    /// the mesh. Refused (error 52, nothing queued, nothing changed) while
    /// a queue it could add to holds `max-shard-queue` messages.
    pub fn route(&self, caller: Caller, request: Request) -> Result<(), ProtoError> {
        // The owner of an agent a reload added is found in the new catalog.
        self.catch_up();
        let target = {
            let m = self.machine.borrow();
            ixn_shard::machine::target_shard(m.catalog(), self.shards, self.shard, &caller, &request)
        };
        if let (Request::Submit(_), Some((outbox, max))) = (&request, &self.outbox) {
            let waiting = outbox.backlog();
            if waiting >= *max {
                return Err(ProtoError::new(
                    ErrorCode::Overloaded,
                    format!(
                        "the event log is behind: {waiting} events wait in its outbox, max-queue-size is {max}; the \
                         submission was not taken, send it again later"
                    ),
                ));
            }
        }
        if let Some(full) = self.full_queue_for(target) {
            return Err(ProtoError::new(
                ErrorCode::Overloaded,
                format!(
                    "shard {} is overloaded: the queue from shard {} to shard {full} holds max-shard-queue ({}) \
                     messages; the request was not taken, send it again later",
                    self.shard, self.shard, self.max_shard_queue
                ),
            ));
        }
        if target == self.shard {
            self.run_machine(Input::Request { caller, request });
        } else {
            self.send_peer(target, ShardMsg::Request { caller, request });
        }
        Ok(())
    }

    /// A peer whose queue from this shard is at the bound and that a
    /// request for `target` could add to: `target` itself when it is
    /// another shard; any peer when the request is handled here (its
    /// outputs, such as reporting events and agent messages, may go to
    /// every shard).
    fn full_queue_for(&self, target: u16) -> Option<u16> {
        let full = |p: u16| self.peers[p as usize].as_ref().is_some_and(|tx| tx.len() >= self.max_shard_queue);
        if target != self.shard {
            return full(target).then_some(target);
        }
        (0..self.shards).find(|&p| full(p))
    }

    /// Queues a message for another shard. Never refuses and never drops:
    /// the state machines' own messages (replies to forwarded requests,
    /// events, messages of the shards' protocol) are consequences of inputs
    /// already taken, and dropping one would lose an answer or break the
    /// shards' agreement. What bounds them is admission: a client request
    /// is refused while a queue it could add to is full ([`Runtime::route`]),
    /// and each input taken produces a bounded number of messages (one per
    /// shard for a request that asks every shard, one per subscriber or
    /// desktop connection for the events of one change). So a queue holds
    /// at most `max-shard-queue` plus what the inputs already taken still
    /// produce, and those are bounded by `max-pending-requests` per
    /// connection and `max-connections`. Blocking here instead is not an
    /// option: the state machine cannot wait, and two shards waiting on
    /// each other's full queues would deadlock.
    fn send_peer(&self, shard: u16, msg: ShardMsg) {
        let tx = self.peers[shard as usize].as_ref().expect("a peer channel for every other shard");
        if tx.try_send(msg).is_err() {
            // The channel is unbounded and its pump lives as long as the
            // executor: reaching this is a bug.
            tracing::error!(msg_id = msgid::INTERNAL, shard, "channel to shard closed; message dropped");
        }
    }

    fn run_machine(&self, input: Input) {
        self.catch_up();
        self.run_inputs(input);
        if self.built_said.get() != self.board_seen.get() {
            self.say_built();
        }
    }

    /// Tells the reloader this shard runs with the last publication it took
    /// and has built the index of every view it added.
    fn say_built(&self) {
        if self.machine.borrow().building_views() == 0 {
            self.built_said.set(self.board_seen.get());
            self.built[self.shard as usize].store(self.board_seen.get(), Ordering::Release);
        }
    }

    /// Takes a reload published since the last look, if any (one atomic
    /// load when there is none).
    pub fn catch_up(&self) {
        if self.board.generation() != self.board_seen.get() {
            self.follow_reload();
        }
    }

    /// Takes what the last reload published: the TLS configuration, the
    /// client list and the catalog (which the state machine then runs
    /// with). Called before any input once it is published, so this shard
    /// knows every object a message from a shard that took it may name.
    fn follow_reload(&self) {
        self.board_seen.set(self.board.generation());
        let reloaded = self.board.get();
        if let Some(tls) = &reloaded.tls {
            *self.tls.borrow_mut() = Some(tls.clone());
        }
        if !Arc::ptr_eq(&reloaded.clients, &self.clients.borrow()) {
            self.apply_clients(reloaded.clients.clone());
        }
        if !Arc::ptr_eq(&reloaded.catalog, &self.catalog.borrow()) {
            *self.catalog.borrow_mut() = reloaded.catalog.clone();
            self.run_inputs(Input::Reconfigure { catalog: reloaded.catalog.clone() });
            self.warn_removed_queues(&reloaded.catalog);
        }
        self.say_built();
    }

    /// Logs the interactions this shard still holds in queues a reload
    /// removed: they stay there, reachable by id, until moved or stopped,
    /// and a restart refuses to start while any remain.
    fn warn_removed_queues(&self, catalog: &Catalog) {
        let gauges = self.machine.borrow().gauges();
        let queues = catalog.tenants.iter().flat_map(|t| t.queues.iter().map(move |q| (t, q)));
        for ((t, q), g) in queues.zip(&gauges.queues) {
            let n = g.waiting + g.locked;
            if q.retired && n > 0 {
                tracing::warn!(
                    msg_id = msgid::REMOVED_QUEUE_HOLDS,
                    shard = self.shard,
                    tenant = %t.name,
                    queue = %q.name,
                    interactions = n,
                    "queue '{}' was removed from the configuration and still holds {n} interaction(s) on this \
                     shard: move or stop them (a restart refuses to start while any remain)",
                    q.name
                );
            }
        }
    }

    fn run_inputs(&self, input: Input) {
        // One output buffer per shard, reused input after input.
        let mut out = std::mem::take(&mut *self.scratch.borrow_mut());
        let mut input = Some(input);
        while let Some(i) = input.take() {
            self.machine.borrow_mut().handle_at(now_us(), i, &mut out);
            self.dispatch(&mut out);
            let next = self.to_self.borrow_mut().pop_front();
            input = next.map(|msg| Input::Peer { from: self.shard, msg });
        }
        *self.scratch.borrow_mut() = out;
    }

    /// Starts reading the event log for a subscriber resuming across a
    /// restart; the shard hears of it as a storage completion of `token`.
    fn read_log(&self, token: u64, after: Cursor, upto: Cursor) {
        let reader = self.log_reader.as_ref().expect("the event log is on: the shard asked for it");
        let range = ixn_storage::LogRange {
            after_generation: after.generation,
            after: after.seqs,
            upto_generation: upto.generation,
            upto: upto.seqs,
        };
        // As many events as a resume from memory may keep waiting.
        let keep = self.config.settings.reporting_replay_events;
        let limit = keep.saturating_mul(self.shards as usize + 1).max(REPLAY_SLACK);
        reader.read(self.shard, token, range, limit);
    }

    /// Hands what a read of the event log found to the subscriber's
    /// connection (on this shard: the subscription's coordinator), each
    /// event with the cursor of its own run.
    fn send_log(
        &self,
        origin: Origin,
        sub: u64,
        token: u64,
        tenant: Option<ixn_shard::catalog::TenantIdx>,
        after: Cursor,
    ) {
        debug_assert_eq!(origin.shard, self.shard);
        let rows = self.log_reader.as_ref().and_then(|r| r.take(self.shard, token)).and_then(Result::ok);
        let Some(c) = self.conn(origin.conn) else { return };
        // A reload never changes the tenants.
        let tenant = tenant.map(|t| self.config.catalog.tenant_at(t).name.as_str());
        // Each event carries the cursor of its run: the one resumed from,
        // moved on, for that run's events; then each later run's own.
        let mut run: Option<(i64, Vec<u64>)> = Some((after.generation as i64, after.seqs));
        let mut frames = Vec::new();
        for row in rows.unwrap_or_default() {
            let (g, s, q) = row.key();
            let seqs = match &mut run {
                Some((rg, seqs)) if *rg == g => seqs,
                _ => &mut run.insert((g, Vec::new())).1,
            };
            if seqs.len() <= s as usize {
                seqs.resize(s as usize + 1, 0);
            }
            seqs[s as usize] = q as u64;
            if tenant.is_some_and(|t| row.text(ixn_storage::events::Col::Tenant) != Some(t)) {
                continue;
            }
            let mut frame = row.frame();
            let cursor = Cursor { generation: g as u64, seqs: seqs.clone() };
            let mut text = String::new();
            cursor.write(&mut text);
            frame.push(ixn_shard::proto::attr::EVENT_CURSOR, text);
            frames.push(frame);
        }
        c.queue_log(origin.session, sub, frames);
    }

    /// A session of a connection of this shard closed (or the connection,
    /// for each of its sessions): its locks, pulls and snapshots end.
    pub fn conn_closed(&self, origin: Origin, agent: Option<AgentRef>) {
        debug_assert_eq!(origin.shard, self.shard);
        self.run_machine(Input::ConnClosed { origin, agent });
    }

    fn dispatch(&self, out: &mut Vec<Output>) {
        for o in out.drain(..) {
            match o {
                Output::Reply { origin, frame } => self.to_conn(origin, ShardMsg::Reply { to: origin, frame }),
                Output::Store { token, op, log } => {
                    self.writer.submit(WriteRequest { shard: self.shard, token, op, log })
                }
                Output::Peer { to, msg } => {
                    if to == self.shard
                        && matches!(msg, PeerMsg::ScanSlice { .. } | PeerMsg::ScanMerge { .. } | PeerMsg::BuildViews)
                    {
                        // Unbounded: one slice at a time per scan (and for
                        // the view builds), and scans are bounded.
                        let _ = self.slices.try_send(msg);
                    } else if to == self.shard {
                        self.to_self.borrow_mut().push_back(msg);
                    } else {
                        self.send_peer(to, ShardMsg::Peer { from: self.shard, msg });
                    }
                }
                Output::Event { origin, frame } => self.to_conn(origin, ShardMsg::Event { to: origin, frame }),
                Output::Report { origin, sub, event } => {
                    self.to_conn(origin, ShardMsg::Report { to: origin, sub, event })
                }
                Output::Replay { origin, sub, events } => {
                    self.to_conn(origin, ShardMsg::Replay { to: origin, sub, events })
                }
                Output::Unsubscribed { origin, below } => {
                    self.to_conn(origin, ShardMsg::Unsubscribed { to: origin, below })
                }
                Output::ReadLog { token, after, upto } => self.read_log(token, after, upto),
                Output::SendLog { origin, sub, token, tenant, after } => {
                    self.send_log(origin, sub, token, tenant, after)
                }
                Output::Cursor { origin, sub, cursor } => {
                    self.to_conn(origin, ShardMsg::Cursor { to: origin, sub, cursor })
                }
                Output::Bind { origin, agent } => self.to_conn(origin, ShardMsg::Bind { to: origin, agent }),
            }
        }
    }

    /// Hands `msg`, for the connection at `origin`, to it if it is on this
    /// shard, or to its shard.
    fn to_conn(&self, origin: Origin, msg: ShardMsg) {
        debug_assert!(!matches!(msg, ShardMsg::Request { .. } | ShardMsg::Peer { .. }), "not for a connection");
        if origin.shard == self.shard {
            self.handle_peer(msg);
        } else {
            self.send_peer(origin.shard, msg);
        }
    }

    /// The connection `id` of this shard, unless it closed.
    pub fn conn(&self, id: u64) -> Option<Rc<Conn>> {
        self.conns.borrow().get(&id).cloned()
    }

    /// Hands an answer to a session of this shard (dropped if its
    /// connection closed).
    pub fn deliver(&self, to: Origin, frame: Frame) {
        match self.conn(to.conn) {
            Some(c) => c.answer_from_shard(to.session, &frame),
            None => tracing::debug!(conn = to.conn, ref_id = frame.ref_id, "answer for a closed connection dropped"),
        }
    }

    /// Hands an unsolicited event to a session of this shard.
    pub fn deliver_event(&self, to: Origin, frame: Frame) {
        if let Some(c) = self.conn(to.conn) {
            c.event(to.session, frame);
        }
    }

    /// Hands a reporting event to a subscribed session of this shard, as
    /// its frame (dropped if it closed).
    fn deliver_report(&self, to: Origin, sub: u64, p: Arc<Published>) {
        if let Some(c) = self.conn(to.conn) {
            c.report(to.session, sub, p);
        }
    }

    fn deliver_replay(&self, to: Origin, sub: u64, events: Vec<Arc<Published>>) {
        if let Some(c) = self.conn(to.conn) {
            c.replay(to.session, sub, events);
        }
    }

    fn start_cursor(&self, to: Origin, sub: u64, cursor: Cursor) {
        if let Some(c) = self.conn(to.conn) {
            // A whole replay from every shard, and as much again behind it.
            let keep = self.config.settings.reporting_replay_events;
            let max_waiting = keep.saturating_mul(self.shards as usize + 1).max(REPLAY_SLACK);
            c.start_cursor(to.session, sub, cursor, self.catalog.clone(), max_waiting);
        }
    }

    fn bind(&self, to: Origin, agent: Option<AgentRef>) {
        let bound = self.conn(to.conn).is_some_and(|c| c.bind(to.session, agent));
        // Closed meanwhile: its home hears of the close after this.
        if let (false, Some(agent)) = (bound, agent) {
            // The login completed after the session closed: the home must
            // still start the login session.
            self.run_machine(Input::ConnClosed { origin: to, agent: Some(agent) });
        }
    }

    pub fn remove_conn(&self, id: u64) {
        if self.conns.borrow_mut().remove(&id).is_some() {
            self.stats.closed.set(self.stats.closed.get() + 1);
        }
    }

    /// A reload's client list: used for the registrations from now on;
    /// each connection ends or re-scopes its sessions (conn.rs).
    fn apply_clients(&self, clients: Arc<Vec<crate::config::ClientEntry>>) {
        *self.clients.borrow_mut() = clients.clone();
        self.verified.borrow_mut().clear();
        let conns: Vec<Rc<Conn>> = self.conns.borrow().values().cloned().collect();
        for c in conns {
            c.apply_clients(self, &clients);
        }
    }

    /// This shard's answer to a scrape: its counters, connections, queues
    /// to the other shards and its state machine's gauges.
    fn report(&self) -> ShardReport {
        let mut r = ShardReport::from_stats(self.shard, &self.stats);
        let conns = self.conns.borrow();
        r.connections = conns.len() as u64;
        r.sessions = conns.values().map(|c| c.sessions_open() as u64).sum();
        r.to_peers =
            (0..self.shards).filter_map(|p| self.peers[p as usize].as_ref().map(|tx| (p, tx.len() as u64))).collect();
        r.gauges = self.machine.borrow().gauges();
        r
    }

    fn handle_peer(&self, msg: ShardMsg) {
        match msg {
            ShardMsg::Request { caller, request } => self.run_machine(Input::Request { caller, request }),
            ShardMsg::Reply { to, frame } => self.deliver(to, frame),
            ShardMsg::Peer { from, msg } => self.run_machine(Input::Peer { from, msg }),
            ShardMsg::Event { to, frame } => self.deliver_event(to, frame),
            ShardMsg::Report { to, sub, event } => self.deliver_report(to, sub, event),
            ShardMsg::Replay { to, sub, events } => self.deliver_replay(to, sub, events),
            ShardMsg::Cursor { to, sub, cursor } => self.start_cursor(to, sub, cursor),
            ShardMsg::Unsubscribed { to, below } => {
                if let Some(c) = self.conn(to.conn) {
                    c.end_subscription(to.session, below);
                }
            }
            ShardMsg::Bind { to, agent } => self.bind(to, agent),
        }
    }

    pub fn pending_writes(&self) -> usize {
        self.machine.borrow().pending_writes()
    }
}

/// The executor's main future: runs the shard until a stop is asked and
/// every write has drained.
pub async fn shard_main(ctx: ShardContext) {
    let queue =
        glommio::executor().create_task_queue(Shares::default(), Latency::Matters(Duration::from_millis(2)), "ixn");
    let params = ShardParams {
        node: ctx.config.server.node_id,
        shard: ctx.shard,
        shards: ctx.shards,
        max_properties_bytes: ctx.config.server.max_frame_size / 2,
        max_property_keys: ctx.config.settings.max_properties_per_interaction,
        max_frame: ctx.config.server.max_frame_size,
        routing_timeout_ms: (ctx.config.settings.routing_timeout * 1000.0) as i64,
        pull_hold_ms: (ctx.config.settings.pull_hold_timeout * 1000.0) as i64,
        max_snapshot: ctx.config.settings.max_interactions_per_snapshot,
        scan_slice: ixn_shard::scan::SCAN_SLICE,
        max_names: ixn_shard::symbols::MAX_NAMES,
        max_held_requests: ixn_shard::machine::MAX_HELD_REQUESTS,
        find_clients: ctx.config.settings.find_client_types,
        snapshot_clients: ctx.config.settings.snapshot_client_types,
        agents: ctx.config.settings.agent_params(),
        generation: ctx.generation,
        replay_events: ctx.config.settings.reporting_replay_events,
        event_log: ctx.config.logger.is_some(),
    };
    let mut machine = Shard::new(params, ctx.catalog.clone());
    let loaded = ctx.records.len();
    for r in ctx.records {
        if let Err(e) = machine.load(r) {
            // Checked before the executors start; reaching this is a bug.
            panic!("shard {}: {e}", ctx.shard);
        }
    }
    tracing::info!(msg_id = msgid::SHARD_STARTED, shard = ctx.shard, interactions = loaded, "shard started");

    let mut peers: Vec<Option<LocalSender<ShardMsg>>> = (0..ctx.shards).map(|_| None).collect();
    let mut peer_rx = Vec::new();
    for p in 0..ctx.shards {
        if p != ctx.shard {
            // Unbounded in itself: see `Runtime::send_peer` for what
            // bounds it.
            let (tx, rx) = local_channel::new_unbounded();
            peers[p as usize] = Some(tx);
            peer_rx.push((p, rx));
        }
    }
    let max_conns = ctx.config.server.max_connections.div_ceil(ctx.shards as usize);
    let (slices, slices_rx) = local_channel::new_unbounded();
    let rt = Rc::new(Runtime {
        shard: ctx.shard,
        shards: ctx.shards,
        config: ctx.config.clone(),
        catalog: Rc::new(RefCell::new(ctx.catalog.clone())),
        board_seen: Cell::new(ctx.board.generation()),
        board: ctx.board.clone(),
        built: ctx.built.clone(),
        built_said: Cell::new(0),
        machine: RefCell::new(machine),
        scratch: RefCell::new(Vec::with_capacity(16)),
        to_self: RefCell::new(VecDeque::new()),
        slices,
        conns: RefCell::new(AHashMap::new()),
        next_conn: Cell::new(1),
        peers,
        writer: ctx.writer,
        stopping: Cell::new(false),
        queue,
        max_conns,
        read_buf: RefCell::new(vec![0; READ_BUF_LEN]),
        max_shard_queue: ctx.config.server.max_shard_queue,
        stats: Rc::new(ShardStats::default()),
        verifier: ctx.verifier.clone(),
        verified: RefCell::new(AHashMap::new()),
        clients: RefCell::new(Arc::new(ctx.config.clients.clone())),
        tls: RefCell::new(ctx.tls_listener.as_ref().map(|(_, c)| c.clone())),
        outbox: ctx.outbox.clone().zip(ctx.config.logger.as_ref().map(|l| l.max_queue_size)),
        log_reader: ctx.log_reader.clone(),
    });

    let mut tasks = Vec::new();
    if let Some(mesh) = ctx.mesh {
        let (senders, mut receivers) = mesh.join().await.expect("joining the shard mesh");
        ctx.mesh_ids[ctx.shard as usize].store(senders.peer_id(), Ordering::SeqCst);
        while ctx.mesh_ids.iter().any(|m| m.load(Ordering::SeqCst) == usize::MAX) {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        let senders = Rc::new(senders);
        // Our local channels -> the mesh, one pump per peer.
        for (peer, rx) in peer_rx {
            let senders = senders.clone();
            let idx = ctx.mesh_ids[peer as usize].load(Ordering::SeqCst);
            tasks.push(
                glommio::spawn_local_into(
                    async move {
                        while let Some(msg) = rx.recv().await {
                            if senders.send_to(idx, msg).await.is_err() {
                                break;
                            }
                        }
                    },
                    queue,
                )
                .expect("spawn"),
            );
        }
        for (_, rx) in receivers.streams() {
            let rt = rt.clone();
            tasks.push(
                glommio::spawn_local_into(
                    async move {
                        while let Some(msg) = rx.recv().await {
                            rt.handle_peer(msg);
                        }
                    },
                    queue,
                )
                .expect("spawn"),
            );
        }
    }

    // Storage completions.
    {
        let rt2 = rt.clone();
        tasks.push(serve_inbox(queue, ctx.inbox.clone(), move |done| {
            for (token, ok) in done.drain(..) {
                rt2.run_machine(Input::StorageDone { token, ok });
            }
        }));
    }

    // What other threads hand this shard through its inboxes: the newest
    // client list of a reload, credential verdicts, scrapes (each answered
    // between two inputs).
    {
        let rt2 = rt.clone();
        tasks.push(serve_inbox(queue, ctx.reloads.clone(), move |wakes| {
            wakes.clear();
            rt2.catch_up();
        }));
        let rt2 = rt.clone();
        tasks.push(serve_inbox(queue, ctx.auth.clone(), move |verdicts| {
            for v in verdicts.drain(..) {
                conn::verified(&rt2, v);
            }
        }));
        let rt2 = rt.clone();
        tasks.push(serve_inbox(queue, ctx.metrics.clone(), move |asks| {
            for reply in asks.drain(..) {
                let started = Instant::now();
                let mut report = rt2.report();
                report.took_us = started.elapsed().as_micros() as u64;
                // The asker may have given up waiting.
                let _ = reply.try_send(report);
            }
        }));
    }

    // Scans, one slice at a time, each behind whatever else is ready: in a
    // task queue of their own with a small share, so that glommio runs the
    // shard's other work (requests, completions, the mesh) first whenever
    // both have something to do. A scan's latency does not matter; theirs does.
    {
        let rt = rt.clone();
        let scans = glommio::executor().create_task_queue(
            Shares::Static(SCAN_SHARES),
            Latency::Matters(Duration::from_millis(10)),
            "ixn-scan",
        );
        tasks.push(
            glommio::spawn_local_into(
                async move {
                    while let Some(msg) = slices_rx.recv().await {
                        rt.run_machine(Input::Peer { from: rt.shard, msg });
                        futures_lite::future::yield_now().await;
                    }
                },
                scans,
            )
            .expect("spawn"),
        );
    }

    // The clock: routing locks and waiting pulls end on ticks.
    {
        let rt = rt.clone();
        tasks.push(
            glommio::spawn_local_into(
                async move {
                    loop {
                        glommio::timer::sleep(TICK).await;
                        // Only when something is due: a lock or an
                        // invitation hours away costs no input meanwhile.
                        let due = rt.machine.borrow().next_deadline().is_some_and(|d| d <= now_us() / 1000);
                        if due {
                            rt.run_machine(Input::Tick);
                        }
                    }
                },
                queue,
            )
            .expect("spawn"),
        );
    }

    // SAFETY: the fd is a listening socket created for this shard by the
    // main thread and handed over; nothing else owns it.
    let listener = unsafe { TcpListener::from_raw_fd(ctx.listener.into_raw_fd()) };
    let accept = {
        let rt = rt.clone();
        glommio::spawn_local_into(async move { accept_loop(rt, listener, false).await }, queue).expect("spawn")
    };
    let accept_tls = ctx.tls_listener.map(|(fd, _)| {
        // SAFETY: as for the plain listener.
        let listener = unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) };
        let rt = rt.clone();
        glommio::spawn_local_into(async move { accept_loop(rt, listener, true).await }, queue).expect("spawn")
    });

    ctx.started.fetch_add(1, Ordering::SeqCst);
    while !ctx.stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
    if ctx.shard == 0 {
        tracing::info!(msg_id = msgid::SHUTDOWN_REQUESTED, "stop requested: draining writes and answers");
    }
    accept.cancel().await;
    if let Some(a) = accept_tls {
        a.cancel().await;
    }
    drain(&rt, &ctx.drained).await;
    drop(tasks);
}

/// A task that hands everything arriving in `inbox` to `handle`, batch by
/// batch (it leaves the batch empty).
fn serve_inbox<T: 'static>(
    queue: TaskQueueHandle,
    inbox: Arc<Inbox<T>>,
    mut handle: impl FnMut(&mut Vec<T>) + 'static,
) -> glommio::Task<()> {
    glommio::spawn_local_into(
        async move {
            let mut batch = Vec::new();
            loop {
                inbox.take(&mut batch).await;
                handle(&mut batch);
            }
        },
        queue,
    )
    .expect("spawn")
}

/// Accepts the connections of one listener: plain, or TLS (with the
/// shard's TLS configuration at the time of each accept).
async fn accept_loop(rt: Rc<Runtime>, listener: TcpListener, tls: bool) {
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(msg_id = msgid::ACCEPT_FAILED, shard = rt.shard, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if rt.stopping.get() {
            continue;
        }
        let peer = stream.peer_addr().ok();
        if rt.conns.borrow().len() >= rt.max_conns {
            tracing::warn!(
                msg_id = msgid::CONNECTION_LIMIT,
                shard = rt.shard,
                ?peer,
                limit = rt.max_conns,
                "connection refused: limit reached"
            );
            rt.stats.refused.set(rt.stats.refused.get() + 1);
            continue;
        }
        let id = rt.next_conn.get();
        rt.next_conn.set(id + 1);
        rt.stats.accepted.set(rt.stats.accepted.get() + 1);
        // A connection accepted after a reload published renewed
        // certificate files uses them.
        rt.catch_up();
        let config = if tls { rt.tls.borrow().clone() } else { None };
        let session = match config {
            None => None,
            Some(config) => match rustls::ServerConnection::new(config) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(msg_id = msgid::ACCEPT_FAILED, shard = rt.shard, error = %e, "TLS session not started");
                    continue;
                }
            },
        };
        let conn = Conn::new(id, rt.shard, peer, stream, &rt.config, rt.stats.clone(), session);
        rt.conns.borrow_mut().insert(id, conn.clone());
        conn::spawn(rt.clone(), conn);
    }
}

/// Stop: refuse new requests, wait for every write to commit and be
/// answered, flush answers, then wait for the other shards (which may still
/// forward requests here) before the executor ends.
async fn drain(rt: &Rc<Runtime>, drained: &AtomicUsize) {
    rt.stopping.set(true);
    let deadline = Instant::now() + Duration::from_secs(rt.config.server.shutdown_timeout);
    while rt.pending_writes() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    let left = rt.pending_writes();
    if left > 0 {
        tracing::warn!(
            msg_id = msgid::SHUTDOWN_TIMEOUT,
            shard = rt.shard,
            writes = left,
            "shutdown timeout: writes still pending"
        );
    }
    let conns: Vec<Rc<Conn>> = rt.conns.borrow().values().cloned().collect();
    for c in &conns {
        c.close_after_flush();
    }
    while conns.iter().any(|c| c.has_output()) && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    drained.fetch_add(1, Ordering::SeqCst);
    while drained.load(Ordering::SeqCst) < rt.shards as usize && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    tracing::info!(msg_id = msgid::SHARD_STOPPED, shard = rt.shard, "shard stopped");
}
