//! The Rust client library: a blocking connection speaking protocol v1.
//! ixnctl, ixn-bench and the tests use it. docs/protocol.md is what it
//! implements; a client in another language needs only that document.
//!
//! Two ways to use it: `call` sends one request and waits for its answer;
//! `queue`/`flush`/`recv` pipeline many requests and read answers as they
//! come (match them by reference id). The typed helpers (`submit`, `get`,
//! `pull`, `find`, `take_snapshot`...) are `call` plus a check of the
//! answer's type; interactions in answers come back as the lists described
//! in docs/protocol.md, "Interaction lists" (see [`interactions`]).
//!
//! Heartbeats (docs/protocol.md, "Heartbeats") are off unless asked for
//! with [`Client::connect_as_with_heartbeat`] or
//! [`Client::register_with_heartbeat`]. Then a thread of the client sends
//! RequestPing whenever the connection has been quiet for a third of the
//! shorter timeout, whether or not the application is using the client, and
//! the answers to those pings never reach the application; every read
//! fails with `ConnectionAborted` once the server has sent nothing for
//! [`Heartbeat::timeout`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ixn_shard::proto::frame::{split_frame, Frame, ABSOLUTE_MAX_FRAME};
use ixn_shard::proto::request::error_of;
use ixn_shard::proto::request::DEFAULT_SNAPSHOT_PAGE;
use ixn_shard::proto::{attr, msg_type, ClientType, ProtoError, Request, Submit};
use ixn_shard::KvList;

#[derive(Debug)]
pub enum ClientError {
    Io(io::Error),
    /// The server answered with EventError.
    Server(ProtoError),
    /// The server sent something this client did not expect.
    Protocol(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "connection error: {e}"),
            ClientError::Server(e) => write!(f, "server error {} ({:?}): {}", e.code.code(), e.code, e.text),
            ClientError::Protocol(s) => write!(f, "protocol error: {s}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// A TLS client configuration: the server's CA certificates (PEM), and a
/// client certificate with its key (PEM) for mutual TLS.
pub fn tls_config(
    ca: &std::path::Path,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> std::result::Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        roots.add(c.map_err(|e| format!("{}: {e}", ca.display()))?).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("{}: {e}", cert.display()))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| e.to_string())?
        }
    };
    Ok(Arc::new(config))
}

/// The reference id of the client's own heartbeat pings: never given to
/// a request of the application, and answers carrying it are dropped.
pub const HEARTBEAT_REF: u32 = u32::MAX;

/// Heartbeats, in both directions. The names follow the vendor's ADDP
/// options (`addp-remote-timeout`, `addp-timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// addp-remote-timeout: how long the server may receive nothing from
    /// this client before it closes the connection. Sent at registration
    /// (HeartbeatTimeout), 1 s to 1 day.
    pub remote_timeout: Duration,
    /// addp-timeout: how long this client waits without a byte from the
    /// server, while it sends pings, before it closes the connection and
    /// reports the server gone. A write that cannot go out for this long
    /// fails too (the server takes nothing).
    pub timeout: Duration,
}

impl Heartbeat {
    /// The same timeout both ways.
    pub fn new(timeout: Duration) -> Heartbeat {
        Heartbeat { remote_timeout: timeout, timeout }
    }

    /// How long the connection may be quiet before the client pings: a
    /// third of the shorter timeout, so one late ping is not fatal.
    fn interval(&self) -> Duration {
        self.remote_timeout.min(self.timeout) / 3
    }
}

/// The sending side of a connection with heartbeats: the socket, and the
/// TLS session over it if any. The session's state is shared by both
/// directions (records are numbered), so the reads take it here too, only
/// to decrypt what they read from the socket without it.
struct Wire {
    stream: TcpStream,
    tls: Option<Box<rustls::ClientConnection>>,
}

impl Wire {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.tls {
            None => self.stream.write_all(bytes),
            Some(t) => {
                t.writer().write_all(bytes)?;
                Self::send_records(t, &mut self.stream)
            }
        }
    }

    /// Writes the TLS records the session has ready.
    fn send_records(t: &mut rustls::ClientConnection, stream: &mut TcpStream) -> io::Result<()> {
        while t.wants_write() {
            t.write_tls(stream)?;
        }
        Ok(())
    }

    /// Plaintext the TLS session already holds; `None` when it holds none
    /// (or there is no TLS session).
    fn buffered(&mut self, into: &mut [u8]) -> Option<io::Result<usize>> {
        let t = self.tls.as_mut()?;
        match t.reader().read(into) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            r => Some(r),
        }
    }

    /// Bytes read from the socket, decrypted into `into`: the plaintext
    /// they complete (possibly none yet: `WouldBlock`).
    fn decrypt(&mut self, mut raw: &[u8], into: &mut [u8]) -> io::Result<usize> {
        let t = self.tls.as_mut().expect("a TLS session");
        while !raw.is_empty() {
            t.read_tls(&mut raw)?;
            t.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
        // Answers to what the server sent (a key update) go out now.
        Self::send_records(t, &mut self.stream)?;
        t.reader().read(into)
    }
}

