//! An interaction's properties as the store keeps them: the list's storage
//! encoding ([`frame::encode_list`], the same bytes the database column
//! holds before hex) in one shared allocation.
//!
//! Why not a [`KvList`]: a list of n string entries is a vector of n
//! 56-byte entries plus 2n small strings, 2n + 1 allocations. A backlog of
//! millions pays that in memory (five short properties took about 500
//! bytes per interaction, the encoding about 125), and every write paid it
//! again copying the list into its record. Packed, a write's record shares
//! the bytes (a reference count), the writer hexes them as they are, and
//! what reads one property (conditions, the skills a strategy needs) finds
//! it in place without decoding the rest.

use std::sync::Arc;

use crate::proto::frame::{self, BodyError};
use crate::value::{KvList, Value, TAG_INT, TAG_STR};

/// Encoded key-value entries, checked to decode when made; empty holds no
/// allocation.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PackedList {
    bytes: Option<Arc<[u8]>>,
}

/// One property read in place: the scalar kinds conditions compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackedScalar<'a> {
    Int(i64),
    Str(&'a str),
}

impl PackedList {
    /// Packs a list (its order kept).
    pub fn pack(l: &KvList) -> Self {
        if l.is_empty() {
            return Self::default();
        }
        PackedList { bytes: Some(Arc::from(frame::encode_list(l))) }
    }

    /// Bytes as [`frame::encode_list`] writes them (a stored column), after
    /// checking that they decode: what is packed always unpacks.
    pub fn from_encoded(bytes: &[u8]) -> Result<Self, BodyError> {
        frame::decode_list(bytes)?;
        Ok(PackedList { bytes: (!bytes.is_empty()).then(|| Arc::from(bytes)) })
    }

    /// A copy in an allocation of its own (made on the calling thread),
    /// not sharing this one's.
    pub fn deep_copy(&self) -> Self {
        PackedList { bytes: self.bytes.as_deref().map(Arc::from) }
    }

    /// The encoded entries (empty when there are none).
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_deref().unwrap_or(&[])
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_none()
    }

    /// The list decoded (a copy: allocates).
    pub fn unpack(&self) -> KvList {
        frame::decode_list(self.bytes()).expect("a packed list was checked to decode when packed")
    }

    /// The value of `key` decoded, if present (allocates for strings,
    /// binaries and lists).
    pub fn value(&self, key: &str) -> Option<Value> {
        let (tag, payload) = frame::find_in_list(self.bytes(), key)?;
        Some(frame::decode_list_value(tag, payload).expect("a packed list was checked to decode when packed"))
    }

    /// The value of `key` read in place when it is an integer or a string;
    /// `None` when absent or of another type.
    pub fn scalar(&self, key: &str) -> Option<PackedScalar<'_>> {
        let (tag, payload) = frame::find_in_list(self.bytes(), key)?;
        match tag {
            TAG_INT => Some(PackedScalar::Int(i64::from_le_bytes(payload.try_into().ok()?))),
            TAG_STR => Some(PackedScalar::Str(
                std::str::from_utf8(payload).expect("a packed list was checked to decode when packed"),
            )),
            _ => None,
        }
    }
}

impl From<&KvList> for PackedList {
    fn from(l: &KvList) -> Self {
        PackedList::pack(l)
    }
}

/// Equal when the list packs to the same bytes (same entries, same order).
impl PartialEq<KvList> for PackedList {
    fn eq(&self, other: &KvList) -> bool {
        self.bytes() == frame::encode_list(other).as_slice()
    }
}

impl std::fmt::Debug for PackedList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.unpack().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv;

    #[test]
    fn packs_and_unpacks_in_order() {
        let l = kv![("lang", "en"), ("n", -3), ("blob", vec![0u8, 255]), ("addr", kv![("city", "Oslo")])];
        let p = PackedList::pack(&l);
        assert_eq!(p.unpack(), l);
        assert_eq!(p, l);
        assert_eq!(p.bytes(), frame::encode_list(&l).as_slice());
        assert_eq!(PackedList::from_encoded(p.bytes()).unwrap(), p);
    }

    #[test]
    fn reads_one_property_in_place() {
        let p = PackedList::pack(&kv![("lang", "en"), ("n", 7), ("blob", vec![1u8]), ("l", kv![("x", 1)])]);
        assert_eq!(p.scalar("lang"), Some(PackedScalar::Str("en")));
        assert_eq!(p.scalar("n"), Some(PackedScalar::Int(7)));
        assert_eq!(p.scalar("blob"), None);
        assert_eq!(p.scalar("l"), None);
        assert_eq!(p.scalar("missing"), None);
        // A key that is a prefix of another is not confused with it.
        assert_eq!(p.scalar("lan"), None);
        assert_eq!(p.value("l"), Some(Value::List(kv![("x", 1)])));
        assert_eq!(p.value("blob"), Some(Value::Bin(vec![1])));
    }

    #[test]
    fn empty_holds_nothing() {
        let p = PackedList::pack(&KvList::new());
        assert!(p.is_empty());
        assert_eq!(p.bytes(), b"");
        assert_eq!(p.unpack(), KvList::new());
        assert_eq!(PackedList::from_encoded(b"").unwrap(), p);
    }

    #[test]
    fn bytes_that_do_not_decode_are_refused() {
        let good = frame::encode_list(&kv![("lang", "en")]);
        assert!(PackedList::from_encoded(&good[..good.len() - 1]).is_err());
        let mut bad_utf8 = good.clone();
        let last = bad_utf8.len() - 1;
        bad_utf8[last] = 0xff;
        assert!(PackedList::from_encoded(&bad_utf8).is_err());
    }

    #[test]
    fn a_deep_copy_shares_nothing() {
        let p = PackedList::pack(&kv![("lang", "en")]);
        let shared = p.clone();
        let copy = p.deep_copy();
        assert_eq!(copy, p);
        let ptr = |q: &PackedList| q.bytes().as_ptr();
        assert_eq!(ptr(&shared), ptr(&p));
        assert_ne!(ptr(&copy), ptr(&p));
    }
}
