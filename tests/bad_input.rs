//! Bad input (invariant 5): each gets the documented error or disconnect,
//! nothing changes, and the server goes on answering.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{write_config, Engine, Server, TempDir};
use ixn::client::{submit_request, Client, ClientError};
use ixn_shard::kv;
use ixn_shard::proto::frame::{Frame, Header, HEADER_LEN};
use ixn_shard::proto::request::error_of;
use ixn_shard::proto::{attr, msg_type, ErrorCode, ProtoError};
use ixn_shard::value::TAG_INT;
use ixn_shard::Value;

fn start() -> (TempDir, Server) {
    let dir = TempDir::new("bad");
    let cfg = write_config(&dir.0, &Engine::Sqlite, "0,1", "");
    let server = Server::start(&cfg);
    (dir, server)
}

/// The next frame on `c` must be EventError with this code and ref id.
fn expect_error(c: &mut Client, ref_id: u32, code: ErrorCode) -> ProtoError {
    let f = c.recv().expect("an answer");
    let e = error_of(&f).unwrap_or_else(|| panic!("expected EventError {code:?}, got {}", msg_type::name(f.msg_type)));
    assert_eq!((e.code, f.ref_id), (code, ref_id), "{e}");
    assert!(!e.text.is_empty(), "every error has a text");
    e
}

/// After a fatal framing error: EventError with reference id 0, then EOF.
fn expect_error_then_close(c: &mut Client, code: ErrorCode) {
    expect_error(c, 0, code);
    match c.recv() {
        Err(ClientError::Io(e))
            if e.kind() == std::io::ErrorKind::UnexpectedEof || e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the server to close, got {other:?}"),
    }
}

/// The canary interaction is as it was and a fresh connection still works.
fn assert_unchanged(server: &Server, id: &str) {
    let mut c = server.client();
    c.ping().expect("ping on a new connection");
    let f = c.get(id).unwrap();
    assert_eq!(f.get_int(attr::VERSION), Some(0));
    assert_eq!(f.get_list(attr::PROPERTIES).unwrap(), &kv![("lang", "en")]);
    assert_eq!(f.get_str(attr::QUEUE), Some("inbound"));
}

fn raw_header(length: u32, msg_type: u16, version: u8, ref_id: u32) -> Vec<u8> {
    let h = Header::new(length, msg_type, ref_id);
    let mut v = Vec::with_capacity(HEADER_LEN);
    v.extend_from_slice(&h.length);
    v.extend_from_slice(&h.msg_type);
    v.push(version);
    v.push(h.flags);
    v.extend_from_slice(&h.ref_id);
    v
}

