//! Checking hashed client passwords off the shards.
//!
//! An Argon2 check costs tens of milliseconds by design: on a shard it
//! would hold every connection of that shard. So a registration whose
//! client has a hashed password, and whose credential the shard has not
//! verified before, is handed to the verifier thread; the connection reads
//! nothing more until the answer comes back through the shard's inbox,
//! and the shard then completes or refuses the registration (conn.rs).
//!
//! After a success the shard keeps a fingerprint of the credential per
//! client name (credentials.rs), so the next registration with the same
//! credential (10,000 desktops sharing one client entry, reconnecting
//! after a restart) is checked on the shard in microseconds. Wrong
//! credentials are always checked the slow way, and the queue to the
//! verifier is bounded: past it a registration is refused with 52, never
//! queued without limit.

use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};
use ixn_shard::machine::TenantScope;
use ixn_shard::proto::ClientType;

use super::notify::Inbox;

/// Registrations waiting for the verifier, all shards together.
pub const MAX_WAITING: usize = 1024;

/// A RequestRegisterClient as the connection answers it, whether at once
/// or after the verifier's check.
pub struct Registration {
    /// SessionId (0: the connection's own) and reference id.
    pub wire: u32,
    pub ref_id: u32,
    pub client_type: ClientType,
    pub name: String,
    pub heartbeat: Option<u32>,
}

/// A registration waiting for its credential check.
pub struct Check {
    pub shard: u16,
    pub conn: u64,
    pub reg: Registration,
    pub credential: String,
    /// The configured hash, and the tenants the client may act on.
    pub phc: Arc<str>,
    pub tenants: TenantScope,
}

/// A check done.
pub struct Verdict {
    pub check: Check,
    pub ok: bool,
}

pub type AuthInbox = Inbox<Verdict>;

/// The verifier thread's queue.
#[derive(Clone)]
pub struct Verifier {
    tx: Sender<Check>,
}

impl Verifier {
    /// Starts the verifier thread; its verdicts go to `inboxes[check.shard]`.
    pub fn start(inboxes: Vec<Arc<AuthInbox>>) -> Result<Verifier, String> {
        let (tx, rx) = crossbeam_channel::bounded::<Check>(MAX_WAITING);
        std::thread::Builder::new()
            .name("ixn-auth".into())
            .spawn(move || {
                for check in rx {
                    let ok = crate::credentials::verify_hashed(&check.phc, &check.credential);
                    let shard = check.shard as usize;
                    inboxes[shard].push(Verdict { check, ok });
                }
            })
            .map_err(|e| format!("cannot start the credential verifier thread: {e}"))?;
        Ok(Verifier { tx })
    }

    /// Queues a check; gives it back when MAX_WAITING wait already.
    pub fn submit(&self, check: Check) -> Result<(), Check> {
        self.tx.try_send(check).map_err(|e| match e {
            TrySendError::Full(c) | TrySendError::Disconnected(c) => c,
        })
    }
}
