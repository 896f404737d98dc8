//! The interactions table's columns and how a record maps onto them.

use ixn_shard::interaction::InteractionRecord;

/// Columns of `interactions`, in the order every statement uses (the
/// order of storage/sql/*/isdb.sql, schema version 3).
pub(crate) const COLUMNS: [&str; 21] = [
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
    "workbin_owner",
    "submit_order",
    "assigned_to",
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
    /// Nullable short text column: NULL is `None`.
    pub const WORKBIN_OWNER: usize = 18;
    /// Nullable BIGINT: NULL is `None` (rows upgraded from version 1).
    pub const SUBMIT_ORDER: usize = 19;
    /// Nullable short text column (schema version 3): NULL is `None`
    /// (nobody handles the interaction, and rows upgraded from version 1
    /// or 2).
    pub const ASSIGNED_TO: usize = 20;
}

/// What turns an INSERT of whole rows into a write in place (SQLite and
/// PostgreSQL): a row whose id exists gets every other column of the new
/// one.
pub(crate) fn on_conflict() -> String {
    let set: Vec<String> = COLUMNS[1..].iter().map(|c| format!("{c} = excluded.{c}")).collect();
    format!(" ON CONFLICT (id) DO UPDATE SET {}", set.join(", "))
}

/// Longest id the schema holds (VARCHAR(64)), in bytes.
pub(crate) const MAX_ID: usize = 64;
/// Longest name the schema holds (VARCHAR(255)), in bytes (so it fits
/// whatever the engine counts in).
pub(crate) const MAX_NAME: usize = 255;

/// The short text columns of a record, by column index (id, names).
/// `None` only for a NULL `workbin_owner` or `assigned_to` (the other names
/// are never NULL when ixn writes them).
pub(crate) fn text_field(r: &InteractionRecord, c: usize) -> Option<&str> {
    match c {
        0 => Some(&r.id),
        1 => Some(&r.tenant),
        2 => Some(&r.media_type),
        3 => Some(&r.interaction_type),
        4 => Some(&r.interaction_subtype),
        5 => Some(&r.queue),
        7 => Some(&r.submitted_by),
        col::WORKBIN_OWNER => r.workbin_owner.as_deref(),
        col::ASSIGNED_TO => r.assigned_to.as_deref(),
        _ => unreachable!("column {c} is not a short text column"),
    }
}

/// Indexes of the short text columns (VARCHAR(64) id, VARCHAR(255) names).
pub(crate) const TEXT_COLUMNS: [usize; 9] = [0, 1, 2, 3, 4, 5, 7, col::WORKBIN_OWNER, col::ASSIGNED_TO];

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

/// Sets a short text column from the database: NULL (`None`) is `None` for
/// `workbin_owner` and `assigned_to`, the empty string for the others
/// (Oracle stores '' as NULL).
pub(crate) fn set_text_field(r: &mut InteractionRecord, c: usize, v: Option<String>) {
    let f = match c {
        0 => &mut r.id,
        1 => &mut r.tenant,
        2 => &mut r.media_type,
        3 => &mut r.interaction_type,
        4 => &mut r.interaction_subtype,
        5 => &mut r.queue,
        7 => &mut r.submitted_by,
        col::WORKBIN_OWNER => {
            r.workbin_owner = v;
            return;
        }
        col::ASSIGNED_TO => {
            r.assigned_to = v;
            return;
        }
        _ => unreachable!("column {c} is not a short text column"),
    };
    *f = v.unwrap_or_default();
}

/// A record with every field empty, unset or zero, for loading into.
pub(crate) fn empty_record() -> InteractionRecord {
    InteractionRecord {
        id: String::new(),
        tenant: String::new(),
        media_type: String::new(),
        interaction_type: String::new(),
        interaction_subtype: String::new(),
        queue: String::new(),
        priority: 0,
        submitted_by: String::new(),
        received_at: None,
        submitted_at: None,
        placed_in_queue_at: None,
        moved_to_queue_at: None,
        delivered_at: None,
        assigned_at: None,
        held_at: None,
        completed_at: None,
        properties: Default::default(),
        version: 0,
        workbin_owner: None,
        submit_order: None,
        assigned_to: None,
    }
}

/// Why a record cannot be stored as is, if it cannot.
pub(crate) fn refuse_reason(r: &InteractionRecord) -> Option<String> {
    if let Some(why) = refuse_id(&r.id) {
        return Some(why);
    }
    for c in TEXT_COLUMNS {
        let Some(v) = text_field(r, c) else { continue };
        if v.len() > MAX_NAME {
            return Some(format!("{} of {} bytes ({MAX_NAME} allowed)", COLUMNS[c], v.len()));
        }
        if v.contains('\0') {
            return Some(format!("{} contains a NUL character, which the database cannot store", COLUMNS[c]));
        }
    }
    None
}

