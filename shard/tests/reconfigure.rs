//! A reload's catalog on a running shard: views added or changed over
//! interactions already queued are built in view order, a logged-in agent
//! (or its place) removed is logged out, a removed queue keeps its
//! interactions reachable by id and takes no new one. The driver audits
//! the indexes after every input.

mod one_shard;

use std::sync::Arc;

use ixn_shard::agent::{REMOVED_AGENT, REMOVED_PLACE};
use ixn_shard::catalog::{Catalog, Tenant};
use ixn_shard::machine::Input;
use ixn_shard::proto::{attr, msg_type, ClientType, ErrorCode, Request};
use one_shard::{Driver, DESK, MEDIA, ROUTER};

/// Tenant `default`: queues inbound (next done) and done, the given views
/// on inbound (name, order), agents a1 (place p1) and the extra ones.
fn catalog(views: &[(&str, &str)], queues: &[&str], agents: &[&str], places: &[&str]) -> Catalog {
    let mut t = Tenant::new("default");
    t.add_media("chat", true).unwrap();
    t.add_process("bp", queues).unwrap();
    if queues.contains(&"done") {
        t.link_next("inbound", "done").unwrap();
    }
    for (name, order) in views {
        t.add_view("inbound", name, None, Some(order)).unwrap();
    }
    for a in agents {
        t.add_agent(a, &[], &[("chat", 2)], &[]).unwrap();
    }
    for p in places {
        t.add_place(p).unwrap();
    }
    Catalog::new(vec![t], true).unwrap()
}

fn reload(d: &mut Driver, next: &Catalog) {
    let (catalog, _) = d.shard.catalog().evolve(next).unwrap();
    d.feed(Input::Reconfigure { catalog: Arc::new(catalog) });
}

fn error_code(f: &ixn_shard::proto::Frame) -> Option<i64> {
    (f.msg_type == msg_type::EVENT_ERROR).then(|| f.get_int(attr::ERROR_CODE)).flatten()
}

#[test]
fn a_view_added_or_changed_over_queued_interactions_holds_them_in_its_order() {
    let start = catalog(&[("oldest", "priority")], &["inbound", "done"], &["a1"], &["p1"]);
    let mut d = Driver::new(start);
    let low = d.submit(1);
    let high = d.submit(9);
    let mid = d.submit(5);
    reload(
        &mut d,
        &catalog(&[("oldest", "priority"), ("urgent", "priority DESC")], &["inbound", "done"], &["a1"], &["p1"]),
    );
    assert_eq!(d.pull("urgent"), vec![high.clone(), mid.clone(), low.clone()]);
    d.release_router_locks();
    // The same name, another order: a new index, built; the old one kept
    // in step (the driver's audit checks both after every input).
    reload(
        &mut d,
        &catalog(&[("oldest", "priority DESC"), ("urgent", "priority DESC")], &["inbound", "done"], &["a1"], &["p1"]),
    );
    assert_eq!(d.pull("oldest"), vec![high.clone(), mid.clone(), low.clone()]);
    d.release_router_locks();
    let x = d.submit(7);
    assert_eq!(d.pull("oldest"), vec![high, x, mid, low], "a new interaction enters the changed view");
}

