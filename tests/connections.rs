//! Connections against the real server: a client that stops reading is
//! closed by the server and its descriptor freed; a peer that stops
//! answering heartbeats is closed and its agent's desktop treated as gone;
//! a live idle client with heartbeats stays; client requests for a shard
//! whose queue is full are refused, not queued.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::{write_config, Engine, LogOnPanic, Server, TempDir};
use ixn::client::submit_request;
use ixn_shard::proto::{attr, msg_type, ClientType};
use ixn_shard::{kv, Value};

/// The state (the `st` column, e.g. 0x01 ESTABLISHED) of the TCP socket
/// with local port `local` and remote port `remote` on 127.0.0.1, from
/// /proc/net/tcp; `None` once no such socket exists.
fn tcp_state(local: u16, remote: u16) -> Option<u8> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let want_local = format!("0100007F:{local:04X}");
    let want_remote = format!("0100007F:{remote:04X}");
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.get(1) == Some(&want_local.as_str()) && f.get(2) == Some(&want_remote.as_str()))
            .then(|| u8::from_str_radix(f[3], 16).expect("hex state"))
    })
}

fn server_port(s: &Server) -> u16 {
    s.addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// Waits up to `limit` for `done`, checking every 20 ms; whether it came.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// A reporting subscriber that never reads passes max-output-buffer: the
/// server closes its socket at once (the server's end of the connection
/// is gone from the kernel's table, the client then reads to a reset or
/// an end), logs `closed by server`, and goes on serving.
#[test]
fn a_slow_subscriber_is_closed_by_the_server() {
    let dir = TempDir::new("conn-slow");
    let cfg = write_config(&dir.0, &Engine::Sqlite, "0", "max-output-buffer = 1048576\n");
    let server = Server::start(&cfg);
    let _log = LogOnPanic(&server);
    let mut stuck = server.client_as(ClientType::ReportingEngine, "stuck");
    stuck.subscribe(None).unwrap();
    let stuck_port = stuck.local_addr().unwrap().port();
    let port = server_port(&server);
    assert_eq!(tcp_state(port, stuck_port), Some(0x01), "the server's end is ESTABLISHED");
    let mut c = server.client();
    let id = c.submit(submit_request("default", "inbound", "chat", 0, kv![("lang", "en")])).unwrap();
    // 150 changes of a 200 KB property are reported to the subscriber:
    // 30 MB, far past the bound and what the sockets hold.
    for i in 0..150 {
        c.change(&id, kv![("blob", Value::Bin(vec![i as u8; 200_000]))], vec![]).unwrap();
    }
    assert!(
        wait_for(Duration::from_secs(10), || server.log().contains("max-output-buffer exceeded")),
        "the slow subscriber was never found"
    );
    // The server's end of the connection is released within a deadline,
    // while the client still reads nothing.
    assert!(
        wait_for(Duration::from_secs(5), || tcp_state(port, stuck_port).is_none()),
        "the server's socket to the slow subscriber is still there (state {:?})",
        tcp_state(port, stuck_port)
    );
    let closed = server
        .log()
        .lines()
        .find(|l| l.contains("msg_id=1022") && l.contains("\"stuck\""))
        .map(str::to_string)
        .expect("the close of the slow subscriber is logged (1022)");
    assert!(closed.contains("reason=\"closed by server\""), "{closed}");
    // The client reads what reached it, then a reset or the end.
    let (mut stream, _, _) = stuck.into_parts();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let t = Instant::now();
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => assert!(t.elapsed() < Duration::from_secs(10), "the client never sees the close"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the client should see a reset or an end, got {e}"),
        }
    }
    // The server goes on.
    c.change(&id, kv![("after", 1i64)], vec![]).unwrap();
    assert_eq!(c.get(&id).unwrap().get_int(attr::VERSION), Some(151));
    let mut fresh = server.client_as(ClientType::ReportingEngine, "fresh");
    fresh.subscribe(None).unwrap();
    c.change(&id, kv![("seen", 1i64)], vec![]).unwrap();
    let ev = fresh.wait_event(msg_type::EVENT_PROPERTIES_CHANGED, Duration::from_secs(10)).unwrap();
    assert!(ev.is_some(), "a new subscriber gets events");
}

/// Client requests for another shard wait in a bounded queue: past
/// `max-shard-queue` messages, a request gets EventError 52 (Overloaded)
/// with a text instead of being queued. Every request still gets exactly
/// one answer, and once the queue drains requests go through again.
#[test]
fn requests_past_the_shard_queue_bound_are_refused() {
    use ixn_shard::proto::request::error_of;
    use ixn_shard::proto::{ErrorCode, Request};
    let dir = TempDir::new("conn-shard-queue");
    let cfg = write_config(&dir.0, &Engine::Sqlite, common::two_cores(), "max-shard-queue = 4\n");
    let server = Server::start(&cfg);
    let _log = LogOnPanic(&server);
    let mut conns = common::media_conns(&server, 2);
    let on_1 = conns.iter().position(|(_, s)| *s == 1).unwrap();
    let id = conns[on_1].0.submit(submit_request("default", "inbound", "chat", 0, kv![("lang", "en")])).unwrap();
    assert_eq!(ixn_shard::id::owner_of(&id, 2), 1);
    let on_0 = conns.iter().position(|(_, s)| *s == 0).unwrap();
    let c = &mut conns[on_0].0;
    // 300 reads of an interaction of shard 1, sent at once from shard 0.
    let mut sent = std::collections::HashSet::new();
    for _ in 0..300 {
        sent.insert(c.queue(&Request::GetInteractionProperties { id: id.clone() }));
    }
    c.flush().unwrap();
    let (mut answered, mut refused) = (0, 0);
    while !sent.is_empty() {
        let f = c.recv().expect("an answer to every request");
        assert!(sent.remove(&f.ref_id), "one answer per request (ref id {})", f.ref_id);
        match error_of(&f) {
            None => {
                assert_eq!(f.msg_type, msg_type::EVENT_INTERACTION_PROPERTIES);
                answered += 1;
            }
            Some(e) => {
                assert_eq!(e.code, ErrorCode::Overloaded, "{e}");
                assert!(e.text.contains("max-shard-queue"), "{e}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "nothing was refused: all {answered} requests were queued");
    assert!(answered >= 4, "requests within the bound are served ({answered})");
    // The queue drained: the next request goes through.
    assert_eq!(c.get(&id).unwrap().get_str(attr::INTERACTION_ID), Some(id.as_str()));
}