/// Why an interaction id cannot be stored, if it cannot. A NUL is refused
/// in every text column: PostgreSQL cannot store one, and both the
/// PostgreSQL and the SQLite ODBC drivers silently cut the text at it.
pub(crate) fn refuse_id(id: &str) -> Option<String> {
    if id.is_empty() || id.len() > MAX_ID {
        return Some(format!("interaction id of {} bytes (1 to {MAX_ID} allowed)", id.len()));
    }
    if id.contains('\0') {
        return Some("the interaction id contains a NUL character, which the database cannot store".to_string());
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
    hex_into(r.properties.bytes(), out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workbin_owner_is_a_nullable_text_column() {
        assert_eq!(COLUMNS[col::WORKBIN_OWNER], "workbin_owner");
        assert_eq!(COLUMNS[col::VERSION], "version");
        assert_eq!(NCOLS, 21);
        let mut r = empty_record();
        r.id = "0001x".into();
        assert_eq!(text_field(&r, col::WORKBIN_OWNER), None);
        assert_eq!(text_field(&r, 7), Some(""));
        r.workbin_owner = Some("agent-7".into());
        assert_eq!(text_field(&r, col::WORKBIN_OWNER), Some("agent-7"));
        // NULL reads back as None for workbin_owner, as '' for the others.
        set_text_field(&mut r, col::WORKBIN_OWNER, None);
        set_text_field(&mut r, 7, None);
        assert_eq!((r.workbin_owner.as_deref(), r.submitted_by.as_str()), (None, ""));
        set_text_field(&mut r, col::WORKBIN_OWNER, Some(String::new()));
        assert_eq!(r.workbin_owner.as_deref(), Some(""));
    }

    #[test]
    fn submit_order_is_the_nullable_column_after_workbin_owner() {
        assert_eq!(COLUMNS[col::SUBMIT_ORDER], "submit_order");
        assert_eq!(col::SUBMIT_ORDER, col::WORKBIN_OWNER + 1);
        assert!(!TEXT_COLUMNS.contains(&col::SUBMIT_ORDER));
        assert!(!(col::FIRST_TIME..=col::LAST_TIME).contains(&col::SUBMIT_ORDER));
        assert_eq!(empty_record().submit_order, None);
    }

    #[test]
    fn assigned_to_is_the_nullable_last_text_column() {
        assert_eq!(COLUMNS[col::ASSIGNED_TO], "assigned_to");
        assert_eq!(col::ASSIGNED_TO, col::SUBMIT_ORDER + 1);
        assert_eq!(col::ASSIGNED_TO, NCOLS - 1);
        assert!(TEXT_COLUMNS.contains(&col::ASSIGNED_TO));
        let mut r = empty_record();
        assert_eq!(r.assigned_to, None);
        r.id = "0001x".into();
        assert_eq!(text_field(&r, col::ASSIGNED_TO), None, "None binds SQL NULL");
        r.assigned_to = Some("agent7".into());
        assert_eq!(text_field(&r, col::ASSIGNED_TO), Some("agent7"));
        // Apart from workbin_owner: setting one leaves the other alone.
        assert_eq!(text_field(&r, col::WORKBIN_OWNER), None);
        // NULL reads back as None, not as Some("").
        set_text_field(&mut r, col::ASSIGNED_TO, None);
        assert_eq!(r.assigned_to, None);
        set_text_field(&mut r, col::ASSIGNED_TO, Some("agent7".into()));
        assert_eq!((r.assigned_to.as_deref(), r.workbin_owner.as_deref()), (Some("agent7"), None));
        set_text_field(&mut r, col::ASSIGNED_TO, Some(String::new()));
        assert_eq!(r.assigned_to.as_deref(), Some(""));
    }

    #[test]
    fn a_workbin_owner_over_255_bytes_is_refused() {
        let mut r = empty_record();
        r.id = "0001x".into();
        assert_eq!(refuse_reason(&r), None);
        r.workbin_owner = Some("é".repeat(127) + "a");
        assert_eq!(refuse_reason(&r), None, "255 bytes fit");
        r.workbin_owner = Some("é".repeat(128));
        assert_eq!(refuse_reason(&r).as_deref(), Some("workbin_owner of 256 bytes (255 allowed)"));
    }

    #[test]
    fn an_assigned_to_over_255_bytes_is_refused() {
        let mut r = empty_record();
        r.id = "0001x".into();
        r.assigned_to = Some("é".repeat(127) + "a");
        assert_eq!(refuse_reason(&r), None, "255 bytes fit");
        r.assigned_to = Some("é".repeat(128));
        assert_eq!(refuse_reason(&r).as_deref(), Some("assigned_to of 256 bytes (255 allowed)"));
        r.assigned_to = Some("a".repeat(256));
        assert_eq!(refuse_reason(&r).as_deref(), Some("assigned_to of 256 bytes (255 allowed)"));
    }

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
