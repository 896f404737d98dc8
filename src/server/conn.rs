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
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use ixn_shard::agent::AgentRef;
use ixn_shard::catalog::Catalog;
use ixn_shard::machine::{Caller, Origin};
use ixn_shard::proto::frame::{decode_body, split_frame, FatalFrameError, Header, PROTOCOL_VERSION};
use ixn_shard::proto::request::{event_ack, event_error, heartbeat_timeout_of, ProtoError};
use ixn_shard::proto::{attr, msg_type, ClientType, ErrorCode, Frame, Request};
use ixn_shard::report::{Cursor, Published};

use super::executor::{now_ms, Runtime};
use super::msgid;
use super::notify::LocalNotify;
use crate::config::Config;

/// A subscribed connection's part of the reporting stream.
struct Subscriber {
    /// The subscription (its coordinator's op; a connection's
    /// subscriptions are all coordinated by its shard, so a later one has
    /// a larger op). Events of an earlier subscription of this connection
    /// still on their way are dropped.
    sub: u64,
    /// Where it is: moved on by each event sent, and stamped on it.
    cursor: Cursor,
    /// Names the events' catalog indexes in their frames.
    catalog: Arc<Catalog>,
    /// Events not yet encoded: a replay, and what came behind it.
    waiting: VecDeque<Arc<Published>>,
    max_waiting: usize,
}

/// Waiting events are encoded while the output holds less than this (or a
/// quarter of max-output-buffer, if less).
const REFILL_BELOW: usize = 64 << 10;

pub struct Conn {
    pub id: u64,
    pub peer: Option<SocketAddr>,
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
    client: RefCell<Option<(ClientType, Arc<str>)>>,
    /// The agent logged in on this connection (set by its home shard).
    pub agent: Cell<Option<AgentRef>>,
    /// Number of the last unsolicited event sent (EventSequence).
    events_sent: Cell<u64>,
    /// A subscriber's place in the reporting stream and the events it
    /// waits to be sent; none until it subscribes, so other connections pay
    /// nothing for it.
    subscriber: RefCell<Option<Box<Subscriber>>>,
    /// Subscriptions below this one ended (RequestUnsubscribe).
    ended_below: Cell<u64>,
    /// Events a subscriber resuming across a restart missed, read from the
    /// event log, as frames with their cursors, and their subscription:
    /// sent as the client reads, ahead of every event of that subscription.
    log_frames: RefCell<(u64, VecDeque<Frame>)>,
    max_pending: usize,
    max_output: usize,
    max_frame: usize,
}

impl Conn {
    pub fn new(id: u64, peer: Option<SocketAddr>, stream: TcpStream, config: &Config) -> Rc<Conn> {
        Rc::new(Conn {
            id,
            peer,
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
            client: RefCell::new(None),
            agent: Cell::new(None),
            events_sent: Cell::new(0),
            subscriber: RefCell::new(None),
            ended_below: Cell::new(0),
            log_frames: RefCell::new((0, VecDeque::new())),
            max_pending: config.server.max_pending_requests,
            max_output: config.server.max_output_buffer,
            max_frame: config.server.max_frame_size,
        })
    }

