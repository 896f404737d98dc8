//! Agents over TCP against the real server: skills and capacity
//! decide who gets what, longest-idle order, invitation time-outs, a
//! desktop that drops and reconnects within the login session, and the
//! reporting stream of a whole cycle.

mod common;

use std::time::{Duration, Instant};

use common::{engines, eventually, two_cores, write_config_with, Engine, Server, TempDir};
use ixn::client::{submit_request, Client};
use ixn_shard::proto::{attr, msg_type, ClientType, ErrorCode, Frame};
use ixn_shard::{kv, KvList, Value};

/// A tenant with a strategy on `inbound`, agents of distinct skills and
/// capacities, and one place per agent.
const TENANT: &str = r#"
[[tenant]]
name = "default"
media-types = { chat = true, email = true }

[[tenant.business-process]]
name = "default"

[[tenant.business-process.queue]]
name = "inbound"
strategy = "longest-idle"

[[tenant.business-process.queue]]
name = "done"

[[tenant.workbin]]
name = "personal"
type = "agent"

[[tenant.agent]]
login-id = "en1"
skills = { english = 5 }
capacity = { chat = 1, email = 1 }

[[tenant.agent]]
login-id = "fr1"
skills = { french = 5 }
capacity = { chat = 2 }

[[tenant.agent]]
login-id = "x1"
capacity = { chat = 1 }

[[tenant.agent]]
login-id = "x2"
capacity = { chat = 1 }

[[tenant.agent]]
login-id = "x3"
capacity = { chat = 1 }
"#;

fn places() -> String {
    (1..=6).map(|i| format!("\n[[tenant.place]]\nname = \"p{i}\"\n")).collect()
}

fn start(engine: &Engine, dir: &TempDir, settings: &str) -> Server {
    let cfg = write_config_with(&dir.0, engine, two_cores(), settings, &format!("{TENANT}{}", places()));
    Server::start(&cfg)
}

/// A desktop: an agent-desktop connection with the agent logged in and
/// ready for every media type it has.
fn desktop(s: &Server, agent: &str, place: &str) -> Client {
    let mut c = s.client_as(ClientType::AgentDesktop, &format!("desk-{agent}"));
    c.login(agent, place, &[]).expect("login");
    c.ready().expect("ready");
    c
}

fn submit(ms: &mut Client, skills: Option<&str>) -> String {
    let props = match skills {
        Some(s) => kv![("RequiredSkills", s)],
        None => KvList::new(),
    };
    ms.submit(submit_request("default", "inbound", "chat", 0, props)).expect("submit")
}

fn invite(c: &mut Client, within: Duration) -> Option<Frame> {
    c.wait_event(msg_type::EVENT_INVITE, within).expect("read events")
}

fn invited_id(f: &Frame) -> String {
    f.get_str(attr::INTERACTION_ID).expect("InteractionId").to_string()
}

fn ticket(f: &Frame) -> u64 {
    f.get_int(attr::TICKET).expect("Ticket") as u64
}

/// The `media` entry of an agent state list.
fn media_state(state: &KvList, media: &str) -> KvList {
    state
        .get("media")
        .and_then(Value::as_list)
        .and_then(|m| m.get(media))
        .and_then(Value::as_list)
        .cloned()
        .unwrap_or_default()
}

