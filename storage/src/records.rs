//! The interactions table's columns and how a record maps onto them.

use ixn_shard::interaction::InteractionRecord;

/// Columns of `interactions`, in the order every statement uses.
pub(crate) const COLUMNS: [&str; 18] = [
    "id",
    "tenant",
    "media_type",
    "interaction_type",
    "interaction_subtype",
    "queue",
    "priority",
    "submitted_by",
    "received_at",
    "submitted_at",
    "placed_in_queue_at",
    "moved_to_queue_at",
    "delivered_at",
    "assigned_at",
    "held_at",
    "completed_at",
    "properties",
    "version",
];
pub(crate) const NCOLS: usize = COLUMNS.len();

/// Indexes into [`COLUMNS`].
pub(crate) mod col {
    pub const ID: usize = 0;
    pub const PRIORITY: usize = 6;
    pub const FIRST_TIME: usize = 8;
    pub const LAST_TIME: usize = 15;
    pub const PROPERTIES: usize = 16;
    pub const VERSION: usize = 17;
}

/// Longest id the schema holds (VARCHAR(64)), in bytes.
pub(crate) const MAX_ID: usize = 64;
/// Longest name the schema holds (VARCHAR(255)), in bytes (so it fits
/// whatever the engine counts in).
pub(crate) const MAX_NAME: usize = 255;

/// The short text columns of a record, by column index (id, names).
pub(crate) fn text_field(r: &InteractionRecord, c: usize) -> &str {
    match c {
        0 => &r.id,
        1 => &r.tenant,
        2 => &r.media_type,
        3 => &r.interaction_type,
        4 => &r.interaction_subtype,
        5 => &r.queue,
        7 => &r.submitted_by,
        _ => unreachable!("column {c} is not a short text column"),
    }
}

/// Indexes of the short text columns.
pub(crate) const TEXT_COLUMNS: [usize; 7] = [0, 1, 2, 3, 4, 5, 7];

pub(crate) fn time_field(r: &InteractionRecord, c: usize) -> Option<i64> {
    match c {
        8 => r.received_at,
        9 => r.submitted_at,
        10 => r.placed_in_queue_at,
        11 => r.moved_to_queue_at,
        12 => r.delivered_at,
        13 => r.assigned_at,
        14 => r.held_at,
        15 => r.completed_at,
        _ => unreachable!("column {c} is not a time column"),
    }
}

pub(crate) fn set_time_field(r: &mut InteractionRecord, c: usize, v: Option<i64>) {
    let f = match c {
        8 => &mut r.received_at,
        9 => &mut r.submitted_at,
        10 => &mut r.placed_in_queue_at,
        11 => &mut r.moved_to_queue_at,
        12 => &mut r.delivered_at,
        13 => &mut r.assigned_at,
        14 => &mut r.held_at,
        15 => &mut r.completed_at,
        _ => unreachable!("column {c} is not a time column"),
    };
    *f = v;
}

pub(crate) fn set_text_field(r: &mut InteractionRecord, c: usize, v: String) {
    let f = match c {
        0 => &mut r.id,
        1 => &mut r.tenant,
        2 => &mut r.media_type,
        3 => &mut r.interaction_type,
        4 => &mut r.interaction_subtype,
        5 => &mut r.queue,
        7 => &mut r.submitted_by,
        _ => unreachable!("column {c} is not a short text column"),
    };
    *f = v;
}

/// Why a record cannot be stored as is, if it cannot.
pub(crate) fn refuse_reason(r: &InteractionRecord) -> Option<String> {
    if r.id.is_empty() || r.id.len() > MAX_ID {
        return Some(format!("interaction id of {} bytes (1 to {MAX_ID} allowed)", r.id.len()));
    }
    for c in TEXT_COLUMNS {
        let v = text_field(r, c);
        if v.len() > MAX_NAME {
            return Some(format!("{} of {} bytes ({MAX_NAME} allowed)", COLUMNS[c], v.len()));
        }
    }
    None
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends the lower-case hex of `bytes` to `out`.
pub(crate) fn hex_into(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
}

/// Decodes hex (either case); `None` if it is not hex.
pub(crate) fn unhex(s: &[u8]) -> Option<Vec<u8>> {
    if s.len() & 1 == 1 {
        return None;
    }
    fn nib(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    s.chunks_exact(2).map(|p| Some(nib(p[0])? << 4 | nib(p[1])?)).collect()
}

/// The properties column of a record: hex of the encoded key-value list.
pub(crate) fn properties_hex(r: &InteractionRecord, out: &mut Vec<u8>) {
    out.clear();
    let encoded = ixn_shard::proto::frame::encode_list(&r.properties);
    hex_into(&encoded, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut h = Vec::new();
        hex_into(&bytes, &mut h);
        assert_eq!(h.len(), 512);
        assert_eq!(&h[..6], b"000102");
        assert_eq!(unhex(&h).unwrap(), bytes);
        assert_eq!(unhex(b"0A0b").unwrap(), vec![10, 11]);
        assert!(unhex(b"0g").is_none());
        assert!(unhex(b"abc").is_none());
    }
}
