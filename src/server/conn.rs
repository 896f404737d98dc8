//! One client connection: a reader task that frames, decodes and routes
//! requests, and a writer task that sends answers. Both run on the shard
//! that accepted the connection, for the connection's whole life.
//!
//! Bounds (invariant 6): the reader stops reading while the connection has
//! `max-pending-requests` unanswered requests, and a client whose unsent
//! answers pass `max-output-buffer` bytes is disconnected with a logged
//! reason, so a slow or stuck client never holds a shard's memory.
//!
//! Closing: a connection ends gracefully (its queued answers are written,
//! then FIN) when the client closes, after a fatal framing error and at
//! shutdown. The server drops a connection abortively ([`Conn::kill`]) when
//! the client does not keep up: the kernel's queue for it is discarded, a
//! reset is sent, and both tasks wake and end, so the descriptor is freed
//! at once instead of when the client finally closes.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use ixn_shard::agent::AgentRef;
use ixn_shard::catalog::Catalog;

/// A shard's catalog, replaced by a reload (shared by its connections).
pub type CatalogNow = Rc<RefCell<Arc<Catalog>>>;
use ixn_shard::machine::{Caller, Origin, TenantScope};
use ixn_shard::proto::frame::{decode_body, split_frame, FatalFrameError, Header, PROTOCOL_VERSION};
use ixn_shard::proto::request::{event_ack, event_error, heartbeat_timeout_of, session_id_of, ProtoError};
use ixn_shard::proto::{attr, msg_type, ClientType, ErrorCode, Frame, Request};
use ixn_shard::report::{Cursor, Published};
use ixn_shard::value::Value;

use super::auth::{Check, Registration, Verdict, MAX_WAITING};
use super::executor::{now_ms, Runtime};
use super::metrics::ShardStats;
use super::msgid;
use super::notify::LocalNotify;
use crate::config::{ClientEntry, Config};
use crate::credentials::{constant_time_eq, fingerprint, Stored};

/// A subscribed session's part of the reporting stream.
struct Subscriber {
    /// The subscription (its coordinator's op; a session's subscriptions
    /// are all coordinated by its connection's shard, so a later one has a
    /// larger op). Events of an earlier subscription of this session still
    /// on their way are dropped.
    sub: u64,
    /// Where it is: moved on by each event sent, and stamped on it.
    cursor: Cursor,
    /// Names the events' catalog indexes in their frames.
    /// The shard's catalog now (a reload may replace it; a newer one
    /// names every event an older one could).
    catalog: CatalogNow,
    /// Events not yet encoded: a replay, and what came behind it.
    waiting: VecDeque<Arc<Published>>,
    max_waiting: usize,
}

/// One client on a connection (docs/protocol.md, "Sessions"): the
/// connection's own, registered first, or one a carrier such as the proxy
/// opened with a SessionId. Each is a client of its own to the shards (its
/// [`Origin`]): its agent, locks, snapshots and subscription.
struct Session {
    /// The client's number for it (SessionId; 0: the connection's own).
    wire: u32,
    /// The connection's number for it ([`Origin::session`]), never reused
    /// on the connection, so what is still on its way to a closed session
    /// never reaches a later one with the same SessionId.
    serial: u32,
    client_type: ClientType,
    client_name: Arc<str>,
    /// The agent logged in on this session (set by its home shard).
    agent: Cell<Option<AgentRef>>,
    /// Number of the last unsolicited event sent (EventSequence).
    events_sent: Cell<u64>,
    /// Its place in the reporting stream and the events it waits to be
    /// sent; none until it subscribes, so other sessions pay nothing.
    subscriber: RefCell<Option<Box<Subscriber>>>,
    /// Subscriptions below this one ended (RequestUnsubscribe).
    ended_below: Cell<u64>,
    /// Events a subscriber resuming across a restart missed, read from the
    /// event log, as frames with their cursors, and their subscription:
    /// sent as the client reads, ahead of every event of that subscription.
    log_frames: RefCell<(u64, VecDeque<Frame>)>,
    /// The tenants it may act on (a reload may change them).
    tenants: RefCell<TenantScope>,
    /// Its requests with a shard, not answered yet.
    unanswered: Cell<usize>,
    /// Closed (RequestCloseSession, or its connection's close): its events
    /// are dropped; it is kept until the answers to its requests are out.
    closed: Cell<bool>,
    /// In its connection's `backlogged` queue.
    backlogged: Cell<bool>,
}

impl Session {
    fn new(
        wire: u32,
        serial: u32,
        client_type: ClientType,
        client_name: Arc<str>,
        tenants: TenantScope,
    ) -> Rc<Session> {
        Rc::new(Session {
            wire,
            serial,
            client_type,
            client_name,
            tenants: RefCell::new(tenants),
            agent: Cell::new(None),
            events_sent: Cell::new(0),
            subscriber: RefCell::new(None),
            ended_below: Cell::new(0),
            log_frames: RefCell::new((0, VecDeque::new())),
            unanswered: Cell::new(0),
            closed: Cell::new(false),
            backlogged: Cell::new(false),
        })
    }

    /// Whether events read from the event log for `sub` still wait.
    fn log_waiting(&self, sub: u64) -> bool {
        let l = self.log_frames.borrow();
        l.0 == sub && !l.1.is_empty()
    }

    /// The next event waiting to go out as the client reads, if any.
    fn next_waiting(&self) -> Option<Waiting> {
        let current = self.subscriber.borrow().as_deref().map(|s| s.sub);
        {
            let mut l = self.log_frames.borrow_mut();
            // Frames of a subscription that is not the current one (ended,
            // or not started yet) wait or go.
            if current.is_some_and(|s| s != l.0) {
                l.1.clear();
            }
            if let Some(frame) = l.1.pop_front() {
                return Some(Waiting::Logged(frame));
            }
        }
        self.subscriber.borrow_mut().as_deref_mut().and_then(|s| s.waiting.pop_front()).map(Waiting::Event)
    }

    /// Whether the subscriber's waiting events pass their bound.
    fn over_waiting(&self) -> bool {
        self.subscriber.borrow().as_deref().is_some_and(|s| s.waiting.len() > s.max_waiting)
    }
}

