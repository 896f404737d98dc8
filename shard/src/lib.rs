//! ixn's pure core: the domain model, the wire protocol codec and the shard
//! state machine. Nothing in this crate does I/O, reads a clock or draws a
//! random number, so everything here can be tested directly and replayed
//! deterministically (see `machine` and docs/architecture.md).

pub mod agent;
pub mod audit;
pub mod catalog;
pub mod condition;
pub mod coord;
pub mod event;
pub mod evolve;
pub mod gauges;
pub mod id;
pub mod interaction;
pub mod machine;
pub mod packed;
pub mod peer;
pub mod proto;
pub mod report;
pub mod routing;
pub mod scan;
pub mod store;
pub mod symbols;
pub mod tally;
pub(crate) mod timers;
pub mod value;
pub mod versioned;
pub mod view;

pub use value::{KvList, Value};