#[test]
fn bad_input_gets_errors_and_changes_nothing() {
    let (_dir, server) = start();
    let mut c = server.client();
    let canary = c.submit(submit_request("default", "inbound", "chat", 1, kv![("lang", "en")])).unwrap();

    // Unknown message type: answered, connection goes on.
    c.queue_frame(&Frame::new(77, 901));
    c.flush().unwrap();
    expect_error(&mut c, 901, ErrorCode::UnknownMessage);
    // An event type sent as a request is unknown too.
    c.queue_frame(&Frame::new(msg_type::EVENT_ACK, 902));
    c.flush().unwrap();
    expect_error(&mut c, 902, ErrorCode::UnknownMessage);

    // Wrong attribute type: MediaType as int.
    c.queue_frame(&Frame::new(msg_type::REQUEST_SUBMIT, 903).with(attr::MEDIA_TYPE, 5i64).with(attr::QUEUE, "inbound"));
    c.flush().unwrap();
    expect_error(&mut c, 903, ErrorCode::WrongAttributeType);

    // Missing attribute.
    c.queue_frame(&Frame::new(msg_type::REQUEST_CHANGE_PROPERTIES, 904).with(attr::PROPERTIES, kv![("a", 1)]));
    c.flush().unwrap();
    expect_error(&mut c, 904, ErrorCode::MissingAttribute);

    // A change to the canary that is invalid as a whole changes nothing.
    c.queue_frame(
        &Frame::new(msg_type::REQUEST_CHANGE_PROPERTIES, 905)
            .with(attr::INTERACTION_ID, canary.as_str())
            .with(attr::PROPERTIES, kv![("lang", "de")])
            .with(attr::DELETED_KEYS, kv![("lang", 0)]),
    );
    c.flush().unwrap();
    expect_error(&mut c, 905, ErrorCode::InvalidValue);

    // Malformed body inside a well-formed frame: attribute with tag 9.
    let body = [1u8, 0, 9, 0, 0, 0, 0];
    let mut bytes = raw_header((HEADER_LEN + body.len()) as u32, msg_type::REQUEST_PING, 1, 906);
    bytes.extend_from_slice(&body);
    c.queue_raw(&bytes);
    // An int attribute of 3 bytes.
    let body = [1u8, 0, TAG_INT, 3, 0, 0, 0, 1, 2, 3];
    let mut bytes = raw_header((HEADER_LEN + body.len()) as u32, msg_type::REQUEST_PING, 1, 907);
    bytes.extend_from_slice(&body);
    c.queue_raw(&bytes);
    c.flush().unwrap();
    expect_error(&mut c, 906, ErrorCode::MalformedBody);
    expect_error(&mut c, 907, ErrorCode::MalformedBody);

    // Unknown interaction and unknown queue.
    let r = c.queue(&ixn_shard::proto::Request::PlaceInQueue { id: "NOPE".into(), queue: Some("done".into()) });
    c.flush().unwrap();
    expect_error(&mut c, r, ErrorCode::UnknownInteraction);
    let r = c.queue(&ixn_shard::proto::Request::PlaceInQueue { id: canary.clone(), queue: Some("nowhere".into()) });
    c.flush().unwrap();
    expect_error(&mut c, r, ErrorCode::UnknownQueue);
    let r = c.queue(&ixn_shard::proto::Request::ChangeProperties {
        id: "NOPE".into(),
        changed: kv![("a", 1)],
        deleted: vec![],
    });
    c.flush().unwrap();
    expect_error(&mut c, r, ErrorCode::UnknownInteraction);
    // Invalid client-given id.
    let mut s = submit_request("default", "inbound", "chat", 0, Default::default());
    s.id = Some("has space".into());
    let r = c.queue(&ixn_shard::proto::Request::Submit(Box::new(s)));
    c.flush().unwrap();
    expect_error(&mut c, r, ErrorCode::InvalidInteractionId);

    // This connection still works after all of that.
    c.ping().unwrap();
    assert_unchanged(&server, &canary);

    // Requests before registration.
    let mut raw = Client::connect(server.addr.as_str()).unwrap();
    let r = raw.queue(&ixn_shard::proto::Request::Ping);
    raw.flush().unwrap();
    expect_error(&mut raw, r, ErrorCode::NotRegistered);
    let r = raw.queue(&ixn_shard::proto::Request::StopProcessing { id: canary.clone(), reason: None });
    raw.flush().unwrap();
    expect_error(&mut raw, r, ErrorCode::NotRegistered);
    assert_unchanged(&server, &canary);

    // Fatal framing errors: EventError with reference id 0, then close.
    let fatal: Vec<(Vec<u8>, ErrorCode)> = vec![
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), ErrorCode::FrameTooLarge),
        (raw_header(4, msg_type::REQUEST_PING, 1, 5), ErrorCode::InvalidFrame),
        (raw_header(HEADER_LEN as u32, msg_type::REQUEST_PING, 9, 5), ErrorCode::UnsupportedVersion),
        // Oversized length: refused from the first four bytes, before any body.
        ((2u32 << 20).to_le_bytes().to_vec(), ErrorCode::FrameTooLarge),
    ];
    for (bytes, code) in fatal {
        let mut c = server.client();
        c.queue_raw(&bytes);
        c.flush().unwrap();
        expect_error_then_close(&mut c, code);
        assert_unchanged(&server, &canary);
    }

    // Random garbage after registration: an error or a close, never a hang
    // or a crash.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..20 {
        let mut c = server.client();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let garbage: Vec<u8> = (0..64)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        c.queue_raw(&garbage);
        c.flush().unwrap();
        // Whatever it decodes to, the server answers or closes; with 64
        // random bytes the length field is almost surely out of range.
        match c.recv() {
            Ok(f) => assert!(f.msg_type == msg_type::EVENT_ERROR || f.msg_type == msg_type::EVENT_ACK),
            Err(ClientError::Io(e)) => assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "server hung"),
            Err(e) => panic!("{e}"),
        }
    }
    assert_unchanged(&server, &canary);

    // A truncated frame, then the client goes away.
    {
        let mut s = TcpStream::connect(server.addr.as_str()).unwrap();
        let f = ixn_shard::proto::Request::Ping.encode(1).with(attr::REASON, "x".repeat(100)).encode();
        s.write_all(&f[..f.len() / 2]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The server closes its side after our EOF without answering.
        assert_eq!(s.read_to_end(&mut rest).unwrap(), 0);
    }
    assert_unchanged(&server, &canary);
    let log = server.log();
    assert!(log.contains("msg_id=1025"), "fatal frames are logged");
    assert!(log.contains("msg_id=1026"), "refused requests are logged");
}