/// An event waiting in a session for the client to read.
enum Waiting {
    /// Read from the event log, framed with its cursor.
    Logged(Frame),
    /// Of this run: framed and stamped when sent.
    Event(Arc<Published>),
}

/// Waiting events are encoded while the output holds less than this (or a
/// quarter of max-output-buffer, if less).
const REFILL_BELOW: usize = 64 << 10;

pub struct Conn {
    pub id: u64,
    pub peer: Option<SocketAddr>,
    /// The shard the connection lives on (its origins name it).
    shard: u16,
    /// The socket, closed when the last reference to the connection goes
    /// (after both tasks ended). Each task borrows it only inside a poll.
    stream: RefCell<TcpStream>,
    out: RefCell<Vec<u8>>,
    /// Bytes taken from `out` and being written now.
    writing: Cell<bool>,
    out_notify: LocalNotify,
    unanswered: Cell<usize>,
    read_resume: LocalNotify,
    closing: Cell<bool>,
    dead: Cell<bool>,
    /// Why the server dropped the connection, for the 1022 line.
    cause: Cell<Option<&'static str>>,
    /// The heartbeat timeout the client asked for, in milliseconds (0:
    /// none): its reads time out after this long without a byte.
    heartbeat_ms: Cell<u32>,
    /// Its sessions by serial ([`Origin::session`]; the connection's own
    /// is 0, there once it registered). A closed session stays until its
    /// answers are out.
    sessions: RefCell<AHashMap<u32, Rc<Session>>>,
    /// Serials of the open sessions other than its own, by SessionId.
    open: RefCell<AHashMap<u32, u32>>,
    /// The last serial given.
    last_serial: Cell<u32>,
    /// Sessions with events waiting to go out as the client reads, taken
    /// in turn.
    backlogged: RefCell<VecDeque<Rc<Session>>>,
    max_pending: usize,
    max_output: usize,
    max_frame: usize,
    max_sessions: usize,
    /// A registration waits for the verifier (auth.rs): nothing more is
    /// read from the connection until it is answered.
    registering: Cell<bool>,
    /// TLS (a connection of `tls-listen`): the record layer between the
    /// socket and the frames (tls.rs).
    tls: Option<RefCell<rustls::ServerConnection>>,
    /// The shard's counters: answers by type and latency, errors by code.
    stats: Rc<ShardStats>,
    /// When each unanswered request arrived, by (SessionId, reference id),
    /// with its message type: its answer's latency is counted from there.
    /// Bounded by max-pending-requests (a reused reference id replaces
    /// the entry).
    arrived: RefCell<AHashMap<(u32, u32), (u16, Instant)>>,
}

impl Conn {
    pub fn new(
        id: u64,
        shard: u16,
        peer: Option<SocketAddr>,
        stream: TcpStream,
        config: &Config,
        stats: Rc<ShardStats>,
        tls: Option<rustls::ServerConnection>,
    ) -> Rc<Conn> {
        Rc::new(Conn {
            id,
            peer,
            shard,
            stream: RefCell::new(stream),
            out: RefCell::new(Vec::new()),
            writing: Cell::new(false),
            out_notify: LocalNotify::default(),
            unanswered: Cell::new(0),
            read_resume: LocalNotify::default(),
            closing: Cell::new(false),
            dead: Cell::new(false),
            cause: Cell::new(None),
            heartbeat_ms: Cell::new(0),
            sessions: RefCell::new(AHashMap::new()),
            open: RefCell::new(AHashMap::new()),
            last_serial: Cell::new(0),
            backlogged: RefCell::new(VecDeque::new()),
            max_pending: config.server.max_pending_requests,
            max_output: config.server.max_output_buffer,
            max_frame: config.server.max_frame_size,
            max_sessions: config.server.max_sessions_per_connection,
            registering: Cell::new(false),
            tls: tls.map(RefCell::new),
            stats,
            arrived: RefCell::new(AHashMap::new()),
        })
    }

    /// A reload's client list: the sessions of clients it no longer has
    /// end (the connection, when its own registration is one), the others
    /// take their client's tenant list. With no client listed (protected
    /// mode) sessions stay as they are.
    pub fn apply_clients(&self, rt: &Runtime, clients: &[ClientEntry]) {
        if clients.is_empty() || self.dead.get() {
            return;
        }
        let open: Vec<Rc<Session>> = self.sessions.borrow().values().filter(|s| !s.closed.get()).cloned().collect();
        for s in open {
            match clients.iter().find(|c| *c.name == *s.client_name && c.client_type == s.client_type) {
                Some(entry) => *s.tenants.borrow_mut() = entry.tenant_scope(&rt.config.catalog),
                None if s.serial == 0 => {
                    tracing::warn!(msg_id = msgid::CLIENT_REMOVED, conn = self.id, peer = ?self.peer, client = %s.client_name, "client removed from the configuration: connection closed");
                    self.kill("client removed from the configuration");
                    return;
                }
                None => {
                    tracing::warn!(msg_id = msgid::CLIENT_REMOVED, conn = self.id, peer = ?self.peer, session = s.wire, client = %s.client_name, "client removed from the configuration: session closed");
                    self.end_session(rt, &s);
                }
            }
        }
    }

    /// Ends the open session `s` (one opened with a SessionId): the answers
    /// to its requests still go out; its client is gone as if its
    /// connection had closed (agent's desktop, locks, snapshots,
    /// subscription).
    fn end_session(&self, rt: &Runtime, s: &Session) {
        debug_assert_ne!(s.serial, 0, "the connection's own session ends with the connection");
        self.open.borrow_mut().remove(&s.wire);
        s.closed.set(true);
        if s.unanswered.get() == 0 {
            self.sessions.borrow_mut().remove(&s.serial);
        }
        rt.conn_closed(self.origin(s.serial), s.agent.get());
    }

    /// Sessions open on the connection, its own included.
    pub fn sessions_open(&self) -> usize {
        self.sessions.borrow().values().filter(|s| !s.closed.get()).count()
    }

