//! The Rust client library: a blocking connection speaking protocol v1.
//! ixnctl, ixn-bench and the tests use it. docs/protocol.md is what it
//! implements; a client in another language needs only that document.
//!
//! Two ways to use it: `call` sends one request and waits for its answer;
//! `queue`/`flush`/`recv` pipeline many requests and read answers as they
//! come (match them by reference id).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use ixn_shard::proto::frame::{split_frame, Frame, ABSOLUTE_MAX_FRAME};
use ixn_shard::proto::request::error_of;
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

pub struct Client {
    stream: TcpStream,
    next_ref: u32,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
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
                    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
                    return Ok(Client {
                        stream,
                        next_ref: 1,
                        rbuf: Vec::with_capacity(64 << 10),
                        rpos: 0,
                        wbuf: Vec::new(),
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(ClientError::Io(last))
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

    pub fn set_read_timeout(&self, t: Option<Duration>) -> Result<()> {
        Ok(self.stream.set_read_timeout(t)?)
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

    /// Adds a request to the send buffer; returns its reference id.
    pub fn queue(&mut self, req: &Request) -> u32 {
        let r = self.take_ref();
        req.encode(r).encode_into(&mut self.wbuf);
        r
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
            self.stream.write_all(&self.wbuf)?;
            self.wbuf.clear();
        }
        Ok(())
    }

    fn take_ref(&mut self) -> u32 {
        let r = self.next_ref;
        self.next_ref = self.next_ref.wrapping_add(1).max(1);
        r
    }

    /// Reads the next frame from the server, whatever it answers.
    pub fn recv(&mut self) -> Result<Frame> {
        loop {
            match split_frame(&self.rbuf[self.rpos..], ABSOLUTE_MAX_FRAME) {
                Err(e) => return Err(ClientError::Protocol(e.to_string())),
                Ok(Some((h, body, total))) => {
                    let attrs = ixn_shard::proto::frame::decode_body(body).map_err(|e| ClientError::Protocol(e.0))?;
                    let f = Frame { msg_type: h.msg_type(), ref_id: h.ref_id(), attrs };
                    self.rpos += total;
                    return Ok(f);
                }
                Ok(None) => {}
            }
            if self.rpos > 0 {
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
            }
            let len = self.rbuf.len();
            self.rbuf.resize(len + (64 << 10), 0);
            let n = match self.stream.read(&mut self.rbuf[len..]) {
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
    /// `ClientError::Server`. Frames for other reference ids are dropped,
    /// so do not mix `call` with pipelined requests in flight.
    pub fn call(&mut self, req: &Request) -> Result<Frame> {
        let r = self.queue(req);
        self.flush()?;
        loop {
            let f = self.recv()?;
            if f.ref_id != r {
                continue;
            }
            if let Some(e) = error_of(&f) {
                return Err(ClientError::Server(e));
            }
            return Ok(f);
        }
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

    pub fn stop(&mut self, id: &str, reason: Option<&str>) -> Result<()> {
        self.call(&Request::StopProcessing { id: id.to_string(), reason: reason.map(str::to_string) }).map(drop)
    }
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
