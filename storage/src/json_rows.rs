//! The `json` insert strategy: a whole batch in one statement whose one
//! parameter is a JSON array the database expands into rows.
//!
//! Why: with bound parameter arrays or multi-row `VALUES` lists the
//! drivers spend most of a batch on parameters (the SQLite ODBC driver
//! allocates and parses per parameter and re-parses a 5,376-parameter
//! statement; psqlODBC sends each). One text parameter costs the driver
//! one bind whatever the batch holds; the database parses the JSON in C.
//!
//! On SQLite and PostgreSQL every strategy writes a changed row in place
//! (`records::on_conflict`: `INSERT ... ON CONFLICT (id) DO UPDATE`), not
//! deleted and inserted again: one row written per change instead of two
//! (PostgreSQL still leaves the old row version for vacuum, but no index
//! entry when the update is HOT). Applying a batch twice leaves what applying it
//! once does (an upsert writes the whole row), which the writer's retry
//! after an unknown commit outcome relies on.
//!
//! Statements (SQLite 3.38 or later, PostgreSQL 9.5 or later):
//!
//! * upsert: `INSERT INTO interactions (<21 columns>) SELECT <element k of
//!   each row array> FROM json_each(?) ... ON CONFLICT (id) DO UPDATE SET
//!   <every other column> = excluded.<column>`; the parameter is
//!   `[[id, tenant, ..., assigned_to], ...]`, one array per row in
//!   [`COLUMNS`] order, numbers as JSON numbers, NULL as `null`.
//! * delete: `DELETE FROM interactions WHERE id IN (<elements of ?>)`
//!   (on PostgreSQL `id = ANY (ARRAY(<elements of ?>))`, which its planner
//!   looks up in the primary key); the parameter is `["id", ...]`.

use std::io::Write;

use ixn_shard::interaction::InteractionRecord;
use odbc_api::handles::StatementImpl;
use odbc_api::parameter::VarCharSlice;
use odbc_api::Prepared;

use crate::records::{self, col, COLUMNS, NCOLS, TEXT_COLUMNS};
use crate::{Engine, Writing};

/// The SQL dialects the statements are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// `None` for an engine these statements are not written for.
    pub(crate) fn of(engine: &Engine) -> Option<Dialect> {
        match engine {
            Engine::Sqlite => Some(Dialect::Sqlite),
            Engine::Postgres => Some(Dialect::Postgres),
            _ => None,
        }
    }
}

/// Whether column `c` is a BIGINT (PostgreSQL needs the cast from text).
fn is_integer(c: usize) -> bool {
    c == col::PRIORITY || c == col::VERSION || c == col::SUBMIT_ORDER || (col::FIRST_TIME..=col::LAST_TIME).contains(&c)
}

pub(crate) fn upsert_sql(d: Dialect) -> String {
    let values: Vec<String> = (0..NCOLS)
        .map(|c| match d {
            Dialect::Sqlite => format!("j.value->>{c}"),
            Dialect::Postgres if is_integer(c) => format!("(j->>{c})::bigint"),
            Dialect::Postgres => format!("j->>{c}"),
        })
        .collect();
    let source = match d {
        // `WHERE true`: SQLite would otherwise read ON CONFLICT as a join's
        // ON clause.
        Dialect::Sqlite => "json_each(?) AS j WHERE true",
        Dialect::Postgres => "jsonb_array_elements(CAST(? AS jsonb)) AS j",
    };
    format!(
        "INSERT INTO interactions ({}) SELECT {} FROM {source}{}",
        COLUMNS.join(", "),
        values.join(", "),
        records::on_conflict()
    )
}

pub(crate) fn delete_sql(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => "DELETE FROM interactions WHERE id IN (SELECT value FROM json_each(?))",
        // Not `id IN (SELECT ...)`: PostgreSQL guesses a set-returning
        // function yields 100 rows and plans a hash join over a scan of the
        // whole table (every dead row version too); `= ANY (ARRAY(...))`
        // is looked up in the primary key whatever the statistics say.
        Dialect::Postgres => {
            "DELETE FROM interactions WHERE id = ANY (ARRAY(SELECT jsonb_array_elements_text(CAST(? AS jsonb))))"
        }
    }
}

/// Appends `s` as a JSON string.
fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            0x00..=0x1f => None,
            _ => continue,
        };
        out.extend_from_slice(&bytes[from..i]);
        match escape {
            Some(e) => out.extend_from_slice(e),
            None => write!(out, "\\u{b:04x}").expect("write to a Vec"),
        }
        from = i + 1;
    }
    out.extend_from_slice(&bytes[from..]);
    out.push(b'"');
}

