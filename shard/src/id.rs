//! Interaction ids and partitions.
//!
//! A generated id is 16 characters of Crockford base32 (digits and upper-case
//! letters without I, L, O, U; the alphabet is in ASCII order, so ids sort as
//! the numbers they encode). The 80 bits are, from the most significant:
//!
//! | bits | field                                          |
//! |------|------------------------------------------------|
//! | 42   | milliseconds since 2024-01-01T00:00:00Z        |
//! | 18   | sequence within the millisecond and shard      |
//! | 8    | node id (unique within a cluster)              |
//! | 12   | partition (0..4096)                            |
//!
//! So ids are unique across a cluster, readable, sort by creation time, and
//! strictly increase among the ids one shard makes.
//! The partition decides which shard owns the interaction: partition `p` is
//! owned by shard `p % shards`, so a restart with another core count only
//! remaps partitions. Client-given ids that are not generated ids are mapped
//! to a partition by a stable hash (FNV-1a), the same on every run.

pub const PARTITIONS: u16 = 4096;
pub const ID_LEN: usize = 16;
/// Unix epoch milliseconds of the id epoch (2024-01-01T00:00:00Z).
pub const ID_EPOCH_MS: i64 = 1_704_067_200_000;
/// Longest client-given id accepted.
pub const MAX_CLIENT_ID_LEN: usize = 64;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const TIME_BITS: u32 = 42;
const NODE_BITS: u32 = 8;
const PARTITION_BITS: u32 = 12;
const SEQ_BITS: u32 = 18;
const _: () = assert!(TIME_BITS + NODE_BITS + PARTITION_BITS + SEQ_BITS == 80);
const _: () = assert!(1 << PARTITION_BITS == PARTITIONS as u32);

/// The fields a generated id carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdParts {
    pub time_ms: i64,
    pub node: u8,
    pub partition: u16,
    pub seq: u32,
}

fn digit(c: u8) -> Option<u8> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u8)
}

/// Encodes id fields as 16 characters.
pub fn encode(p: IdParts) -> String {
    let t = (p.time_ms - ID_EPOCH_MS).clamp(0, (1i64 << TIME_BITS) - 1) as u128;
    assert!(p.partition < PARTITIONS && p.seq < (1 << SEQ_BITS));
    let v: u128 = (t << (SEQ_BITS + NODE_BITS + PARTITION_BITS))
        | ((p.seq as u128) << (NODE_BITS + PARTITION_BITS))
        | ((p.node as u128) << PARTITION_BITS)
        | p.partition as u128;
    let mut out = [0u8; ID_LEN];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 5 * (ID_LEN - 1 - i);
        *slot = ALPHABET[((v >> shift) & 31) as usize];
    }
    String::from_utf8(out.to_vec()).expect("alphabet is ASCII")
}

/// Decodes a generated id; `None` if `id` is not one.
pub fn decode(id: &str) -> Option<IdParts> {
    let b = id.as_bytes();
    if b.len() != ID_LEN {
        return None;
    }
    let mut v: u128 = 0;
    for &c in b {
        v = (v << 5) | digit(c)? as u128;
    }
    Some(IdParts {
        time_ms: (v >> (SEQ_BITS + NODE_BITS + PARTITION_BITS)) as i64 + ID_EPOCH_MS,
        seq: ((v >> (NODE_BITS + PARTITION_BITS)) & ((1 << SEQ_BITS) - 1)) as u32,
        node: ((v >> PARTITION_BITS) & 0xff) as u8,
        partition: (v & (PARTITIONS as u128 - 1)) as u16,
    })
}

/// Whether a client may use `id` as an interaction id: 1 to 64 characters
/// of letters, digits, `-`, `_`, `.` and `:`.
pub fn is_valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CLIENT_ID_LEN
        && id.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
}

