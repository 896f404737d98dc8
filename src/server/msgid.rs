//! Stable numeric ids of operator log messages (the `msg_id` field). They
//! never change meaning; docs/operations.md lists them. Storage messages
//! (27xxx) are defined by the storage crate.

pub const SERVER_STARTING: u32 = 1001;
pub const LISTENING: u32 = 1002;
pub const PROTECTED_MODE: u32 = 1003;
pub const SHUTDOWN_REQUESTED: u32 = 1004;
pub const SERVER_STOPPED: u32 = 1005;
pub const SHARDS_STOPPED: u32 = 1008;
pub const MEMLOCK_LOW: u32 = 1006;
pub const INTERACTIONS_LOADED: u32 = 1007;
pub const SHARD_STARTED: u32 = 1010;
pub const SHARD_STOPPED: u32 = 1011;
pub const SHUTDOWN_TIMEOUT: u32 = 1012;
pub const WATCHDOG_WAKE: u32 = 1013;
pub const ADDRESS_BUSY: u32 = 1014;
pub const MANAGEMENT_LISTENING: u32 = 1015;
pub const MANAGEMENT_REFUSED: u32 = 1016;
pub const CLEAR_PASSWORDS: u32 = 1017;
pub const RELOADED: u32 = 1018;
pub const RELOAD_REFUSED: u32 = 1019;
pub const CLIENT_REMOVED: u32 = 1032;
pub const REMOVED_QUEUE_HOLDS: u32 = 1033;
pub const CLIENT_CONNECTED: u32 = 1020;
pub const CLIENT_REGISTERED: u32 = 1021;
pub const CLIENT_DISCONNECTED: u32 = 1022;
pub const AUTH_FAILED: u32 = 1023;
pub const SLOW_CLIENT: u32 = 1024;
pub const FATAL_FRAME: u32 = 1025;
pub const REQUEST_REFUSED: u32 = 1026;
pub const CONNECTION_LIMIT: u32 = 1027;
pub const ACCEPT_FAILED: u32 = 1028;
pub const WRITE_TIMEOUT: u32 = 1029;
pub const HEARTBEAT_TIMEOUT: u32 = 1030;
pub const SESSION_CLOSED: u32 = 1031;
pub const PANIC: u32 = 1090;
pub const INTERNAL: u32 = 1099;
