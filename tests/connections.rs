//! Connections against the real server: a client that stops reading is
//! closed by the server and its descriptor freed; a peer that stops
//! answering heartbeats is closed and its agent's desktop treated as gone;
//! a live idle client with heartbeats stays, `ixnctl agent work` among
//! them; client requests for a shard
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

/// Shrinks a client socket's receive buffer, so a client that does not
/// read stalls the server's writes after a few hundred kilobytes rather
/// than the tens of megabytes loopback autotuning allows.
fn shrink_receive_buffer(stream: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 64 << 10;
    // SAFETY: setsockopt on a socket we own, with a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt SO_RCVBUF");
}

/// The server's writes to a client that stops reading make no progress:
/// past `write-timeout` the server closes the connection (before
/// max-output-buffer is reached), logs why, and goes on.
#[test]
fn a_connection_whose_writes_stall_is_closed_after_write_timeout() {
    let dir = TempDir::new("conn-write-timeout");
    let cfg = write_config(&dir.0, &Engine::Sqlite, "0", "max-output-buffer = 134217728\nwrite-timeout = 1\n");
    let server = Server::start(&cfg);
    let _log = LogOnPanic(&server);
    let mut stuck = server.client_as(ClientType::ReportingEngine, "stuck");
    stuck.subscribe(None).unwrap();
    let stuck_port = stuck.local_addr().unwrap().port();
    let (stuck_stream, _, _) = stuck.into_parts();
    shrink_receive_buffer(&stuck_stream);
    let port = server_port(&server);
    let mut c = server.client();
    let id = c.submit(submit_request("default", "inbound", "chat", 0, kv![("lang", "en")])).unwrap();
    // 40 reports of a 200 KB property: 8 MB, far more than the sockets
    // take, far less than max-output-buffer.
    for i in 0..40 {
        c.change(&id, kv![("blob", Value::Bin(vec![i as u8; 200_000]))], vec![]).unwrap();
    }
    let closed =
        |log: &str| log.lines().find(|l| l.contains("msg_id=1022") && l.contains("\"stuck\"")).map(str::to_string);
    assert!(
        wait_for(Duration::from_secs(15), || closed(&server.log()).is_some()),
        "the stalled connection was not closed"
    );
    let line = closed(&server.log()).unwrap();
    assert!(line.contains("reason=\"closed by server\"") && line.contains("cause=\"write timeout\""), "{line}");
    assert!(!server.log().contains("msg_id=1024"), "closed by the write deadline, not by max-output-buffer");
    assert!(wait_for(Duration::from_secs(5), || tcp_state(port, stuck_port).is_none()), "the socket is released");
    drop(stuck_stream);
    c.change(&id, kv![("after", 1i64)], vec![]).unwrap();
}

/// Accepted connections have TCP keepalive with `tcp-keepalive` seconds
/// of idleness: the kernel's keepalive timer (the `tr` 2 of
/// /proc/net/tcp) runs on an idle connection, due within that time.
#[test]
fn accepted_connections_have_tcp_keepalive() {
    let dir = TempDir::new("conn-keepalive");
    let cfg = write_config(&dir.0, &Engine::Sqlite, "0", "tcp-keepalive = 30\n");
    let server = Server::start(&cfg);
    let _log = LogOnPanic(&server);
    let mut c = server.client();
    c.ping().unwrap();
    let (local, port) = (c.local_addr().unwrap().port(), server_port(&server));
    // The `tr:when` column of the server's end: timer kind, then clock ticks
    // (USER_HZ, 100 a second) until it fires.
    let timer = || -> Option<(u8, u64)> {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let (l, r) = (format!("0100007F:{port:04X}"), format!("0100007F:{local:04X}"));
        table.lines().skip(1).find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(1) != Some(&l.as_str()) || f.get(2) != Some(&r.as_str()) {
                return None;
            }
            let (tr, when) = f[5].split_once(':')?;
            Some((u8::from_str_radix(tr, 16).ok()?, u64::from_str_radix(when, 16).ok()?))
        })
    };
    assert!(
        wait_for(Duration::from_secs(5), || timer().is_some_and(|(tr, when)| tr == 2 && when <= 30 * 100)),
        "no keepalive timer within 30 s on the server's end: {:?}",
        timer()
    );
}

