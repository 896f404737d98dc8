//! Views ordered and filtered by fields that change while an agent has the
//! interaction (`version`, the handling times): after every step each view
//! index must hold exactly what recomputing every key gives
//! (`Shard::audit_index`), and a pull must take what the view shows.

mod one_shard;

use ixn_shard::catalog::{Catalog, Tenant};
use ixn_shard::machine::Input;
use ixn_shard::proto::{ClientType, Request};
use one_shard::{Driver, DESK, HANDLING_MS};

fn catalog() -> Catalog {
    let mut t = Tenant::new("default");
    t.add_media("chat", true).unwrap();
    t.add_process("bp", &["inbound", "done"]).unwrap();
    t.add_view("inbound", "by-version", None, Some("version")).unwrap();
    t.add_view("inbound", "fresh", Some("version < 2"), Some("priority DESC")).unwrap();
    t.add_view("inbound", "by-delivery", None, Some("delivered_at DESC, version")).unwrap();
    t.add_agent("a1", &[], &[("chat", 2)], &[]).unwrap();
    t.add_place("p1").unwrap();
    Catalog::new(vec![t], true).unwrap()
}

#[test]
fn a_left_interaction_is_back_in_a_view_ordered_by_version_under_its_new_version() {
    let mut d = Driver::new(catalog());
    d.login_ready();
    let x = d.submit(1);
    let y = d.submit(1);
    assert_eq!(d.pull("by-version"), vec![x.clone(), y.clone()]);
    d.deliver_and_accept(&x);
    d.ok(DESK, ClientType::AgentDesktop, Request::LeaveInteraction { id: x.clone(), queue: None });
    d.release_router_locks();
    let v = d.shard.get(&x).unwrap().version;
    assert!(v >= 2, "accept and leave each made a version, got {v}");
    // y (version 0) now comes first, x after it; and x is no longer fresh.
    assert_eq!(d.pull("by-version"), vec![y.clone(), x.clone()]);
    d.release_router_locks();
    assert_eq!(d.pull("fresh"), vec![y]);
}

#[test]
fn a_handling_time_out_puts_the_interaction_back_under_its_new_version() {
    let mut d = Driver::new(catalog());
    d.login_ready();
    let x = d.submit(1);
    assert_eq!(d.pull("by-version"), vec![x.clone()]);
    d.deliver_and_accept(&x);
    d.release_router_locks();
    d.now_ms += HANDLING_MS + 1;
    d.feed(Input::Tick);
    assert!(d.shard.lock_of(&x).is_none(), "the handling time-out ended the agent's lock");
    assert_eq!(d.pull("by-version"), vec![x.clone()]);
    d.release_router_locks();
    assert!(d.pull("fresh").is_empty(), "x has a version of 2 or more now");
    assert_eq!(d.pull("by-delivery"), vec![x]);
}