    /// Queues the answer to one request.
    pub fn answer(&self, frame: &Frame) {
        if self.dead.get() {
            return;
        }
        if frame.msg_type == msg_type::EVENT_ERROR {
            tracing::info!(
                msg_id = msgid::REQUEST_REFUSED,
                conn = self.id,
                peer = ?self.peer,
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
            frame.encode_into(&mut out);
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

    /// Queues an unsolicited event (not an answer), numbered with
    /// EventSequence. Bounded like answers (max-output-buffer).
    pub fn event(&self, mut frame: Frame) {
        if self.dead.get() || self.closing.get() {
            return;
        }
        let seq = self.events_sent.get() + 1;
        self.events_sent.set(seq);
        frame.push(attr::EVENT_SEQUENCE, seq as i64);
        let len = {
            let mut out = self.out.borrow_mut();
            frame.encode_into(&mut out);
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

    /// The subscription starts at `cursor` (before any of its events).
    /// `max_waiting`: the most events that may wait behind a replay.
    pub fn start_cursor(&self, sub: u64, cursor: Cursor, catalog: Arc<Catalog>, max_waiting: usize) {
        let mut current = self.subscriber.borrow_mut();
        if sub < self.ended_below.get() || current.as_deref().is_some_and(|s| s.sub > sub) {
            // An earlier subscription's, late: it ended, or a later one
            // has started.
            return;
        }
        *current = Some(Box::new(Subscriber { sub, cursor, catalog, waiting: VecDeque::new(), max_waiting }));
    }

    /// The client unsubscribed (this comes before the answer): no event of
    /// its subscriptions so far is sent from now on.
    pub fn end_subscription(&self, below: u64) {
        self.ended_below.set(self.ended_below.get().max(below));
        *self.subscriber.borrow_mut() = None;
    }

    /// Queues the events of subscription `sub` read from the event log:
    /// they go out as the client reads, before any other of its events.
    pub fn queue_log(&self, sub: u64, frames: Vec<Frame>) {
        if sub < self.ended_below.get() {
            return;
        }
        *self.log_frames.borrow_mut() = (sub, frames.into());
        self.refill();
    }

    /// Whether events read from the event log for `sub` still wait.
    fn log_waiting(&self, sub: u64) -> bool {
        let l = self.log_frames.borrow();
        l.0 == sub && !l.1.is_empty()
    }

    /// Queues a reporting event: at once, or behind the events of a
    /// replay still waiting.
    pub fn report(&self, sub_op: u64, p: Arc<Published>) {
        let p = match self.subscriber.borrow_mut().as_deref_mut() {
            // Of an earlier subscription of this connection: dropped.
            Some(sub) if sub.sub != sub_op => return,
            Some(sub) if !sub.waiting.is_empty() || self.log_waiting(sub_op) => {
                sub.waiting.push_back(p);
                None
            }
            Some(_) => Some(p),
            // Not subscribed (any more): events on their way are dropped.
            None => return,
        };
        match p {
            Some(p) => self.send_report(&p),
            None => self.check_waiting(),
        }
    }

    /// Queues the events a resuming subscriber missed: they go out as the
    /// client reads, so a long replay never fills the output buffer.
    pub fn replay(&self, sub_op: u64, events: Vec<Arc<Published>>) {
        match self.subscriber.borrow_mut().as_deref_mut() {
            Some(sub) if sub.sub == sub_op => sub.waiting.extend(events),
            _ => return,
        }
        self.check_waiting();
        self.refill();
    }

    /// Disconnects a subscriber whose waiting events pass their bound.
    fn check_waiting(&self) {
        let over = self.subscriber.borrow().as_deref().is_some_and(|s| s.waiting.len() > s.max_waiting);
        if over {
            tracing::warn!(
                msg_id = msgid::SLOW_CLIENT,
                conn = self.id,
                peer = ?self.peer,
                "client disconnected: it does not read the events it resumed (replay backlog exceeded)"
            );
            self.kill("max-output-buffer exceeded");
        }
    }

    /// Moves waiting events into the output while it holds little.
    fn refill(&self) {
        loop {
            // Well under max-output-buffer: one more event (at most half a
            // frame of properties) must not pass it.
            let below = REFILL_BELOW.min(self.max_output / 4);
            if self.dead.get() || self.out.borrow().len() >= below {
                return;
            }
            let current = self.subscriber.borrow().as_deref().map(|s| s.sub);
            let logged = {
                let mut l = self.log_frames.borrow_mut();
                // Frames of a subscription that is not the current one
                // (ended, or not started yet) wait or go.
                if current.is_some_and(|s| s != l.0) {
                    l.1.clear();
                }
                l.1.pop_front()
            };
            if let Some(frame) = logged {
                self.event(frame);
                continue;
            }
            let next = self.subscriber.borrow_mut().as_deref_mut().and_then(|s| s.waiting.pop_front());
            let Some(p) = next else { return };
            self.send_report(&p);
        }
    }

    /// Encodes a reporting event, stamped with the cursor that names it and
    /// every earlier one this subscriber received.
    fn send_report(&self, p: &Published) {
        let frame = {
            let mut sub = self.subscriber.borrow_mut();
            let Some(sub) = sub.as_deref_mut() else { return };
            let last = &mut sub.cursor.seqs[p.shard as usize];
            debug_assert!(p.seq > *last, "event {} of shard {} after {last}", p.seq, p.shard);
            *last = p.seq;
            let mut frame = p.event.frame(&sub.catalog);
            let mut text = String::with_capacity(16 + 8 * sub.cursor.seqs.len());
            sub.cursor.write(&mut text);
            frame.push(attr::EVENT_CURSOR, text);
            frame
        };
        self.event(frame);
    }

    fn error(&self, ref_id: u32, code: ErrorCode, text: impl Into<String>) {
        self.answer(&event_error(ref_id, &ProtoError::new(code, text)));
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
        Pin::new(&mut *self.stream.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for &Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.stream.borrow_mut()).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.stream.borrow_mut()).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.stream.borrow_mut()).poll_close(cx)
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
        let res = w.write_all(&sending).await;
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
        while conn.unanswered.get() >= conn.max_pending && !conn.dead.get() && !conn.closing.get() {
            conn.read_resume.wait().await;
        }
        if conn.dead.get() || conn.closing.get() {
            break 'conn "closed by server";
        }
        let got = poll_fn(|cx| {
            let mut buf = rt.read_buf.borrow_mut();
            Pin::new(&mut &*conn).poll_read(cx, &mut buf)
        })
        .await;
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
    rt.conn_closed(conn.id, conn.agent.get());
    let client = conn.client.borrow().as_ref().map(|(_, n)| n.to_string());
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
    conn.error(0, code, format!("{e}; closing the connection"));
}

fn handle_frame(rt: &Runtime, conn: &Conn, header: &Header, body: &[u8]) {
    debug_assert_eq!(header.version, PROTOCOL_VERSION);
    let ref_id = header.ref_id();
    conn.unanswered.set(conn.unanswered.get() + 1);
    let frame = match decode_body(body) {
        Ok(attrs) => Frame { msg_type: header.msg_type(), ref_id, attrs, raw: Vec::new() },
        Err(e) => return conn.error(ref_id, ErrorCode::MalformedBody, format!("malformed body: {e}")),
    };
    let request = match Request::decode(&frame) {
        Ok(r) => r,
        Err(e) => return conn.answer(&event_error(ref_id, &e)),
    };
    // The heartbeat is the connection's business, not the state machine's:
    // read here, with the request's other attributes (errors 13 and 14).
    let heartbeat = match &request {
        Request::RegisterClient { .. } => match heartbeat_timeout_of(&frame) {
            Ok(h) => h,
            Err(e) => return conn.answer(&event_error(ref_id, &e)),
        },
        _ => None,
    };
    let client = conn.client.borrow().clone();
    match (request, client) {
        (Request::RegisterClient { .. }, Some(_)) => {
            conn.error(ref_id, ErrorCode::AlreadyRegistered, "this connection is already registered")
        }
        (Request::RegisterClient { client_type, name, credential }, None) => {
            match authenticate(&rt.config, conn.peer, client_type, &name, credential.as_deref()) {
                Ok(()) => {
                    tracing::info!(msg_id = msgid::CLIENT_REGISTERED, shard = rt.shard, conn = conn.id, peer = ?conn.peer, client = %name, client_type = client_type.name(), heartbeat_ms = heartbeat.unwrap_or(0), "client registered");
                    *conn.client.borrow_mut() = Some((client_type, name.into()));
                    let mut ack = event_ack(ref_id)
                        .with(attr::SERVER_NAME, rt.config.server.application_name.as_str())
                        .with(attr::NODE_ID, rt.config.server.node_id as i64)
                        .with(attr::PROTOCOL_VERSION, PROTOCOL_VERSION as i64)
                        .with(attr::SHARD_COUNT, rt.shards as i64);
                    if let Some(ms) = heartbeat {
                        conn.start_heartbeat(ms);
                        ack.push(attr::HEARTBEAT_TIMEOUT, ms as i64);
                    }
                    conn.answer(&ack);
                }
                Err(text) => {
                    tracing::warn!(msg_id = msgid::AUTH_FAILED, conn = conn.id, peer = ?conn.peer, client = %name, reason = %text, "registration refused");
                    conn.error(ref_id, ErrorCode::AuthenticationFailed, text)
                }
            }
        }
        (r, None) => conn.error(ref_id, ErrorCode::NotRegistered, format!("{} before RequestRegisterClient", r.name())),
        (Request::Ping, Some(_)) => conn.answer(&event_ack(ref_id).with(attr::SERVER_TIME, now_ms())),
        (_, Some(_)) if rt.stopping.get() => conn.error(ref_id, ErrorCode::ShuttingDown, "the server is shutting down"),
        (request, Some((client_type, client_name))) => {
            let origin = Origin { shard: rt.shard, conn: conn.id };
            let caller = Caller { origin, ref_id, client_type, client_name, agent: conn.agent.get() };
            if let Err(e) = rt.route(caller, request) {
                conn.answer(&event_error(ref_id, &e));
            }
        }
    }
}

/// Checks a registration against `[[client]]`, or protected mode when no
/// client is configured: then only loopback peers may register.
fn authenticate(
    config: &Config,
    peer: Option<SocketAddr>,
    client_type: ClientType,
    name: &str,
    credential: Option<&str>,
) -> Result<(), String> {
    if name.is_empty() || name.len() > ixn_shard::machine::MAX_NAME_LEN {
        return Err(format!("ClientName must be 1 to {} bytes", ixn_shard::machine::MAX_NAME_LEN));
    }
    if config.clients.is_empty() {
        return match peer {
            Some(p) if p.ip().is_loopback() => Ok(()),
            _ => Err("no clients are configured, so only loopback connections may register (protected mode); \
                      list the client under [[client]] in the configuration"
                .into()),
        };
    }
    let Some(entry) = config.clients.iter().find(|c| c.name == name) else {
        return Err(format!("client '{name}' is not configured"));
    };
    if entry.client_type != client_type {
        return Err(format!(
            "client '{name}' is configured as {}, not {}",
            entry.client_type.name(),
            client_type.name()
        ));
    }
    if !constant_time_eq(entry.password.as_bytes(), credential.unwrap_or("").as_bytes()) {
        return Err(format!("wrong credential for client '{name}'"));
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
