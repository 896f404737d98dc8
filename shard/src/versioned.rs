//! A value one thread replaces now and then (a reload's catalog) and other
//! threads read often: readers keep a copy and compare one counter before
//! each use, so the lock is taken only when the value changed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub struct Versioned<T> {
    /// Raised after each replacement, under the lock.
    generation: AtomicU64,
    value: Mutex<Arc<T>>,
}

/// A reader's copy of a [`Versioned`] value and the generation it is of.
pub struct Cached<T> {
    generation: u64,
    value: Arc<T>,
}

impl<T> Versioned<T> {
    pub fn new(value: Arc<T>) -> Self {
        Versioned { generation: AtomicU64::new(0), value: Mutex::new(value) }
    }

    /// Replaces the value: readers see it at their next look.
    pub fn publish(&self, value: Arc<T>) {
        let mut current = self.value.lock().unwrap_or_else(|e| e.into_inner());
        *current = value;
        self.generation.fetch_add(1, Ordering::Release);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The value now (takes the lock).
    pub fn get(&self) -> Arc<T> {
        self.value.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A reader's copy of the value now.
    pub fn cached(&self) -> Cached<T> {
        let generation = self.generation();
        Cached { generation, value: self.get() }
    }

    /// `copy` brought up to date if the value changed since it was taken
    /// (one atomic load when it did not); returns the value.
    pub fn refresh<'a>(&self, copy: &'a mut Cached<T>) -> &'a Arc<T> {
        let now = self.generation();
        if now != copy.generation {
            // The value read may be newer still than `now`: the next look
            // then reads it again, which is harmless.
            copy.generation = now;
            copy.value = self.get();
        }
        &copy.value
    }
}

impl<T> Cached<T> {
    pub fn value(&self) -> &Arc<T> {
        &self.value
    }
}

impl<T> std::fmt::Debug for Versioned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Versioned(generation {})", self.generation())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_follows_each_publication() {
        let v = Versioned::new(Arc::new(1));
        let mut c = v.cached();
        assert_eq!(**v.refresh(&mut c), 1);
        v.publish(Arc::new(2));
        assert_eq!(**c.value(), 1, "a copy changes only when refreshed");
        assert_eq!(**v.refresh(&mut c), 2);
        v.publish(Arc::new(3));
        v.publish(Arc::new(4));
        assert_eq!(**v.refresh(&mut c), 4);
        assert_eq!(v.generation(), 3);
    }
}