#[test]
fn a_client_that_does_not_read_is_disconnected() {
    let dir = TempDir::new("slow");
    let cfg = write_config(&dir.0, &Engine::Sqlite, "0", "max-output-buffer = 1048576\n");
    let server = Server::start(&cfg);
    let mut c = server.client();
    let big = kv![("blob", Value::Bin(vec![7u8; 200_000]))];
    let id = c.submit(submit_request("default", "inbound", "chat", 0, big)).unwrap();
    // Ask for 300 copies of a 200 KB answer and read none of them.
    for _ in 0..300 {
        c.queue(&ixn_shard::proto::Request::GetInteractionProperties { id: id.clone() });
    }
    let _ = c.flush();
    // The server drops the connection; others are served meanwhile.
    let mut other = server.client();
    other.ping().unwrap();
    let mut waited = 0;
    while !server.log().contains("max-output-buffer exceeded") {
        std::thread::sleep(Duration::from_millis(50));
        waited += 1;
        assert!(waited < 200, "slow client was not disconnected; log:\n{}", server.log());
    }
    other.ping().unwrap();
    assert!(other.get(&id).is_ok());
}

/// Bad agent, invitation and reporting requests: each gets its
/// error with a code and text, the canary is untouched and not locked, and
/// the connection and the server go on.
#[test]
fn bad_agent_requests_get_errors_and_change_nothing() {
    use ixn_shard::KvList;
    let (_dir, server) = start();
    let mut c = server.client();
    let canary = c.submit(submit_request("default", "inbound", "chat", 1, kv![("lang", "en")])).unwrap();
    let cases: Vec<(Frame, ErrorCode)> = vec![
        // AgentId must be a string.
        (
            Frame::new(msg_type::REQUEST_AGENT_LOGIN, 1).with(attr::AGENT_ID, 5i64).with(attr::PLACE, "place1"),
            ErrorCode::WrongAttributeType,
        ),
        (Frame::new(msg_type::REQUEST_AGENT_LOGIN, 2).with(attr::AGENT_ID, "agent1"), ErrorCode::MissingAttribute),
        (
            Frame::new(msg_type::REQUEST_AGENT_LOGIN, 3)
                .with(attr::AGENT_ID, "agent1")
                .with(attr::PLACE, "place1")
                .with(attr::MEDIA_LIST, kv![("chat", "three")]),
            ErrorCode::WrongAttributeType,
        ),
        (
            Frame::new(msg_type::REQUEST_AGENT_LOGIN, 4)
                .with(attr::AGENT_ID, "agent1")
                .with(attr::PLACE, "place1")
                .with(attr::MEDIA_LIST, kv![("chat", 70_000i64)]),
            ErrorCode::InvalidValue,
        ),
        (
            Frame::new(msg_type::REQUEST_AGENT_LOGIN, 5).with(attr::AGENT_ID, "agent99").with(attr::PLACE, "place1"),
            ErrorCode::UnknownAgent,
        ),
        (
            Frame::new(msg_type::REQUEST_AGENT_LOGIN, 6)
                .with(attr::AGENT_ID, "agent1")
                .with(attr::PLACE, "place1")
                .with(attr::MEDIA_LIST, kv![("fax", 1i64)]),
            ErrorCode::UnknownMediaType,
        ),
        (Frame::new(msg_type::REQUEST_ACCEPT, 7).with(attr::INTERACTION_ID, "nope"), ErrorCode::UnknownInteraction),
        (
            Frame::new(msg_type::REQUEST_ACCEPT, 8).with(attr::INTERACTION_ID, canary.as_str()),
            ErrorCode::UnknownInvitation,
        ),
        (
            Frame::new(msg_type::REQUEST_ACCEPT, 9)
                .with(attr::INTERACTION_ID, canary.as_str())
                .with(attr::TICKET, 0i64),
            ErrorCode::InvalidValue,
        ),
        (
            Frame::new(msg_type::REQUEST_SET_DO_NOT_DISTURB, 10)
                .with(attr::AGENT_ID, "agent1")
                .with(attr::DO_NOT_DISTURB, 2i64),
            ErrorCode::InvalidValue,
        ),
        (
            Frame::new(msg_type::REQUEST_DELIVER, 11)
                .with(attr::INTERACTION_ID, canary.as_str())
                .with(attr::AGENT_ID, "agent99"),
            ErrorCode::UnknownAgent,
        ),
        (
            Frame::new(msg_type::REQUEST_DELIVER, 12)
                .with(attr::INTERACTION_ID, canary.as_str())
                .with(attr::AGENT_ID, "agent1"),
            ErrorCode::AgentNotLoggedIn,
        ),
        (Frame::new(msg_type::REQUEST_HOLD, 13).with(attr::INTERACTION_ID, canary.as_str()), ErrorCode::InvalidState),
        (Frame::new(msg_type::REQUEST_READY_FOR_MEDIA, 14), ErrorCode::AgentNotLoggedIn),
        (
            Frame::new(msg_type::REQUEST_NOT_READY_FOR_MEDIA, 15).with(attr::AGENT_ID, "agent2"),
            ErrorCode::AgentNotLoggedIn,
        ),
        (Frame::new(msg_type::REQUEST_UNSUBSCRIBE, 16), ErrorCode::InvalidState),
        (
            Frame::new(msg_type::REQUEST_GET_AGENT_STATE, 17).with(attr::AGENT_ID, KvList::new()),
            ErrorCode::WrongAttributeType,
        ),
    ];
    for (f, code) in cases {
        let r = f.ref_id;
        c.queue_frame(&f);
        c.flush().unwrap();
        expect_error(&mut c, r, code);
    }
    // A media server may not subscribe to reporting events or log agents in.
    let mut ms = server.media_server();
    let r = ms.subscribe(None).unwrap_err();
    assert!(matches!(r, ClientError::Server(ref e) if e.code == ErrorCode::NotPermitted), "{r}");
    let r = ms.login("agent1", "place1", &[]).unwrap_err();
    assert!(matches!(r, ClientError::Server(ref e) if e.code == ErrorCode::NotPermitted), "{r}");
    ms.ping().unwrap();
    // Nothing changed: the canary is as submitted and nobody holds it.
    assert_unchanged(&server, &canary);
    let found = c.find("lang = 'en'", 10).unwrap().0;
    assert!(found[0].get("locked_by").is_none());
    let state = c.agent_state(Some("agent1")).unwrap();
    assert_eq!(state[0].get("state"), Some(&Value::Str("logged-out".into())));
}

