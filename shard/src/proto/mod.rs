//! Protocol v1: framing, attributes, message and error numbers, typed
//! requests. docs/protocol.md is the specification.

pub mod frame;
pub mod msg;
pub mod request;

pub use frame::{Attr, Frame, Header};
pub use msg::{attr, msg_type, ClientType, ErrorCode};
pub use request::{ProtoError, Request, Submit};
