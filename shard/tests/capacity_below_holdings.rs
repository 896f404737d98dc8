//! An agent's capacity for a media type may be lowered below what it holds
//! (a login again with a smaller media list, or RemoveMedia then AddMedia).
//! The rule: what it holds stays with it, and nothing new of that media type
//! is offered to it (by the strategy or by a delivery) until it holds fewer
//! than its capacity.

mod one_shard;

use ixn_shard::catalog::{Catalog, Tenant};
use ixn_shard::proto::{attr, msg_type, ClientType, ErrorCode, Frame, Request};
use one_shard::{Driver, DESK, ROUTER};

fn catalog() -> Catalog {
    let mut t = Tenant::new("default");
    t.add_media("chat", true).unwrap();
    t.add_process("bp", &["inbound", "done"]).unwrap();
    t.set_strategy("inbound", None, None).unwrap();
    t.add_agent("a1", &[], &[("chat", 3)], &[]).unwrap();
    t.add_place("p1").unwrap();
    Catalog::new(vec![t], true).unwrap()
}

fn invites(d: &Driver) -> Vec<(String, Option<u64>)> {
    d.got
        .get(&DESK)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|f| f.msg_type == msg_type::EVENT_INVITE)
        .map(|f| (f.get_str(attr::INTERACTION_ID).unwrap().to_string(), f.get_int(attr::TICKET).map(|t| t as u64)))
        .collect()
}

/// (held, capacity) of chat for a1, from RequestGetAgentState.
fn chat(d: &mut Driver) -> (i64, i64) {
    let f = d.ok(
        ROUTER,
        ClientType::Operator,
        Request::GetAgentState { tenant: "default".into(), agent: Some("a1".into()) },
    );
    let state: &Frame = &f;
    let media = state.get_list(attr::AGENT_STATE).and_then(|l| l.get("media")?.as_list().cloned());
    let chat = media.expect("a media list").get("chat").and_then(|v| v.as_list().cloned()).expect("chat");
    (chat.get("held").unwrap().as_int().unwrap(), chat.get("capacity").unwrap().as_int().unwrap())
}

/// a1 handles three chats, then its chat capacity becomes 1 by `lower`.
fn holding_three_then(lower: impl FnOnce(&mut Driver)) -> (Driver, Vec<String>) {
    let mut d = Driver::new(catalog());
    d.login_ready();
    let ids: Vec<String> = (0..3).map(|_| d.submit(0)).collect();
    let got = invites(&d);
    assert_eq!(got.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), ids, "the strategy offered all three");
    for (id, ticket) in got {
        d.ok(DESK, ClientType::AgentDesktop, Request::Accept { id, ticket });
    }
    assert_eq!(chat(&mut d), (3, 3));
    lower(&mut d);
    assert_eq!(chat(&mut d), (3, 1), "capacity lowered below what it holds");
    (d, ids)
}

fn remove_then_add(d: &mut Driver) {
    let t = || "default".to_string();
    d.ok(DESK, ClientType::AgentDesktop, Request::RemoveMedia { tenant: t(), agent: None, media: "chat".into() });
    let add = Request::AddMedia { tenant: t(), agent: None, media: "chat".into(), capacity: 1 };
    d.ok(DESK, ClientType::AgentDesktop, add);
    let ready = Request::SetReady { tenant: t(), agent: None, media: None, ready: true, reason: None };
    d.ok(DESK, ClientType::AgentDesktop, ready);
}

fn logout_then_login_smaller(d: &mut Driver) {
    let t = || "default".to_string();
    d.ok(DESK, ClientType::AgentDesktop, Request::AgentLogout { tenant: t(), agent: None, reason: None });
    let login = Request::AgentLogin {
        tenant: t(),
        agent: "a1".into(),
        place: "p1".into(),
        media: vec![("chat".into(), 1)],
        reason: None,
    };
    d.ok(DESK, ClientType::AgentDesktop, login);
    let ready = Request::SetReady { tenant: t(), agent: None, media: None, ready: true, reason: None };
    d.ok(DESK, ClientType::AgentDesktop, ready);
}

fn nothing_new_until_under_capacity(mut d: Driver, ids: Vec<String>) {
    let x = d.submit(0);
    assert!(!invites(&d).iter().any(|(id, _)| *id == x), "the strategy offered x to an agent over capacity");
    let e = d.ask(ROUTER, ClientType::Operator, Request::Deliver { id: x.clone(), agent: "a1".into() });
    assert_eq!(ixn_shard::proto::request::error_of(&e).map(|e| e.code), Some(ErrorCode::AgentNotAvailable));
    // Down to one held, its capacity: still nothing new.
    for id in &ids[..2] {
        d.ok(DESK, ClientType::AgentDesktop, Request::LeaveInteraction { id: id.clone(), queue: Some("done".into()) });
    }
    assert_eq!(chat(&mut d), (1, 1));
    assert!(!invites(&d).iter().any(|(id, _)| *id == x));
    // Under capacity: x is offered.
    d.ok(DESK, ClientType::AgentDesktop, Request::LeaveInteraction { id: ids[2].clone(), queue: Some("done".into()) });
    assert!(invites(&d).iter().any(|(id, _)| *id == x), "x offered once the agent is under its capacity");
    assert_eq!(chat(&mut d), (1, 1));
}

#[test]
fn remove_media_then_add_media_with_a_lower_capacity() {
    let (d, ids) = holding_three_then(remove_then_add);
    nothing_new_until_under_capacity(d, ids);
}

#[test]
fn a_login_again_with_a_lower_capacity() {
    let (d, ids) = holding_three_then(logout_then_login_smaller);
    nothing_new_until_under_capacity(d, ids);
}
