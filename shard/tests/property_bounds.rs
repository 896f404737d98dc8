//! The number of property keys an interaction may have is bounded
//! (`max-properties-per-interaction`), nested lists' keys included, and the
//! bound is checked before any work per key.

use std::sync::Arc;

use ixn_shard::catalog::Catalog;
use ixn_shard::machine::{Caller, Input, Origin, Output, Shard, ShardParams};
use ixn_shard::proto::request::error_of;
use ixn_shard::proto::{attr, ClientType, ErrorCode, Frame, Request, Submit};
use ixn_shard::{KvList, Value};

const MAX: usize = 50;

fn shard() -> Shard {
    Shard::new(
        ShardParams { max_property_keys: MAX, ..ShardParams::new(1, 0, 1) },
        Arc::new(Catalog::embedded_default()),
    )
}

fn keys(n: usize, prefix: &str) -> KvList {
    KvList::from_entries((0..n).map(|i| (format!("{prefix}{i}"), Value::Int(i as i64))).collect())
}

/// Sends `request`; commits its write if it makes one; returns the answer.
fn ask(s: &mut Shard, request: Request) -> Frame {
    let caller = Caller {
        origin: Origin { shard: 0, conn: 1, session: 0 },
        ref_id: 9,
        client_type: ClientType::MediaServer,
        client_name: "m".into(),
        agent: None,
        tenants: ixn_shard::machine::TenantScope::all(),
    };
    let mut out = Vec::new();
    s.handle(1000, Input::Request { caller, request }, &mut out);
    if let [Output::Store { token, .. }] = out.as_slice() {
        let token = *token;
        out.clear();
        s.handle(1001, Input::StorageDone { token, ok: true }, &mut out);
    }
    out.into_iter()
        .find_map(|o| match o {
            Output::Reply { frame, .. } => Some(frame),
            _ => None,
        })
        .expect("an answer")
}

fn submit(props: KvList) -> Request {
    Request::Submit(Box::new(Submit {
        tenant: "default".into(),
        media_type: "chat".into(),
        interaction_type: "Inbound".into(),
        interaction_subtype: "InboundNew".into(),
        queue: "inbound".into(),
        priority: 0,
        properties: props,
        id: None,
        received_at_ms: None,
    }))
}

fn refused_for_keys(f: &Frame) -> bool {
    error_of(f).is_some_and(|e| e.code == ErrorCode::InvalidValue && e.text.contains("max-properties-per-interaction"))
}

#[test]
fn a_submit_with_more_keys_than_the_bound_is_refused() {
    let mut s = shard();
    assert!(refused_for_keys(&ask(&mut s, submit(keys(MAX + 1, "k")))));
    // Nested keys count too.
    let mut nested = keys(MAX - 5, "k");
    nested.push("inner", Value::List(keys(10, "i")));
    assert!(refused_for_keys(&ask(&mut s, submit(nested))));
    assert!(s.is_empty());
    assert!(error_of(&ask(&mut s, submit(keys(MAX, "k")))).is_none(), "exactly the bound is taken");
}

#[test]
fn a_change_is_bounded_by_its_request_and_by_its_result() {
    let mut s = shard();
    let id = ask(&mut s, submit(keys(MAX - 10, "k"))).get_str(attr::INTERACTION_ID).unwrap().to_string();
    let change = |changed: KvList, deleted: Vec<String>| Request::ChangeProperties { id: id.clone(), changed, deleted };
    assert!(refused_for_keys(&ask(&mut s, change(keys(MAX + 1, "n"), vec![]))));
    let deleted: Vec<String> = (0..MAX + 1).map(|i| format!("d{i}")).collect();
    assert!(refused_for_keys(&ask(&mut s, change(keys(1, "n"), deleted))));
    // 40 kept + 20 new is over the bound...
    assert!(refused_for_keys(&ask(&mut s, change(keys(20, "n"), vec![]))));
    assert_eq!(s.get(&id).unwrap().properties().len(), MAX - 10);
    // ...unless 10 go at the same time.
    let gone: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    assert!(error_of(&ask(&mut s, change(keys(20, "n"), gone))).is_none());
    let props = s.get(&id).unwrap().properties();
    assert_eq!(props.len(), MAX);
    assert_eq!(props.iter().next().map(|(k, _)| k), Some("k10"), "kept keys keep their order");
    assert_eq!(props.iter().last().map(|(k, _)| k), Some("n19"), "new keys come last, in order");
}

#[test]
fn a_large_change_replaces_values_in_place_and_deletes_in_one_pass() {
    let mut s = Shard::new(ShardParams::new(1, 0, 1), Arc::new(Catalog::embedded_default()));
    let id = ask(&mut s, submit(keys(600, "k"))).get_str(attr::INTERACTION_ID).unwrap().to_string();
    let changed =
        KvList::from_entries((0..600).step_by(2).map(|i| (format!("k{i}"), Value::Str("x".into()))).collect());
    let deleted: Vec<String> = (1..600).step_by(2).map(|i| format!("k{i}")).collect();
    let f = ask(&mut s, Request::ChangeProperties { id: id.clone(), changed, deleted });
    assert!(error_of(&f).is_none());
    let props = s.get(&id).unwrap().properties();
    assert_eq!(props.len(), 300);
    assert!(props.iter().enumerate().all(|(n, (k, v))| *k == format!("k{}", 2 * n) && v.as_str() == Some("x")));
    // A key twice in a large request is found.
    let mut dup = keys(500, "k");
    dup.push("k7", Value::Int(0));
    assert!(error_of(&ask(&mut s, submit(dup))).is_some_and(|e| e.text.contains("twice")));
}

#[test]
fn names_with_a_nul_character_are_refused_before_the_database() {
    let mut s = shard();
    let mut r = submit(KvList::new());
    if let Request::Submit(b) = &mut r {
        b.interaction_subtype = "In\0boundNew".into();
    }
    let e = error_of(&ask(&mut s, r)).expect("refused");
    assert_eq!(e.code, ErrorCode::InvalidValue);
    assert!(e.text.contains("NUL"), "{}", e.text);
    let id = ask(&mut s, submit(KvList::new())).get_str(attr::INTERACTION_ID).unwrap().to_string();
    let r = Request::PlaceInWorkbin { id: id.clone(), workbin: "personal".into(), owner: "agent\u{0}1".into() };
    assert_eq!(error_of(&ask(&mut s, r)).map(|e| e.code), Some(ErrorCode::InvalidValue));
    assert_eq!(s.get(&id).unwrap().version, 0, "nothing changed");
}
