//! Inserting and deleting event rows (events.rs) in one table: the outbox
//! or the event log's own tables on a writer's connection (see
//! [`EventSink`]), `rpt_interaction` / `rpt_agent` on the shipper's.
//!
//! Inserts are multi-row statements (`VALUES (..),(..)`) prepared for
//! [`ROWS`] = 64, 8 and 1 rows, each executed with one parameter set, as
//! often as the rows need (the SQLite ODBC driver runs an array one
//! parameter set at a time, and before statements were kept compiled
//! (`Engine::compile_once_prefix`) it parsed each again: profiled, that was
//! most of a writer's time with the event log on). Deletes use one single-row
//! statement with an array of up to [`CHUNK`] parameter sets. Buffers are
//! bound once and reused. The details column's buffer grows (by powers of
//! two) to the widest value met, up to [`LARGE_DETAILS`]; a row with wider
//! details goes alone with a buffer of its own.

use odbc_api::buffers::BoxColumnBuffer;
use odbc_api::handles::StatementImpl;
use odbc_api::parameter::WithDataType;
use odbc_api::{BindParamDesc, ColumnarBulkInserter};

use crate::events::{Col, EventRow, Kind, AGENT_COLUMNS, ALL_COLUMNS};
use crate::Writing;

type Inserter<'c> = ColumnarBulkInserter<StatementImpl<'c>, WithDataType<BoxColumnBuffer>>;

/// Parameter sets per execution of the delete.
const CHUNK: usize = 256;
/// Rows of the multi-row inserts, largest first.
const ROWS: [usize; 3] = [64, 8, 1];
/// Details (hex) wider than this are inserted one row at a time.
const LARGE_DETAILS: usize = 16 * 1024;
const INITIAL_DETAILS: usize = 256;

/// Where a writer puts the event rows of its changes, in the change's
/// transaction. (One per writer connection, made once: its size does not
/// matter.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum EventSink<'c> {
    /// The event log is another database: the outbox, which the shipper
    /// drains into it.
    Outbox(EventTable<'c>),
    /// The event log is the main database: its own tables, at once. The
    /// same guarantee (an event is stored if and only if its change
    /// committed) with a third of the row work (no insert into the
    /// outbox, then a copy and a delete) and no second thread taking the
    /// database's write lock (on SQLite the shipper and the writer made
    /// each other sleep in the busy handler).
    Log { interactions: EventTable<'c>, agents: EventTable<'c> },
}

impl<'c> EventSink<'c> {
    pub(crate) fn new(conn: Writing<'c>, direct: bool) -> Self {
        if direct {
            EventSink::Log {
                interactions: EventTable::new(conn, "rpt_interaction", &ALL_COLUMNS),
                agents: EventTable::new(conn, "rpt_agent", &AGENT_COLUMNS),
            }
        } else {
            EventSink::Outbox(EventTable::new(conn, "ixn_event_outbox", &ALL_COLUMNS))
        }
    }

    /// Inserts the rows of one attempt; after an attempt whose outcome is
    /// unknown (`may_exist`), each key is deleted first (its row may be
    /// committed), so no event is stored twice.
    pub(crate) fn write(&mut self, rows: &[&EventRow], may_exist: bool) -> Result<(), odbc_api::Error> {
        match self {
            EventSink::Outbox(t) => t.replace(rows, may_exist),
            EventSink::Log { interactions, agents } => {
                let (ag, ix): (Vec<&EventRow>, Vec<&EventRow>) = rows.iter().partition(|r| r.is_agent_event());
                interactions.replace(&ix, may_exist)?;
                agents.replace(&ag, may_exist)
            }
        }
    }
}

/// The statements of one event table on one connection.
pub(crate) struct EventTable<'c> {
    conn: Writing<'c>,
    table: &'static str,
    cols: &'static [Col],
    /// One per entry of [`ROWS`], prepared on first use.
    inserts: [Option<Inserter<'c>>; 3],
    delete: Option<Inserter<'c>>,
    details_max: usize,
}

impl<'c> EventTable<'c> {
    pub(crate) fn new(conn: Writing<'c>, table: &'static str, cols: &'static [Col]) -> Self {
        EventTable { conn, table, cols, inserts: [None, None, None], delete: None, details_max: INITIAL_DETAILS }
    }

    fn insert_sql(&self, k: usize) -> String {
        let names: Vec<&str> = self.cols.iter().map(|c| c.name()).collect();
        let row = format!("({})", vec!["?"; names.len()].join(", "));
        format!("INSERT INTO {} ({}) VALUES {}", self.table, names.join(", "), vec![row; k].join(", "))
    }

