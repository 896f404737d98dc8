//! The coalescing rules of a writer batch.

mod common;

use ixn_storage::coalesce::{Coalescer, Plan};
use ixn_storage::StoreOp;

fn ins(id: &str, v: i64) -> StoreOp {
    StoreOp::Insert(Box::new(common::record(id, v)))
}
fn ups(id: &str, v: i64) -> StoreOp {
    StoreOp::Upsert(Box::new(common::record(id, v)))
}
fn del(id: &str) -> StoreOp {
    StoreOp::Delete(id.to_string())
}

/// (deleted ids, inserted (id, version)) of a batch.
fn plan(ops: Vec<StoreOp>) -> (Vec<String>, Vec<(String, i64)>) {
    let mut c = Coalescer::new();
    let n = ops.len();
    for op in ops {
        c.push(op);
    }
    assert_eq!(c.ops(), n);
    let Plan { deletes, inserts } = c.plan();
    (deletes.iter().map(|s| s.to_string()).collect(), inserts.iter().map(|r| (r.id.clone(), r.version)).collect())
}

/// The same, for rows written in place (SQLite, PostgreSQL).
fn plan_in_place(ops: Vec<StoreOp>) -> (Vec<String>, Vec<(String, i64)>) {
    let mut c = Coalescer::new();
    for op in ops {
        c.push(op);
    }
    let Plan { deletes, inserts } = c.plan_in_place_all();
    (deletes.iter().map(|s| s.to_string()).collect(), inserts.iter().map(|r| (r.id.clone(), r.version)).collect())
}

#[test]
fn in_place_a_changed_row_is_one_upsert_and_never_deleted_first() {
    let one = |id: &str, v| vec![(id.to_string(), v)];
    // An accept (Upsert of a stored row): one upsert, no delete.
    assert_eq!(plan_in_place(vec![ups("a", 2)]), (vec![], one("a", 2)));
    // Submitted and accepted in one batch: the last record, once.
    assert_eq!(plan_in_place(vec![ins("a", 1), ups("a", 2), ups("a", 3)]), (vec![], one("a", 3)));
    // Submitted and stopped in one batch: nothing at all.
    assert_eq!(plan_in_place(vec![ins("a", 1), ups("a", 2), del("a")]), (vec![], vec![]));
    // A stored row changed then stopped: its delete only.
    assert_eq!(plan_in_place(vec![ups("a", 2), del("a")]), (s(&["a"]), vec![]));
    // Deleted then submitted again under the same id: one upsert.
    assert_eq!(plan_in_place(vec![del("a"), ins("a", 5)]), (vec![], one("a", 5)));
    // Ids keep their first-seen order.
    assert_eq!(
        plan_in_place(vec![ups("b", 1), del("c"), ins("a", 1)]),
        (s(&["c"]), vec![("b".to_string(), 1), ("a".to_string(), 1)])
    );
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn insert_then_upserts_is_one_insert_of_the_last_record() {
    assert_eq!(plan(vec![ins("a", 0), ups("a", 1), ups("a", 2)]), (s(&[]), vec![("a".into(), 2)]));
}

#[test]
fn upserts_are_one_delete_and_one_insert() {
    assert_eq!(plan(vec![ups("a", 1), ups("a", 2)]), (s(&["a"]), vec![("a".into(), 2)]));
}

#[test]
fn anything_then_delete_is_a_delete() {
    assert_eq!(plan(vec![ups("a", 1), del("a")]), (s(&["a"]), vec![]));
    assert_eq!(plan(vec![del("a")]), (s(&["a"]), vec![]));
    assert_eq!(plan(vec![ups("a", 1), ups("a", 2), del("a")]), (s(&["a"]), vec![]));
}

#[test]
fn insert_then_delete_is_nothing() {
    assert_eq!(plan(vec![ins("a", 0), del("a")]), (s(&[]), vec![]));
    assert_eq!(plan(vec![ins("a", 0), ups("a", 1), ups("a", 2), del("a")]), (s(&[]), vec![]));
}

#[test]
fn delete_then_insert_replaces_the_row() {
    assert_eq!(plan(vec![del("a"), ins("a", 5)]), (s(&["a"]), vec![("a".into(), 5)]));
    // Insert, delete, insert again: still no row before the batch.
    assert_eq!(plan(vec![ins("a", 0), del("a"), ins("a", 9)]), (s(&[]), vec![("a".into(), 9)]));
}

#[test]
fn ids_are_independent_and_keep_first_seen_order() {
    let (d, i) = plan(vec![ins("a", 0), ups("b", 1), del("c"), ups("a", 3), ins("d", 0), del("d"), ups("b", 4)]);
    assert_eq!(d, s(&["b", "c"]));
    assert_eq!(i, vec![("a".into(), 3), ("b".into(), 4)]);
}

#[test]
fn clear_starts_a_new_batch() {
    let mut c = Coalescer::new();
    c.push(ins("a", 0));
    c.clear();
    assert!(c.is_empty());
    c.push(ups("a", 1));
    let p = c.plan();
    assert_eq!(p.deletes, vec!["a"]);
    assert_eq!(p.inserts.len(), 1);
}
