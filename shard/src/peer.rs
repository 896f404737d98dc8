//! Messages between the shards of one node. A shard that holds a client's
//! connection coordinates that client's requests which span every shard
//! (pull, search, workbin content, snapshots, queue depth): it sends one of
//! these to each shard, itself included, and combines the answers.
//! Channels between two shards deliver in order (FIFO); the design relies
//! on that (docs/architecture.md, "Global order").

use std::sync::Arc;

use crate::catalog::{TenantIdx, ViewIdx, WorkbinIdx};
use crate::condition::Condition;
use crate::machine::Origin;
use crate::value::KvList;
use crate::view::ViewKey;

/// Many interaction ids in one string: two allocations for any number of
/// ids. Scans send their results between shards this way, and snapshots
/// keep theirs so, because a million small strings made on one thread and
/// freed on another leave work for the allocator of the first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdList {
    text: String,
    ends: Vec<u32>,
}

impl IdList {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, id: &str) {
        self.text.push_str(id);
        self.ends.push(u32::try_from(self.text.len()).expect("an id list under 4 GiB"));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).map(|i| self.get(i))
    }
}

impl<'a> FromIterator<&'a str> for IdList {
    fn from_iter<T: IntoIterator<Item = &'a str>>(iter: T) -> Self {
        let mut l = IdList::new();
        for id in iter {
            l.push(id);
        }
        l
    }
}

/// A client that holds locks: its connection, and its name for answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub origin: Origin,
    pub name: Arc<str>,
}

/// What a lock is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// Pulled by a routing client; ends with a move, a stop, the routing
    /// timeout, or the client's disconnection.
    Routing,
    /// Held by a locking snapshot until it is released.
    Snapshot(u64),
}

/// One candidate from a shard's view head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub key: ViewKey,
    pub tie: u64,
    pub id: Box<str>,
}

/// Which interactions a scan selects.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// RequestFindInteractions and RequestTakeSnapshot.
    Condition { tenant: Option<TenantIdx>, condition: Arc<Condition> },
    /// RequestGetWorkbinContent.
    Workbin { tenant: TenantIdx, workbin: WorkbinIdx, owner: Box<str> },
}

/// One queue's depth on one shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Interactions in the queue, locked ones included.
    pub interactions: u64,
    pub locked: u64,
    /// Entries in each of the queue's views, in the catalog's order.
    pub views: Vec<u64>,
}

/// What a scan is for.
#[derive(Clone, Debug, PartialEq)]
pub enum ScanMode {
    /// Describe the matches (search, workbin content).
    Find,
    /// A snapshot's cut: list the matches, lock them to `lock` if given
    /// (those not locked by another client), then hold every change until
    /// [`PeerMsg::Thaw`] so all shards are cut at one instant.
    Snapshot { snapshot: u64, lock: Option<Holder> },
}

#[derive(Clone, Debug, PartialEq)]
pub enum PeerMsg {
    /// Pull, step 1: send up to `n` entries from the head of `view`. With
    /// `watch`, a shard whose view is empty remembers to send
    /// [`PeerMsg::ViewFilled`] when an entry arrives.
    PullRead {
        op: u64,
        tenant: TenantIdx,
        view: ViewIdx,
        n: u32,
        watch: bool,
    },
    PullHeads {
        op: u64,
        heads: Vec<Head>,
    },
    /// Pull, step 2: lock these to `holder` if each is still in the view
    /// with the same key, and describe the ones locked.
    PullLock {
        op: u64,
        tenant: TenantIdx,
        view: ViewIdx,
        holder: Holder,
        heads: Vec<Head>,
    },
    PullLocked {
        op: u64,
        got: Vec<(Head, KvList)>,
        missed: u32,
    },
    /// An entry arrived in a view that a waiting pull watched.
    ViewFilled {
        op: u64,
    },
    /// A pull that may have left watchers has ended: forget them.
    Unwatch {
        op: u64,
        tenant: TenantIdx,
        view: ViewIdx,
    },

    /// Search: the first `limit` matches in submission order, and how many
    /// matched in all.
    Scan {
        op: u64,
        filter: Filter,
        limit: u32,
        mode: ScanMode,
    },
    /// The matches in submission order: their ties and ids, and for
    /// [`ScanMode::Find`] their descriptions (empty otherwise).
    Scanned {
        op: u64,
        ties: Vec<u64>,
        ids: IdList,
        described: Vec<KvList>,
        total: u64,
    },
    /// Snapshot: the cut is taken; the shard may go on.
    Thaw {
        op: u64,
    },

    /// Describe these interactions (a snapshot page).
    Describe {
        op: u64,
        ids: Vec<Box<str>>,
    },
    /// The descriptions as encoded INTERACTION attributes, one after the
    /// other in one buffer; `ends[i]` is where the i-th ends, and an empty
    /// one means that interaction is gone. (One buffer, because what one
    /// shard allocates and another frees costs the first one later.)
    Described {
        op: u64,
        encoded: Vec<u8>,
        ends: Vec<u32>,
    },

    /// Release locks: those of `holder` (all, or one snapshot's), or of the
    /// listed interactions. With `confirm`, answer [`PeerMsg::Unlocked`].
    Unlock {
        origin: Origin,
        kind: Option<LockKind>,
        ids: Option<IdList>,
        confirm: Option<u64>,
    },
    Unlocked {
        op: u64,
    },

    QueueDepth {
        op: u64,
        tenant: TenantIdx,
    },
    QueueDepths {
        op: u64,
        queues: Vec<QueueDepth>,
    },
}
