//! Live reconfiguration: `ixnctl reload` (POST /reload on the management
//! listener) and SIGHUP. Added clients register at once, a changed
//! password holds at once, a removed client's connection and sessions end;
//! agents, places, queues and views are added, changed and removed on a
//! running node with logged-in agents, queued interactions and a
//! reporting subscriber; a file that fails a check, or changes what only a
//! restart applies, is refused and the running configuration stays.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{eventually, write_config, Engine, Server, TempDir};
use ixn::client::{submit_request, Client, ClientError};
use ixn_shard::proto::{attr, msg_type, ClientType, ErrorCode, Frame};
use ixn_shard::{KvList, Value};
use serde_json::json;

fn clients(ops_password: &str, with_old: bool, extra: &str) -> String {
    let mut s = format!(
        "[[client]]\nname = \"ops\"\ntype = \"operator\"\npassword = \"{ops_password}\"\n\n\
         [[client]]\nname = \"carrier\"\ntype = \"proxy\"\npassword = \"c\"\n\n"
    );
    if with_old {
        s.push_str("[[client]]\nname = \"old\"\ntype = \"operator\"\npassword = \"o\"\n\n");
    }
    s.push_str(extra);
    s
}

/// `ixnctl reload`: (exit ok, stdout + stderr).
fn reload(server: &Server) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ixnctl"))
        .args(["reload", "--management", server.management.as_deref().unwrap()])
        .output()
        .expect("run ixnctl");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn register(server: &Server, name: &str, password: &str) -> Result<Client, ClientError> {
    let t = if name == "new" { ClientType::MediaServer } else { ClientType::Operator };
    Client::connect_as(server.addr.as_str(), t, name, Some(password))
}

#[test]
fn clients_are_reloaded_without_a_restart() {
    let dir = TempDir::new("reload");
    let cfg = write_config(&dir.0, &Engine::Sqlite, common::two_cores(), &clients("a", true, ""));
    let mut server = Server::start(&cfg);
    let mut old = register(&server, "old", "o").expect("old registers");
    let mut carrier =
        Client::connect_as(server.addr.as_str(), ClientType::Proxy, "carrier", Some("c")).expect("carrier");
    carrier.open_session(7, ClientType::Operator, "old", Some("o")).expect("a session as old");
    carrier.ping().expect("the session works");
    assert!(register(&server, "new", "n").is_err(), "not configured yet");

    // Remove old, change ops' password, add new.
    let new_client = "[[client]]\nname = \"new\"\ntype = \"media-server\"\npassword = \"n\"\n";
    write_config(&dir.0, &Engine::Sqlite, common::two_cores(), &clients("b", false, new_client));
    let (ok, text) = reload(&server);
    assert!(ok, "{text}");
    assert_eq!(
        text.trim(),
        "clients reloaded: 1 added (new), 1 removed (old), 1 changed (ops), 1 unchanged; \
         agents, places, queues and views unchanged"
    );

    register(&server, "new", "n").expect("an added client registers at once");
    match register(&server, "ops", "a") {
        Err(ClientError::Server(e)) => assert_eq!(e.code, ErrorCode::AuthenticationFailed),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("the old password still works"),
    }
    register(&server, "ops", "b").expect("the new password");
    eventually("old's connection closed", Duration::from_secs(10), || match old.ping() {
        Err(_) => Ok(()),
        Ok(_) => Err("still answering".to_string()),
    });
    // The carrier's session as old ended; its own session goes on.
    match carrier.ping() {
        Err(ClientError::Server(e)) => assert_eq!(e.code, ErrorCode::NotRegistered, "{e:?}"),
        other => panic!("the session as old still works: {:?}", other.err()),
    }
    carrier.set_session(0);
    carrier.ping().expect("the carrier's own session");

    // A file that fails a check: refused with file:line, nothing changes.
    let broken = clients("b", false, new_client).replace("type = \"media-server\"", "type = \"nope\"");
    write_config(&dir.0, &Engine::Sqlite, common::two_cores(), &broken);
    let (ok, text) = reload(&server);
    assert!(!ok, "{text}");
    assert!(text.contains("ixn.toml:") && text.contains("nope"), "{text}");
    register(&server, "new", "n").expect("the running clients stay");

    // Anything but clients needs a restart: refused, named.
    let mut other = clients("z", false, new_client);
    other.push_str("[settings]\nrouting-timeout = 5\n");
    write_config(&dir.0, &Engine::Sqlite, common::two_cores(), &other);
    let (ok, text) = reload(&server);
    assert!(!ok, "{text}");
    assert!(text.contains("[settings] changed since the start: a restart applies that"), "{text}");
    register(&server, "ops", "b").expect("the password of before the refused reload");

    // SIGHUP does the same.
    let hup = "[[client]]\nname = \"new\"\ntype = \"media-server\"\npassword = \"n2\"\n";
    write_config(&dir.0, &Engine::Sqlite, common::two_cores(), &clients("b", false, hup));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGHUP) };
    eventually("the SIGHUP reload", Duration::from_secs(10), || match register(&server, "new", "n2") {
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    });
    // A tenant list holds for the sessions already registered, at once.
    let mut ops = register(&server, "ops", "b").unwrap();
    ops.find("priority >= 0", 10).expect("every tenant, before");
    let bound =
        clients("b", false, hup).replacen("password = \"b\"\n", "password = \"b\"\ntenants = [\"default\"]\n", 1);
    write_config(&dir.0, &Engine::Sqlite, common::two_cores(), &bound);
    let (ok, text) = reload(&server);
    assert!(ok && text.contains("1 changed (ops)"), "{text}");
    match ops.find("priority >= 0", 10) {
        Err(ClientError::Server(e)) => assert_eq!(e.code, ErrorCode::NotPermitted, "{e:?}"),
        other => panic!("the live session kept every tenant: {:?}", other.err()),
    }
    ops.find_in(Some("default"), "priority >= 0", 10).expect("its tenant");

    let log = std::fs::read_to_string(server.dir.join("server.log")).unwrap();
    assert!(log.contains("1018") && log.contains("1019") && log.contains("1032"), "reloads and removals are logged");
    server.terminate();
}

