//! One fuzzer connection: a non-blocking socket with its own buffers, the
//! requests waiting for an answer, and what the connection knows of its
//! own state (its agent, invitations, pulls, snapshots).
//!
//! A connection is *checked* until the fuzzer breaks its byte stream: then
//! every request must get exactly one answer, by reference id, within the
//! deadline, of the type its request names.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use ixn_shard::proto::frame::{decode_body, split_frame, Frame, ABSOLUTE_MAX_FRAME};
use ixn_shard::proto::{msg_type, ErrorCode};

use super::gen::{Follow, Role};
use super::rng::Rng;

/// A request sent and not yet answered.
pub struct Pending {
    /// When its last byte went to the kernel; `None` while it waits in the
    /// connection's own buffer (a trickling or flooded connection may take
    /// a while to write it, and the server cannot answer what it has not
    /// got). The deadline runs from here.
    pub sent_at: Option<Instant>,
    /// The connection's byte count at the end of the frame.
    pub end: u64,
    pub name: &'static str,
    /// The answer types allowed; `None` for a mutated frame (it may have
    /// become any request).
    pub expect: Option<&'static [u16]>,
    pub follow: Follow,
    /// The SessionId it carried (0: the connection's own session): its
    /// answer must carry the same.
    pub session: u32,
}

/// What became of the connection's byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Every frame sent so far is whole: answers are checked.
    Clean,
    /// A fatal frame was queued (length or version), ending at byte `end`
    /// of the stream: once it is written (`since`), the server must send
    /// EventError with this code and close, by the deadline.
    Doomed { since: Option<Instant>, end: u64, code: ErrorCode },
    /// Broken in a way that leaves nothing to expect.
    Broken,
}

pub struct Conn {
    /// Numbers connections over the whole run, for the frame history.
    pub serial: u64,
    pub role: Role,
    stream: TcpStream,
    /// The local port: the server logs it as the peer's.
    pub port: u16,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    /// Bytes queued and bytes written since the connection opened.
    queued: u64,
    written: u64,
    /// At most this many bytes per write (1..): frames arrive in pieces.
    pub trickle: Option<usize>,
    next_ref: u32,
    pub pending: HashMap<u32, Pending>,
    pub state: Stream,
    /// The server closed the connection (EOF or reset).
    pub eof: bool,
    pub registered: bool,
    /// Reads nothing (to overrun its output buffer on the server).
    pub deaf: bool,
    pub rng: Rng,
    pub next_action: Instant,
    /// Most requests in flight before it waits.
    pub window: usize,
    /// Fraction of frames mutated (0 for a clean connection).
    pub mutation_rate: f64,
    /// When the fuzzer closes it and opens another in its place.
    pub ends_at: Instant,
    pub agent: Option<(&'static str, &'static str)>,
    pub invites: Vec<(String, u64)>,
    pub handling: Vec<String>,
    pub pulled: Vec<String>,
    pub snapshots: Vec<u64>,
    pub subscribed: bool,
    /// Requests to send before anything else (answers to invitations...).
    pub reactions: Vec<super::gen::Planned>,
    /// When the last answer (not an unsolicited event) arrived.
    pub last_answer: Option<Instant>,
    /// The HeartbeatTimeout its registration asks for (milliseconds; it
    /// may be one the server refuses).
    pub heartbeat_ms: Option<i64>,
    /// Keeps the heartbeat duty (a ping after a third of the timeout
    /// without sending); `false`: goes silent, and the server must close it.
    pub keeps_heartbeat: bool,
    /// When bytes were last queued to send.
    pub last_sent: Instant,
    /// The session its requests act for now (protocol 6.9; 0: its own).
    pub session: u32,
    /// Its sessions open as the server answered: events may name only these.
    pub open_sessions: std::collections::BTreeSet<u32>,
}