fn push_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn push_opt_int(out: &mut Vec<u8>, v: Option<i64>) {
    match v {
        // Writing into a Vec cannot fail.
        Some(v) => write!(out, "{v}").expect("write to a Vec"),
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends one record as a JSON array of its columns, in [`COLUMNS`] order.
fn push_record(out: &mut Vec<u8>, r: &InteractionRecord, hex: &mut Vec<u8>) {
    out.push(b'[');
    for c in 0..NCOLS {
        if c > 0 {
            out.push(b',');
        }
        if TEXT_COLUMNS.contains(&c) {
            push_opt_str(out, records::text_field(r, c));
        } else if c == col::PROPERTIES {
            // Hex digits: nothing to escape.
            records::properties_hex(r, hex);
            out.push(b'"');
            out.extend_from_slice(hex);
            out.push(b'"');
        } else if c == col::PRIORITY {
            push_opt_int(out, Some(r.priority));
        } else if c == col::VERSION {
            push_opt_int(out, Some(r.version));
        } else if c == col::SUBMIT_ORDER {
            push_opt_int(out, r.submit_order);
        } else {
            push_opt_int(out, records::time_field(r, c));
        }
    }
    out.push(b']');
}

/// `rows` as the upsert's parameter, into `out` (cleared first).
pub(crate) fn encode_rows(rows: &[&InteractionRecord], out: &mut Vec<u8>, hex: &mut Vec<u8>) {
    out.clear();
    out.push(b'[');
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_record(out, r, hex);
    }
    out.push(b']');
}

/// `ids` as the delete's parameter, into `out` (cleared first).
pub(crate) fn encode_ids(ids: &[&str], out: &mut Vec<u8>) {
    out.clear();
    out.push(b'[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_str(out, id);
    }
    out.push(b']');
}

/// The two prepared statements of one writer connection, with the buffers
/// their parameters are encoded into (reused batch after batch).
pub(crate) struct JsonStatements<'c> {
    conn: Writing<'c>,
    dialect: Dialect,
    upsert: Option<Prepared<StatementImpl<'c>>>,
    delete: Option<Prepared<StatementImpl<'c>>>,
    text: Vec<u8>,
    hex: Vec<u8>,
}

impl<'c> JsonStatements<'c> {
    pub(crate) fn new(conn: Writing<'c>, dialect: Dialect) -> Self {
        JsonStatements { conn, dialect, upsert: None, delete: None, text: Vec::new(), hex: Vec::new() }
    }

    /// Writes every record of `rows` in place (inserted when missing).
    /// Each id at most once.
    pub(crate) fn upsert(&mut self, rows: &[&InteractionRecord]) -> Result<(), odbc_api::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        if self.upsert.is_none() {
            self.upsert = Some(self.conn.prepare(&upsert_sql(self.dialect))?);
        }
        encode_rows(rows, &mut self.text, &mut self.hex);
        let stmt = self.upsert.as_mut().expect("prepared above");
        stmt.execute(&VarCharSlice::new(&self.text))?;
        Ok(())
    }

    /// Deletes the rows of `ids` (missing ones are no error).
    pub(crate) fn delete(&mut self, ids: &[&str]) -> Result<(), odbc_api::Error> {
        if ids.is_empty() {
            return Ok(());
        }
        if self.delete.is_none() {
            self.delete = Some(self.conn.prepare(delete_sql(self.dialect))?);
        }
        encode_ids(ids, &mut self.text);
        let stmt = self.delete.as_mut().expect("prepared above");
        stmt.execute(&VarCharSlice::new(&self.text))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_json() {
        let mut out = Vec::new();
        push_str(&mut out, "a\"b\\c\nd\u{1}é€");
        assert_eq!(String::from_utf8(out).unwrap(), "\"a\\\"b\\\\c\\u000ad\\u0001é€\"");
        let mut out = Vec::new();
        encode_ids(&["x", "y\"z"], &mut out);
        assert_eq!(std::str::from_utf8(&out).unwrap(), r#"["x","y\"z"]"#);
        encode_ids(&[], &mut out);
        assert_eq!(out, b"[]");
    }

    #[test]
    fn upsert_takes_every_column_and_updates_all_but_the_id() {
        for d in [Dialect::Sqlite, Dialect::Postgres] {
            let sql = upsert_sql(d);
            assert_eq!(sql.matches('?').count(), 1, "{sql}");
            assert!(sql.contains("->>20"), "{sql}");
            assert!(!sql.contains("->>21"), "{sql}");
            assert_eq!(sql.matches("= excluded.").count(), NCOLS - 1, "{sql}");
            assert!(!sql.contains("id = excluded.id"), "{sql}");
        }
        assert!(upsert_sql(Dialect::Postgres).contains("(j->>17)::bigint"));
        assert!(upsert_sql(Dialect::Postgres).contains(" j->>16,"));
    }
}