    /// The session with this serial, open or closed with answers to send.
    fn session(&self, serial: u32) -> Option<Rc<Session>> {
        self.sessions.borrow().get(&serial).cloned()
    }

    /// The open session a request names by its SessionId.
    fn open_session(&self, wire: u32) -> Option<Rc<Session>> {
        let serial = if wire == 0 { 0 } else { *self.open.borrow().get(&wire)? };
        self.session(serial).filter(|s| !s.closed.get())
    }

    /// The session at `serial`, if it is open: events for it are sent.
    fn live_session(&self, serial: u32) -> Option<Rc<Session>> {
        self.session(serial).filter(|s| !s.closed.get())
    }

    fn origin(&self, serial: u32) -> Origin {
        Origin { shard: self.shard, conn: self.id, session: serial }
    }

    /// Hands a shard's answer to a request of the session at `serial`: it
    /// goes out even if the session closed meanwhile (every request gets
    /// exactly one answer).
    pub fn answer_from_shard(&self, serial: u32, frame: &Frame) {
        let Some(s) = self.session(serial) else {
            debug_assert!(false, "an answer for session {serial}, which has no request waiting");
            return;
        };
        debug_assert!(s.unanswered.get() > 0, "an answer without a request");
        s.unanswered.set(s.unanswered.get().saturating_sub(1));
        if s.closed.get() && s.unanswered.get() == 0 {
            self.sessions.borrow_mut().remove(&serial);
        }
        self.answer(s.wire, frame);
    }

    /// Queues the answer to one request of session `wire` (its SessionId).
    fn answer(&self, wire: u32, frame: &Frame) {
        if self.dead.get() {
            return;
        }
        if let Some((t, at)) = self.arrived.borrow_mut().remove(&(wire, frame.ref_id)) {
            self.stats.answered(t, at.elapsed().as_micros() as u64);
        }
        if frame.msg_type == msg_type::EVENT_ERROR {
            self.stats.error(frame.get_int(attr::ERROR_CODE).unwrap_or(0));
            tracing::info!(
                msg_id = msgid::REQUEST_REFUSED,
                conn = self.id,
                peer = ?self.peer,
                session = wire,
                ref_id = frame.ref_id,
                code = frame.get_int(attr::ERROR_CODE),
                text = frame.get_str(attr::ERROR_TEXT),
                "request refused"
            );
        }
        debug_assert!(self.unanswered.get() > 0, "an answer without a request");
        self.unanswered.set(self.unanswered.get().saturating_sub(1));
        let len = {
            let mut out = self.out.borrow_mut();
            encode_for(frame, wire, &mut out);
            out.len()
        };
        if len > self.max_output {
            tracing::warn!(
                msg_id = msgid::SLOW_CLIENT,
                conn = self.id,
                peer = ?self.peer,
                unsent_bytes = len,
                limit = self.max_output,
                "client disconnected: it does not read its answers (max-output-buffer exceeded)"
            );
            self.kill("max-output-buffer exceeded");
            return;
        }
        self.out_notify.notify();
        if self.unanswered.get() < self.max_pending {
            self.read_resume.notify();
        }
    }

    /// Queues an unsolicited event (not an answer) for the session at
    /// `serial`, numbered with its EventSequence; dropped if it closed.
    pub fn event(&self, serial: u32, frame: Frame) {
        if let Some(s) = self.live_session(serial) {
            self.send_event(&s, frame);
        }
    }

    /// Queues an event of `s`, numbered with its EventSequence. Bounded
    /// like answers (max-output-buffer).
    fn send_event(&self, s: &Session, mut frame: Frame) {
        if self.dead.get() || self.closing.get() {
            return;
        }
        let seq = s.events_sent.get() + 1;
        s.events_sent.set(seq);
        frame.push(attr::EVENT_SEQUENCE, seq as i64);
        let len = {
            let mut out = self.out.borrow_mut();
            encode_for(&frame, s.wire, &mut out);
            out.len()
        };
        if len > self.max_output {
            tracing::warn!(
                msg_id = msgid::SLOW_CLIENT,
                conn = self.id,
                peer = ?self.peer,
                unsent_bytes = len,
                limit = self.max_output,
                "client disconnected: it does not read its events (max-output-buffer exceeded)"
            );
            self.kill("max-output-buffer exceeded");
            return;
        }
        self.out_notify.notify();
    }

    /// The session at `serial` now carries `agent` (or none). False when
    /// it closed: its home must still hear of the close.
    pub fn bind(&self, serial: u32, agent: Option<AgentRef>) -> bool {
        match self.live_session(serial) {
            Some(s) => {
                s.agent.set(agent);
                true
            }
            None => false,
        }
    }

    /// The subscription of the session at `serial` starts at `cursor`
    /// (before any of its events). `max_waiting`: the most events that may
    /// wait behind a replay.
    pub fn start_cursor(&self, serial: u32, sub: u64, cursor: Cursor, catalog: CatalogNow, max_waiting: usize) {
        let Some(s) = self.live_session(serial) else { return };
        let mut current = s.subscriber.borrow_mut();
        if sub < s.ended_below.get() || current.as_deref().is_some_and(|c| c.sub > sub) {
            // An earlier subscription's, late: it ended, or a later one
            // has started.
            return;
        }
        *current = Some(Box::new(Subscriber { sub, cursor, catalog, waiting: VecDeque::new(), max_waiting }));
    }

    /// The session unsubscribed (this comes before the answer): no event
    /// of its subscriptions so far is sent from now on.
    pub fn end_subscription(&self, serial: u32, below: u64) {
        let Some(s) = self.session(serial) else { return };
        s.ended_below.set(s.ended_below.get().max(below));
        *s.subscriber.borrow_mut() = None;
    }

    /// Queues the events of subscription `sub` read from the event log:
    /// they go out as the client reads, before any other of its events.
    pub fn queue_log(&self, serial: u32, sub: u64, frames: Vec<Frame>) {
        let Some(s) = self.live_session(serial) else { return };
        if sub < s.ended_below.get() {
            return;
        }
        *s.log_frames.borrow_mut() = (sub, frames.into());
        self.mark_backlogged(&s);
        self.refill();
    }

