//! Interned names: the few distinct interaction types, client names and
//! workbin owners a shard sees, stored once and referred to by number so an
//! interaction carries 4 bytes instead of a string for each.

use std::sync::Arc;

use ahash::AHashMap;

/// A name's number in its shard's [`Symbols`].
pub type Sym = u32;

#[derive(Default, Debug)]
pub struct Symbols {
    names: Vec<Arc<str>>,
    by_name: AHashMap<Arc<str>, Sym>,
}

impl Symbols {
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of `name`, adding it on first use. Names are never
    /// removed: there are few of them (types, client and owner names).
    pub fn intern(&mut self, name: &str) -> Sym {
        if let Some(&s) = self.by_name.get(name) {
            return s;
        }
        let s = self.names.len() as Sym;
        let name: Arc<str> = name.into();
        self.names.push(name.clone());
        self.by_name.insert(name, s);
        s
    }

    pub fn name(&self, s: Sym) -> &str {
        &self.names[s as usize]
    }

    /// The number of `name` if it was ever interned.
    pub fn lookup(&self, name: &str) -> Option<Sym> {
        self.by_name.get(name).copied()
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}
