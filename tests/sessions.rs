//! Sessions over TCP: one connection carrying many clients (the proxy's
//! upstream link). Each session is a client of its own: its agent, its
//! invitations, its locks and its subscription; closing it ends them as
//! closing a connection does; every answer and event for it carries its
//! SessionId; a session's mistakes get errors and change nothing.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{eventually, two_cores, write_config_with, Engine, LogOnPanic, Server, TempDir};
use ixn::client::{submit_request, Client, ClientError};
use ixn_shard::proto::{attr, msg_type, ClientType, ErrorCode, Frame, Request};
use ixn_shard::{KvList, Value};

const TENANT: &str = r#"
[[tenant]]
name = "default"
media-types = { chat = true }

[[tenant.business-process]]
name = "default"

[[tenant.business-process.queue]]
name = "inbound"
strategy = "longest-idle"

[[tenant.business-process.queue]]
name = "held"

[[tenant.business-process.queue]]
name = "done"

[[tenant.agent]]
login-id = "a1"
capacity = { chat = 1 }

[[tenant.agent]]
login-id = "a2"
capacity = { chat = 1 }

[[tenant.agent]]
login-id = "a3"
capacity = { chat = 1 }

[[tenant.place]]
name = "p1"

[[tenant.place]]
name = "p2"

[[tenant.place]]
name = "p3"
"#;

const LONG: Duration = Duration::from_secs(10);

fn start(dir: &TempDir, settings: &str) -> Server {
    let cfg = write_config_with(&dir.0, &Engine::Sqlite, two_cores(), settings, TENANT);
    Server::start(&cfg)
}

/// A registered carrier connection (the proxy's role).
fn carrier(s: &Server) -> Client {
    s.client_as(ClientType::Proxy, "carrier")
}

fn session_of(f: &Frame) -> Option<i64> {
    f.get_int(attr::SESSION_ID)
}

