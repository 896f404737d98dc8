//! The management listener: a small HTTP/1.1 server on its own threads
//! (never on an executor) for operators and their tools.
//!
//! - `GET /metrics`: the Prometheus text format (exposition.rs).
//! - `GET /health`: 200 while the process runs.
//! - `GET /ready`: 200 when every shard answers a scrape in time and no
//!   database writer is failing; 503 with the reasons otherwise.
//! - `GET /`: the live dashboard page, which polls `GET /api/state` (JSON).
//! - `POST /reload`: reloads the configuration's clients (reload.rs); 200
//!   with what changed, or 409 with why nothing did.
//!
//! Every answer is read from the shards by asking them (metrics.rs), so a
//! scrape costs the hot path nothing but a few copies between two inputs.
//! Requests are bounded: a request head of at most 8 KiB, read within 5 s;
//! at most 16 connections served at once, past that a 503 at once.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ixn_shard::catalog::Catalog;
use ixn_shard::versioned::Versioned;
use ixn_storage::{Outbox, WriterHandle};

use super::exposition::{self, Sample, Scrape};
use super::metrics::{self, MetricsInbox};
use super::msgid;

/// Longest request head (request line and headers) read.
const MAX_HEAD: usize = 8 << 10;
/// How long a client may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
const MAX_ACTIVE: usize = 16;
/// How long a scrape waits for the shards.
const SCRAPE_LIMIT: Duration = Duration::from_secs(1);
/// The dashboard's history: one sample a second for ten minutes.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
const HISTORY: usize = 600;

const DASHBOARD: &str = include_str!("dashboard.html");

/// What the listener reads from.
pub struct Sources {
    /// The catalog in force (a reload replaces it before the shards use it).
    pub catalog: Arc<Versioned<Catalog>>,
    pub shards: Vec<Arc<MetricsInbox>>,
    pub writers: WriterHandle,
    pub outbox: Option<Arc<Outbox>>,
    pub node_id: u8,
    pub started: Instant,
    pub reloader: Arc<super::reload::Reloader>,
}

impl Sources {
    fn scrape(&self) -> Scrape {
        Scrape {
            at_ms: super::executor::now_ms(),
            uptime: self.started.elapsed(),
            node_id: self.node_id,
            reports: metrics::collect(&self.shards, SCRAPE_LIMIT),
            writers: self.writers.stats().to_vec(),
            queued: self.writers.queued(),
            outbox: self.outbox.as_ref().map(|o| (o.backlog(), o.shipped())),
        }
    }

    /// A scrape and the catalog that names its queues and views. The
    /// catalog is read after the shards answered, so it is at least as new
    /// as theirs; a shard that answered before a reload reached it has
    /// fewer queues or views, and its queue and view gauges are left out
    /// of this one scrape rather than put under the wrong names.
    fn scrape_named(&self) -> (Arc<Catalog>, Scrape) {
        let mut scrape = self.scrape();
        let catalog = self.catalog.get();
        let queues: usize = catalog.tenants.iter().map(|t| t.queues.len()).sum();
        let views: usize = catalog.tenants.iter().map(|t| t.views.len()).sum();
        for r in scrape.reports.iter_mut().flatten() {
            if r.gauges.queues.len() != queues || r.gauges.views.len() != views {
                r.gauges.queues.clear();
                r.gauges.views.clear();
            }
        }
        (catalog, scrape)
    }
}

struct Shared {
    sources: Sources,
    history: Mutex<VecDeque<Sample>>,
    active: AtomicUsize,
}

/// Binds the listener (before the shards start, so a busy address fails
/// the start early).
/// A server that is still stopping holds the address until its process
/// ends: wait for it, as for the client port.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    let started = Instant::now();
    loop {
        match TcpListener::bind(addr) {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && started.elapsed() < super::LISTEN_RELEASE_WAIT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("cannot listen on {addr} (management-listen): {e}")),
        }
    }
}