/// Tenant `default` with queues `inbound` (and a view `by-age` on it) and
/// the given others, the given agents (a place `p-<agent>` each) and `more`
/// after (whole `[[tenant.…]]` tables).
fn tenant(queues: &[&str], agents: &[&str], more: &str) -> String {
    let mut s = String::from(
        "[[tenant]]\nname = \"default\"\nmedia-types = { chat = true }\n\n\
         [[tenant.business-process]]\nname = \"bp\"\n\n\
         [[tenant.business-process.queue]]\nname = \"inbound\"\n\n\
         [[tenant.business-process.queue.view]]\nname = \"by-age\"\n\n",
    );
    for q in queues {
        s.push_str(&format!("[[tenant.business-process.queue]]\nname = \"{q}\"\n\n"));
    }
    s.push_str(more);
    for a in agents {
        s.push_str(&format!(
            "\n[[tenant.agent]]\nlogin-id = \"{a}\"\ncapacity = {{ chat = 1 }}\n\n[[tenant.place]]\nname = \"p-{a}\"\n"
        ));
    }
    s
}

fn refusal<T: std::fmt::Debug>(r: ixn::client::Result<T>) -> ErrorCode {
    match r {
        Err(ClientError::Server(e)) => e.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn depth_of(depths: &[KvList], queue: &str) -> Option<KvList> {
    depths.iter().find(|l| l.get("queue").and_then(Value::as_str) == Some(queue)).cloned()
}

fn ids(listed: &[KvList]) -> Vec<String> {
    listed.iter().filter_map(|l| l.get("id").and_then(Value::as_str).map(str::to_string)).collect()
}

fn placed_in(f: &Frame, queue: &str) -> bool {
    f.msg_type == msg_type::EVENT_PLACED_IN_QUEUE && f.get_str(attr::QUEUE) == Some(queue)
}

#[test]
fn agents_places_queues_and_views_are_reloaded_without_a_restart() {
    let dir = TempDir::new("reload-catalog");
    let cfg = write_config(&dir.0, &Engine::Sqlite, common::two_cores(), &tenant(&["done"], &["a1", "a2"], ""));
    let mut server = Server::start(&cfg);
    let mut ms = server.media_server();
    let mut reporter = server.client_as(ClientType::ReportingEngine, "reporter");
    reporter.subscribe(Some("default")).expect("subscribe");
    let parked = ms.submit(submit_request("default", "done", "chat", 0, KvList::new())).expect("submit to done");
    let queued: Vec<String> = (1..=6)
        .map(|p| ms.submit(submit_request("default", "inbound", "chat", p, KvList::new())).expect("submit"))
        .collect();
    let mut a1 = server.client_as(ClientType::AgentDesktop, "desk-a1");
    a1.login("a1", "p-a1", &[]).expect("a1 logs in");

    // Remove a1 and the queue done; add a3, a queue vip with the built-in
    // strategy, and a view on inbound by priority.
    let more = "[[tenant.business-process.queue]]\nname = \"vip\"\nstrategy = \"longest-idle\"\n\n";
    let urgent = "[[tenant.business-process.queue.view]]\nname = \"urgent\"\norder = \"priority DESC\"\n\n";
    let next = tenant(&[], &["a2", "a3"], more).replacen(
        "[[tenant.business-process.queue.view]]\nname = \"by-age\"\n\n",
        &format!("[[tenant.business-process.queue.view]]\nname = \"by-age\"\n\n{urgent}"),
        1,
    );
    write_config(&dir.0, &Engine::Sqlite, common::two_cores(), &next);
    let (ok, text) = reload(&server);
    assert!(ok, "{text}");
    assert!(text.contains("queues: 1 added (vip), 1 removed (done), 0 changed"), "{text}");
    assert!(text.contains("views: 2 added (urgent, vip), 1 removed (done), 0 changed"), "{text}");
    assert!(text.contains("agents: 1 added (a3), 1 removed (a1), 0 changed"), "{text}");
    assert!(text.contains("places: 1 added (p-a3), 1 removed (p-a1)"), "{text}");

    // a1 is logged out, and may not log in again.
    let out = a1.wait_event(msg_type::EVENT_LOGGED_OUT, Duration::from_secs(10)).unwrap().expect("a1 logged out");
    assert_eq!(out.get_str(attr::REASON), Some("the agent was removed from the configuration"));
    assert_eq!(refusal(a1.login("a1", "p-a1", &[])), ErrorCode::UnknownAgent);

    // The added view holds what was queued before it, from both shards, in its order.
    let mut router = server.client_as(ClientType::RoutingEngine, "router");
    let mut want = queued.clone();
    want.reverse();
    assert_eq!(ids(&router.pull("urgent", 10).expect("pull the added view")), want);

    // The added agent takes what the added strategy offers.
    let mut a3 = server.client_as(ClientType::AgentDesktop, "desk-a3");
    a3.login("a3", "p-a3", &[]).expect("an added agent logs in");
    a3.ready().expect("ready");
    let vip = ms.submit(submit_request("default", "vip", "chat", 0, KvList::new())).expect("submit to an added queue");
    let invite = a3.wait_event(msg_type::EVENT_INVITE, Duration::from_secs(10)).unwrap().expect("an invitation");
    assert_eq!(invite.get_str(attr::INTERACTION_ID), Some(vip.as_str()));

    // The removed queue keeps its interaction, reachable by id; nothing new enters it.
    assert_eq!(ms.get(&parked).unwrap().get_str(attr::QUEUE), Some("done"));
    assert_eq!(
        refusal(ms.submit(submit_request("default", "done", "chat", 0, KvList::new()))),
        ErrorCode::UnknownQueue
    );
    let depths = router.queue_depth().unwrap();
    assert_eq!(depth_of(&depths, "done").and_then(|d| d.get("removed").and_then(Value::as_int)), Some(1));
    assert!(depth_of(&depths, "vip").is_some());
    let state = http_get(server.management.as_deref().unwrap(), "/api/state");
    let body = state.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(body).expect("the dashboard's JSON");
    let done = json["queues"].as_array().unwrap().iter().find(|q| q["queue"] == "done").cloned();
    assert_eq!(done.as_ref().map(|q| (&q["removed"], &q["waiting"])), Some((&json!(true), &json!(1))), "{json}");
    ms.place(&parked, "vip").expect("moved out of the removed queue");
    let state = http_get(server.management.as_deref().unwrap(), "/api/state");
    let body = state.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(body).expect("the dashboard's JSON");
    let queues: Vec<&str> = json["queues"].as_array().unwrap().iter().filter_map(|q| q["queue"].as_str()).collect();
    assert!(
        queues.contains(&"vip") && !queues.contains(&"done"),
        "an emptied removed queue leaves the dashboard: {queues:?}"
    );
    assert!(depth_of(&router.queue_depth().unwrap(), "done").is_none(), "an empty removed queue is not listed");

    // The reporting stream names what the reload added.
    eventually("EventPlacedInQueue for vip", Duration::from_secs(10), || {
        match reporter.next_event(Duration::from_millis(200)) {
            Ok(Some(f)) if placed_in(&f, "vip") => Ok(()),
            Ok(_) => Err("not yet".into()),
            Err(e) => panic!("{e}"),
        }
    });
    // And so do the metrics.
    let metrics = http_get(server.management.as_deref().unwrap(), "/metrics");
    assert!(metrics.contains("queue=\"vip\"") && metrics.contains("view=\"urgent\""), "{metrics}");

    // What only a restart applies is refused; nothing changes.
    let media = next.replace("media-types = { chat = true }", "media-types = { chat = true, email = true }");
    write_config(&dir.0, &Engine::Sqlite, common::two_cores(), &media);
    let (ok, text) = reload(&server);
    assert!(!ok && text.contains("its media types changed: a restart applies that"), "{text}");
    assert!(depth_of(&router.queue_depth().unwrap(), "vip").is_some(), "the running configuration stays");
    ms.submit(submit_request("default", "vip", "chat", 0, KvList::new())).expect("submit to vip after the refusal");

    let log = std::fs::read_to_string(server.dir.join("server.log")).unwrap();
    assert!(log.contains("1033"), "a removed queue still holding interactions is logged");
    server.terminate();
}

/// The body of a GET on the management listener.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the management listener");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}
