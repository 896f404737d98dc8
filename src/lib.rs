//! ixn: a thread-per-core Interaction Server.
//!
//! - `config`: the TOML configuration and the embedded default.
//! - `credentials`: client passwords, hashed or in clear text.
//! - `server`: executors, connections, start-up and shutdown.
//! - `client`: the Rust client library (used by ixnctl, ixn-bench, tests).
//!
//! The pure core (protocol, state machine) lives in the `ixn-shard` crate,
//! durable storage in `ixn-storage`.

pub mod client;
pub mod config;
pub mod credentials;
pub mod logging;
pub mod server;

pub use ixn_shard as shard;
