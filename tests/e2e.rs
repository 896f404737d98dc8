//! End to end over TCP with two shards, on SQLite and PostgreSQL: the first
//! half of the lifecycle, and requests about interactions another shard owns.

mod common;

use common::{engines, two_cores, write_config, Engine, Server, TempDir};
use ixn::client::{submit_request, ClientError};
use ixn_shard::id::owner_of;
use ixn_shard::kv;
use ixn_shard::proto::request::error_of;
use ixn_shard::proto::{attr, msg_type, ClientType, ErrorCode, Request};
use ixn_shard::{KvList, Value};

fn server_error(r: Result<impl std::fmt::Debug, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Server(e)) => e.code,
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[test]
fn lifecycle_across_two_shards() {
    for engine in engines("e2e") {
        lifecycle(&engine);
    }
}

fn lifecycle(engine: &Engine) {
    let dir = TempDir::new("e2e");
    let cfg = write_config(&dir.0, engine, two_cores(), "");
    let mut server = Server::start(&cfg);
    let mut c = server.client();
    let reg = c.register(ClientType::Operator, "again", None);
    assert_eq!(server_error(reg), ErrorCode::AlreadyRegistered);

    // A submission stays on the shard of its connection, and the kernel
    // spreads connections over the shards' listeners: submit from several
    // connections until both shards own interactions.
    let mut ids = Vec::new();
    for i in 0..40 {
        let mut m = server.media_server();
        let id = m.submit(submit_request("default", "inbound", "chat", i % 5, kv![("n", i), ("lang", "en")])).unwrap();
        ids.push(id);
    }
    let owners: Vec<u16> = ids.iter().map(|id| owner_of(id, 2)).collect();
    assert!(owners.contains(&0) && owners.contains(&1), "ids land on both shards: {owners:?}");

    // Every request kind, on interactions of both shards, from one connection
    // (which lives on one shard, so half of these cross shards).
    for (i, id) in ids.iter().enumerate() {
        let f = c.get(id).unwrap();
        assert_eq!(f.get_str(attr::INTERACTION_ID), Some(id.as_str()));
        assert_eq!(f.get_str(attr::QUEUE), Some("inbound"));
        assert_eq!(f.get_int(attr::PRIORITY), Some((i % 5) as i64));
        assert_eq!(f.get_list(attr::PROPERTIES).unwrap().get("n"), Some(&Value::Int(i as i64)));
        c.change(id, kv![("lang", "fr"), ("extra", "x")], vec!["n".into()]).unwrap();
        c.place(id, "done").unwrap();
        let f = c.get(id).unwrap();
        let props = f.get_list(attr::PROPERTIES).unwrap();
        assert_eq!(props, &kv![("lang", "fr"), ("extra", "x")], "changed in place, n deleted, extra appended");
        assert_eq!(f.get_str(attr::QUEUE), Some("done"));
        assert_eq!(f.get_int(attr::VERSION), Some(2));
        assert!(f.get_int(attr::MOVED_TO_QUEUE_AT).is_some());
    }

    // Pipelined requests across shards all get exactly one answer each.
    for id in &ids {
        c.queue(&Request::GetInteractionProperties { id: id.clone() });
    }
    c.flush().unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in &ids {
        let f = c.recv().unwrap();
        assert_eq!(f.msg_type, msg_type::EVENT_INTERACTION_PROPERTIES);
        assert!(seen.insert(f.ref_id), "one answer per request");
    }

    // Client-given ids go to their owner shard; duplicates are refused.
    for name in ["order-1", "order-2", "order-3", "order-4"] {
        let mut s = submit_request("default", "inbound", "email", 1, KvList::new());
        s.id = Some(name.to_string());
        assert_eq!(c.submit(s.clone()).unwrap(), name);
        assert_eq!(server_error(c.submit(s)), ErrorCode::DuplicateInteractionId);
        assert_eq!(c.get(name).unwrap().get_str(attr::MEDIA_TYPE), Some("email"));
    }

    // Stop: the interaction leaves; a second stop is an unknown interaction.
    for id in ids.iter().take(10) {
        c.stop(id, Some("done")).unwrap();
        assert_eq!(server_error(c.get(id)), ErrorCode::UnknownInteraction);
        assert_eq!(server_error(c.stop(id, None)), ErrorCode::UnknownInteraction);
    }

    // A media server may submit; an agent desktop may not.
    let mut m = server.media_server();
    m.submit(submit_request("default", "inbound", "sms", 0, KvList::new())).unwrap();
    let mut desk =
        ixn::client::Client::connect_as(server.addr.as_str(), ClientType::AgentDesktop, "desk", None).unwrap();
    assert_eq!(
        server_error(desk.submit(submit_request("default", "inbound", "sms", 0, KvList::new()))),
        ErrorCode::NotPermitted
    );

    // Refusals with the documented codes.
    assert_eq!(
        server_error(c.submit(submit_request("default", "nowhere", "chat", 0, KvList::new()))),
        ErrorCode::UnknownQueue
    );
    assert_eq!(
        server_error(c.submit(submit_request("default", "inbound", "voice", 0, KvList::new()))),
        ErrorCode::MediaTypeDisabled
    );
    assert_eq!(
        server_error(c.submit(submit_request("default", "inbound", "fax", 0, KvList::new()))),
        ErrorCode::UnknownMediaType
    );
    assert_eq!(
        server_error(c.submit(submit_request("nobody", "inbound", "chat", 0, KvList::new()))),
        ErrorCode::UnknownTenant
    );
    assert_eq!(server_error(c.place(&ids[20], "nowhere")), ErrorCode::UnknownQueue);

    // A clean stop keeps everything; a restart loads it back on both shards.
    assert_eq!(server.terminate(), Some(0), "clean exit on SIGTERM; log:\n{}", server.log());
    let server = Server::start(&cfg);
    let mut c = server.client();
    for id in ids.iter().skip(10) {
        let f = c.get(id).unwrap();
        assert_eq!(f.get_list(attr::PROPERTIES).unwrap(), &kv![("lang", "fr"), ("extra", "x")]);
        assert_eq!(f.get_str(attr::QUEUE), Some("done"));
    }
    for id in ids.iter().take(10) {
        assert_eq!(server_error(c.get(id)), ErrorCode::UnknownInteraction);
    }
    assert!(c.get("order-3").is_ok());
    // The error frame carries a code and a text.
    let r = c.queue(&Request::GetInteractionProperties { id: "missing".into() });
    c.flush().unwrap();
    let f = c.recv().unwrap();
    assert_eq!(f.ref_id, r);
    let e = error_of(&f).unwrap();
    assert_eq!(e.code, ErrorCode::UnknownInteraction);
    assert!(e.text.contains("missing"));
}

