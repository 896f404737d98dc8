//! A connection as the writers and the event log write through it: every
//! writing statement they prepare goes through [`Writing::prepare`], which
//! puts the engine's [`crate::Engine::compile_once_prefix`] before it.

use odbc_api::handles::StatementImpl;
use odbc_api::{Connection, Prepared};

#[derive(Clone, Copy)]
pub(crate) struct Writing<'c> {
    conn: &'c Connection<'static>,
    prefix: &'static str,
}

/// The text `Writing::prepare` gives the driver for `sql` on `engine`.
pub(crate) fn compiled_once(prefix: &str, sql: &str) -> String {
    format!("{prefix}{sql}")
}

impl<'c> Writing<'c> {
    pub(crate) fn new(conn: &'c Connection<'static>, engine: &crate::Engine) -> Self {
        Writing { conn, prefix: engine.compile_once_prefix() }
    }

    /// Prepares `sql`, an INSERT or DELETE, as the engine runs it best.
    pub(crate) fn prepare(&self, sql: &str) -> Result<Prepared<StatementImpl<'c>>, odbc_api::Error> {
        self.conn.prepare(&compiled_once(self.prefix, sql))
    }
}
