//! Typed property values and the ordered key-value list that carries them.
//!
//! Interactions carry properties as an ordered list of `(key, value)` pairs,
//! the same shape the wire protocol uses for list attributes. Order is kept
//! because media servers and desktops show properties in the order they were
//! added; lookups are linear because property lists are short (tens of keys).

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
    pub fn has_duplicate_keys(&self) -> bool {
        for (i, (k, _)) in self.entries.iter().enumerate() {
            if self.entries[..i].iter().any(|(other, _)| other == k) {
                return true;
            }
        }
        false
    }
}

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