    /// Queues a reporting event: at once, or behind the events of a
    /// replay still waiting.
    pub fn report(&self, serial: u32, sub_op: u64, p: Arc<Published>) {
        let Some(s) = self.live_session(serial) else { return };
        let p = match s.subscriber.borrow_mut().as_deref_mut() {
            // Of an earlier subscription of this session: dropped.
            Some(sub) if sub.sub != sub_op => return,
            Some(sub) if !sub.waiting.is_empty() || s.log_waiting(sub_op) => {
                sub.waiting.push_back(p);
                None
            }
            Some(_) => Some(p),
            // Not subscribed (any more): events on their way are dropped.
            None => return,
        };
        match p {
            Some(p) => self.send_report(&s, &p),
            None => self.check_waiting(&s),
        }
    }

    /// Queues the events a resuming subscriber missed: they go out as the
    /// client reads, so a long replay never fills the output buffer.
    pub fn replay(&self, serial: u32, sub_op: u64, events: Vec<Arc<Published>>) {
        let Some(s) = self.live_session(serial) else { return };
        match s.subscriber.borrow_mut().as_deref_mut() {
            Some(sub) if sub.sub == sub_op => sub.waiting.extend(events),
            _ => return,
        }
        self.mark_backlogged(&s);
        self.check_waiting(&s);
        self.refill();
    }

    /// Puts `s` in the queue of sessions with events waiting.
    fn mark_backlogged(&self, s: &Rc<Session>) {
        if !s.backlogged.replace(true) {
            self.backlogged.borrow_mut().push_back(s.clone());
        }
    }

    /// Disconnects a subscriber whose waiting events pass their bound.
    fn check_waiting(&self, s: &Session) {
        if s.over_waiting() {
            tracing::warn!(
                msg_id = msgid::SLOW_CLIENT,
                conn = self.id,
                peer = ?self.peer,
                session = s.wire,
                "client disconnected: it does not read the events it resumed (replay backlog exceeded)"
            );
            self.kill("max-output-buffer exceeded");
        }
    }

    /// Moves waiting events into the output while it holds little, one
    /// event of each backlogged session in turn.
    fn refill(&self) {
        loop {
            // Well under max-output-buffer: one more event (at most half a
            // frame of properties) must not pass it.
            let below = REFILL_BELOW.min(self.max_output / 4);
            if self.dead.get() || self.out.borrow().len() >= below {
                return;
            }
            let Some(s) = self.backlogged.borrow_mut().pop_front() else { return };
            let next = if s.closed.get() { None } else { s.next_waiting() };
            let Some(next) = next else {
                s.backlogged.set(false);
                continue;
            };
            self.backlogged.borrow_mut().push_back(s.clone());
            match next {
                Waiting::Logged(frame) => self.send_event(&s, frame),
                Waiting::Event(p) => self.send_report(&s, &p),
            }
        }
    }

    /// Encodes a reporting event, stamped with the cursor that names it and
    /// every earlier one this subscriber received.
    fn send_report(&self, s: &Session, p: &Published) {
        let frame = {
            let mut sub = s.subscriber.borrow_mut();
            let Some(sub) = sub.as_deref_mut() else { return };
            let last = &mut sub.cursor.seqs[p.shard as usize];
            debug_assert!(p.seq > *last, "event {} of shard {} after {last}", p.seq, p.shard);
            *last = p.seq;
            let mut frame = p.event.frame(&sub.catalog.borrow());
            let mut text = String::with_capacity(16 + 8 * sub.cursor.seqs.len());
            sub.cursor.write(&mut text);
            frame.push(attr::EVENT_CURSOR, text);
            frame
        };
        self.send_event(s, frame);
    }

    /// Closes every session of the connection (it closed): returns each
    /// one's origin and agent, for the shards.
    fn close_sessions(&self) -> Vec<(Origin, Option<AgentRef>)> {
        self.open.borrow_mut().clear();
        self.backlogged.borrow_mut().clear();
        let mut sessions: Vec<_> = self.sessions.borrow_mut().drain().map(|(_, s)| s).collect();
        sessions.sort_by_key(|s| s.serial);
        sessions
            .into_iter()
            // One closed by RequestCloseSession was told to the shards then.
            .filter(|s| !s.closed.replace(true))
            .map(|s| (self.origin(s.serial), s.agent.get()))
            .collect()
    }

    fn error(&self, wire: u32, ref_id: u32, code: ErrorCode, text: impl Into<String>) {
        self.answer(wire, &event_error(ref_id, &ProtoError::new(code, text)));
    }

    /// Whether answers are still waiting to go out.
    pub fn has_output(&self) -> bool {
        !self.dead.get() && (self.writing.get() || !self.out.borrow().is_empty())
    }

    /// Stop reading; close once every queued answer is written.
    pub fn close_after_flush(&self) {
        self.closing.set(true);
        self.out_notify.notify();
        self.read_resume.notify();
    }

    /// The client asked for heartbeats: from now on the server closes the
    /// connection when a read has waited `ms` milliseconds without a byte
    /// (glommio's read timeout; it runs only while the reader waits on the
    /// socket, not while it holds back under max-pending-requests).
    fn start_heartbeat(&self, ms: u32) {
        self.heartbeat_ms.set(ms);
        let _ = self.stream.borrow().set_read_timeout(Some(Duration::from_millis(ms as u64)));
    }

    /// Drops the connection now, abortively: `cause` is logged with its
    /// close (1022). Linger 0 makes the final close send a reset and
    /// discard what the kernel still holds for this client (a client that
    /// does not read would otherwise keep it, and the socket, for as long
    /// as it stays connected); the shutdown wakes a reader or writer
    /// blocked on the socket now, so both tasks end and the descriptor is
    /// freed.
    fn kill(&self, cause: &'static str) {
        if self.dead.replace(true) {
            return;
        }
        self.cause.set(Some(cause));
        // Give the queued bytes back at once, not just forget them.
        *self.out.borrow_mut() = Vec::new();
        let sock = self.sock();
        let _ = socket2::SockRef::from(&sock).set_linger(Some(Duration::ZERO));
        let _ = socket2::SockRef::from(&sock).shutdown(std::net::Shutdown::Both);
        self.out_notify.notify();
        self.read_resume.notify();
    }

