//! Reading rows back: every live interaction at start, and one row by id
//! (a writer resolving a COMMIT whose reply was lost).

use std::time::Instant;

use ixn_shard::interaction::InteractionRecord;
use ixn_shard::packed::PackedList;
use odbc_api::{Connection, Cursor, CursorRow, IntoParameter, Nullable};

use crate::conn::diag;
use crate::records::{self, col, COLUMNS};
use crate::{msg_id, StorageError};

pub(crate) fn load_live(conn: &Connection<'_>, target: &str) -> Result<Vec<InteractionRecord>, StorageError> {
    let started = Instant::now();
    let fail = |what: &str, e: &odbc_api::Error| {
        StorageError::new(format!(
            "could not load the live interactions from the database at {target}: {what}: {}",
            diag(e)
        ))
    };
    let sql = format!("SELECT {} FROM interactions", COLUMNS.join(", "));
    let mut out = Vec::new();
    let Some(mut cursor) = conn.execute(&sql, (), None).map_err(|e| fail("query failed", &e))? else {
        return Ok(out);
    };
    let mut bufs = Buffers::default();
    while let Some(mut row) = cursor.next_row().map_err(|e| fail("fetch failed", &e))? {
        out.push(read_record(&mut row, &mut bufs, target)?);
    }
    tracing::info!(
        msg_id = msg_id::LOADED,
        count = out.len(),
        ms = started.elapsed().as_millis() as u64,
        "Loaded {} live interactions from {target}",
        out.len()
    );
    Ok(out)
}

/// The row of interaction `id`, if there is one.
pub(crate) fn read_one(
    conn: &Connection<'_>,
    id: &str,
    target: &str,
) -> Result<Option<InteractionRecord>, StorageError> {
    let fail = |e: &odbc_api::Error| {
        StorageError::new(format!("could not read interaction {id} back from {target}: {}", diag(e)))
    };
    let sql = format!("SELECT {} FROM interactions WHERE id = ?", COLUMNS.join(", "));
    let Some(mut cursor) = conn.execute(&sql, &id.into_parameter(), None).map_err(|e| fail(&e))? else {
        return Ok(None);
    };
    let mut bufs = Buffers::default();
    match cursor.next_row().map_err(|e| fail(&e))? {
        Some(mut row) => Ok(Some(read_record(&mut row, &mut bufs, target)?)),
        None => Ok(None),
    }
}

/// Buffers reused from row to row. get_text fills a buffer to its capacity
/// before each call and warns (01004) when a value needs more: short names
/// fit in 512 bytes, the properties buffer keeps the largest size seen.
struct Buffers {
    text: Vec<u8>,
    props: Vec<u8>,
}

impl Default for Buffers {
    fn default() -> Self {
        Buffers { text: Vec::with_capacity(512), props: Vec::with_capacity(4096) }
    }
}

/// One row of `SELECT <COLUMNS>` as a record.
fn read_record(row: &mut CursorRow<'_>, bufs: &mut Buffers, target: &str) -> Result<InteractionRecord, StorageError> {
    let fail = |what: &str, e: &odbc_api::Error| {
        StorageError::new(format!("could not read a row from the database at {target}: {what}: {}", diag(e)))
    };
    let mut r = records::empty_record();
    for (c, name) in COLUMNS.iter().enumerate() {
        let n = (c + 1) as u16;
        match c {
            col::PRIORITY | col::VERSION | col::FIRST_TIME..=col::LAST_TIME | col::SUBMIT_ORDER => {
                let mut v = Nullable::<i64>::null();
                row.get_data(n, &mut v).map_err(|e| fail(name, &e))?;
                let v = v.into_opt();
                match c {
                    col::PRIORITY => r.priority = v.unwrap_or(0),
                    col::VERSION => r.version = v.unwrap_or(0),
                    // NULL (a row upgraded from version 1) is None.
                    col::SUBMIT_ORDER => r.submit_order = v,
                    _ => records::set_time_field(&mut r, c, v),
                }
            }
            col::PROPERTIES => {
                bufs.props.clear();
                let present = row.get_text(n, &mut bufs.props).map_err(|e| fail(name, &e))?;
                if present && !bufs.props.is_empty() {
                    let bytes = records::unhex(&bufs.props).ok_or_else(|| {
                        StorageError::new(format!(
                            "interaction {} in the database at {target} has a properties value that is not hex",
                            r.id
                        ))
                    })?;
                    r.properties = PackedList::from_encoded(&bytes).map_err(|e| {
                        StorageError::new(format!(
                            "interaction {} in the database at {target} has properties that do not decode: {e:?}",
                            r.id
                        ))
                    })?;
                }
            }
            _ => {
                bufs.text.clear();
                // false: SQL NULL (None for workbin_owner and assigned_to,
                // '' for the other names).
                let present = row.get_text(n, &mut bufs.text).map_err(|e| fail(name, &e))?;
                let s = if present {
                    Some(std::str::from_utf8(&bufs.text).map(str::to_owned).map_err(|_| {
                        StorageError::new(format!(
                            "a row in the database at {target} has column {name} that is not UTF-8 text"
                        ))
                    })?)
                } else {
                    None
                };
                records::set_text_field(&mut r, c, s);
            }
        }
    }
    Ok(r)
}
