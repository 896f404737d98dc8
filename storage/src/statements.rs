//! The prepared statements of one writer connection and how a batch's
//! deletes and inserts are sent through them.
//!
//! Both strategies bind column-wise parameter arrays once and reuse the
//! buffers batch after batch:
//!
//! * `Array`: `INSERT ... VALUES (?,...)` / `DELETE ... WHERE id = ?`
//!   executed once per batch with one parameter set per row.
//! * `MultiRow`: the same statements prepared for k = 256, 64, 8 and 1
//!   rows (`VALUES (..),(..)`, `WHERE id IN (?,..)`), each bound to one
//!   parameter set; a batch of n rows runs the largest k that fits as often
//!   as it fits, then the next k for the rest (1000 rows: 3×256, 3×64,
//!   5×8 = eleven executions).
//!
//! Values are always bound parameters, never interpolated into SQL.

use std::ops::Range;

use ixn_shard::interaction::InteractionRecord;
use odbc_api::buffers::BoxColumnBuffer;
use odbc_api::handles::StatementImpl;
use odbc_api::parameter::WithDataType;
use odbc_api::{BindParamDesc, ColumnarBulkInserter, Connection};

use crate::records::{self, col, COLUMNS, MAX_ID, MAX_NAME, NCOLS, TEXT_COLUMNS};
use crate::{InsertStrategy, Writing};

type Inserter<'c> = ColumnarBulkInserter<StatementImpl<'c>, WithDataType<BoxColumnBuffer>>;

/// Row counts of the multi-row statements, largest first. 256 rows is
/// 5376 parameters (21 columns, schema version 3); psqlODBC 13.02 lost protocol
/// synchronization preparing a 512-row statement of 18 columns (9216
/// parameters) while 256 rows (4608) worked, so 256 is the ceiling.
const MULTI_ROW_SIZES: [usize; 4] = [256, 64, 8, 1];

/// Properties (hex) longer than this are inserted one row at a time with
/// a buffer of their own, so one huge value does not size every buffer.
const LARGE_PROPERTIES: usize = 16 * 1024;

/// Initial properties buffer width (hex bytes); grows to fit, by powers of 2.
const INITIAL_PROPERTIES: usize = 512;

struct Stmt<'c> {
    /// Rows per execution of the statement's text.
    k: usize,
    /// Parameter sets the buffers hold.
    capacity: usize,
    inserter: Inserter<'c>,
}

/// `in_place`: an existing row is overwritten (SQLite and PostgreSQL).
fn insert_sql(k: usize, in_place: bool) -> String {
    let row = format!("({})", vec!["?"; NCOLS].join(", "));
    let tail = if in_place { records::on_conflict() } else { String::new() };
    format!("INSERT INTO interactions ({}) VALUES {}{tail}", COLUMNS.join(", "), vec![row; k].join(", "))
}

fn delete_sql(k: usize) -> String {
    if k == 1 {
        "DELETE FROM interactions WHERE id = ?".to_string()
    } else {
        format!("DELETE FROM interactions WHERE id IN ({})", vec!["?"; k].join(", "))
    }
}

fn insert_descs(k: usize, props_max: usize) -> Vec<BindParamDesc> {
    let one: Vec<BindParamDesc> = (0..NCOLS)
        .map(|c| match c {
            col::ID => BindParamDesc::text(MAX_ID),
            col::PRIORITY | col::VERSION => BindParamDesc::i64(false),
            col::FIRST_TIME..=col::LAST_TIME | col::SUBMIT_ORDER => BindParamDesc::i64(true),
            col::PROPERTIES => BindParamDesc::text(props_max),
            _ => BindParamDesc::text(MAX_NAME),
        })
        .collect();
    (0..k).flat_map(|_| one.iter().copied()).collect()
}

/// The batch's rows as the statements need them: hex properties in one
/// buffer, a range per row.
#[derive(Default)]
pub(crate) struct RowData {
    hex: Vec<u8>,
    ranges: Vec<Range<usize>>,
    scratch: Vec<u8>,
}

impl RowData {
    pub(crate) fn prepare(&mut self, rows: &[&InteractionRecord]) {
        self.hex.clear();
        self.ranges.clear();
        for r in rows {
            records::properties_hex(r, &mut self.scratch);
            let start = self.hex.len();
            self.hex.extend_from_slice(&self.scratch);
            self.ranges.push(start..self.hex.len());
        }
    }

    fn props(&self, i: usize) -> &[u8] {
        &self.hex[self.ranges[i].clone()]
    }
}

pub(crate) struct Statements<'c> {
    conn: Writing<'c>,
    strategy: InsertStrategy,
    batch_max: usize,
    sizes: Vec<usize>,
    /// Per entry of `sizes`; prepared on first use.
    inserts: Vec<Option<Stmt<'c>>>,
    deletes: Vec<Option<Stmt<'c>>>,
    props_max: usize,
    /// Where the events of the batch's changes go (prepared on first use:
    /// with the log on).
    pub(crate) events: crate::event_statements::EventSink<'c>,
    /// With the `json` strategy: its two statements.
    pub(crate) json: Option<crate::json_rows::JsonStatements<'c>>,
    /// Inserts overwrite an existing row (the engines whose SQL for that
    /// is known): a changed row is written in place, not deleted first.
    pub(crate) in_place: bool,
}