/// A desktop that asked for heartbeats (HeartbeatTimeout 1 s) and then
/// stops answering, half-open: the server closes it about a second after
/// its last frame, the agent's desktop is gone, so the invitation made to
/// it goes back and another agent gets it, long before the 120 s
/// delivering-timeout.
#[test]
fn a_silent_peer_is_closed_and_its_invitation_goes_back() {
    use ixn_shard::proto::Request;
    let dir = TempDir::new("conn-heartbeat");
    let cfg = common::write_config_with(
        &dir.0,
        &Engine::Sqlite,
        common::two_cores(),
        "delivering-timeout = 120\nlogin-session-timeout = 600\n",
        "",
    );
    let server = Server::start(&cfg);
    let _log = LogOnPanic(&server);
    let mut watch = server.client_as(ClientType::ReportingEngine, "watch");
    watch.subscribe(None).unwrap();
    // The silent desktop: registers asking for heartbeats, logs agent1 in,
    // and from then on neither reads nor writes.
    let mut dead = ixn::client::Client::connect(server.addr.as_str()).unwrap();
    let register =
        Request::RegisterClient { client_type: ClientType::AgentDesktop, name: "desk-dead".into(), credential: None };
    let r = dead.next_ref_id();
    dead.queue_frame(&register.encode(r).with(attr::HEARTBEAT_TIMEOUT, 1000i64));
    dead.flush().unwrap();
    let ack = dead.recv().unwrap();
    assert_eq!((ack.msg_type, ack.ref_id), (msg_type::EVENT_ACK, r));
    dead.login("agent1", "place1", &[]).unwrap();
    dead.ready().unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    let mut ms = server.media_server();
    let id = ms.submit(submit_request("default", "inbound", "chat", 0, kv![("lang", "en")])).unwrap();
    let invited = watch.wait_event(msg_type::EVENT_AGENT_INVITED, Duration::from_secs(10)).unwrap();
    assert_eq!(invited.as_ref().and_then(|f| f.get_str(attr::AGENT_ID)), Some("agent1"), "{invited:?}");
    let t = Instant::now();
    // Another agent becomes ready while the invitation to agent1 is open.
    let mut live = server.client_as(ClientType::AgentDesktop, "desk-live");
    live.login("agent2", "place2", &[]).unwrap();
    live.ready().unwrap();
    let got = live.wait_event(msg_type::EVENT_INVITE, Duration::from_secs(20)).unwrap();
    assert_eq!(
        got.as_ref().and_then(|f| f.get_str(attr::INTERACTION_ID)),
        Some(id.as_str()),
        "agent2 is not invited within 20 s: the silent desktop still holds the invitation"
    );
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let closed = server
        .log()
        .lines()
        .find(|l| l.contains("msg_id=1022") && l.contains("\"desk-dead\""))
        .map(str::to_string)
        .expect("the silent desktop's close is logged (1022)");
    assert!(closed.contains("cause=\"heartbeat timeout\""), "{closed}");
    assert!(
        wait_for(Duration::from_secs(5), || tcp_state(server_port(&server), dead_port).is_none()),
        "the server's socket to the silent desktop is released"
    );
    drop(dead);
}

/// The number of 1022 lines (a connection ended) of client `name`.
fn closes_of(server: &Server, name: &str) -> usize {
    let quoted = format!("\"{name}\"");
    server.log().lines().filter(|l| l.contains("msg_id=1022") && l.contains(&quoted)).count()
}

/// A connection registered with HeartbeatTimeout `ms` that then says
/// nothing: it shows when a heartbeat timeout has passed.
fn silent_peer(server: &Server, name: &str, ms: i64) -> ixn::client::Client {
    use ixn_shard::proto::Request;
    let mut c = ixn::client::Client::connect(server.addr.as_str()).unwrap();
    let register = Request::RegisterClient { client_type: ClientType::Operator, name: name.into(), credential: None };
    let r = c.next_ref_id();
    c.queue_frame(&register.encode(r).with(attr::HEARTBEAT_TIMEOUT, ms));
    c.flush().unwrap();
    let ack = c.recv().unwrap();
    assert_eq!((ack.msg_type, ack.ref_id, ack.get_int(attr::HEARTBEAT_TIMEOUT)), (msg_type::EVENT_ACK, r, Some(ms)));
    c
}