#[test]
fn a_removed_agent_or_place_is_logged_out_and_may_not_log_in() {
    let start = catalog(&[], &["inbound", "done"], &["a1", "a2"], &["p1", "p2"]);
    let mut d = Driver::new(start);
    d.login_ready();
    let x = d.submit(1);
    assert_eq!(d.pull("inbound"), vec![x.clone()]);
    d.deliver_and_accept(&x);
    reload(&mut d, &catalog(&[], &["inbound", "done"], &["a2"], &["p1", "p2"]));
    let out = d.got[&DESK].iter().rev().find(|f| f.msg_type == msg_type::EVENT_LOGGED_OUT).expect("logged out");
    assert_eq!(out.get_str(attr::REASON), Some(REMOVED_AGENT));
    let assigned = d.shard.get(&x).and_then(|i| i.handling.as_ref()).and_then(|h| h.assigned_to);
    assert!(assigned.is_some(), "what it handles stays with it");
    assert!(d.shard.lock_of(&x).is_some(), "and stays locked to it");
    let login = |agent: &str, place: &str| Request::AgentLogin {
        tenant: "default".into(),
        agent: agent.into(),
        place: place.into(),
        media: vec![("chat".into(), 0)],
        reason: None,
    };
    let again = d.ask(DESK, ClientType::AgentDesktop, login("a1", "p1"));
    assert_eq!(error_code(&again), Some(ErrorCode::UnknownAgent as i64));
    // Its interaction can still end: the handled interaction is stopped.
    d.ok(MEDIA, ClientType::MediaServer, Request::StopProcessing { id: x.clone(), reason: None });
    assert!(d.shard.get(&x).is_none());

    d.ok(DESK, ClientType::AgentDesktop, login("a2", "p2"));
    reload(&mut d, &catalog(&[], &["inbound", "done"], &["a2"], &["p1"]));
    let out = d.got[&DESK].iter().rev().find(|f| f.msg_type == msg_type::EVENT_LOGGED_OUT).unwrap();
    assert_eq!(out.get_str(attr::AGENT_ID), Some("a2"));
    assert_eq!(out.get_str(attr::REASON), Some(REMOVED_PLACE));
    // Added back: it logs in again, at the index it had.
    reload(&mut d, &catalog(&[], &["inbound", "done"], &["a1", "a2"], &["p1", "p2"]));
    d.ok(DESK, ClientType::AgentDesktop, login("a1", "p1"));
}

#[test]
fn a_removed_queue_keeps_its_interactions_reachable_and_takes_no_new_one() {
    let start = catalog(&[], &["inbound", "done"], &["a1"], &["p1"]);
    let mut d = Driver::new(start);
    let x = d.submit(1);
    d.ok(MEDIA, ClientType::MediaServer, Request::PlaceInQueue { id: x.clone(), queue: Some("done".into()) });
    let y = d.submit(2);
    reload(&mut d, &catalog(&[], &["inbound"], &["a1"], &["p1"]));
    let moved =
        d.ask(MEDIA, ClientType::MediaServer, Request::PlaceInQueue { id: y.clone(), queue: Some("done".into()) });
    assert_eq!(error_code(&moved), Some(ErrorCode::UnknownQueue as i64));
    let pull = d.ask(
        ROUTER,
        ClientType::RoutingEngine,
        Request::Pull { tenant: "default".into(), view: "done".into(), count: 5 },
    );
    assert_eq!(error_code(&pull), Some(ErrorCode::UnknownView as i64));
    let got = d.ok(MEDIA, ClientType::MediaServer, Request::GetInteractionProperties { id: x.clone() });
    assert_eq!(got.get_str(attr::QUEUE), Some("done"), "still in the removed queue, reachable by id");
    let depth = d.ok(ROUTER, ClientType::RoutingEngine, Request::GetQueueDepth { tenant: "default".into() });
    let listed = depth.lists(attr::QUEUE_DEPTH);
    let done = listed
        .iter()
        .find(|l| l.get("queue").and_then(|v| v.as_str()) == Some("done"))
        .expect("listed while it holds one");
    assert_eq!(done.get("removed").and_then(|v| v.as_int()), Some(1));
    d.ok(MEDIA, ClientType::MediaServer, Request::PlaceInQueue { id: x.clone(), queue: Some("inbound".into()) });
    let depth = d.ok(ROUTER, ClientType::RoutingEngine, Request::GetQueueDepth { tenant: "default".into() });
    assert_eq!(depth.lists(attr::QUEUE_DEPTH).len(), 1, "an empty removed queue is not listed");
    // Submission order: x first.
    assert_eq!(d.pull("inbound"), vec![x, y]);
}