impl<'c> Statements<'c> {
    /// `direct_log`: the event log is this database (events go to its
    /// tables, not to the outbox).
    pub(crate) fn new(
        conn: &'c Connection<'static>,
        engine: &crate::Engine,
        strategy: InsertStrategy,
        batch_max: usize,
        direct_log: bool,
    ) -> Self {
        let dialect = crate::json_rows::Dialect::of(engine);
        let conn = Writing::new(conn, engine);
        let json = match strategy {
            InsertStrategy::Json => {
                let dialect = dialect.expect("json strategy checked at open");
                Some(crate::json_rows::JsonStatements::new(conn, dialect))
            }
            _ => None,
        };
        let sizes: Vec<usize> = match strategy {
            InsertStrategy::Array | InsertStrategy::Json => vec![1],
            InsertStrategy::MultiRow => MULTI_ROW_SIZES.iter().copied().filter(|&k| k <= batch_max.max(1)).collect(),
        };
        let n = sizes.len();
        Statements {
            conn,
            strategy,
            batch_max: batch_max.max(1),
            sizes,
            inserts: (0..n).map(|_| None).collect(),
            deletes: (0..n).map(|_| None).collect(),
            props_max: INITIAL_PROPERTIES,
            events: crate::event_statements::EventSink::new(conn, direct_log),
            json,
            in_place: dialect.is_some(),
        }
    }

    /// Parameter sets a statement's buffers hold.
    fn capacity(&self) -> usize {
        // Multi-row statements run one parameter set per execution:
        // psqlODBC ran 256-row statements with parameter arrays at about
        // half the rate of one set per execution (see docs/storage.md).
        match self.strategy {
            InsertStrategy::Array | InsertStrategy::Json => self.batch_max,
            InsertStrategy::MultiRow => 1,
        }
    }

    fn insert_stmt(&mut self, i: usize) -> Result<&mut Stmt<'c>, odbc_api::Error> {
        if self.inserts[i].is_none() {
            let k = self.sizes[i];
            let capacity = self.capacity();
            let inserter = self
                .conn
                .prepare(&insert_sql(k, self.in_place))?
                .into_column_inserter(capacity, insert_descs(k, self.props_max))?;
            self.inserts[i] = Some(Stmt { k, capacity, inserter });
        }
        Ok(self.inserts[i].as_mut().unwrap())
    }

    fn delete_stmt(&mut self, i: usize) -> Result<&mut Stmt<'c>, odbc_api::Error> {
        if self.deletes[i].is_none() {
            let k = self.sizes[i];
            let capacity = self.capacity();
            let inserter = self
                .conn
                .prepare(&delete_sql(k))?
                .into_column_inserter(capacity, (0..k).map(|_| BindParamDesc::text(MAX_ID)))?;
            self.deletes[i] = Some(Stmt { k, capacity, inserter });
        }
        Ok(self.deletes[i].as_mut().unwrap())
    }

    /// Deletes the rows of `ids` (each id at most once).
    pub(crate) fn delete(&mut self, ids: &[&str]) -> Result<(), odbc_api::Error> {
        let mut done = 0;
        for i in 0..self.sizes.len() {
            while ids.len() - done >= self.sizes[i] {
                let stmt = self.delete_stmt(i)?;
                let sets = ((ids.len() - done) / stmt.k).min(stmt.capacity);
                let rows = &ids[done..done + sets * stmt.k];
                fill_deletes(stmt, rows);
                stmt.inserter.execute()?;
                done += rows.len();
            }
        }
        debug_assert_eq!(done, ids.len());
        Ok(())
    }

    /// Inserts `rows` (whose properties `data` holds, in the same order).
    pub(crate) fn insert(&mut self, rows: &[&InteractionRecord], data: &RowData) -> Result<(), odbc_api::Error> {
        // Rows with huge properties go one by one with buffers of their own.
        let mut small: Vec<usize> = Vec::with_capacity(rows.len());
        let mut widest = 0;
        for (i, row) in rows.iter().enumerate() {
            let len = data.props(i).len();
            if len > LARGE_PROPERTIES {
                self.insert_large(row, data.props(i))?;
            } else {
                widest = widest.max(len);
                small.push(i);
            }
        }
        if widest > self.props_max {
            // Every bound properties buffer is too narrow: bind wider ones.
            self.props_max = widest.next_power_of_two();
            for s in &mut self.inserts {
                *s = None;
            }
        }
        let mut done = 0;
        for i in 0..self.sizes.len() {
            while small.len() - done >= self.sizes[i] {
                let stmt = self.insert_stmt(i)?;
                let sets = ((small.len() - done) / stmt.k).min(stmt.capacity);
                let chunk = &small[done..done + sets * stmt.k];
                fill_inserts(stmt, rows, data, chunk);
                stmt.inserter.execute()?;
                done += chunk.len();
            }
        }
        debug_assert_eq!(done, small.len());
        Ok(())
    }

    fn insert_large(&mut self, row: &InteractionRecord, props: &[u8]) -> Result<(), odbc_api::Error> {
        let inserter =
            self.conn.prepare(&insert_sql(1, self.in_place))?.into_column_inserter(1, insert_descs(1, props.len()))?;
        let mut stmt = Stmt { k: 1, capacity: 1, inserter };
        let mut data = RowData::default();
        data.prepare(&[row]);
        fill_inserts(&mut stmt, &[row], &data, &[0]);
        stmt.inserter.execute()?;
        Ok(())
    }
}