/// Starts the listener's threads; returns the address bound (port 0
/// picks one).
pub fn start(listener: TcpListener, sources: Sources) -> Result<SocketAddr, String> {
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let shared = Arc::new(Shared { sources, history: Mutex::new(VecDeque::new()), active: AtomicUsize::new(0) });
    {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("ixn-management".into())
            .spawn(move || accept_loop(listener, shared))
            .map_err(|e| format!("cannot start the management thread: {e}"))?;
    }
    std::thread::Builder::new()
        .name("ixn-sampler".into())
        .spawn(move || sample_loop(shared))
        .map_err(|e| format!("cannot start the management sampler thread: {e}"))?;
    tracing::info!(msg_id = msgid::MANAGEMENT_LISTENING, %bound, "management listener started");
    Ok(bound)
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
        if shared.active.fetch_add(1, Ordering::SeqCst) >= MAX_ACTIVE {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            let _ = respond(&mut stream, 503, "text/plain", b"too many management connections\n", false);
            continue;
        }
        let shared2 = shared.clone();
        let spawned = std::thread::Builder::new().name("ixn-management-conn".into()).spawn(move || {
            serve(&mut stream, &shared2);
            shared2.active.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            shared.active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Samples the shards every second for the dashboard's history.
fn sample_loop(shared: Arc<Shared>) {
    let mut last: Option<Scrape> = None;
    loop {
        std::thread::sleep(SAMPLE_EVERY);
        let now = shared.sources.scrape();
        if let Some(prev) = &last {
            let sample = exposition::sample(prev, &now);
            let mut h = shared.history.lock().unwrap_or_else(|e| e.into_inner());
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(sample);
        }
        last = Some(now);
    }
}

/// A request as far as this server cares.
#[derive(Debug, PartialEq, Eq)]
pub struct Head<'a> {
    pub method: &'a str,
    /// Without its query string.
    pub path: &'a str,
}

/// Parses a request head; `Err` is the status to answer.
pub fn parse_head(head: &str) -> Result<Head<'_>, u16> {
    let line = head.lines().next().ok_or(400u16)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Err(400);
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Ok(Head { method, path })
}

fn read_head(stream: &mut TcpStream) -> Result<String, u16> {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if end > MAX_HEAD {
                return Err(431);
            }
            buf.truncate(end);
            return String::from_utf8(buf).map_err(|_| 400);
        }
        if buf.len() > MAX_HEAD {
            return Err(431);
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return Err(0),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn serve(stream: &mut TcpStream, shared: &Shared) {
    let head = match read_head(stream) {
        Ok(h) => h,
        Err(0) => return,
        Err(status) => return refuse(stream, status),
    };
    let Ok(req) = parse_head(&head) else { return refuse(stream, 400) };
    let s = &shared.sources;
    if req.path == "/reload" {
        if req.method != "POST" {
            return refuse(stream, 405);
        }
        let outcome = s.reloader.reload();
        super::reload::log_outcome(&outcome, "management listener");
        let _ = match outcome {
            Ok(summary) => respond(stream, 200, "text/plain", (summary + "\n").as_bytes(), true),
            Err(why) => respond(stream, 409, "text/plain", (why + "\n").as_bytes(), true),
        };
        return;
    }
    let body_too = match req.method {
        "GET" => true,
        "HEAD" => false,
        _ => return refuse(stream, 405),
    };
    let result = match req.path {
        "/" | "/dashboard" => respond(stream, 200, "text/html; charset=utf-8", DASHBOARD.as_bytes(), body_too),
        "/health" => respond(stream, 200, "text/plain", b"alive\n", body_too),
        "/ready" => {
            let problems = exposition::not_ready(&s.scrape());
            if problems.is_empty() {
                respond(stream, 200, "text/plain", b"ready\n", body_too)
            } else {
                respond(stream, 503, "text/plain", (problems.join("\n") + "\n").as_bytes(), body_too)
            }
        }
        "/metrics" => {
            let (catalog, scrape) = s.scrape_named();
            let text = exposition::prometheus(&catalog, &scrape);
            respond(stream, 200, "text/plain; version=0.0.4; charset=utf-8", text.as_bytes(), body_too)
        }
        "/api/state" => {
            let history: Vec<Sample> =
                shared.history.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
            let (catalog, scrape) = s.scrape_named();
            let json = exposition::state_json(&catalog, &scrape, &history);
            respond(stream, 200, "application/json", json.as_bytes(), body_too)
        }
        _ => return refuse(stream, 404),
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "management answer not sent");
    }
}

fn refuse(stream: &mut TcpStream, status: u16) {
    let text = match status {
        400 => "bad request: expected 'GET /path HTTP/1.1'\n",
        404 => "not found: try /metrics, /health, /ready or / (the dashboard)\n",
        405 => "method not allowed: GET and HEAD, and POST on /reload\n",
        431 => "request head larger than 8 KiB\n",
        _ => "error\n",
    };
    tracing::info!(msg_id = msgid::MANAGEMENT_REFUSED, status, "management request refused");
    let _ = respond(stream, status, "text/plain", text.as_bytes(), true);
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn respond(stream: &mut TcpStream, status: u16, kind: &str, body: &[u8], with_body: bool) -> std::io::Result<()> {
    let allow = if status == 405 { "Allow: GET, HEAD, POST\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{allow}Connection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if with_body {
        stream.write_all(body)?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_line_gives_method_and_path_without_query() {
        assert_eq!(parse_head("GET /metrics?x=1 HTTP/1.1\r\nHost: a"), Ok(Head { method: "GET", path: "/metrics" }));
        assert_eq!(parse_head("HEAD / HTTP/1.0"), Ok(Head { method: "HEAD", path: "/" }));
    }

    #[test]
    fn malformed_request_lines_are_400() {
        for bad in ["", "GET", "GET /", "GET / HTTP/2", "GET metrics HTTP/1.1", "GET / HTTP/1.1 extra"] {
            assert_eq!(parse_head(bad), Err(400), "{bad:?}");
        }
    }
}
