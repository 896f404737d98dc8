//! View indexes: for each view, the interactions of its queue that match
//! its condition, sorted by its order, then by submission order ([`tie_at`]).
//! Inserting, removing and taking the head are logarithmic in the size of
//! the view (a B-tree).
//!
//! Keys: a view ordered by nothing or by one integer field (the common
//! case, e.g. `priority DESC`) keys its entries by one `u64`, so an entry
//! is 16 bytes (key and tie; the tie, unique in the shard, leads to the
//! interaction through the store); any other order keys them by a boxed
//! list of parts.
//! Missing values (a property an interaction lacks) sort last whatever the
//! direction; integers sort before strings.
//!
//! [`tie_at`]: crate::interaction::tie_at

use std::cmp::Reverse;
use std::collections::BTreeSet;

use crate::catalog::View;
use crate::condition::Scalar;
use crate::interaction::{Field, Interaction, Names};

/// An owned value of an order key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Sv {
    Int(i64),
    Str(Box<str>),
}

/// One part of a general key. Variant order puts `Missing` last.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyPart {
    Asc(Sv),
    Desc(Reverse<Sv>),
    Missing,
}

/// An interaction's position in a view, before the tie-breaker.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ViewKey {
    Int(u64),
    Parts(Box<[KeyPart]>),
}

/// How a view computes keys, resolved once from its order clause.
#[derive(Clone, Debug)]
enum Plan {
    /// No order, or one integer field: `u64` keys.
    Int {
        field: Option<Field>,
        descending: bool,
    },
    General(Vec<(Field, bool)>),
}

/// One view's index on one shard.
pub struct ViewIndex {
    plan: Plan,
    int: BTreeSet<(u64, u64)>,
    general: BTreeSet<(Box<[KeyPart]>, u64)>,
}

/// Maps an i64 onto a u64 with the same order (ascending) or the reverse.
fn order_int(v: i64, descending: bool) -> u64 {
    let u = (v as u64) ^ (1 << 63);
    if descending {
        !u
    } else {
        u
    }
}

impl ViewIndex {
    pub fn new(view: &View) -> Self {
        let keys: Vec<(Field, bool)> = view.order.iter().map(|k| (Field::parse(&k.operand), k.descending)).collect();
        let plan = match keys.as_slice() {
            [] => Plan::Int { field: None, descending: false },
            [(f, d)] if f.is_int() => Plan::Int { field: Some(f.clone()), descending: *d },
            _ => Plan::General(keys),
        };
        ViewIndex { plan, int: BTreeSet::new(), general: BTreeSet::new() }
    }

    pub fn len(&self) -> usize {
        self.int.len() + self.general.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key of `ix` in this view.
    pub fn key(&self, ix: &Interaction, n: Names<'_>) -> ViewKey {
        match &self.plan {
            Plan::Int { field: None, .. } => ViewKey::Int(0),
            Plan::Int { field: Some(f), descending } => match ix.field(f, n) {
                Some(Scalar::Int(v)) => ViewKey::Int(order_int(v, *descending)),
                other => unreachable!("integer field {f:?} gave {other:?}"),
            },
            Plan::General(keys) => ViewKey::Parts(
                keys.iter()
                    .map(|(f, desc)| {
                        let v = match ix.field(f, n) {
                            None => return KeyPart::Missing,
                            Some(Scalar::Int(i)) => Sv::Int(i),
                            Some(Scalar::Str(s)) => Sv::Str(s.into()),
                        };
                        if *desc {
                            KeyPart::Desc(Reverse(v))
                        } else {
                            KeyPart::Asc(v)
                        }
                    })
                    .collect(),
            ),
        }
    }

    pub fn insert(&mut self, key: ViewKey, tie: u64) {
        let fresh = match key {
            ViewKey::Int(k) => self.int.insert((k, tie)),
            ViewKey::Parts(p) => self.general.insert((p, tie)),
        };
        assert!(fresh, "tie {tie} indexed twice in one view");
    }

    /// Removes an entry; returns whether it was there.
    pub fn remove(&mut self, key: ViewKey, tie: u64) -> bool {
        match key {
            ViewKey::Int(k) => self.int.remove(&(k, tie)),
            ViewKey::Parts(p) => self.general.remove(&(p, tie)),
        }
    }

    pub fn contains(&self, key: &ViewKey, tie: u64) -> bool {
        match key {
            ViewKey::Int(k) => self.int.contains(&(*k, tie)),
            ViewKey::Parts(p) => self.general.contains(&(p.clone(), tie)),
        }
    }

    /// The first `n` entries in view order: (key, tie).
    pub fn head(&self, n: usize) -> Vec<(ViewKey, u64)> {
        let mut out = Vec::with_capacity(n.min(self.len()));
        out.extend(self.int.iter().take(n).map(|&(k, t)| (ViewKey::Int(k), t)));
        let left = n - out.len();
        out.extend(self.general.iter().take(left).map(|(k, t)| (ViewKey::Parts(k.clone()), *t)));
        out
    }
}