/// The error code a request was refused with.
fn refusal<T: std::fmt::Debug>(r: ixn::client::Result<T>) -> ErrorCode {
    match r {
        Err(ixn::client::ClientError::Server(e)) => e.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// x1 logged in and ready, handling one interaction the media server
/// submitted: (x1's desktop, the media server, the interaction).
fn x1_handling_one(s: &Server) -> (Client, Client, String) {
    let mut x1 = desktop(s, "x1", "p3");
    let mut ms = s.media_server();
    let id = submit(&mut ms, None);
    let got = invite(&mut x1, LONG).expect("x1 is invited");
    x1.accept(&id, Some(ticket(&got))).unwrap();
    (x1, ms, id)
}

const SHORT: Duration = Duration::from_millis(400);
const LONG: Duration = Duration::from_secs(10);

#[test]
fn skills_and_capacity_decide_who_gets_what() {
    let dir = TempDir::new("agents-skills");
    let s = start(&Engine::Sqlite, &dir, "");
    let mut en = desktop(&s, "en1", "p1");
    let mut fr = desktop(&s, "fr1", "p2");
    let mut ms = s.media_server();
    // French work only goes to fr1, English only to en1.
    let f1 = submit(&mut ms, Some("french"));
    let got = invite(&mut fr, LONG).expect("fr1 is invited");
    assert_eq!(invited_id(&got), f1);
    let e1 = submit(&mut ms, Some("english:5"));
    let got = invite(&mut en, LONG).expect("en1 is invited");
    assert_eq!(invited_id(&got), e1);
    en.accept(&e1, Some(ticket(&got))).unwrap();
    // en1 has chat capacity 1: a second English chat waits...
    let e2 = submit(&mut ms, Some("english"));
    assert!(invite(&mut en, SHORT).is_none(), "en1 is full");
    assert!(invite(&mut fr, SHORT).is_none(), "fr1 lacks english");
    let state = en.agent_state(Some("en1")).unwrap();
    assert_eq!(media_state(&state[0], "chat").get("held"), Some(&Value::Int(1)));
    // ...until the first is done, then it is offered at once.
    en.stop(&e1, Some("done")).unwrap();
    let got = invite(&mut en, LONG).expect("en1 is invited again");
    assert_eq!(invited_id(&got), e2);
    // A level too high for everyone waits; nobody is offered it.
    let hard = submit(&mut ms, Some("english:9"));
    assert!(invite(&mut fr, SHORT).is_none());
    let mut op = s.client();
    let found = op.find("RequiredSkills = 'english:9'", 10).unwrap().0;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].get("id"), Some(&Value::Str(hard)));
    // Accept needs the ticket of the invitation, and the right agent.
    assert_eq!(refusal(fr.accept(&e2, None)), ErrorCode::UnknownInvitation);
    assert_eq!(refusal(en.accept(&e2, Some(ticket(&got) + 1000))), ErrorCode::UnknownInvitation);
    en.accept(&e2, Some(ticket(&got))).unwrap();
    // A malformed skills property is refused at submit.
    let bad = ms.submit(submit_request("default", "inbound", "chat", 0, kv![("RequiredSkills", "english:x")]));
    assert_eq!(refusal(bad), ErrorCode::InvalidValue);
}

