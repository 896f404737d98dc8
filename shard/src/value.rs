//! Typed property values and the ordered key-value list that carries them.
//!
//! Interactions carry properties as an ordered list of `(key, value)` pairs,
//! the same shape the wire protocol uses for list attributes. Order is kept
//! because media servers and desktops show properties in the order they were
//! added. Single lookups are linear because property lists are usually
//! short (tens of keys); the operations a request applies to a whole list
//! (duplicate check, change) hash instead, so a list of thousands of keys
//! costs time proportional to its length, never to its square.

/// One typed value: what a property or a list attribute holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Str(String),
    Bin(Vec<u8>),
    List(KvList),
}

impl Value {
    /// Wire type tag of this value (see docs/protocol.md, "Value types").
    pub fn tag(&self) -> u8 {
        match self {
            Value::Int(_) => TAG_INT,
            Value::Str(_) => TAG_STR,
            Value::Bin(_) => TAG_BIN,
            Value::List(_) => TAG_LIST,
        }
    }

    /// Human name of the type, used in error texts.
    pub fn type_name(&self) -> &'static str {
        type_name(self.tag())
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&KvList> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
}

pub const TAG_INT: u8 = 1;
pub const TAG_STR: u8 = 2;
pub const TAG_BIN: u8 = 3;
pub const TAG_LIST: u8 = 4;

pub fn type_name(tag: u8) -> &'static str {
    match tag {
        TAG_INT => "int",
        TAG_STR => "string",
        TAG_BIN => "binary",
        TAG_LIST => "list",
        _ => "unknown",
    }
}

/// An ordered list of key-value pairs. Keys are unique within one list when
/// built through [`KvList::set`]; a decoded list keeps whatever the peer sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvList {
    entries: Vec<(String, Value)>,
}

/// The empty list, for interactions without properties.
pub static EMPTY_LIST: KvList = KvList { entries: Vec::new() };

impl KvList {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_entries(entries: Vec<(String, Value)>) -> Self {
        KvList { entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn entries(&self) -> &[(String, Value)] {
        &self.entries
    }

    pub fn into_entries(self) -> Vec<(String, Value)> {
        self.entries
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Sets `key` to `value`: replaces the value in place if the key exists
    /// (keeping its position), appends otherwise.
    pub fn set(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// Appends without checking for an existing key (builders of wire lists).
    pub fn push(&mut self, key: impl Into<String>, value: Value) {
        self.entries.push((key.into(), value));
    }

    /// Removes `key`; returns whether it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(k, _)| k != key);
        self.entries.len() != before
    }

    /// Whether some key appears twice (a request list must not do that).
    /// Linear: a client sends lists of thousands of keys.
    pub fn has_duplicate_keys(&self) -> bool {
        if self.entries.len() <= SMALL_LIST {
            return self.entries.iter().enumerate().any(|(i, (k, _))| self.entries[..i].iter().any(|(o, _)| o == k));
        }
        let mut seen = ahash::AHashSet::with_capacity(self.entries.len());
        !self.entries.iter().all(|(k, _)| seen.insert(k.as_str()))
    }

    /// Sets every entry of `changed` (replacing the value of a key already
    /// there, in its place, or appending a new key in `changed`'s order)
    /// and removes every key of `deleted`. Linear in the sizes of the three
    /// lists. `changed` must not name a key twice, nor a key of `deleted`.
    pub fn apply(&mut self, changed: KvList, deleted: &[String]) {
        if self.entries.len().max(changed.len() + deleted.len()) <= SMALL_LIST {
            for (k, v) in changed.entries {
                self.set(k, v);
            }
            for k in deleted {
                self.remove(k);
            }
            return;
        }
        let (keys, mut values): (Vec<String>, Vec<Option<Value>>) =
            changed.entries.into_iter().map(|(k, v)| (k, Some(v))).unzip();
        let position: ahash::AHashMap<&str, usize> = keys.iter().enumerate().map(|(i, k)| (k.as_str(), i)).collect();
        let gone: ahash::AHashSet<&str> = deleted.iter().map(String::as_str).collect();
        self.entries.retain_mut(|(k, v)| {
            if gone.contains(k.as_str()) {
                return false;
            }
            if let Some(new) = position.get(k.as_str()).and_then(|&i| values[i].take()) {
                *v = new;
            }
            true
        });
        for (k, v) in keys.into_iter().zip(values) {
            if let Some(v) = v {
                self.entries.push((k, v));
            }
        }
    }

    /// The first of `keys` that this list has, if any. Linear.
    pub fn first_key_among<'a>(&self, keys: &'a [String]) -> Option<&'a str> {
        if self.entries.len().max(keys.len()) <= SMALL_LIST {
            return keys.iter().find(|k| self.get(k).is_some()).map(String::as_str);
        }
        let mine: ahash::AHashSet<&str> = self.entries.iter().map(|(k, _)| k.as_str()).collect();
        keys.iter().find(|k| mine.contains(k.as_str())).map(String::as_str)
    }

    /// Entries in this list and every list nested in it; `None` as soon as
    /// there are more than `max`. Stops early, so its cost is bounded by
    /// `max` whatever the list holds.
    pub fn entries_up_to(&self, max: usize) -> Option<usize> {
        let mut n = 0usize;
        let mut stack: Vec<&KvList> = vec![self];
        while let Some(l) = stack.pop() {
            n += l.entries.len();
            if n > max {
                return None;
            }
            stack.extend(l.entries.iter().filter_map(|(_, v)| v.as_list()));
        }
        Some(n)
    }
}

/// Lists up to this long are searched by scanning: cheaper than hashing.
const SMALL_LIST: usize = 16;

/// Builds a list from `(key, value)` pairs: `kv![("lang", "en"), ("n", 3)]`.
#[macro_export]
macro_rules! kv {
    ($(($k:expr, $v:expr)),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut l = $crate::value::KvList::new();
        $( l.set($k, $crate::value::Value::from($v)); )*
        l
    }};
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(v as i64)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bin(v)
    }
}
impl From<KvList> for Value {
    fn from(v: KvList) -> Self {
        Value::List(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_replaces_in_place_and_appends_new_keys() {
        let mut l = kv![("a", 1), ("b", "x")];
        l.set("a", Value::Int(7));
        l.set("c", Value::Str("y".into()));
        let keys: Vec<_> = l.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(l.get("a"), Some(&Value::Int(7)));
        assert!(l.remove("b"));
        assert!(!l.remove("b"));
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn duplicate_keys_are_detected() {
        let l = KvList::from_entries(vec![("a".into(), Value::Int(1)), ("a".into(), Value::Int(2))]);
        assert!(l.has_duplicate_keys());
        assert!(!kv![("a", 1), ("b", 2)].has_duplicate_keys());
    }
}