    /// The socket, for plain socket calls. The stream (and so the
    /// descriptor) lives as long as `self`; borrowing the RefCell across
    /// an await could meet the other task's poll, so only the fd is taken.
    fn sock(&self) -> BorrowedFd<'_> {
        let fd = self.stream.borrow().as_raw_fd();
        // SAFETY: the fd belongs to `self.stream`, which `self` owns and
        // closes only when it is dropped.
        unsafe { BorrowedFd::borrow_raw(fd) }
    }
}

/// glommio's stream has separate read and write readiness sources, so one
/// reader task and one writer task can share it; each poll borrows briefly.
impl AsyncRead for &Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        match &self.tls {
            None => Pin::new(&mut *self.stream.borrow_mut()).poll_read(cx, buf),
            Some(tls) => self.poll_read_tls(tls, cx, buf),
        }
    }
}

impl AsyncWrite for &Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match &self.tls {
            None => Pin::new(&mut *self.stream.borrow_mut()).poll_write(cx, buf),
            Some(tls) => {
                // What rustls holds goes out first, so it holds one
                // write's worth at most (the output is bounded before it).
                match self.poll_flush_tls(tls, cx) {
                    Poll::Ready(Ok(())) => Poll::Ready(tls.borrow_mut().writer().write(buf)),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Some(tls) = &self.tls {
            match self.poll_flush_tls(tls, cx) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        Pin::new(&mut *self.stream.borrow_mut()).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.stream.borrow_mut()).poll_close(cx)
    }
}

/// The socket as a plain `io::Write` for rustls, inside one poll: a write
/// that would wait is `WouldBlock` (the poll's waker is registered).
struct PollWriter<'a, 'b> {
    stream: &'a RefCell<TcpStream>,
    cx: &'a mut Context<'b>,
}

impl std::io::Write for PollWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match Pin::new(&mut *self.stream.borrow_mut()).poll_write(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(std::io::ErrorKind::WouldBlock.into()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Conn {
    /// Plaintext from the TLS session: what rustls holds, else more
    /// ciphertext read from the socket and decrypted. Records the peer's
    /// messages call for (the handshake) are left for the writer task,
    /// which alone writes to the socket.
    fn poll_read_tls(
        &self,
        tls: &RefCell<rustls::ServerConnection>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            match tls.borrow_mut().reader().read(buf) {
                // 0: the peer closed the session (close_notify).
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            let mut cipher = [0u8; 17 * 1024];
            let n = match Pin::new(&mut *self.stream.borrow_mut()).poll_read(cx, &mut cipher) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
            let mut t = tls.borrow_mut();
            let mut rest = &cipher[..n];
            while !rest.is_empty() {
                t.read_tls(&mut rest)?;
                if let Err(e) = t.process_new_packets() {
                    // rustls has an alert queued for the peer.
                    self.out_notify.notify();
                    return Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)));
                }
            }
            if t.wants_write() {
                self.out_notify.notify();
            }
        }
    }

    /// Writes what rustls holds to the socket; Ready once it is all out.
    fn poll_flush_tls(
        &self,
        tls: &RefCell<rustls::ServerConnection>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut t = tls.borrow_mut();
        while t.wants_write() {
            let mut w = PollWriter { stream: &self.stream, cx };
            match t.write_tls(&mut w) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// TLS records wait to be written (a handshake message, an alert).
    fn tls_wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.borrow().wants_write())
    }

    /// The client certificate of a mutual TLS connection.
    fn client_certificate(&self) -> Option<rustls::pki_types::CertificateDer<'static>> {
        let t = self.tls.as_ref()?.borrow();
        t.peer_certificates()?.first().map(|c| c.clone().into_owned())
    }
}

/// Starts the reader and writer tasks of a new connection.
pub fn spawn(rt: Rc<Runtime>, conn: Rc<Conn>) {
    let _ = conn.stream.borrow().set_nodelay(true);
    set_keepalive(&conn, rt.config.server.tcp_keepalive);
    let write_timeout = rt.config.server.write_timeout;
    if write_timeout > 0 {
        // glommio times each write that waits: from the first time the
        // socket takes nothing until it takes bytes again.
        let _ = conn.stream.borrow().set_write_timeout(Some(Duration::from_secs(write_timeout)));
    }
    tracing::debug!(msg_id = msgid::CLIENT_CONNECTED, shard = rt.shard, conn = conn.id, peer = ?conn.peer, "client connected");
    let queue = rt.queue;
    {
        let conn = conn.clone();
        glommio::spawn_local_into(async move { write_loop(&conn).await }, queue).expect("spawn").detach();
    }
    glommio::spawn_local_into(async move { read_loop(&rt, &conn).await }, queue).expect("spawn").detach();
}

/// Writes what is queued on the connection. Memory: while the client has
/// nothing to receive, the connection holds no output buffer; one is taken
/// when an answer is queued and both are given back when the writer has
/// sent everything and goes idle again.
/// TCP keepalive (`tcp-keepalive` seconds idle, then a probe every third
/// of that, three probes): the kernel closes a connection to a peer that
/// is gone, even one that never asked for heartbeats.
fn set_keepalive(conn: &Conn, idle_secs: u64) {
    if idle_secs == 0 {
        return;
    }
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(idle_secs))
        .with_interval(Duration::from_secs((idle_secs / 3).max(1)))
        .with_retries(3);
    let sock = conn.sock();
    if let Err(e) = socket2::SockRef::from(&sock).set_tcp_keepalive(&keepalive) {
        tracing::debug!(conn = conn.id, error = %e, "cannot set TCP keepalive");
    }
}

