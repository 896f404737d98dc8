//! Reading the event log back: the events a subscriber missed across a
//! restart of the server, which the server no longer keeps in memory.
//!
//! A read names a range of keys: after a cursor of an earlier run, up to
//! (and including) a cursor of this run. It runs on its own thread,
//! `ixn-log-reader` (ODBC never runs on an executor), over the event log's
//! tables and the outbox of the main database (events not shipped yet),
//! and is answered through the shard's completion sink like a write: the
//! shard then takes the rows with [`LogReader::take`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crossbeam_channel::Sender;
use odbc_api::Connection;

use ixn_shard::report::{in_log_range, Cursor};

use crate::conn::{self, diag};
use crate::events::{Col, EventRow, AGENT_COLUMNS, ALL_COLUMNS};
use crate::logger::{first_rows_sql, read_rows};
use crate::{CompletionSink, Engine, StorageError};

/// Keys after `after` (a cursor of run `after_generation`: the number of
/// the last event received from each of its shards; a shard it does not
/// name counts as 0) up to `upto` (of run `upto_generation`, this one),
/// every run in between whole.
#[derive(Clone, Debug)]
pub struct LogRange {
    pub after_generation: u64,
    pub after: Vec<u64>,
    pub upto_generation: u64,
    pub upto: Vec<u64>,
}

impl LogRange {
    /// The SQL condition on (generation, shard, seq).
    fn condition(&self) -> String {
        let per_shard = |nums: &[u64], op: &str, rest: &str| {
            let mut parts: Vec<String> =
                nums.iter().enumerate().map(|(s, n)| format!("(shard = {s} AND seq {op} {n})")).collect();
            parts.push(format!("shard >= {} {rest}", nums.len()));
            parts.join(" OR ")
        };
        let (g0, g1) = (self.after_generation, self.upto_generation);
        format!(
            "(generation = {g0} AND ({})) OR (generation > {g0} AND generation < {g1}) OR (generation = {g1} AND ({}))",
            per_shard(&self.after, ">", ""),
            // Shards this run does not have hold nothing of it.
            per_shard(&self.upto, "<=", "AND 1 = 0"),
        )
    }

    /// Whether a key is in the range.
    pub fn contains(&self, key: (i64, i64, i64)) -> bool {
        let (after, upto) = self.cursors();
        holds(&after, &upto, key)
    }

    /// Its two ends as cursors.
    fn cursors(&self) -> (Cursor, Cursor) {
        (
            Cursor { generation: self.after_generation, seqs: self.after.clone() },
            Cursor { generation: self.upto_generation, seqs: self.upto.clone() },
        )
    }
}

/// Whether a key is between the ends of a range.
fn holds(after: &Cursor, upto: &Cursor, (g, s, q): (i64, i64, i64)) -> bool {
    in_log_range(after, upto, g as u64, s as usize, q as u64)
}

struct Job {
    shard: u16,
    token: u64,
    range: LogRange,
    limit: usize,
}

type Results = Mutex<HashMap<(u16, u64), Result<Vec<EventRow>, String>>>;

/// The log reader thread's handle.
#[derive(Clone)]
pub struct LogReader {
    jobs: Sender<Job>,
    results: Arc<Results>,
}

impl LogReader {
    /// Starts the thread; `main` is the main database (its outbox), `log`
    /// the event log's when it is another one.
    pub fn start(
        main: String,
        log: Option<String>,
        sinks: Vec<Arc<dyn CompletionSink>>,
    ) -> Result<LogReader, StorageError> {
        let (jobs, rx) = crossbeam_channel::unbounded::<Job>();
        let results: Arc<Results> = Arc::default();
        let r = results.clone();
        std::thread::Builder::new()
            .name("ixn-log-reader".into())
            .spawn(move || {
                for job in rx {
                    let got = read(&main, log.as_deref(), &job.range, job.limit);
                    match &got {
                        Ok(rows) => tracing::info!(
                            msg_id = crate::msg_id::EVENT_LOG_READ,
                            events = rows.len(),
                            "Event log read back for a subscriber resuming across a restart: {} event(s)",
                            rows.len()
                        ),
                        Err(why) => tracing::warn!(
                            msg_id = crate::msg_id::EVENT_LOG_READ_FAILED,
                            "Event log could not be read back for a resuming subscriber (it is refused, 56): {why}"
                        ),
                    }
                    let ok = got.is_ok();
                    r.lock().unwrap_or_else(|e| e.into_inner()).insert((job.shard, job.token), got);
                    if let Some(sink) = sinks.get(job.shard as usize) {
                        sink.complete(&mut vec![(job.token, ok)]);
                    }
                }
            })
            .map_err(|e| StorageError::new(format!("could not start the event log reader thread: {e}")))?;
        Ok(LogReader { jobs, results })
    }