impl Conn {
    pub fn new(serial: u64, role: Role, stream: TcpStream, rng: Rng, now: Instant) -> io::Result<Conn> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        let port = stream.local_addr()?.port();
        Ok(Conn {
            serial,
            role,
            stream,
            port,
            rbuf: Vec::with_capacity(16 << 10),
            wbuf: Vec::new(),
            wpos: 0,
            queued: 0,
            written: 0,
            trickle: None,
            next_ref: 1,
            pending: HashMap::new(),
            state: Stream::Clean,
            eof: false,
            registered: false,
            deaf: false,
            rng,
            next_action: now,
            window: 4,
            mutation_rate: 0.0,
            ends_at: now + Duration::from_secs(3600),
            agent: None,
            invites: Vec::new(),
            handling: Vec::new(),
            pulled: Vec::new(),
            snapshots: Vec::new(),
            subscribed: false,
            session: 0,
            open_sessions: Default::default(),
            reactions: Vec::new(),
            last_answer: None,
            heartbeat_ms: None,
            keeps_heartbeat: true,
            last_sent: now,
        })
    }

    /// Wraps a connection set up in blocking mode: `rest` are the bytes it
    /// read past the last frame it parsed.
    pub fn adopt(
        serial: u64,
        role: Role,
        stream: TcpStream,
        rest: Vec<u8>,
        rng: Rng,
        now: Instant,
    ) -> io::Result<Conn> {
        let mut c = Conn::new(serial, role, stream, rng, now)?;
        c.rbuf = rest;
        c.registered = true;
        c.next_ref = 1000;
        Ok(c)
    }

    pub fn fd(&self) -> i32 {
        self.stream.as_raw_fd()
    }

    pub fn checked(&self) -> bool {
        self.state == Stream::Clean
    }

    pub fn take_ref(&mut self) -> u32 {
        let r = self.next_ref;
        self.next_ref = self.next_ref.checked_add(1).expect("reference ids run out after 4 billion requests");
        r
    }

    pub fn unsent(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Queues bytes to send; returns the stream offset where they end.
    pub fn send(&mut self, bytes: &[u8]) -> u64 {
        self.last_sent = Instant::now();
        self.wbuf.extend_from_slice(bytes);
        self.queued += bytes.len() as u64;
        self.queued
    }

    /// Writes what the socket takes now. A write error means the server
    /// closed the connection.
    pub fn write_some(&mut self) {
        let before = self.written;
        while self.wpos < self.wbuf.len() && !self.eof {
            let end = match self.trickle {
                Some(n) => (self.wpos + n).min(self.wbuf.len()),
                None => self.wbuf.len(),
            };
            match self.stream.write(&self.wbuf[self.wpos..end]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.wpos += n;
                    self.written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.eof = true,
            }
            if self.trickle.is_some() {
                break;
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        } else if self.wpos > 1 << 20 {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        if self.written > before {
            self.mark_written(Instant::now());
        }
    }

    /// Starts the clock of every request (and of a fatal frame) whose last
    /// byte is now written.
    fn mark_written(&mut self, now: Instant) {
        let written = self.written;
        for p in self.pending.values_mut() {
            if p.sent_at.is_none() && p.end <= written {
                p.sent_at = Some(now);
            }
        }
        if let Stream::Doomed { since: since @ None, end, .. } = &mut self.state {
            if *end <= written {
                *since = Some(now);
            }
        }
    }

    /// Reads what has arrived; sets `eof` when the server closed.
    pub fn read_some(&mut self) {
        let mut chunk = [0u8; 32 << 10];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    return;
                }
                Ok(n) => self.rbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.eof = true;
                    return;
                }
            }
        }
    }

    /// The next whole frame from the server; an error when the server sent
    /// something that is not a frame (a server bug).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        match split_frame(&self.rbuf, ABSOLUTE_MAX_FRAME) {
            Err(e) => Err(format!("the server sent a bad frame: {e}")),
            Ok(None) => Ok(None),
            Ok(Some((h, body, total))) => {
                let attrs = decode_body(body).map_err(|e| {
                    format!("the server sent a {} whose body does not decode: {e}", msg_type::name(h.msg_type()))
                })?;
                let f = Frame { msg_type: h.msg_type(), ref_id: h.ref_id(), attrs, raw: Vec::new() };
                self.rbuf.drain(..total);
                Ok(Some(f))
            }
        }
    }

    /// The request written longest ago and still waiting, if any: (ref
    /// id, how long it has waited).
    pub fn oldest_pending(&self, now: Instant) -> Option<(u32, &Pending, Duration)> {
        self.pending
            .iter()
            .filter_map(|(r, p)| p.sent_at.map(|t| (*r, p, now.saturating_duration_since(t))))
            .max_by_key(|(_, _, waited)| *waited)
    }

    /// Closes with RST (SO_LINGER 0) instead of FIN: the server sees a reset.
    pub fn close_with_reset(self) {
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: setsockopt on our own open socket with a properly sized
        // linger struct; the socket is closed right after, when dropped.
        unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &linger as *const libc::linger as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }

    /// Closes with FIN after what is queued (as far as the socket takes it now).
    pub fn close_gracefully(mut self) {
        self.trickle = None;
        self.write_some();
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }
}

/// The answer types a request may get (docs/protocol.md, section 5).
pub fn answers_of(request_type: u16) -> &'static [u16] {
    use msg_type::*;
    const ACK: &[u16] = &[EVENT_ACK, EVENT_ERROR];
    match request_type {
        REQUEST_GET_INTERACTION_PROPERTIES => &[EVENT_INTERACTION_PROPERTIES, EVENT_ERROR],
        REQUEST_PULL => &[EVENT_PULLED_INTERACTIONS, EVENT_ERROR],
        REQUEST_FIND_INTERACTIONS => &[EVENT_INTERACTIONS_FOUND, EVENT_ERROR],
        REQUEST_GET_WORKBIN_CONTENT => &[EVENT_WORKBIN_CONTENT, EVENT_ERROR],
        REQUEST_TAKE_SNAPSHOT => &[EVENT_SNAPSHOT_TAKEN, EVENT_ERROR],
        REQUEST_GET_SNAPSHOT_INTERACTIONS => &[EVENT_SNAPSHOT_INTERACTIONS, EVENT_ERROR],
        REQUEST_GET_QUEUE_DEPTH => &[EVENT_QUEUE_DEPTH, EVENT_ERROR],
        REQUEST_GET_AGENT_STATE => &[EVENT_AGENT_STATE, EVENT_ERROR],
        _ => ACK,
    }
}

/// Waits until one of `fds` is readable (or writable, where `want_write`
/// says so), at most `timeout`. Returns the revents per fd.
pub fn poll(fds: &[(i32, bool)], timeout: Duration) -> Vec<i16> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, want_write)| libc::pollfd {
            fd,
            events: libc::POLLIN | if want_write { libc::POLLOUT } else { 0 },
            revents: 0,
        })
        .collect();
    // SAFETY: poll(2) on a valid, correctly sized array of pollfd structs.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout.as_millis() as libc::c_int) };
    if n < 0 {
        return vec![0; fds.len()];
    }
    pfds.iter().map(|p| p.revents).collect()
}