    fn descs(&self, k: usize, details: usize) -> Vec<BindParamDesc> {
        let one: Vec<BindParamDesc> = self
            .cols
            .iter()
            .map(|c| match c.kind() {
                Kind::Int => BindParamDesc::i64(false),
                Kind::NullInt => BindParamDesc::i64(true),
                Kind::Text(n) => BindParamDesc::text(n),
                Kind::LongText => BindParamDesc::text(details),
            })
            .collect();
        (0..k).flat_map(|_| one.iter().copied()).collect()
    }

    /// A `k`-row insert, one parameter set.
    fn inserter(&mut self, k: usize, details: usize) -> Result<Inserter<'c>, odbc_api::Error> {
        self.conn.prepare(&self.insert_sql(k))?.into_column_inserter(1, self.descs(k, details))
    }

    /// Inserts `rows` (keys not in the table).
    pub(crate) fn insert(&mut self, rows: &[&EventRow]) -> Result<(), odbc_api::Error> {
        let details = |r: &EventRow| r.details.as_deref().map_or(0, str::len);
        let widest = rows.iter().map(|r| details(r)).filter(|&w| w <= LARGE_DETAILS).max().unwrap_or(0);
        if widest > self.details_max {
            self.details_max = widest.next_power_of_two();
            self.inserts = [None, None, None];
        }
        let (large, small): (Vec<&EventRow>, Vec<&EventRow>) = rows.iter().partition(|r| details(r) > LARGE_DETAILS);
        for r in large {
            let mut one = self.inserter(1, details(r))?;
            fill(&mut one, self.cols, &[r]);
            one.execute()?;
        }
        let mut done = 0;
        for (i, &k) in ROWS.iter().enumerate() {
            while small.len() - done >= k {
                if self.inserts[i].is_none() {
                    self.inserts[i] = Some(self.inserter(k, self.details_max)?);
                }
                let ins = self.inserts[i].as_mut().expect("prepared");
                fill(ins, self.cols, &small[done..done + k]);
                ins.execute()?;
                done += k;
            }
        }
        debug_assert_eq!(done, small.len());
        Ok(())
    }

    /// Inserts `rows`, deleting their keys first when they may be stored.
    fn replace(&mut self, rows: &[&EventRow], may_exist: bool) -> Result<(), odbc_api::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        if may_exist {
            let keys: Vec<(i64, i64, i64)> = rows.iter().map(|r| r.key()).collect();
            self.delete(&keys)?;
        }
        self.insert(rows)
    }

    /// Deletes the rows with these keys, if present.
    pub(crate) fn delete(&mut self, keys: &[(i64, i64, i64)]) -> Result<(), odbc_api::Error> {
        for chunk in keys.chunks(CHUNK) {
            if self.delete.is_none() {
                let sql = format!("DELETE FROM {} WHERE generation = ? AND shard = ? AND seq = ?", self.table);
                let descs = [BindParamDesc::i64(false), BindParamDesc::i64(false), BindParamDesc::i64(false)];
                self.delete = Some(self.conn.prepare(&sql)?.into_column_inserter(CHUNK, descs)?);
            }
            let del = self.delete.as_mut().expect("prepared");
            del.set_num_rows(chunk.len());
            for j in 0..3 {
                let colm = del.column_mut(j).as_slice::<i64>().expect("i64 buffer");
                for (p, k) in chunk.iter().enumerate() {
                    colm[p] = [k.0, k.1, k.2][j];
                }
            }
            del.execute()?;
        }
        Ok(())
    }
}

/// One parameter set of a `rows.len()`-row insert: row `r`'s column `j`
/// is parameter `r * cols + j`.
fn fill(ins: &mut Inserter<'_>, cols: &[Col], rows: &[&EventRow]) {
    ins.set_num_rows(1);
    for (r, row) in rows.iter().enumerate() {
        for (j, &c) in cols.iter().enumerate() {
            let at = r * cols.len() + j;
            match c.kind() {
                Kind::Int => {
                    let colm = ins.column_mut(at).as_slice::<i64>().expect("i64 buffer");
                    colm[0] = row.int(c).expect("a key column is never NULL");
                }
                Kind::NullInt => {
                    let mut colm = ins.column_mut(at).as_nullable_slice::<i64>().expect("nullable i64 buffer");
                    colm.set_cell(0, row.int(c));
                }
                Kind::Text(_) => {
                    let mut colm = ins.column_mut(at).as_text().expect("text buffer");
                    colm.set_cell(0, row.text(c).map(str::as_bytes));
                }
                Kind::LongText => {
                    let mut colm = ins.column_mut(at).as_text().expect("text buffer");
                    colm.set_cell(0, row.details.as_deref().map(str::as_bytes));
                }
            }
        }
    }
}