async fn write_loop(conn: &Conn) {
    let mut sending = Vec::new();
    loop {
        if conn.dead.get() {
            break;
        }
        // A resuming subscriber's missed events, as the output drains.
        conn.refill();
        if conn.out.borrow().is_empty() {
            if conn.tls_wants_write() {
                // Records of the TLS session itself (the handshake).
                let mut w = conn;
                if w.flush().await.is_err() {
                    conn.kill("write error");
                    break;
                }
                continue;
            }
            if conn.closing.get() {
                break;
            }
            sending = Vec::new();
            *conn.out.borrow_mut() = Vec::new();
            conn.out_notify.wait().await;
            continue;
        }
        std::mem::swap(&mut *conn.out.borrow_mut(), &mut sending);
        conn.writing.set(true);
        let mut w = conn;
        let mut res = w.write_all(&sending).await;
        if res.is_ok() && conn.tls.is_some() {
            res = w.flush().await;
        }
        conn.writing.set(false);
        if let Err(e) = res {
            if e.kind() == std::io::ErrorKind::TimedOut {
                tracing::warn!(
                    msg_id = msgid::WRITE_TIMEOUT,
                    conn = conn.id,
                    peer = ?conn.peer,
                    queued_bytes = sending.len() + conn.out.borrow().len(),
                    "client disconnected: its writes made no progress for write-timeout"
                );
                conn.kill("write timeout");
            } else {
                conn.kill("write error");
            }
            break;
        }
        sending.clear();
    }
    // Every answer is out (or the connection is dead): a plain shutdown(2)
    // ends the reader too.
    let _ = socket2::SockRef::from(&conn.sock()).shutdown(std::net::Shutdown::Both);
}

/// Reads, frames and handles the client's requests. Memory: reads land in
/// the shard's one read buffer ([`Runtime::read_buf`]), lent for the
/// length of one poll, and complete frames are handled straight from it;
/// only the bytes of a frame that has not fully arrived are copied into a
/// buffer of the connection's own, sized to that frame and given back when
/// it is complete. An idle connection holds no read buffer.
async fn read_loop(rt: &Runtime, conn: &Conn) {
    let mut partial: Vec<u8> = Vec::new();
    let reason = 'conn: loop {
        while (conn.unanswered.get() >= conn.max_pending || conn.registering.get())
            && !conn.dead.get()
            && !conn.closing.get()
        {
            conn.read_resume.wait().await;
        }
        if conn.dead.get() || conn.closing.get() {
            break 'conn "closed by server";
        }
        // Frames that arrived behind a registration waiting for its
        // credential check go first.
        if !partial.is_empty() {
            match handle_frames(rt, conn, &partial) {
                Ok(used) => drop(partial.drain(..used)),
                Err(()) => break 'conn "framing error",
            }
            if conn.registering.get() {
                continue 'conn;
            }
        }
        let got = poll_fn(|cx| {
            let mut buf = rt.read_buf.borrow_mut();
            Pin::new(&mut &*conn).poll_read(cx, &mut buf)
        })
        .await;
        // A reload published while the read waited holds for what it read
        // (its clients, its catalog), though the shard's wake-up for it
        // may not have run yet; it may also have removed this client.
        rt.catch_up();
        if conn.dead.get() || conn.closing.get() {
            // The server dropped or closed it while the read waited.
            break 'conn "closed by server";
        }
        let n = match got {
            Ok(0) => break 'conn "closed by client",
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                tracing::warn!(
                    msg_id = msgid::HEARTBEAT_TIMEOUT,
                    conn = conn.id,
                    peer = ?conn.peer,
                    heartbeat_ms = conn.heartbeat_ms.get(),
                    "client disconnected: nothing received within its heartbeat timeout"
                );
                conn.kill("heartbeat timeout");
                break 'conn "closed by server";
            }
            Err(_) => break 'conn "read error",
        };
        // No await from here to the end of the iteration: nothing else
        // can read into the shard's buffer meanwhile.
        let buf = rt.read_buf.borrow();
        let handled = if partial.is_empty() {
            handle_frames(rt, conn, &buf[..n]).map(|used| partial.extend_from_slice(&buf[used..n]))
        } else {
            partial.extend_from_slice(&buf[..n]);
            handle_frames(rt, conn, &partial).map(|used| drop(partial.drain(..used)))
        };
        if handled.is_err() {
            break 'conn "framing error";
        }
        if partial.is_empty() {
            partial = Vec::new();
        } else if partial.len() >= 4 {
            // Room for the whole frame in progress; split_frame has checked
            // its length against max-frame-size already.
            let need = u32::from_le_bytes([partial[0], partial[1], partial[2], partial[3]]) as usize;
            partial.reserve_exact(need.saturating_sub(partial.len()));
        }
    };
    conn.close_after_flush();
    rt.remove_conn(conn.id);
    let client = conn.session(0).map(|s| s.client_name.to_string());
    // A carrier may have thousands of sessions: each close is one input,
    // and the shard may serve others between them.
    for (origin, agent) in conn.close_sessions() {
        rt.conn_closed(origin, agent);
        glommio::yield_if_needed().await;
    }
    let cause = conn.cause.get().unwrap_or(if rt.stopping.get() { "shutdown" } else { "none" });
    tracing::info!(msg_id = msgid::CLIENT_DISCONNECTED, shard = rt.shard, conn = conn.id, peer = ?conn.peer, ?client, reason, cause, "client disconnected");
}

/// Handles the complete frames at the start of `bytes`; returns how many
/// bytes they took. Err: a fatal framing error (answered and logged).
fn handle_frames(rt: &Runtime, conn: &Conn, bytes: &[u8]) -> Result<usize, ()> {
    let mut pos = 0;
    loop {
        match split_frame(&bytes[pos..], conn.max_frame) {
            Err(e) => {
                fatal_frame(conn, &e);
                return Err(());
            }
            Ok(None) => return Ok(pos),
            Ok(Some((header, body, total))) => {
                handle_frame(rt, conn, &header, body);
                pos += total;
                if conn.registering.get() {
                    // The rest waits for the registration's answer.
                    return Ok(pos);
                }
            }
        }
    }
}

fn fatal_frame(conn: &Conn, e: &FatalFrameError) {
    let code = match e {
        FatalFrameError::LengthTooSmall(_) => ErrorCode::InvalidFrame,
        FatalFrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
        FatalFrameError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
    };
    tracing::warn!(msg_id = msgid::FATAL_FRAME, conn = conn.id, peer = ?conn.peer, error = %e, "bad frame; closing the connection");
    // Counted as a request so the answer bookkeeping stays balanced.
    conn.unanswered.set(conn.unanswered.get() + 1);
    conn.error(0, 0, code, format!("{e}; closing the connection"));
}