#[test]
fn the_longest_idle_agent_is_offered_first() {
    let dir = TempDir::new("agents-idle");
    let s = start(&Engine::Sqlite, &dir, "");
    let mut desks: Vec<Client> = Vec::new();
    for (i, a) in ["x1", "x2", "x3"].iter().enumerate() {
        desks.push(desktop(&s, a, &format!("p{}", i + 3)));
        std::thread::sleep(Duration::from_millis(30));
    }
    let mut ms = s.media_server();
    // x1 became ready first, so it has been idle longest, then x2, x3.
    for (i, _) in ["x1", "x2", "x3"].iter().enumerate() {
        let id = submit(&mut ms, None);
        let got = invite(&mut desks[i], LONG).unwrap_or_else(|| panic!("x{} is invited", i + 1));
        assert_eq!(invited_id(&got), id);
        desks[i].accept(&id, Some(ticket(&got))).unwrap();
    }
    // x2 finishes first, then x1: x2 is now idle longest.
    for i in [1usize, 0] {
        let id = desks[i].agent_state(None).unwrap();
        let held = id.iter().find(|a| a.get("agent_id") == Some(&Value::Str(format!("x{}", i + 1)))).unwrap();
        let (ixid, _) = held
            .get("interactions")
            .and_then(Value::as_list)
            .unwrap()
            .iter()
            .next()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .unwrap();
        desks[i].stop(&ixid, None).unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    let id = submit(&mut ms, None);
    let got = invite(&mut desks[1], LONG).expect("x2 is invited");
    assert_eq!(invited_id(&got), id);
    assert!(invite(&mut desks[0], SHORT).is_none());
}

#[test]
fn an_invitation_time_out_returns_the_interaction_and_sets_not_ready() {
    let dir = TempDir::new("agents-timeout");
    let s = start(&Engine::Sqlite, &dir, "delivering-timeout = 0.5\nnot-ready-on-invitation-timeout = true\n");
    let mut ms = s.media_server();
    // Two interactions wait before anyone is ready.
    let first = submit(&mut ms, None);
    let second = submit(&mut ms, None);
    let mut x1 = desktop(&s, "x1", "p3");
    let got = invite(&mut x1, LONG).expect("x1 is invited");
    assert_eq!(invited_id(&got), first);
    let t = Instant::now();
    let revoked = x1.wait_event(msg_type::EVENT_REVOKED, LONG).unwrap().expect("the invitation is revoked");
    assert!(t.elapsed() >= Duration::from_millis(300), "revoked after {:?}", t.elapsed());
    assert_eq!(revoked.get_str(attr::INTERACTION_ID), Some(first.as_str()));
    assert_eq!(revoked.get_str(attr::REASON), Some("delivering-timeout"));
    // x1 is not ready now, so nothing more is offered to it...
    let state = x1.agent_state(Some("x1")).unwrap();
    assert_eq!(media_state(&state[0], "chat").get("ready"), Some(&Value::Int(0)));
    assert_eq!(media_state(&state[0], "chat").get("reason"), Some(&Value::Str("invitation-timeout".into())));
    assert!(invite(&mut x1, SHORT).is_none());
    // ...and the first interaction is back at its place, ahead of the second.
    let mut router = s.client_as(ClientType::RoutingEngine, "router");
    let pulled = router.pull("inbound", 2).unwrap();
    let ids: Vec<_> = pulled.iter().map(|l| l.get("id").cloned().unwrap()).collect();
    assert_eq!(ids, vec![Value::Str(first.clone()), Value::Str(second)]);
    // A routing engine delivers what it pulled to a chosen agent.
    x1.ready().unwrap();
    let t = router.deliver(&first, "x1").unwrap();
    let got = invite(&mut x1, LONG).expect("x1 is invited by the router's delivery");
    assert_eq!((invited_id(&got), ticket(&got)), (first.clone(), t));
    x1.reject(&first, Some(t), Some("busy")).unwrap();
}

#[test]
fn a_desktop_that_reconnects_within_the_login_session_keeps_its_login() {
    let dir = TempDir::new("agents-session");
    let s = start(&Engine::Sqlite, &dir, "login-session-timeout = 1.5\n");
    let mut op = s.client();
    {
        let mut d = desktop(&s, "en1", "p1");
        d.set_ready(None, Some("email"), false, Some("lunch")).unwrap();
    } // dropped: the connection closes
    let in_state = |op: &mut Client, want: &str| {
        let state = op.agent_state(Some("en1")).map_err(|e| e.to_string())?;
        let got = state[0].get("state").cloned();
        if got == Some(Value::Str(want.into())) {
            Ok(())
        } else {
            Err(format!("state {got:?}"))
        }
    };
    eventually("en1 disconnected", Duration::from_secs(5), || in_state(&mut op, "disconnected"));
    // Nothing is offered while no desktop is there.
    let mut ms = s.media_server();
    let id = submit(&mut ms, None);
    let mut d = s.client_as(ClientType::AgentDesktop, "desk-en1");
    d.login("en1", "p1", &[]).expect("login again within the session");
    let state = d.agent_state(Some("en1")).unwrap();
    assert_eq!(state[0].get("state"), Some(&Value::Str("logged-in".into())));
    // Its readiness survived: chat ready, email not (reason kept).
    assert_eq!(media_state(&state[0], "chat").get("ready"), Some(&Value::Int(1)));
    assert_eq!(media_state(&state[0], "email").get("reason"), Some(&Value::Str("lunch".into())));
    let got = invite(&mut d, LONG).expect("back and ready: invited");
    assert_eq!(invited_id(&got), id);
    // The desktop drops with the invitation open: the invitation goes back
    // to the queue at once, while the agent is still in its session.
    drop(d);
    eventually("en1 disconnected again", Duration::from_secs(5), || in_state(&mut op, "disconnected"));
    let mut router = s.client_as(ClientType::RoutingEngine, "router");
    let pulled = eventually("the revoked invitation back in the queue", Duration::from_secs(5), || {
        let p = router.pull("inbound", 5).map_err(|e| e.to_string())?;
        if p.is_empty() {
            Err("nothing to pull".into())
        } else {
            Ok(p)
        }
    });
    assert_eq!(pulled.len(), 1);
    assert_eq!(pulled[0].get("id"), Some(&Value::Str(id)));
    // Past the session time-out (1.5 s) it is logged out.
    eventually("en1 logged out", Duration::from_secs(10), || in_state(&mut op, "logged-out"));
}

#[test]
fn logins_are_checked_and_places_and_seats_are_limited() {
    let dir = TempDir::new("agents-login");
    let s = start(&Engine::Sqlite, &dir, "agent-seats = 2\nallow-multiple-agent-connections = false\n");
    let mut a = s.client_as(ClientType::AgentDesktop, "d1");
    let code = refusal::<Frame>;
    assert_eq!(code(a.login("nobody", "p1", &[])), ErrorCode::UnknownAgent);
    assert_eq!(code(a.login("en1", "nowhere", &[])), ErrorCode::UnknownPlace);
    assert_eq!(code(a.login("fr1", "p1", &[("email", 0)])), ErrorCode::InvalidValue);
    a.login("en1", "p1", &[]).unwrap();
    let mut b = s.client_as(ClientType::AgentDesktop, "d2");
    assert_eq!(code(b.login("x1", "p1", &[])), ErrorCode::PlaceTaken);
    assert_eq!(code(b.login("en1", "p1", &[])), ErrorCode::AgentAlreadyLoggedIn);
    b.login("x1", "p3", &[]).unwrap();
    let mut c = s.client_as(ClientType::AgentDesktop, "d3");
    assert_eq!(code(c.login("x2", "p4", &[])), ErrorCode::NoLicense);
    // A media server may not log agents in; the connection goes on.
    let mut ms = s.media_server();
    assert_eq!(code(ms.login("x2", "p4", &[])), ErrorCode::NotPermitted);
    ms.ping().unwrap();
    b.logout(None).unwrap();
    c.login("x2", "p4", &[]).unwrap();
    // Requests for an agent need one on the connection.
    let mut d = s.client_as(ClientType::AgentDesktop, "d4");
    assert_eq!(refusal(d.set_ready(None, None, true, None)), ErrorCode::AgentNotLoggedIn);
}

/// The whole cycle as a reporting client sees it, on every engine.
#[test]
fn a_reporting_client_sees_the_whole_cycle() {
    for engine in engines("agents-report") {
        let dir = TempDir::new("agents-report");
        let s = start(&engine, &dir, "");
        let mut watch = s.client_as(ClientType::ReportingEngine, "stat");
        watch.subscribe(None).unwrap();
        let mut d = desktop(&s, "fr1", "p2");
        let mut ms = s.media_server();
        let id = submit(&mut ms, Some("french"));
        let got = invite(&mut d, LONG).expect("invited");
        d.accept(&id, Some(ticket(&got))).unwrap();
        d.change(&id, kv![("note", "vip")], vec![]).unwrap();
        d.hold(&id).unwrap();
        d.resume(&id).unwrap();
        d.stop(&id, Some("handled")).unwrap();
        let want = [
            msg_type::EVENT_AGENT_LOGIN,
            msg_type::EVENT_READY_FOR_MEDIA,
            msg_type::EVENT_INTERACTION_SUBMITTED,
            msg_type::EVENT_PLACED_IN_QUEUE,
            msg_type::EVENT_AGENT_INVITED,
            msg_type::EVENT_TAKEN_FROM_QUEUE,
            msg_type::EVENT_PARTY_ADDED,
            msg_type::EVENT_PROPERTIES_CHANGED,
            msg_type::EVENT_HELD,
            msg_type::EVENT_RESUMED,
            msg_type::EVENT_PARTY_REMOVED,
            msg_type::EVENT_PROCESSING_STOPPED,
        ];
        let mut seen = Vec::new();
        let deadline = Instant::now() + LONG;
        while seen.len() < want.len() && Instant::now() < deadline {
            if let Some(f) = watch.next_event(Duration::from_millis(200)).unwrap() {
                seen.push(f);
            }
        }
        let names: Vec<&str> = seen.iter().map(|f| msg_type::name(f.msg_type)).collect();
        let want_names: Vec<&str> = want.iter().map(|&t| msg_type::name(t)).collect();
        assert_eq!(names, want_names, "{engine:?}");
        for (i, f) in seen.iter().enumerate() {
            assert_eq!(f.get_int(attr::EVENT_SEQUENCE), Some(i as i64 + 1), "sequence numbers have no gap");
            assert!(f.get_int(attr::EVENT_TIME).is_some_and(|t| t > 1_700_000_000_000));
            assert_eq!(f.get_str(attr::TENANT), Some("default"));
        }
        for f in &seen[2..] {
            assert_eq!(f.get_str(attr::INTERACTION_ID), Some(id.as_str()));
        }
        assert_eq!(seen[0].get_str(attr::AGENT_ID), Some("fr1"));
        assert_eq!(seen[4].get_str(attr::AGENT_ID), Some("fr1"));
        assert_eq!(seen[11].get_str(attr::REASON), Some("handled"));
        // The current state of every agent and place.
        let all = watch.agent_state(None).unwrap();
        assert_eq!(all.len(), 5);
        let fr = all.iter().find(|a| a.get("agent_id") == Some(&Value::Str("fr1".into()))).unwrap();
        assert_eq!(fr.get("place"), Some(&Value::Str("p2".into())));
        assert_eq!(media_state(fr, "chat").get("held"), Some(&Value::Int(0)));
    }
}

#[test]
fn a_transfer_invites_the_other_agent_and_frees_the_first() {
    let dir = TempDir::new("agents-transfer");
    let s = start(&Engine::Sqlite, &dir, "");
    let (mut x1, _ms, id) = x1_handling_one(&s);
    // x2 logs in ready but nothing else waits, so it is idle.
    let mut x2 = desktop(&s, "x2", "p4");
    let t = x1.transfer(&id, "x2").unwrap();
    let got = invite(&mut x2, LONG).expect("x2 is invited by the transfer");
    assert_eq!((invited_id(&got), ticket(&got)), (id.clone(), t));
    assert_eq!(got.get_str(attr::FROM_AGENT), Some("x1"));
    // x1 no longer holds it and may take new work.
    let state = x1.agent_state(Some("x1")).unwrap();
    assert_eq!(media_state(&state[0], "chat").get("held"), Some(&Value::Int(0)));
    let r = x1.stop(&id, None);
    assert!(r.is_err(), "x1 may not stop what it passed on");
    x2.accept(&id, Some(t)).unwrap();
    // Transferring to an agent that cannot take it changes nothing.
    assert_eq!(refusal(x2.transfer(&id, "en1")), ErrorCode::AgentNotLoggedIn);
    x2.stop(&id, Some("done")).unwrap();
}

#[test]
fn a_media_server_may_end_an_interaction_an_agent_handles() {
    let dir = TempDir::new("agents-media-stop");
    let s = start(&Engine::Sqlite, &dir, "");
    let (mut x1, mut ms, id) = x1_handling_one(&s);
    // The customer left: the media server stops it; a routing engine may not.
    let mut router = s.client_as(ClientType::RoutingEngine, "router");
    assert_eq!(refusal(router.stop(&id, None)), ErrorCode::InteractionLocked);
    ms.stop(&id, Some("customer left")).unwrap();
    let revoked = x1.wait_event(msg_type::EVENT_REVOKED, LONG).unwrap().expect("the desktop is told");
    assert_eq!(revoked.get_str(attr::INTERACTION_ID), Some(id.as_str()));
    assert_eq!(revoked.get_str(attr::REASON), Some("stopped"));
    let state = x1.agent_state(Some("x1")).unwrap();
    assert_eq!(media_state(&state[0], "chat").get("held"), Some(&Value::Int(0)));
    // The freed capacity takes the next one.
    let next = submit(&mut ms, None);
    let got = invite(&mut x1, LONG).expect("x1 is invited again");
    assert_eq!(invited_id(&got), next);
}

#[test]
fn an_operator_can_make_an_agent_leave_and_its_desktop_is_told() {
    let dir = TempDir::new("agents-op-leave");
    let s = start(&Engine::Sqlite, &dir, "");
    let (mut x1, _ms, id) = x1_handling_one(&s);
    x1.set_ready(None, None, false, Some("wrap-up")).unwrap();
    let mut op = s.client();
    op.leave(&id, Some("done")).unwrap();
    let revoked = x1.wait_event(msg_type::EVENT_REVOKED, LONG).unwrap().expect("the desktop is told");
    assert_eq!(revoked.get_str(attr::REASON), Some("left"));
    let f = op.get(&id).unwrap();
    assert_eq!(f.get_str(attr::QUEUE), Some("done"));
}