#[test]
fn protected_mode_and_configured_credentials() {
    let dir = TempDir::new("auth");
    let extra = "[[client]]\nname = \"chat1\"\ntype = \"media-server\"\npassword = \"s3cret\"\n";
    let cfg = write_config(&dir.0, &Engine::Sqlite, "0", extra);
    let server = Server::start(&cfg);
    let connect = || ixn::client::Client::connect(server.addr.as_str()).unwrap();
    let mut c = connect();
    assert_eq!(
        server_error(c.register(ClientType::MediaServer, "chat1", Some("wrong"))),
        ErrorCode::AuthenticationFailed
    );
    assert_eq!(
        server_error(c.register(ClientType::MediaServer, "nobody", Some("s3cret"))),
        ErrorCode::AuthenticationFailed
    );
    assert_eq!(
        server_error(c.register(ClientType::AgentDesktop, "chat1", Some("s3cret"))),
        ErrorCode::AuthenticationFailed
    );
    assert_eq!(server_error(c.ping()), ErrorCode::NotRegistered, "still unregistered after failures");
    c.register(ClientType::MediaServer, "chat1", Some("s3cret")).unwrap();
    c.ping().unwrap();
}

#[test]
fn a_second_server_on_the_same_data_directory_is_refused() {
    let dir = TempDir::new("lock");
    let cfg = write_config(&dir.0, &Engine::Sqlite, "0", "");
    let first = Server::start(&cfg);
    let err = Server::try_start(&cfg).err().expect("the second server must not start");
    assert!(err.contains("another ixn-server uses the data directory"), "{err}");
    let mut c = first.client();
    c.ping().unwrap();
}

/// A pipelining client can take every answer it has already read before it
/// writes again: `has_buffered_frame` says whether `recv` has one waiting
/// without reading the socket.
#[test]
fn answers_already_read_are_known_to_be_waiting() {
    let dir = TempDir::new("buffered");
    let cfg = write_config(&dir.0, &Engine::Sqlite, "0", "");
    let server = Server::start(&cfg);
    let mut c = server.client();
    assert!(!c.has_buffered_frame());
    let refs: Vec<u32> =
        (0..3).map(|i| c.queue(&Request::GetInteractionProperties { id: format!("missing-{i}") })).collect();
    c.flush().unwrap();
    // All three answers are in the socket when the first read happens.
    std::thread::sleep(std::time::Duration::from_millis(300));
    for (i, r) in refs.iter().enumerate() {
        assert_eq!(c.recv().unwrap().ref_id, *r);
        assert_eq!(c.has_buffered_frame(), i < 2, "after answer {i}");
    }
}