fn handle_frame(rt: &Runtime, conn: &Conn, header: &Header, body: &[u8]) {
    debug_assert_eq!(header.version, PROTOCOL_VERSION);
    let ref_id = header.ref_id();
    let arrived = Instant::now();
    conn.unanswered.set(conn.unanswered.get() + 1);
    let frame = match decode_body(body) {
        Ok(attrs) => Frame { msg_type: header.msg_type(), ref_id, attrs, raw: Vec::new() },
        Err(e) => return conn.error(0, ref_id, ErrorCode::MalformedBody, format!("malformed body: {e}")),
    };
    // The session is the connection's business, as is the heartbeat: read
    // here, before the request, so every answer carries it.
    let wire = match session_id_of(&frame) {
        Ok(w) => w,
        Err(e) => return conn.answer(0, &event_error(ref_id, &e)),
    };
    conn.arrived.borrow_mut().insert((wire, ref_id), (frame.msg_type, arrived));
    let request = match Request::decode(&frame) {
        Ok(r) => r,
        Err(e) => return conn.answer(wire, &event_error(ref_id, &e)),
    };
    let heartbeat = match &request {
        Request::RegisterClient { .. } => match heartbeat_timeout_of(&frame) {
            Ok(h) => h,
            Err(e) => return conn.answer(wire, &event_error(ref_id, &e)),
        },
        _ => None,
    };
    match request {
        Request::RegisterClient { client_type, name, credential } => {
            register(rt, conn, Registration { wire, ref_id, client_type, name, heartbeat }, credential)
        }
        Request::CloseSession => close_session(rt, conn, wire, ref_id),
        request => {
            let Some(session) = conn.open_session(wire) else {
                let text = if conn.session(0).is_none() {
                    format!("{} before RequestRegisterClient", request.name())
                } else {
                    format!("session {wire} is not open on this connection: open it with RequestRegisterClient")
                };
                return conn.error(wire, ref_id, ErrorCode::NotRegistered, text);
            };
            if let Request::Ping = request {
                return conn.answer(wire, &event_ack(ref_id).with(attr::SERVER_TIME, now_ms()));
            }
            if rt.stopping.get() {
                return conn.error(wire, ref_id, ErrorCode::ShuttingDown, "the server is shutting down");
            }
            let caller = Caller {
                origin: conn.origin(session.serial),
                ref_id,
                client_type: session.client_type,
                client_name: session.client_name.clone(),
                agent: session.agent.get(),
                tenants: session.tenants.borrow().clone(),
            };
            // Counted first: a shard may answer before route returns.
            session.unanswered.set(session.unanswered.get() + 1);
            if let Err(e) = rt.route(caller, request) {
                session.unanswered.set(session.unanswered.get() - 1);
                conn.answer(wire, &event_error(ref_id, &e));
            }
        }
    }
}

/// RequestRegisterClient: registers the connection (no SessionId), or
/// opens session `wire` on a registered connection.
fn register(rt: &Runtime, conn: &Conn, reg: Registration, credential: Option<String>) {
    let (wire, ref_id) = (reg.wire, reg.ref_id);
    if wire == 0 && conn.session(0).is_some() {
        return conn.error(wire, ref_id, ErrorCode::AlreadyRegistered, "this connection is already registered");
    }
    if wire != 0 {
        if conn.session(0).is_none() {
            return conn.error(
                wire,
                ref_id,
                ErrorCode::NotRegistered,
                "register the connection (RequestRegisterClient without SessionId) before opening sessions on it",
            );
        }
        if conn.open.borrow().contains_key(&wire) {
            return conn.error(wire, ref_id, ErrorCode::AlreadyRegistered, format!("session {wire} is already open"));
        }
        if reg.heartbeat.is_some() {
            return conn.error(
                wire,
                ref_id,
                ErrorCode::InvalidValue,
                "HeartbeatTimeout belongs to the connection: ask for it when registering the connection, not a session",
            );
        }
        if conn.open.borrow().len() >= conn.max_sessions {
            return conn.error(
                wire,
                ref_id,
                ErrorCode::Overloaded,
                format!(
                    "this connection has max-sessions-per-connection ({}) sessions open; close one or use another \
                     connection",
                    conn.max_sessions
                ),
            );
        }
    }
    match authenticate(rt, conn.peer, conn.client_certificate(), reg.client_type, &reg.name, credential.as_deref()) {
        Auth::Refused(text) => refuse_registration(conn, &reg, text),
        Auth::Granted(tenants) => open_registration(rt, conn, reg, tenants),
        Auth::Verify { phc, tenants } => {
            let check =
                Check { shard: rt.shard, conn: conn.id, reg, credential: credential.unwrap_or_default(), phc, tenants };
            match rt.verifier.submit(check) {
                // The connection reads nothing more until the verdict.
                Ok(()) => conn.registering.set(true),
                Err(_) => conn.error(
                    wire,
                    ref_id,
                    ErrorCode::Overloaded,
                    format!(
                        "{MAX_WAITING} registrations are already waiting for their credential check; register again \
                         later"
                    ),
                ),
            }
        }
    }
}

fn refuse_registration(conn: &Conn, reg: &Registration, text: String) {
    tracing::warn!(msg_id = msgid::AUTH_FAILED, conn = conn.id, peer = ?conn.peer, session = reg.wire, client = %reg.name, reason = %text, "registration refused");
    conn.error(reg.wire, reg.ref_id, ErrorCode::AuthenticationFailed, text);
}