/// The partition an id belongs to: decoded from a generated id, hashed from
/// any other.
pub fn partition_of(id: &str) -> u16 {
    match decode(id) {
        Some(p) => p.partition,
        None => (fnv1a(id.as_bytes()) % PARTITIONS as u64) as u16,
    }
}

/// The shard that owns a partition.
pub fn owner_shard(partition: u16, shards: u16) -> u16 {
    assert!(shards > 0);
    partition % shards
}

/// The shard that owns an interaction id.
pub fn owner_of(id: &str, shards: u16) -> u16 {
    owner_shard(partition_of(id), shards)
}

/// FNV-1a, 64 bits.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Generates ids for one shard: only partitions the shard owns, round robin,
/// strictly increasing within the shard. Deterministic: time comes from the
/// caller.
#[derive(Clone, Debug)]
pub struct IdGen {
    node: u8,
    owned: Vec<u16>,
    next_partition: usize,
    last_ms: i64,
    seq: u32,
}

impl IdGen {
    pub fn new(node: u8, shard: u16, shards: u16) -> Self {
        assert!(shard < shards && shards <= PARTITIONS);
        let owned: Vec<u16> = (0..PARTITIONS).filter(|&p| owner_shard(p, shards) == shard).collect();
        assert!(!owned.is_empty());
        IdGen { node, owned, next_partition: 0, last_ms: 0, seq: 0 }
    }

    /// A new id at time `now_ms`. If the clock went back, or 2^18 ids were
    /// made in one millisecond, the id's time moves forward past the last one
    /// so ids from this shard never repeat.
    pub fn next(&mut self, now_ms: i64) -> String {
        if now_ms > self.last_ms {
            self.last_ms = now_ms;
            self.seq = 0;
        } else if self.seq + 1 >= (1 << SEQ_BITS) {
            self.last_ms += 1;
            self.seq = 0;
        } else {
            self.seq += 1;
        }
        let partition = self.owned[self.next_partition];
        self.next_partition = (self.next_partition + 1) % self.owned.len();
        encode(IdParts { time_ms: self.last_ms, node: self.node, partition, seq: self.seq })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sort_by_time() {
        let a = IdParts { time_ms: ID_EPOCH_MS + 1000, node: 3, partition: 4095, seq: 7 };
        let b = IdParts { time_ms: ID_EPOCH_MS + 1001, node: 0, partition: 0, seq: 0 };
        let (ea, eb) = (encode(a), encode(b));
        assert_eq!(ea.len(), ID_LEN);
        assert_eq!(decode(&ea), Some(a));
        assert_eq!(decode(&eb), Some(b));
        assert!(ea < eb);
    }

    #[test]
    fn generated_ids_land_on_their_shard_and_never_repeat() {
        let shards = 3;
        for shard in 0..shards {
            let mut g = IdGen::new(1, shard, shards);
            let mut seen = std::collections::HashSet::new();
            let mut prev = String::new();
            for i in 0..10_000 {
                let id = g.next(ID_EPOCH_MS + (i / 1000));
                assert_eq!(owner_of(&id, shards), shard);
                assert!(id > prev, "ids increase within a shard");
                assert!(seen.insert(id.clone()));
                prev = id;
            }
        }
    }

    #[test]
    fn clock_going_back_keeps_ids_increasing() {
        let mut g = IdGen::new(1, 0, 1);
        let a = g.next(ID_EPOCH_MS + 5000);
        let b = g.next(ID_EPOCH_MS + 10);
        assert!(b > a);
    }

    #[test]
    fn client_ids_hash_to_a_stable_partition() {
        assert_eq!(partition_of("order-42"), partition_of("order-42"));
        assert!(partition_of("order-42") < PARTITIONS);
        assert!(is_valid_client_id("order-42:x.y_z"));
        assert!(!is_valid_client_id(""));
        assert!(!is_valid_client_id("has space"));
        assert!(!is_valid_client_id(&"x".repeat(65)));
    }
}