    /// Reads the events of `range`, at most `limit` (more is an error);
    /// shard `shard`'s sink hears `(token, ok)` when done.
    pub fn read(&self, shard: u16, token: u64, range: LogRange, limit: usize) {
        if self.jobs.send(Job { shard, token, range, limit }).is_err() {
            self.results
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((shard, token), Err("the event log reader stopped".into()));
        }
    }

    /// What the read `token` of shard `shard` found, in key order.
    pub fn take(&self, shard: u16, token: u64) -> Option<Result<Vec<EventRow>, String>> {
        self.results.lock().unwrap_or_else(|e| e.into_inner()).remove(&(shard, token))
    }
}

fn read(main: &str, log: Option<&str>, range: &LogRange, limit: usize) -> Result<Vec<EventRow>, String> {
    let mut found: BTreeMap<(i64, i64, i64), EventRow> = BTreeMap::new();
    let (after, upto) = range.cursors();
    let mut take = |cs: &str, tables: &[(&str, &'static [Col])]| -> Result<(), String> {
        let target = conn::describe_target(cs);
        let (c, _) = conn::connect_log(cs, &target).map_err(|e| e.message)?;
        let dbms = c.database_management_system_name().map_err(|e| diag(&e))?;
        let engine = Engine::from_dbms_name(&dbms);
        for (table, cols) in tables {
            for row in select(&c, &engine, table, cols, range, limit + 1)? {
                if holds(&after, &upto, row.key()) {
                    found.insert(row.key(), row);
                }
            }
            if found.len() > limit {
                return Err(format!("more than {limit} events after the cursor"));
            }
        }
        Ok(())
    };
    take(main, &[("ixn_event_outbox", &ALL_COLUMNS)])?;
    let log_tables: [(&str, &'static [Col]); 2] = [("rpt_interaction", &ALL_COLUMNS), ("rpt_agent", &AGENT_COLUMNS)];
    take(log.unwrap_or(main), &log_tables)?;
    Ok(found.into_values().collect())
}

fn select(
    c: &Connection<'static>,
    engine: &Engine,
    table: &str,
    cols: &[Col],
    range: &LogRange,
    n: usize,
) -> Result<Vec<EventRow>, String> {
    let sql = first_rows_sql(engine, cols, table, Some(&range.condition()), n);
    read_rows(c, &sql, cols).map_err(|d| format!("reading {table}: {d}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_runs_from_after_an_old_cursor_to_this_runs_bound() {
        let r = LogRange { after_generation: 10, after: vec![5, 7], upto_generation: 30, upto: vec![2] };
        assert!(!r.contains((10, 0, 5)) && r.contains((10, 0, 6)));
        assert!(!r.contains((10, 1, 7)) && r.contains((10, 1, 8)));
        assert!(r.contains((10, 2, 1)), "a shard the cursor does not name: from its first event");
        assert!(r.contains((20, 5, 1_000_000)), "a run in between: whole");
        assert!(r.contains((30, 0, 2)) && !r.contains((30, 0, 3)));
        assert!(!r.contains((30, 1, 1)), "this run's shards past the bound's");
        assert!(!r.contains((9, 0, 100)) && !r.contains((31, 0, 1)));
        assert_eq!(
            r.condition(),
            "(generation = 10 AND ((shard = 0 AND seq > 5) OR (shard = 1 AND seq > 7) OR shard >= 2 )) OR \
             (generation > 10 AND generation < 30) OR (generation = 30 AND ((shard = 0 AND seq <= 2) OR \
             shard >= 1 AND 1 = 0))"
        );
    }
}
