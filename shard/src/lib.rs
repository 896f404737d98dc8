//! ixn's pure core: the domain model, the wire protocol codec and the shard
//! state machine. Nothing in this crate does I/O, reads a clock or draws a
//! random number, so everything here can be tested directly and replayed
//! deterministically (see `machine` and docs/architecture.md).

pub mod catalog;
pub mod condition;
pub mod id;
pub mod interaction;
pub mod machine;
pub mod proto;
pub mod value;

pub use value::{KvList, Value};