/// A desktop with heartbeats (3 s both ways) that the application leaves
/// alone stays connected: the client library pings for it. Two silent
/// peers with the same timeout, the second registered once the first was
/// closed, show that more than two timeouts passed meanwhile. An invalid
/// HeartbeatTimeout is refused with error 14.
#[test]
fn a_live_idle_client_with_heartbeats_is_not_closed() {
    use ixn::client::{Client, Heartbeat};
    use ixn_shard::proto::{ErrorCode, Request};
    let dir = TempDir::new("conn-heartbeat-live");
    let cfg = write_config(&dir.0, &Engine::Sqlite, common::two_cores(), "");
    let server = Server::start(&cfg);
    let _log = LogOnPanic(&server);
    // Out of range: error 14, and the connection may register again.
    let mut c = Client::connect(server.addr.as_str()).unwrap();
    let register = Request::RegisterClient { client_type: ClientType::Operator, name: "bad".into(), credential: None };
    let r = c.next_ref_id();
    c.queue_frame(&register.encode(r).with(attr::HEARTBEAT_TIMEOUT, 500i64));
    c.flush().unwrap();
    let e = ixn_shard::proto::request::error_of(&c.recv().unwrap()).expect("EventError");
    assert_eq!(e.code, ErrorCode::InvalidValue, "{e}");
    c.register(ClientType::Operator, "bad", None).unwrap();

    // 3 s: pings every second, so a loaded test machine stalling a thread
    // for a moment does not count as silence.
    let hb = Heartbeat::new(Duration::from_secs(3));
    let mut live =
        Client::connect_as_with_heartbeat(server.addr.as_str(), ClientType::AgentDesktop, "desk-live", None, hb)
            .unwrap();
    assert_eq!(live.heartbeat(), Some(hb));
    live.login("agent1", "place1", &[]).unwrap();
    let first = silent_peer(&server, "silent-1", 3000);
    assert!(wait_for(Duration::from_secs(20), || closes_of(&server, "silent-1") == 1), "silent-1 was not closed");
    let second = silent_peer(&server, "silent-2", 3000);
    assert!(wait_for(Duration::from_secs(20), || closes_of(&server, "silent-2") == 1), "silent-2 was not closed");
    drop((first, second));
    // The live desktop, untouched all along, is still connected and
    // still carries its agent.
    assert_eq!(closes_of(&server, "desk-live"), 0, "the live desktop was closed");
    live.ping().expect("the live desktop answers");
    let state = live.agent_state(Some("agent1")).unwrap();
    assert_eq!(state[0].get("state"), Some(&Value::Str("logged-in".into())), "{state:?}");
}

/// The other direction: a client with heartbeats notices a server that
/// stops answering (SIGSTOP) within its timeout, instead of waiting as
/// long as the application asked to.
#[test]
fn a_client_with_heartbeats_notices_a_silent_server() {
    use ixn::client::{Client, ClientError, Heartbeat};
    let dir = TempDir::new("conn-heartbeat-server");
    let cfg = write_config(&dir.0, &Engine::Sqlite, "0", "");
    let server = Server::start(&cfg);
    let _log = LogOnPanic(&server);
    let hb = Heartbeat { remote_timeout: Duration::from_secs(60), timeout: Duration::from_secs(1) };
    let mut c =
        Client::connect_as_with_heartbeat(server.addr.as_str(), ClientType::Operator, "watcher", None, hb).unwrap();
    c.ping().unwrap();
    let pid = server.child.id() as i32;
    // SAFETY: signals to our own child process.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let t = Instant::now();
    let got = c.next_event(Duration::from_secs(30));
    let waited = t.elapsed();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    match got {
        Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionAborted => {}
        other => panic!("expected the client to give up on the server, got {other:?}"),
    }
    assert!(waited < Duration::from_secs(10), "noticed after {waited:?}");
}

/// `ixnctl agent work` keeps heartbeats up (`--heartbeat 1`): idle for
/// several timeouts it stays connected; once it is frozen (SIGSTOP, as a
/// hung desktop) the server closes it for the heartbeat timeout.
#[test]
fn ixnctl_agent_work_keeps_heartbeats_and_is_closed_when_frozen() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = TempDir::new("conn-heartbeat-ixnctl");
    let cfg = write_config(&dir.0, &Engine::Sqlite, "0", "");
    let server = Server::start(&cfg);
    let _log = LogOnPanic(&server);
    let mut desk = Command::new(env!("CARGO_BIN_EXE_ixnctl"))
        .args(["--server", server.addr.as_str(), "--name", "desk-ixnctl", "--json", "--heartbeat", "1"])
        .args(["agent", "work", "agent1", "--auto-accept"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ixnctl starts");
    let mut first = String::new();
    std::io::BufReader::new(desk.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.contains("\"event\":\"ready\""), "ixnctl agent work did not log in: {first:?}");
    // Three heartbeat timeouts with nothing to do: still connected.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(closes_of(&server, "desk-ixnctl"), 0, "an idle ixnctl with heartbeats was closed");
    let pid = desk.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let closed = wait_for(Duration::from_secs(10), || closes_of(&server, "desk-ixnctl") == 1);
    let _ = Command::new("kill").args(["-KILL", &pid]).status();
    let _ = desk.wait();
    assert!(closed, "a frozen ixnctl desktop was not closed within 10 s");
    let line =
        server.log().lines().find(|l| l.contains("msg_id=1022") && l.contains("\"desk-ixnctl\"")).unwrap().to_string();
    assert!(line.contains("cause=\"heartbeat timeout\""), "{line}");
}