/// Parameter set `p`, slot `j` of a k-row statement holds row `p*k + j`.
fn fill_deletes(stmt: &mut Stmt<'_>, ids: &[&str]) {
    let k = stmt.k;
    let sets = ids.len() / k;
    stmt.inserter.set_num_rows(sets);
    for j in 0..k {
        let mut colm = stmt.inserter.column_mut(j).as_text().expect("id buffer is text");
        for p in 0..sets {
            colm.set_cell(p, Some(ids[p * k + j].as_bytes()));
        }
    }
}

fn fill_inserts(stmt: &mut Stmt<'_>, rows: &[&InteractionRecord], data: &RowData, chunk: &[usize]) {
    let k = stmt.k;
    let sets = chunk.len() / k;
    stmt.inserter.set_num_rows(sets);
    for j in 0..k {
        let base = j * NCOLS;
        let row_at = |p: usize| chunk[p * k + j];
        for c in TEXT_COLUMNS {
            let mut colm = stmt.inserter.column_mut(base + c).as_text().expect("text buffer");
            for p in 0..sets {
                // None (a NULL workbin_owner or assigned_to) binds SQL
                // NULL.
                colm.set_cell(p, records::text_field(rows[row_at(p)], c).map(str::as_bytes));
            }
        }
        {
            let colm = stmt.inserter.column_mut(base + col::PRIORITY).as_slice::<i64>().expect("i64 buffer");
            for p in 0..sets {
                colm[p] = rows[row_at(p)].priority;
            }
        }
        {
            let colm = stmt.inserter.column_mut(base + col::VERSION).as_slice::<i64>().expect("i64 buffer");
            for p in 0..sets {
                colm[p] = rows[row_at(p)].version;
            }
        }
        for c in col::FIRST_TIME..=col::LAST_TIME {
            let mut colm = stmt.inserter.column_mut(base + c).as_nullable_slice::<i64>().expect("nullable i64 buffer");
            for p in 0..sets {
                colm.set_cell(p, records::time_field(rows[row_at(p)], c));
            }
        }
        {
            // None (no order known, as for a row upgraded from version 1)
            // binds SQL NULL, not 0.
            let mut colm = stmt
                .inserter
                .column_mut(base + col::SUBMIT_ORDER)
                .as_nullable_slice::<i64>()
                .expect("nullable i64 buffer");
            for p in 0..sets {
                colm.set_cell(p, rows[row_at(p)].submit_order);
            }
        }
        {
            let mut colm = stmt.inserter.column_mut(base + col::PROPERTIES).as_text().expect("text buffer");
            for p in 0..sets {
                colm.set_cell(p, Some(data.props(row_at(p))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_names_every_column_and_binds_assigned_to_last() {
        let sql = insert_sql(2, false);
        assert!(
            sql.starts_with(
                "INSERT INTO interactions (id, tenant, media_type, interaction_type, interaction_subtype, queue, \
                 priority, submitted_by, received_at, submitted_at, placed_in_queue_at, moved_to_queue_at, \
                 delivered_at, assigned_at, held_at, completed_at, properties, version, workbin_owner, submit_order, \
                 assigned_to) VALUES ("
            ),
            "{sql}"
        );
        assert_eq!(sql.matches('?').count(), 2 * 21);
        assert_eq!(insert_descs(3, 512).len(), 3 * NCOLS);
        // SQLite's statements begin with the prefix that keeps them
        // compiled in its ODBC driver; the others' with the statement.
        let prefix = crate::Engine::Sqlite.compile_once_prefix();
        assert!(prefix.starts_with("WITH "));
        let sent =
            |engine: crate::Engine, sql: String| crate::writing::compiled_once(engine.compile_once_prefix(), &sql);
        assert!(sent(crate::Engine::Sqlite, insert_sql(8, true))
            .starts_with(&format!("{prefix}INSERT INTO interactions (id, ")));
        assert!(sent(crate::Engine::Sqlite, delete_sql(1)).starts_with(&format!("{prefix}DELETE FROM interactions")));
        assert!(sent(crate::Engine::Postgres, delete_sql(8)).starts_with("DELETE FROM"));
        // The largest multi-row statement stays well below the 9216
        // parameters psqlODBC 13.02 could not prepare.
        assert_eq!(MULTI_ROW_SIZES[0] * NCOLS, 5376);
    }
}