/// A reporting subscriber that does not read is disconnected past
/// max-output-buffer (invariant 6); the server and other clients go on.
#[test]
fn a_subscriber_that_does_not_read_is_disconnected() {
    let dir = TempDir::new("slow-sub");
    let cfg = write_config(&dir.0, &Engine::Sqlite, "0", "max-output-buffer = 1048576\n");
    let server = Server::start(&cfg);
    let mut stuck = server.client_as(ixn_shard::proto::ClientType::ReportingEngine, "stuck");
    stuck.subscribe(None).unwrap();
    let mut c = server.client();
    let id = c.submit(submit_request("default", "inbound", "chat", 0, kv![("lang", "en")])).unwrap();
    // Each change is reported with its 200 KB property: 150 of them are
    // 30 MB, far past the bound and what the sockets hold, and the
    // subscriber reads none.
    for i in 0..150 {
        c.change(&id, kv![("blob", Value::Bin(vec![i as u8; 200_000]))], vec![]).unwrap();
    }
    let mut waited = 0;
    while !server.log().contains("does not read its events (max-output-buffer exceeded)") {
        std::thread::sleep(Duration::from_millis(50));
        waited += 1;
        assert!(waited < 200, "stuck subscriber was not disconnected; log:\n{}", server.log());
    }
    // Everything was applied and the server goes on.
    let f = c.get(&id).unwrap();
    assert_eq!(f.get_int(attr::VERSION), Some(150));
    c.change(&id, kv![("after", 1i64)], vec![]).unwrap();
    let mut fresh = server.client_as(ixn_shard::proto::ClientType::ReportingEngine, "fresh");
    fresh.subscribe(None).unwrap();
    c.change(&id, kv![("seen", 1i64)], vec![]).unwrap();
    let ev = fresh.wait_event(msg_type::EVENT_PROPERTIES_CHANGED, Duration::from_secs(10)).unwrap();
    assert!(ev.is_some(), "a new subscriber gets events");
}