/// Opens the connection's own session (`wire` 0) or session `wire`, and
/// acknowledges the registration.
fn open_registration(rt: &Runtime, conn: &Conn, reg: Registration, tenants: TenantScope) {
    let Registration { wire, ref_id, client_type, name, heartbeat } = reg;
    let serial = if wire == 0 {
        0
    } else {
        let Some(serial) = conn.last_serial.get().checked_add(1) else {
            return conn.error(
                wire,
                ref_id,
                ErrorCode::Overloaded,
                "this connection has opened 2^32-1 sessions, the most one connection may; use another connection",
            );
        };
        conn.last_serial.set(serial);
        conn.open.borrow_mut().insert(wire, serial);
        serial
    };
    tracing::info!(msg_id = msgid::CLIENT_REGISTERED, shard = rt.shard, conn = conn.id, peer = ?conn.peer, session = wire, client = %name, client_type = client_type.name(), heartbeat_ms = heartbeat.unwrap_or(0), "client registered");
    conn.sessions.borrow_mut().insert(serial, Session::new(wire, serial, client_type, name.into(), tenants));
    let mut ack = event_ack(ref_id)
        .with(attr::SERVER_NAME, rt.config.server.application_name.as_str())
        .with(attr::NODE_ID, rt.config.server.node_id as i64)
        .with(attr::PROTOCOL_VERSION, PROTOCOL_VERSION as i64)
        .with(attr::SHARD_COUNT, rt.shards as i64);
    if let Some(ms) = heartbeat {
        conn.start_heartbeat(ms);
        ack.push(attr::HEARTBEAT_TIMEOUT, ms as i64);
    }
    conn.answer(wire, &ack);
}

/// The verifier's answer for a registration of a connection of this
/// shard: completes or refuses it, then lets the connection read again.
pub fn verified(rt: &Runtime, verdict: Verdict) {
    let Verdict { check: c, ok } = verdict;
    // Closed meanwhile: nothing to answer.
    let Some(conn) = rt.conn(c.conn) else { return };
    if ok {
        rt.verified.borrow_mut().insert(c.reg.name.clone(), fingerprint(&c.phc, &c.credential));
        open_registration(rt, &conn, c.reg, c.tenants);
    } else {
        let text = format!("wrong credential for client '{}'", c.reg.name);
        refuse_registration(&conn, &c.reg, text);
    }
    conn.registering.set(false);
    conn.read_resume.notify();
}

/// RequestCloseSession: ends session `wire` as closing a connection ends
/// its client (its agent's login session starts, its locks, pulls,
/// snapshots and subscription end). Answers to its requests still on
/// their way go out; its events stop at once.
fn close_session(rt: &Runtime, conn: &Conn, wire: u32, ref_id: u32) {
    if wire == 0 {
        return conn.error(
            wire,
            ref_id,
            ErrorCode::MissingAttribute,
            "RequestCloseSession needs the SessionId of the session to close; the connection's own session ends with \
             the connection",
        );
    }
    let Some(serial) = conn.open.borrow().get(&wire).copied() else {
        return conn.error(
            wire,
            ref_id,
            ErrorCode::NotRegistered,
            format!("session {wire} is not open on this connection"),
        );
    };
    let session = conn.session(serial).expect("an open session is kept");
    tracing::info!(msg_id = msgid::SESSION_CLOSED, shard = rt.shard, conn = conn.id, peer = ?conn.peer, session = wire, client = %session.client_name, "session closed");
    conn.end_session(rt, &session);
    conn.answer(wire, &event_ack(ref_id));
}

/// Encodes a frame for the session `wire`: stamped with its SessionId
/// unless it is the connection's own.
fn encode_for(frame: &Frame, wire: u32, out: &mut Vec<u8>) {
    if wire == 0 {
        frame.encode_into(out);
    } else {
        frame.encode_into_with(out, attr::SESSION_ID, &Value::Int(wire as i64));
    }
}

/// Checks a registration against `[[client]]`, or protected mode when no
/// client is configured: then only loopback peers may register.
/// What a registration's credentials come to.
enum Auth {
    Granted(TenantScope),
    Refused(String),
    /// A hashed password this shard has not seen the credential for: the
    /// verifier thread decides.
    Verify {
        phc: Arc<str>,
        tenants: TenantScope,
    },
}

fn authenticate(
    rt: &Runtime,
    peer: Option<SocketAddr>,
    client_certificate: Option<rustls::pki_types::CertificateDer<'static>>,
    client_type: ClientType,
    name: &str,
    credential: Option<&str>,
) -> Auth {
    let clients = rt.clients.borrow().clone();
    if name.is_empty() || name.len() > ixn_shard::machine::MAX_NAME_LEN {
        return Auth::Refused(format!("ClientName must be 1 to {} bytes", ixn_shard::machine::MAX_NAME_LEN));
    }
    // Mutual TLS: the certificate (verified against tls-client-ca in the
    // handshake) must name the client.
    if let Some(cert) = client_certificate {
        if !super::tls::certificate_names(&cert, name) {
            return Auth::Refused(format!("the client certificate is not valid for client name '{name}'"));
        }
    }
    if clients.is_empty() {
        return match peer {
            Some(p) if p.ip().is_loopback() => Auth::Granted(TenantScope::all()),
            _ => Auth::Refused(
                "no clients are configured, so only loopback connections may register (protected mode); \
                 list the client under [[client]] in the configuration"
                    .into(),
            ),
        };
    }
    let Some(entry) = clients.iter().find(|c| c.name == name) else {
        return Auth::Refused(format!("client '{name}' is not configured"));
    };
    if entry.client_type != client_type {
        return Auth::Refused(format!(
            "client '{name}' is configured as {}, not {}",
            entry.client_type.name(),
            client_type.name()
        ));
    }
    let credential = credential.unwrap_or("");
    let tenants = entry.tenant_scope(&rt.config.catalog);
    match Stored::parse(&entry.password) {
        Ok(Stored::Clear(p)) if constant_time_eq(p.as_bytes(), credential.as_bytes()) => Auth::Granted(tenants),
        Ok(Stored::Hashed(phc)) => {
            let known = rt.verified.borrow().get(name).copied();
            if known.is_some_and(|f| constant_time_eq(&f, &fingerprint(&phc, credential))) {
                Auth::Granted(tenants)
            } else {
                Auth::Verify { phc: phc.into(), tenants }
            }
        }
        // A malformed hash is refused at start; this is a clear text
        // password that does not match.
        _ => Auth::Refused(format!("wrong credential for client '{name}'")),
    }
}
