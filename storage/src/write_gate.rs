//! One writing transaction at a time on an SQLite database, among the
//! threads of this process that write to it (the writer, the event log's
//! shipper).
//!
//! SQLite itself lets one connection write at a time; another that finds
//! the lock taken is put to sleep by the driver's busy handler, for 1, 2,
//! 5, 10... ms at a time, however soon the lock is free again. Under load
//! that sleep was the writer's p99 (the shipper deleting shipped events
//! from the outbox). Taking this gate before the first write and keeping it
//! to the COMMIT makes the threads queue on a mutex instead, which hands
//! over the moment the holder commits. Other engines lock rows, not the
//! database, and get no gate. The busy handler stays as the fallback for
//! writers outside this process.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::Engine;

#[derive(Clone, Debug, Default)]
pub(crate) struct WriteGate(Option<Arc<Mutex<()>>>);

impl WriteGate {
    /// A gate on SQLite; none on other engines.
    pub(crate) fn for_engine(engine: &Engine) -> Self {
        WriteGate((*engine == Engine::Sqlite).then(|| Arc::new(Mutex::new(()))))
    }

    /// Waits for the gate; it is held until the guard is dropped (after
    /// the COMMIT or ROLLBACK). `None` where there is no gate.
    pub(crate) fn enter(&self) -> Option<MutexGuard<'_, ()>> {
        // A panic while holding it ends the process anyway.
        self.0.as_ref().map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sqlite_has_a_gate_and_it_is_shared_by_its_clones() {
        assert!(WriteGate::for_engine(&Engine::Postgres).enter().is_none());
        let g = WriteGate::for_engine(&Engine::Sqlite);
        let copy = g.clone();
        let held = g.enter();
        assert!(held.is_some());
        assert!(copy.0.as_ref().unwrap().try_lock().is_err(), "a clone is the same gate");
        drop(held);
        assert!(copy.enter().is_some());
    }
}
