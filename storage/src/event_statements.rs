//! Inserting and deleting event rows (events.rs) in one table: the outbox
//! on a writer's connection, `rpt_interaction` / `rpt_agent` on the event
//! log's.
//!
//! One single-row statement executed with an array of up to [`CHUNK`]
//! parameter sets per execution, its buffers bound once and reused. The
//! details column's buffer grows (by powers of two) to the widest value
//! met, up to [`LARGE_DETAILS`]; a row with wider details goes alone with
//! a buffer of its own.

use odbc_api::buffers::BoxColumnBuffer;
use odbc_api::handles::StatementImpl;
use odbc_api::parameter::WithDataType;
use odbc_api::{BindParamDesc, ColumnarBulkInserter, Connection};

use crate::events::{Col, EventRow, Kind};

type Inserter<'c> = ColumnarBulkInserter<StatementImpl<'c>, WithDataType<BoxColumnBuffer>>;

/// Parameter sets per execution.
const CHUNK: usize = 256;
/// Details (hex) wider than this are inserted one row at a time.
const LARGE_DETAILS: usize = 16 * 1024;
const INITIAL_DETAILS: usize = 256;

/// The statements of one event table on one connection.
pub(crate) struct EventTable<'c> {
    conn: &'c Connection<'static>,
    table: &'static str,
    cols: &'static [Col],
    insert: Option<Inserter<'c>>,
    delete: Option<Inserter<'c>>,
    details_max: usize,
}

impl<'c> EventTable<'c> {
    pub(crate) fn new(conn: &'c Connection<'static>, table: &'static str, cols: &'static [Col]) -> Self {
        EventTable { conn, table, cols, insert: None, delete: None, details_max: INITIAL_DETAILS }
    }

    fn insert_sql(&self) -> String {
        let names: Vec<&str> = self.cols.iter().map(|c| c.name()).collect();
        format!("INSERT INTO {} ({}) VALUES ({})", self.table, names.join(", "), vec!["?"; names.len()].join(", "))
    }

    fn descs(&self, details: usize) -> Vec<BindParamDesc> {
        self.cols
            .iter()
            .map(|c| match c.kind() {
                Kind::Int => BindParamDesc::i64(false),
                Kind::NullInt => BindParamDesc::i64(true),
                Kind::Text(n) => BindParamDesc::text(n),
                Kind::LongText => BindParamDesc::text(details),
            })
            .collect()
    }

    fn inserter(&mut self, capacity: usize, details: usize) -> Result<Inserter<'c>, odbc_api::Error> {
        self.conn.prepare(&self.insert_sql())?.into_column_inserter(capacity, self.descs(details))
    }

    /// Inserts `rows` (keys not in the table).
    pub(crate) fn insert(&mut self, rows: &[&EventRow]) -> Result<(), odbc_api::Error> {
        let details = |r: &EventRow| r.details.as_deref().map_or(0, str::len);
        let widest = rows.iter().map(|r| details(r)).filter(|&w| w <= LARGE_DETAILS).max().unwrap_or(0);
        if widest > self.details_max {
            self.details_max = widest.next_power_of_two();
            self.insert = None;
        }
        let (large, small): (Vec<&EventRow>, Vec<&EventRow>) = rows.iter().partition(|r| details(r) > LARGE_DETAILS);
        for r in large {
            let mut one = self.inserter(1, details(r))?;
            fill(&mut one, self.cols, &[r]);
            one.execute()?;
        }
        for chunk in small.chunks(CHUNK) {
            if self.insert.is_none() {
                self.insert = Some(self.inserter(CHUNK, self.details_max)?);
            }
            let ins = self.insert.as_mut().expect("prepared");
            fill(ins, self.cols, chunk);
            ins.execute()?;
        }
        Ok(())
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

fn fill(ins: &mut Inserter<'_>, cols: &[Col], rows: &[&EventRow]) {
    ins.set_num_rows(rows.len());
    for (j, &c) in cols.iter().enumerate() {
        match c.kind() {
            Kind::Int => {
                let colm = ins.column_mut(j).as_slice::<i64>().expect("i64 buffer");
                for (p, r) in rows.iter().enumerate() {
                    colm[p] = r.int(c).expect("a key column is never NULL");
                }
            }
            Kind::NullInt => {
                let mut colm = ins.column_mut(j).as_nullable_slice::<i64>().expect("nullable i64 buffer");
                for (p, r) in rows.iter().enumerate() {
                    colm.set_cell(p, r.int(c));
                }
            }
            Kind::Text(_) => {
                let mut colm = ins.column_mut(j).as_text().expect("text buffer");
                for (p, r) in rows.iter().enumerate() {
                    colm.set_cell(p, r.text(c).map(str::as_bytes));
                }
            }
            Kind::LongText => {
                let mut colm = ins.column_mut(j).as_text().expect("text buffer");
                for (p, r) in rows.iter().enumerate() {
                    colm.set_cell(p, r.details.as_deref().map(str::as_bytes));
                }
            }
        }
    }
}