/// What the client and its pinger thread share.
struct PingShared {
    /// Every write goes through here, so pings never cut into a request.
    writer: Mutex<Wire>,
    state: Mutex<PingState>,
    wake: Condvar,
}

struct PingState {
    last_sent: Instant,
    last_received: Instant,
    last_ping: Instant,
    stop: bool,
}

/// The pinger thread of a client with heartbeats.
struct Pinger {
    shared: Arc<PingShared>,
    thread: Option<JoinHandle<()>>,
    heartbeat: Heartbeat,
}

impl PingShared {
    fn state(&self) -> MutexGuard<'_, PingState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        w.write_all(bytes)?;
        drop(w);
        self.state().last_sent = Instant::now();
        Ok(())
    }
}

impl Pinger {
    /// `tls`: the connection's TLS session (its handshake done), which
    /// moves into the shared wire.
    fn start(
        stream: &TcpStream,
        tls: Option<Box<rustls::ClientConnection>>,
        heartbeat: Heartbeat,
    ) -> io::Result<Pinger> {
        let writer = stream.try_clone()?;
        // A server that takes nothing for addp-timeout is as good as gone:
        // a write must not block the application (or the pinger) forever.
        writer.set_write_timeout(Some(heartbeat.timeout))?;
        let now = Instant::now();
        let shared = Arc::new(PingShared {
            writer: Mutex::new(Wire { stream: writer, tls }),
            state: Mutex::new(PingState { last_sent: now, last_received: now, last_ping: now, stop: false }),
            wake: Condvar::new(),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("ixn-client-heartbeat".into())
                .spawn(move || ping_loop(&shared, heartbeat.interval()))?
        };
        Ok(Pinger { shared, thread: Some(thread), heartbeat })
    }

    fn stop(&mut self) {
        self.shared.state().stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends RequestPing (reference id [`HEARTBEAT_REF`]) whenever nothing was
/// sent for `interval`, or nothing received for `interval` and no ping
/// went out in that time; ends on stop or a failed write.
fn ping_loop(shared: &PingShared, interval: Duration) {
    let mut ping = Vec::new();
    Request::Ping.encode(HEARTBEAT_REF).encode_into(&mut ping);
    let mut st = shared.state();
    loop {
        if st.stop {
            return;
        }
        let now = Instant::now();
        let send_due = st.last_sent + interval;
        let receive_due = st.last_received.max(st.last_ping) + interval;
        let due = send_due.min(receive_due);
        if now < due {
            st = shared.wake.wait_timeout(st, due - now).unwrap_or_else(|e| e.into_inner()).0;
            continue;
        }
        st.last_ping = now;
        drop(st);
        if shared.write_all(&ping).is_err() {
            return;
        }
        st = shared.state();
    }
}

pub struct Client {
    stream: TcpStream,
    /// TLS over `stream` ([`Client::connect_tls`]); the handshake runs on
    /// the first write or read.
    tls: Option<Box<rustls::ClientConnection>>,
    /// The read timeout the application set (reads with heartbeats wait in
    /// shorter slices to watch the server's silence).
    read_timeout: Option<Duration>,
    pinger: Option<Pinger>,
    next_ref: u32,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
    /// Unsolicited events (reference id 0: invitations, reporting events)
    /// read while waiting for an answer, kept for [`Client::next_event`].
    events: std::collections::VecDeque<Frame>,
    /// The session requests act for (SessionId; 0: the connection's own).
    session: u32,
}

impl Client {
    /// Connects (5 s timeout) with Nagle off.
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Client> {
        let mut last = io::Error::new(io::ErrorKind::InvalidInput, "address resolves to nothing");
        for a in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    // A server that stops answering must not hang a caller
                    // forever; pipelining callers may change it.
                    let read_timeout = Some(Duration::from_secs(60));
                    stream.set_read_timeout(read_timeout)?;
                    return Ok(Client {
                        stream,
                        tls: None,
                        read_timeout,
                        pinger: None,
                        next_ref: 1,
                        rbuf: Vec::with_capacity(64 << 10),
                        rpos: 0,
                        wbuf: Vec::new(),
                        events: std::collections::VecDeque::new(),
                        session: 0,
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(ClientError::Io(last))
    }

    /// Connects over TLS: `config` from [`tls_config`], `server_name` the
    /// name (or IP address) the server's certificate must be valid for.
    /// Heartbeats work over TLS as over plain TCP ([`Client::register_with_heartbeat`]).
    pub fn connect_tls(
        addr: impl ToSocketAddrs,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Result<Client> {
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|e| ClientError::Protocol(format!("TLS server name '{server_name}': {e}")))?;
        let session = rustls::ClientConnection::new(config, name)
            .map_err(|e| ClientError::Protocol(format!("TLS session not started: {e}")))?;
        let mut c = Client::connect(addr)?;
        c.tls = Some(Box::new(session));
        Ok(c)
    }

    /// Connects and registers in one step.
    pub fn connect_as(
        addr: impl ToSocketAddrs,
        client_type: ClientType,
        name: &str,
        credential: Option<&str>,
    ) -> Result<Client> {
        let mut c = Client::connect(addr)?;
        c.register(client_type, name, credential)?;
        Ok(c)
    }

    /// Connects and registers asking for heartbeats; the client then keeps
    /// them up by itself.
    pub fn connect_as_with_heartbeat(
        addr: impl ToSocketAddrs,
        client_type: ClientType,
        name: &str,
        credential: Option<&str>,
        heartbeat: Heartbeat,
    ) -> Result<Client> {
        let mut c = Client::connect(addr)?;
        c.register_with_heartbeat(client_type, name, credential, heartbeat)?;
        Ok(c)
    }

    /// How long a read waits for the server (`None`: forever; with
    /// heartbeats, a silent server still ends it after
    /// [`Heartbeat::timeout`]).
    pub fn set_read_timeout(&mut self, t: Option<Duration>) -> Result<()> {
        self.read_timeout = t;
        if self.pinger.is_none() {
            self.stream.set_read_timeout(t)?;
        }
        Ok(())
    }

    /// The heartbeat in force, if any.
    pub fn heartbeat(&self) -> Option<Heartbeat> {
        self.pinger.as_ref().map(|p| p.heartbeat)
    }

    /// This end's address (the server sees it as the peer).
    pub fn local_addr(&self) -> Result<std::net::SocketAddr> {
        Ok(self.stream.local_addr()?)
    }

    /// The reference id the next request will carry.
    pub fn next_ref_id(&self) -> u32 {
        self.next_ref
    }

    /// Registers; returns the server's EventAck (ServerName, NodeId...).
    pub fn register(&mut self, client_type: ClientType, name: &str, credential: Option<&str>) -> Result<Frame> {
        self.call(&Request::RegisterClient {
            client_type,
            name: name.to_string(),
            credential: credential.map(str::to_string),
        })
    }

    /// Registers asking for heartbeats (HeartbeatTimeout =
    /// `heartbeat.remote_timeout`) and starts the pinger. A server that does
    /// not echo HeartbeatTimeout does not enforce it, but answers the pings,
    /// so the client still notices when the server goes silent.
    pub fn register_with_heartbeat(
        &mut self,
        client_type: ClientType,
        name: &str,
        credential: Option<&str>,
        heartbeat: Heartbeat,
    ) -> Result<Frame> {
        let req =
            Request::RegisterClient { client_type, name: name.to_string(), credential: credential.map(str::to_string) };
        let r = self.take_ref();
        let ms = i64::try_from(heartbeat.remote_timeout.as_millis()).unwrap_or(i64::MAX);
        req.encode(r).with(attr::HEARTBEAT_TIMEOUT, ms).encode_into(&mut self.wbuf);
        self.flush()?;
        let ack = self.answer_to(r)?;
        // The handshake is done (the answer came over it): from now on the
        // session is shared with the pinger's writes.
        self.pinger = Some(Pinger::start(&self.stream, self.tls.take(), heartbeat)?);
        Ok(ack)
    }

    /// Adds a request to the send buffer; returns its reference id.
    pub fn queue(&mut self, req: &Request) -> u32 {
        let r = self.take_ref();
        let mut f = req.encode(r);
        if self.session != 0 {
            f.push(attr::SESSION_ID, self.session as i64);
        }
        f.encode_into(&mut self.wbuf);
        r
    }

    /// From now on requests act for session `id` of this connection (0:
    /// the connection's own). A session is opened by registering while it
    /// is set (docs/protocol.md, "Sessions"); answers and events for it
    /// carry its SessionId, and [`Client::next_event`] returns the events
    /// of every session.
    pub fn set_session(&mut self, id: u32) {
        self.session = id;
    }

    /// The session requests act for now.
    pub fn session(&self) -> u32 {
        self.session
    }

    /// Opens session `id` on this (registered) connection and makes it the
    /// current one.
    pub fn open_session(
        &mut self,
        id: u32,
        client_type: ClientType,
        name: &str,
        credential: Option<&str>,
    ) -> Result<Frame> {
        self.set_session(id);
        self.register(client_type, name, credential)
    }

    /// Closes the current session (RequestCloseSession) and goes back to
    /// the connection's own.
    pub fn close_session(&mut self) -> Result<()> {
        let r = self.call(&Request::CloseSession);
        self.set_session(0);
        r.map(drop)
    }

    /// Adds raw bytes to the send buffer (tests of bad input).
    pub fn queue_raw(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    /// Adds any frame to the send buffer as is.
    pub fn queue_frame(&mut self, f: &Frame) {
        f.encode_into(&mut self.wbuf);
    }

    pub fn flush(&mut self) -> Result<()> {
        if !self.wbuf.is_empty() {
            match (&self.pinger, &mut self.tls) {
                (Some(p), _) => p.shared.write_all(&self.wbuf)?,
                (None, Some(t)) => {
                    let mut s = rustls::Stream::new(t.as_mut(), &mut self.stream);
                    s.write_all(&self.wbuf)?;
                    s.flush()?;
                }
                (None, None) => self.stream.write_all(&self.wbuf)?,
            }
            self.wbuf.clear();
        }
        Ok(())
    }

    fn take_ref(&mut self) -> u32 {
        let r = self.next_ref;
        self.next_ref = self.next_ref.wrapping_add(1).max(1);
        if self.next_ref == HEARTBEAT_REF {
            self.next_ref = 1;
        }
        r
    }

    /// Reads into `self.rbuf[from..]`. With heartbeats, waits in slices
    /// so that a server silent for the heartbeat timeout ends the read
    /// (and the connection) even when the application waits longer; data
    /// the kernel already holds always counts, however long the
    /// application left it there.
    fn read_some(&mut self, from: usize) -> io::Result<usize> {
        let Some(p) = &self.pinger else {
            // A signal (a stopped and continued process) is not an error.
            loop {
                let r = match &mut self.tls {
                    Some(t) => rustls::Stream::new(t.as_mut(), &mut self.stream).read(&mut self.rbuf[from..]),
                    None => self.stream.read(&mut self.rbuf[from..]),
                };
                match r {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => return r,
                }
            }
        };
        let (shared, timeout) = (p.shared.clone(), p.heartbeat.timeout);
        let give_up = self.read_timeout.map(|t| Instant::now() + t);
        let tls = shared.writer.lock().unwrap_or_else(|e| e.into_inner()).tls.is_some();
        let mut raw = if tls { vec![0u8; 17 << 10] } else { Vec::new() };
        loop {
            if tls {
                let mut wire = shared.writer.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(r) = wire.buffered(&mut self.rbuf[from..]) {
                    return r;
                }
            }
            let now = Instant::now();
            let silent_until = shared.state().last_received + timeout;
            let mut wait = silent_until.saturating_duration_since(now);
            if let Some(g) = give_up {
                wait = wait.min(g.saturating_duration_since(now));
            }
            self.stream.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
            let read = if tls { self.stream.read(&mut raw) } else { self.stream.read(&mut self.rbuf[from..]) };
            match read {
                Ok(n) if tls && n > 0 => {
                    shared.state().last_received = Instant::now();
                    let mut wire = shared.writer.lock().unwrap_or_else(|e| e.into_inner());
                    match wire.decrypt(&raw[..n], &mut self.rbuf[from..]) {
                        // Only part of a record so far.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        r => return r,
                    }
                }
                Ok(n) => {
                    shared.state().last_received = Instant::now();
                    return Ok(n);
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    let now = Instant::now();
                    if now >= shared.state().last_received + timeout {
                        let _ = self.stream.shutdown(Shutdown::Both);
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            format!("the server sent nothing for {timeout:?} despite heartbeats; connection closed"),
                        ));
                    }
                    if give_up.is_some_and(|g| now >= g) {
                        return Err(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads until the answer with reference id `r`, keeping unsolicited
    /// events (like [`Client::call`]).
    fn answer_to(&mut self, r: u32) -> Result<Frame> {
        loop {
            let f = self.recv()?;
            if f.ref_id == 0 && f.msg_type >= msg_type::EVENT_INVITE {
                self.events.push_back(f);
                continue;
            }
            if f.ref_id != r {
                continue;
            }
            if let Some(e) = error_of(&f) {
                return Err(ClientError::Server(e));
            }
            return Ok(f);
        }
    }

    /// Whether a whole frame has been read and waits, so that the next
    /// [`Client::recv`] returns it without reading the socket (unless it
    /// answers a heartbeat ping: recv skips those). A pipelining client
    /// takes every waiting answer before it writes again, so the requests
    /// that replace them go out in one write.
    pub fn has_buffered_frame(&self) -> bool {
        matches!(split_frame(&self.rbuf[self.rpos..], ABSOLUTE_MAX_FRAME), Ok(Some(_)))
    }

    /// Reads the next frame (waiting for it), then every frame already read
    /// behind it, into `out` (cleared first): what a pipelining client
    /// handles before it writes again.
    pub fn recv_waiting(&mut self, out: &mut Vec<Frame>) -> Result<()> {
        out.clear();
        out.push(self.recv()?);
        while self.has_buffered_frame() {
            out.push(self.recv()?);
        }
        Ok(())
    }

    /// Reads the next frame from the server, whatever it answers (but the
    /// answers to the client's own heartbeat pings).
    pub fn recv(&mut self) -> Result<Frame> {
        loop {
            match split_frame(&self.rbuf[self.rpos..], ABSOLUTE_MAX_FRAME) {
                Err(e) => return Err(ClientError::Protocol(e.to_string())),
                Ok(Some((h, body, total))) => {
                    self.rpos += total;
                    if h.ref_id() == HEARTBEAT_REF {
                        continue;
                    }
                    let attrs = ixn_shard::proto::frame::decode_body(body).map_err(|e| ClientError::Protocol(e.0))?;
                    return Ok(Frame { msg_type: h.msg_type(), ref_id: h.ref_id(), attrs, raw: Vec::new() });
                }
                Ok(None) => {}
            }
            if self.rpos > 0 {
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
            }
            let len = self.rbuf.len();
            self.rbuf.resize(len + (64 << 10), 0);
            let n = match self.read_some(len) {
                Ok(n) => n,
                Err(e) => {
                    self.rbuf.truncate(len);
                    return Err(e.into());
                }
            };
            self.rbuf.truncate(len + n);
            if n == 0 {
                return Err(ClientError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                )));
            }
        }
    }

    /// Sends one request and waits for its answer. EventError becomes
    /// `ClientError::Server`. Unsolicited events met meanwhile are kept for
    /// [`Client::next_event`]; answers for other reference ids are dropped,
    /// so do not mix `call` with pipelined requests in flight.
    pub fn call(&mut self, req: &Request) -> Result<Frame> {
        let r = self.queue(req);
        self.flush()?;
        self.answer_to(r)
    }

    pub fn ping(&mut self) -> Result<Frame> {
        self.call(&Request::Ping)
    }

    /// Submits; returns the new interaction id.
    pub fn submit(&mut self, s: Submit) -> Result<String> {
        let f = self.call(&Request::Submit(Box::new(s)))?;
        f.get_str(attr::INTERACTION_ID)
            .map(str::to_string)
            .ok_or_else(|| ClientError::Protocol("EventAck for RequestSubmit has no InteractionId".into()))
    }

    /// EventInteractionProperties of an interaction.
    pub fn get(&mut self, id: &str) -> Result<Frame> {
        let f = self.call(&Request::GetInteractionProperties { id: id.to_string() })?;
        if f.msg_type != msg_type::EVENT_INTERACTION_PROPERTIES {
            return Err(ClientError::Protocol(format!(
                "expected EventInteractionProperties, got {}",
                msg_type::name(f.msg_type)
            )));
        }
        Ok(f)
    }

    pub fn change(&mut self, id: &str, changed: KvList, deleted: Vec<String>) -> Result<()> {
        self.call(&Request::ChangeProperties { id: id.to_string(), changed, deleted }).map(drop)
    }

    pub fn place(&mut self, id: &str, queue: &str) -> Result<()> {
        self.call(&Request::PlaceInQueue { id: id.to_string(), queue: Some(queue.to_string()) }).map(drop)
    }

    /// RequestPlaceInQueue without a queue: the interaction moves to the
    /// `next` queue of the queue it is in (the workflow).
    pub fn place_next(&mut self, id: &str) -> Result<()> {
        self.call(&Request::PlaceInQueue { id: id.to_string(), queue: None }).map(drop)
    }

    pub fn stop(&mut self, id: &str, reason: Option<&str>) -> Result<()> {
        self.call(&Request::StopProcessing { id: id.to_string(), reason: reason.map(str::to_string) }).map(drop)
    }

    /// Takes up to `count` (1 to 1000) interactions from the head of a view
    /// of tenant `default` and locks them to this connection. Needs a
    /// routing-engine, proxy or operator client. A pull from an empty view
    /// may wait up to the server's pull-hold-timeout: set a read timeout
    /// longer than that.
    pub fn pull(&mut self, view: &str, count: u32) -> Result<Vec<KvList>> {
        self.pull_in("default", view, count)
    }

    /// [`Client::pull`] from a view of another tenant.
    pub fn pull_in(&mut self, tenant: &str, view: &str, count: u32) -> Result<Vec<KvList>> {
        let req = Request::Pull { tenant: tenant.to_string(), view: view.to_string(), count };
        let f = self.call_expecting(&req, msg_type::EVENT_PULLED_INTERACTIONS)?;
        Ok(interactions(&f))
    }

    /// Searches every tenant: the first `limit` (1 to 10000) interactions
    /// that meet `condition`, in submission order, and how many met it.
    pub fn find(&mut self, condition: &str, limit: u32) -> Result<(Vec<KvList>, u64)> {
        self.find_in(None, condition, limit)
    }

    /// [`Client::find`] within one tenant (`None`: every tenant).
    pub fn find_in(&mut self, tenant: Option<&str>, condition: &str, limit: u32) -> Result<(Vec<KvList>, u64)> {
        let req =
            Request::FindInteractions { tenant: tenant.map(str::to_string), condition: condition.to_string(), limit };
        let f = self.call_expecting(&req, msg_type::EVENT_INTERACTIONS_FOUND)?;
        Ok((interactions(&f), count_of(&f, attr::TOTAL, "Total")?))
    }

    /// Takes a snapshot of every tenant's interactions that meet
    /// `condition`, locking them if `lock`. Returns (snapshot id, how many
    /// it holds, how many matched).
    pub fn take_snapshot(&mut self, condition: &str, lock: bool) -> Result<(u64, u64, u64)> {
        self.take_snapshot_with(None, condition, lock, None)
    }

    /// [`Client::take_snapshot`] within one tenant (`None`: every tenant)
    /// and with a limit (`None`: the server's max-interactions-per-snapshot).
    pub fn take_snapshot_with(
        &mut self,
        tenant: Option<&str>,
        condition: &str,
        lock: bool,
        limit: Option<u32>,
    ) -> Result<(u64, u64, u64)> {
        let req =
            Request::TakeSnapshot { tenant: tenant.map(str::to_string), condition: condition.to_string(), lock, limit };
        let f = self.call_expecting(&req, msg_type::EVENT_SNAPSHOT_TAKEN)?;
        Ok((
            count_of(&f, attr::SNAPSHOT_ID, "SnapshotId")?,
            count_of(&f, attr::COUNT, "Count")?,
            count_of(&f, attr::TOTAL, "Total")?,
        ))
    }

    /// Up to `count` (1 to 1000) entries of a snapshot from position
    /// `start`. Fewer come back at the end of the snapshot or when the
    /// answer reached the frame limit: read on from `start + len`. An
    /// interaction gone since the snapshot is `id` and `gone = 1`.
    pub fn snapshot_page(&mut self, id: u64, start: u32, count: u32) -> Result<Vec<KvList>> {
        let req = Request::GetSnapshotInteractions { snapshot: id, start, count };
        let f = self.call_expecting(&req, msg_type::EVENT_SNAPSHOT_INTERACTIONS)?;
        Ok(interactions(&f))
    }

    /// Every entry of a snapshot, read page by page (`page` entries a
    /// request, 1 to 1000; 0 means the server's default of 100).
    pub fn snapshot_all(&mut self, id: u64, page: u32) -> Result<Vec<KvList>> {
        let page = if page == 0 { DEFAULT_SNAPSHOT_PAGE } else { page };
        let mut all = Vec::new();
        loop {
            let start = u32::try_from(all.len()).map_err(|_| ClientError::Protocol("snapshot too large".into()))?;
            let got = self.snapshot_page(id, start, page)?;
            if got.is_empty() {
                return Ok(all);
            }
            all.extend(got);
        }
    }

    pub fn release_snapshot(&mut self, id: u64) -> Result<()> {
        self.call(&Request::ReleaseSnapshot { snapshot: id }).map(drop)
    }

    /// One list per queue of tenant `default`, in configuration order:
    /// `queue`, `interactions`, `locked`, and `views` (view name: count).
    pub fn queue_depth(&mut self) -> Result<Vec<KvList>> {
        self.queue_depth_in("default")
    }

    /// [`Client::queue_depth`] of another tenant.
    pub fn queue_depth_in(&mut self, tenant: &str) -> Result<Vec<KvList>> {
        let req = Request::GetQueueDepth { tenant: tenant.to_string() };
        let f = self.call_expecting(&req, msg_type::EVENT_QUEUE_DEPTH)?;
        Ok(f.lists(attr::QUEUE_DEPTH))
    }

    /// Moves an interaction into `owner`'s content of a workbin.
    pub fn place_in_workbin(&mut self, id: &str, workbin: &str, owner: &str) -> Result<()> {
        let req =
            Request::PlaceInWorkbin { id: id.to_string(), workbin: workbin.to_string(), owner: owner.to_string() };
        self.call(&req).map(drop)
    }

    /// `owner`'s content of a workbin of tenant `default`, in submission
    /// order (at most 10000).
    pub fn workbin_content(&mut self, workbin: &str, owner: &str) -> Result<Vec<KvList>> {
        self.workbin_content_in("default", workbin, owner).map(|(l, _)| l)
    }

    /// [`Client::workbin_content`] of another tenant, with the total the
    /// content holds.
    pub fn workbin_content_in(&mut self, tenant: &str, workbin: &str, owner: &str) -> Result<(Vec<KvList>, u64)> {
        let req = Request::GetWorkbinContent {
            tenant: tenant.to_string(),
            workbin: workbin.to_string(),
            owner: owner.to_string(),
        };
        let f = self.call_expecting(&req, msg_type::EVENT_WORKBIN_CONTENT)?;
        Ok((interactions(&f), count_of(&f, attr::TOTAL, "Total")?))
    }

    /// The next unsolicited event (EventInvite, EventRevoked, a reporting
    /// event...), waiting up to `timeout`; `None` if none came. Answers to
    /// requests read meanwhile are dropped.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Frame>> {
        if let Some(f) = self.events.pop_front() {
            return Ok(Some(f));
        }
        let old = self.read_timeout;
        self.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let deadline = std::time::Instant::now() + timeout;
        let got = loop {
            match self.recv() {
                Ok(f) if f.ref_id == 0 => break Ok(Some(f)),
                Ok(_) => {}
                Err(ClientError::Io(e)) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    break Ok(None)
                }
                Err(e) => break Err(e),
            }
            if std::time::Instant::now() >= deadline {
                break Ok(None);
            }
        };
        self.set_read_timeout(old)?;
        got
    }

    /// Waits up to `timeout` for an event of type `msg_type`, skipping
    /// others; `None` if none came.
    pub fn wait_event(&mut self, msg_type: u16, timeout: Duration) -> Result<Option<Frame>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match self.next_event(left)? {
                Some(f) if f.msg_type == msg_type => return Ok(Some(f)),
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }

    // ----- agents --------------------------------------------------------------

    /// Logs `agent` in on `place` (tenant `default`) on this connection;
    /// `media` (name, capacity; 0 = configured), empty = every configured
    /// media type. The agent starts not ready.
    pub fn login(&mut self, agent: &str, place: &str, media: &[(&str, u16)]) -> Result<Frame> {
        self.call(&Request::AgentLogin {
            tenant: "default".into(),
            agent: agent.into(),
            place: place.into(),
            media: media.iter().map(|(m, c)| (m.to_string(), *c)).collect(),
            reason: None,
        })
    }

    /// Logs out the agent of this connection (`None`) or the one named.
    pub fn logout(&mut self, agent: Option<&str>) -> Result<()> {
        let req = Request::AgentLogout { tenant: "default".into(), agent: agent.map(Into::into), reason: None };
        self.call(&req).map(drop)
    }

    /// Ready (or not) for one media type, or all (`None`).
    pub fn set_ready(
        &mut self,
        agent: Option<&str>,
        media: Option<&str>,
        ready: bool,
        reason: Option<&str>,
    ) -> Result<()> {
        self.call(&Request::SetReady {
            tenant: "default".into(),
            agent: agent.map(Into::into),
            media: media.map(Into::into),
            ready,
            reason: reason.map(Into::into),
        })
        .map(drop)
    }

    pub fn ready(&mut self) -> Result<()> {
        self.set_ready(None, None, true, None)
    }

    pub fn set_dnd(&mut self, agent: Option<&str>, on: bool) -> Result<()> {
        self.call(&Request::SetDoNotDisturb { tenant: "default".into(), agent: agent.map(Into::into), on }).map(drop)
    }

    /// The state of one agent, or of every agent of tenant `default`
    /// (docs/protocol.md, "Agent state").
    pub fn agent_state(&mut self, agent: Option<&str>) -> Result<Vec<KvList>> {
        let req = Request::GetAgentState { tenant: "default".into(), agent: agent.map(Into::into) };
        let f = self.call_expecting(&req, msg_type::EVENT_AGENT_STATE)?;
        Ok(f.lists(attr::AGENT_STATE))
    }

    pub fn accept(&mut self, id: &str, ticket: Option<u64>) -> Result<()> {
        self.call(&Request::Accept { id: id.into(), ticket }).map(drop)
    }

    pub fn reject(&mut self, id: &str, ticket: Option<u64>, reason: Option<&str>) -> Result<()> {
        self.call(&Request::Reject { id: id.into(), ticket, reason: reason.map(Into::into) }).map(drop)
    }

    /// Offers an interaction to an agent (routing engines after a pull,
    /// operators); returns the invitation's ticket.
    pub fn deliver(&mut self, id: &str, agent: &str) -> Result<u64> {
        let f = self.call(&Request::Deliver { id: id.into(), agent: agent.into() })?;
        Ok(f.get_int(attr::TICKET).unwrap_or(0) as u64)
    }

    pub fn hold(&mut self, id: &str) -> Result<()> {
        self.call(&Request::Hold { id: id.into() }).map(drop)
    }

    pub fn resume(&mut self, id: &str) -> Result<()> {
        self.call(&Request::Resume { id: id.into() }).map(drop)
    }

    pub fn transfer(&mut self, id: &str, agent: &str) -> Result<u64> {
        let f = self.call(&Request::TransferToAgent { id: id.into(), agent: agent.into() })?;
        Ok(f.get_int(attr::TICKET).unwrap_or(0) as u64)
    }

    pub fn leave(&mut self, id: &str, queue: Option<&str>) -> Result<()> {
        self.call(&Request::LeaveInteraction { id: id.into(), queue: queue.map(Into::into) }).map(drop)
    }

    /// Subscribes to the reporting stream (of one tenant, or all).
    pub fn subscribe(&mut self, tenant: Option<&str>) -> Result<()> {
        self.subscribe_after(tenant, None)
    }

    /// Subscribes, resuming after the event that carried `cursor` (its
    /// EventCursor): every later event comes, none twice.
    pub fn subscribe_after(&mut self, tenant: Option<&str>, cursor: Option<&str>) -> Result<()> {
        let (tenant, cursor) = (tenant.map(Into::into), cursor.map(Into::into));
        self.call(&Request::Subscribe { tenant, cursor, with_state: false }).map(drop)
    }

    /// Subscribes, asking for the state of agents and queues first: the
    /// EventReportingState frames come (through [`Client::next_event`])
    /// before any event of the subscription; the last carries the cursor
    /// the state is as of.
    pub fn subscribe_with_state(&mut self, tenant: Option<&str>) -> Result<()> {
        self.call(&Request::Subscribe { tenant: tenant.map(Into::into), cursor: None, with_state: true }).map(drop)
    }

    /// [`Client::call`], and a check that the answer is of type `want`.
    fn call_expecting(&mut self, req: &Request, want: u16) -> Result<Frame> {
        let f = self.call(req)?;
        if f.msg_type != want {
            return Err(ClientError::Protocol(format!(
                "expected {} to {}, got {}",
                msg_type::name(want),
                req.name(),
                msg_type::name(f.msg_type)
            )));
        }
        Ok(f)
    }

    /// Takes the connection apart, for a caller that drives the socket
    /// itself from here on (ixn-bench polls many in non-blocking mode):
    /// the stream, the bytes read but not yet parsed (the start of the next
    /// frames), and the unsolicited events [`Client::call`] kept. Requests
    /// queued but not flushed are dropped. The heartbeat pinger stops: a
    /// connection registered with heartbeats must then send its own
    /// frames in time, and skip the answers with reference id
    /// [`HEARTBEAT_REF`] that may still arrive.
    pub fn into_parts(self) -> (TcpStream, Vec<u8>, Vec<Frame>) {
        let (stream, tls, rest, events) = self.into_session_parts();
        assert!(tls.is_none(), "into_parts takes a plain connection apart, not a TLS one");
        (stream, rest, events)
    }

    /// [`Client::into_parts`] for a plain or a TLS connection (not one with
    /// heartbeats): also its TLS session, which then carries what the
    /// caller writes and decrypts what it reads.
    #[allow(clippy::type_complexity)]
    pub fn into_session_parts(mut self) -> (TcpStream, Option<Box<rustls::ClientConnection>>, Vec<u8>, Vec<Frame>) {
        let session = self.tls.take();
        let (stream, rest, events) = self.into_plain_parts();
        (stream, session, rest, events)
    }

    fn into_plain_parts(self) -> (TcpStream, Vec<u8>, Vec<Frame>) {
        assert!(self.tls.is_none(), "a TLS session is taken out first");
        let Client { stream, read_timeout, pinger, rbuf, rpos, events, .. } = self;
        assert!(
            pinger.as_ref().is_none_or(|p| p.shared.writer.lock().unwrap_or_else(|e| e.into_inner()).tls.is_none()),
            "a connection with heartbeats over TLS is not taken apart (its pinger holds the session)"
        );
        if pinger.is_some() {
            drop(pinger);
            // Reads with heartbeats left a slice as the socket's timeout.
            let _ = stream.set_read_timeout(read_timeout);
        }
        (stream, rbuf[rpos..].to_vec(), events.into_iter().collect())
    }
}

/// The Interaction (41) attributes of an answer, in order: one list per
/// interaction (docs/protocol.md, "Interaction lists").
pub fn interactions(f: &Frame) -> Vec<KvList> {
    f.lists(attr::INTERACTION)
}

/// A non-negative int attribute the answer must carry.
fn count_of(f: &Frame, id: u16, name: &str) -> Result<u64> {
    let v =
        f.get_int(id).ok_or_else(|| ClientError::Protocol(format!("{} has no {name}", msg_type::name(f.msg_type))))?;
    u64::try_from(v).map_err(|_| ClientError::Protocol(format!("{} has {name} {v}", msg_type::name(f.msg_type))))
}

/// A submit request with the usual defaults.
pub fn submit_request(tenant: &str, queue: &str, media: &str, priority: i64, properties: KvList) -> Submit {
    Submit {
        tenant: tenant.to_string(),
        media_type: media.to_string(),
        interaction_type: "Inbound".into(),
        interaction_subtype: "InboundNew".into(),
        queue: queue.to_string(),
        priority,
        properties,
        id: None,
        received_at_ms: None,
    }
}