fn refusal<T: std::fmt::Debug>(r: ixn::client::Result<T>) -> ErrorCode {
    match r {
        Err(ClientError::Server(e)) => e.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Opens session `id` as agent `agent`'s desktop, logged in on `place` and
/// ready; leaves the client on the connection's own session.
fn desktop_session(c: &mut Client, id: u32, agent: &str, place: &str) {
    let ack = c.open_session(id, ClientType::AgentDesktop, &format!("desk-{agent}"), None).expect("open");
    assert_eq!(session_of(&ack), Some(id as i64), "the registration's answer names its session");
    c.login(agent, place, &[]).expect("login");
    c.ready().expect("ready");
    c.set_session(0);
}

fn agent_state(op: &mut Client, agent: &str) -> String {
    let state = op.agent_state(Some(agent)).expect("agent state");
    match state[0].get("state") {
        Some(Value::Str(s)) => s.clone(),
        other => panic!("state {other:?}"),
    }
}

/// Reads events until `n` invitations came; returns them by session.
fn invitations(c: &mut Client, n: usize) -> HashMap<i64, Frame> {
    let mut got = HashMap::new();
    while got.len() < n {
        let f = c.wait_event(msg_type::EVENT_INVITE, LONG).expect("read").expect("an invitation");
        let session = session_of(&f).expect("an invitation names its session");
        assert!(got.insert(session, f).is_none(), "session {session} invited twice");
    }
    got
}

#[test]
fn desktops_share_one_connection_each_as_its_own_client() {
    let dir = TempDir::new("sessions-share");
    let s = start(&dir, "");
    let _log = LogOnPanic(&s);
    let mut c = carrier(&s);
    let agents = [(1u32, "a1", "p1"), (2, "a2", "p2"), (3, "a3", "p3")];
    for (id, agent, place) in agents {
        desktop_session(&mut c, id, agent, place);
    }
    // A reporting client on the same connection.
    c.open_session(9, ClientType::ReportingEngine, "stats", None).unwrap();
    c.subscribe(None).unwrap();
    c.set_session(0);

    let mut ms = s.media_server();
    let ids: Vec<String> =
        (0..3).map(|_| ms.submit(submit_request("default", "inbound", "chat", 0, KvList::new())).unwrap()).collect();
    // Each agent (capacity 1) is offered one: each invitation goes to the
    // session its agent logged in on.
    let invites = invitations(&mut c, 3);
    let mut offered = Vec::new();
    for (id, agent, _) in agents {
        let f = &invites[&(id as i64)];
        let to = f.get_str(attr::AGENT_ID).expect("AgentId");
        assert_eq!(to, agent, "session {id}'s invitation names its own agent");
        offered.push(f.get_str(attr::INTERACTION_ID).unwrap().to_string());
        // Accepted through its session: the agent is the session's.
        c.set_session(id);
        c.accept(f.get_str(attr::INTERACTION_ID).unwrap(), f.get_int(attr::TICKET).map(|t| t as u64)).unwrap();
    }
    offered.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(offered, want);
    // Accepting another session's invitation through this one is refused:
    // session 3's agent is a3, not a1.
    c.set_session(3);
    assert_eq!(
        refusal(c.accept(invites[&1].get_str(attr::INTERACTION_ID).unwrap(), None)),
        ErrorCode::UnknownInvitation
    );
    // The reporting session received the cycle; only it, and stamped.
    c.set_session(0);
    let mut accepted = 0;
    while accepted < 3 {
        let f = c.next_event(LONG).unwrap().expect("reporting events");
        if f.msg_type == msg_type::EVENT_PARTY_ADDED {
            assert_eq!(session_of(&f), Some(9), "a reporting event for session 9 names it");
            accepted += 1;
        } else if msg_type::is_reporting(f.msg_type) {
            assert_eq!(session_of(&f), Some(9));
        }
    }
    // The connection's own session was never a desktop: not logged in.
    assert_eq!(refusal(c.ready()), ErrorCode::AgentNotLoggedIn);
    // Its own answers carry no SessionId.
    let pong = c.ping().unwrap();
    assert_eq!(session_of(&pong), None);
}

#[test]
fn closing_a_session_ends_its_client_and_only_it() {
    let dir = TempDir::new("sessions-close");
    let s = start(&dir, "login-session-timeout = 1\n");
    let mut c = carrier(&s);
    desktop_session(&mut c, 1, "a1", "p1");
    let mut op = s.client();
    let mut ms = s.media_server();
    let id = ms.submit(submit_request("default", "inbound", "chat", 0, KvList::new())).unwrap();
    let first = invitations(&mut c, 1);
    assert!(first.contains_key(&1));
    // A second session pulls an interaction and holds its lock.
    c.open_session(2, ClientType::RoutingEngine, "router", None).unwrap();
    let held = ms.submit(submit_request("default", "held", "chat", 0, KvList::new())).unwrap();
    let pulled = c.pull("held", 1).unwrap();
    assert_eq!(pulled.len(), 1);
    // Another session of the same connection is another client: the lock
    // is not its.
    c.open_session(3, ClientType::RoutingEngine, "router2", None).unwrap();
    assert_eq!(refusal(c.stop(&held, None)), ErrorCode::InteractionLocked);

    // Session 1 closes with its invitation open: the invitation is revoked
    // at once, its agent waits out its login session, then is logged out.
    c.set_session(1);
    c.close_session().unwrap();
    eventually("a1 disconnected", LONG, || match agent_state(&mut op, "a1").as_str() {
        "disconnected" | "logged-out" => Ok(()),
        s => Err(s.to_string()),
    });
    eventually("a1 logged out after its login session", LONG, || match agent_state(&mut op, "a1").as_str() {
        "logged-out" => Ok(()),
        s => Err(s.to_string()),
    });
    // The interaction went back and goes to another agent, on a session
    // opened now with the same number as the closed one.
    desktop_session(&mut c, 1, "a2", "p2");
    let again = invitations(&mut c, 1);
    assert_eq!(again[&1].get_str(attr::INTERACTION_ID), Some(id.as_str()));
    assert_eq!(again[&1].get_str(attr::AGENT_ID), Some("a2"));

    // Session 2 closes: its lock ends and session 3 can stop the interaction.
    c.set_session(2);
    c.close_session().unwrap();
    c.set_session(3);
    eventually("the closed session's lock ended", LONG, || c.stop(&held, None).map_err(|e| e.to_string()));
    // Requests naming a closed session are refused, and change nothing.
    c.set_session(2);
    assert_eq!(refusal(c.ping()), ErrorCode::NotRegistered);
}

/// A request still waiting when its session closes (a pull held on an
/// empty view) gets its one answer, an error, and takes nothing.
#[test]
fn a_request_waiting_when_its_session_closes_is_answered() {
    let dir = TempDir::new("sessions-waiting");
    let s = start(&dir, "pull-hold-timeout = 60\n");
    let mut c = carrier(&s);
    c.open_session(4, ClientType::RoutingEngine, "router", None).unwrap();
    let pull = c.queue(&Request::Pull { tenant: "default".into(), view: "held".into(), count: 1 });
    c.flush().unwrap();
    // The pull waits (nothing to take) until the session closes.
    std::thread::sleep(Duration::from_millis(300));
    let close = c.queue(&Request::CloseSession);
    c.flush().unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answers = HashMap::new();
    while answers.len() < 2 {
        let f = c.recv().expect("both answers, well before the pull's hold ends");
        if f.ref_id != 0 {
            assert_eq!(session_of(&f), Some(4));
            answers.insert(f.ref_id, f);
        }
    }
    assert_eq!(answers[&pull].get_int(attr::ERROR_CODE), Some(ErrorCode::NotRegistered.code()));
    assert_eq!(answers[&close].msg_type, msg_type::EVENT_ACK);
    // It took nothing: an interaction placed now is there for the next pull.
    c.set_session(0);
    let mut ms = s.media_server();
    let id = ms.submit(submit_request("default", "held", "chat", 0, KvList::new())).unwrap();
    c.open_session(5, ClientType::RoutingEngine, "router", None).unwrap();
    let got = c.pull("held", 1).unwrap();
    assert_eq!(got[0].get("id"), Some(&Value::Str(id)));
}

#[test]
fn closing_the_connection_closes_every_session() {
    let dir = TempDir::new("sessions-conn");
    let s = start(&dir, "login-session-timeout = 1\n");
    let mut op = s.client();
    {
        let mut c = carrier(&s);
        desktop_session(&mut c, 1, "a1", "p1");
        desktop_session(&mut c, 2, "a2", "p2");
        assert_eq!(agent_state(&mut op, "a1"), "logged-in");
        assert_eq!(agent_state(&mut op, "a2"), "logged-in");
    } // dropped: the connection closes
    for agent in ["a1", "a2"] {
        eventually(&format!("{agent} logged out"), LONG, || match agent_state(&mut op, agent).as_str() {
            "logged-out" => Ok(()),
            s => Err(s.to_string()),
        });
    }
    // Their places are free again.
    let mut c = carrier(&s);
    desktop_session(&mut c, 5, "a3", "p1");
}

#[test]
fn session_mistakes_get_errors_and_change_nothing() {
    let dir = TempDir::new("sessions-bad");
    let cfg = dir.0.join("ixn.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ncores = \"{}\"\ndata-dir = \"{}\"\nmax-sessions-per-connection = 2\n{TENANT}",
            two_cores(),
            dir.0.join("data").display()
        ),
    )
    .unwrap();
    let s = Server::start(&cfg);

    // A session before the connection registered.
    let mut c = Client::connect(s.addr.as_str()).unwrap();
    c.set_session(4);
    let e = refusal(c.register(ClientType::AgentDesktop, "d", None));
    assert_eq!(e, ErrorCode::NotRegistered);
    c.set_session(0);
    c.register(ClientType::Proxy, "carrier", None).unwrap();

    // Bad SessionId values: wrong type, out of range. The answer names no
    // session (it could not be read).
    let bad_type = Request::Ping.encode(60_001).with(attr::SESSION_ID, "1");
    assert_eq!(raw_answer(&mut c, &bad_type).get_int(attr::ERROR_CODE), Some(ErrorCode::WrongAttributeType.code()));
    let too_big = Request::Ping.encode(60_002).with(attr::SESSION_ID, 1i64 << 31);
    assert_eq!(raw_answer(&mut c, &too_big).get_int(attr::ERROR_CODE), Some(ErrorCode::InvalidValue.code()));
    let negative = Request::Ping.encode(60_003).with(attr::SESSION_ID, -1i64);
    assert_eq!(raw_answer(&mut c, &negative).get_int(attr::ERROR_CODE), Some(ErrorCode::InvalidValue.code()));

    // A request for a session not open; its error names the session.
    c.set_session(7);
    let r = c.queue(&Request::Ping);
    c.flush().unwrap();
    let f = answer(&mut c, r);
    assert_eq!(f.get_int(attr::ERROR_CODE), Some(ErrorCode::NotRegistered.code()));
    assert_eq!(session_of(&f), Some(7));
    assert_eq!(refusal(c.close_session()), ErrorCode::NotRegistered);

    // Heartbeats belong to the connection.
    c.set_session(1);
    let reg = Request::RegisterClient { client_type: ClientType::AgentDesktop, name: "d1".into(), credential: None }
        .encode(60_004)
        .with(attr::SESSION_ID, 1i64)
        .with(attr::HEARTBEAT_TIMEOUT, 5000i64);
    assert_eq!(raw_answer(&mut c, &reg).get_int(attr::ERROR_CODE), Some(ErrorCode::InvalidValue.code()));
    // Not opened by the refusal.
    assert_eq!(refusal(c.ping()), ErrorCode::NotRegistered);

    // Opened once; twice is refused; the bound of two sessions holds.
    c.open_session(1, ClientType::AgentDesktop, "d1", None).unwrap();
    assert_eq!(refusal(c.register(ClientType::AgentDesktop, "d1", None)), ErrorCode::AlreadyRegistered);
    c.open_session(2, ClientType::AgentDesktop, "d2", None).unwrap();
    assert_eq!(refusal(c.open_session(3, ClientType::AgentDesktop, "d3", None)), ErrorCode::Overloaded);
    // A closed one makes room.
    c.set_session(2);
    c.close_session().unwrap();
    c.open_session(3, ClientType::AgentDesktop, "d3", None).unwrap();

    // RequestCloseSession without a SessionId: the connection's own
    // session ends only with the connection.
    c.set_session(0);
    assert_eq!(refusal(c.call(&Request::CloseSession)), ErrorCode::MissingAttribute);
    // The connection and its sessions go on.
    c.ping().unwrap();
    c.set_session(1);
    assert_eq!(session_of(&c.ping().unwrap()), Some(1));
    c.set_session(3);
    assert_eq!(session_of(&c.ping().unwrap()), Some(3));
}

/// Sends a frame as is (its reference id well above the client's own)
/// and reads its answer.
fn raw_answer(c: &mut Client, f: &Frame) -> Frame {
    c.queue_frame(f);
    c.flush().unwrap();
    answer(c, f.ref_id)
}

/// Reads frames until the answer to `ref_id`.
fn answer(c: &mut Client, ref_id: u32) -> Frame {
    loop {
        let f = c.recv().expect("an answer");
        if f.ref_id == ref_id {
            return f;
        }
    }
}
