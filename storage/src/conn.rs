//! Connecting, and turning ODBC errors into sentences for an operator.

use std::sync::atomic::{AtomicU64, Ordering};

use odbc_api::{Connection, ConnectionOptions};

use crate::{msg_id, Engine, StorageError};

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);
/// The event log's connections are numbered from 100001 (the vendor's
/// convention), apart from the main database's.
static NEXT_LOG_CONNECTION_ID: AtomicU64 = AtomicU64::new(100_001);

/// Opens a connection and logs message 27126 with its id, or 27147.
pub(crate) fn connect(connection_string: &str, target: &str) -> Result<(Connection<'static>, u64), StorageError> {
    connect_quietly(connection_string, target).inspect_err(|err| {
        tracing::error!(msg_id = msg_id::CONNECTION_FAILED, target, "{}", err.message);
    })
}

/// Like [`connect`], without logging a failure: a writer reconnecting
/// logs its failures itself, rate-limited.
pub(crate) fn connect_quietly(
    connection_string: &str,
    target: &str,
) -> Result<(Connection<'static>, u64), StorageError> {
    connect_counted(connection_string, target, &NEXT_CONNECTION_ID)
}

/// A connection to the event log's database (ids from 100001), quietly.
pub(crate) fn connect_log(connection_string: &str, target: &str) -> Result<(Connection<'static>, u64), StorageError> {
    connect_counted(connection_string, target, &NEXT_LOG_CONNECTION_ID)
}

fn connect_counted(
    connection_string: &str,
    target: &str,
    ids: &AtomicU64,
) -> Result<(Connection<'static>, u64), StorageError> {
    let env = odbc_api::environment().map_err(|e| {
        StorageError::new(format!(
            "could not set up the ODBC environment ({}); is unixODBC installed (Debian package unixodbc)?",
            diag(&e)
        ))
    })?;
    let options = ConnectionOptions { login_timeout_sec: Some(10), ..ConnectionOptions::default() };
    match env.connect_with_connection_string(connection_string, options) {
        Ok(conn) => {
            let id = ids.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                msg_id = msg_id::CONNECTION_OPENED,
                connection_id = id,
                target,
                "New database connection opened (connection ID: {id})"
            );
            Ok((conn, id))
        }
        Err(e) => Err(connect_error(connection_string, target, &e)),
    }
}

/// Logs that a connection is being closed (message 27150).
pub(crate) fn log_closed(id: u64) {
    tracing::info!(
        msg_id = msg_id::CONNECTION_CLOSED,
        connection_id = id,
        "Database connection closed (connection ID: {id})"
    );
}

/// The error's diagnostic on one line: `SQLSTATE: message`.
pub(crate) fn diag(e: &odbc_api::Error) -> String {
    match e {
        odbc_api::Error::Diagnostics { record, .. } => {
            format!("{}: {}", record.state.as_str(), record_message(record))
        }
        other => other.to_string().replace('\n', " "),
    }
}

/// The message on one line (PostgreSQL's end with a line of their own).
fn record_message(record: &odbc_api::handles::Record) -> String {
    let text = String::from_utf8_lossy(&record.message);
    text.trim_end_matches('\0').split_whitespace().collect::<Vec<_>>().join(" ")
}

/// SQLSTATE of the error, if it has one.
pub(crate) fn sqlstate(e: &odbc_api::Error) -> Option<String> {
    match e {
        odbc_api::Error::Diagnostics { record, .. } => Some(record.state.as_str().to_string()),
        _ => None,
    }
}

/// Whether an error means the connection is gone or passes by itself (a
/// lost connection, a deadlock or serialization failure, a lock or
/// statement timeout, a database out of disk or connections, an operator
/// shutting it down), rather than the database refusing what was sent.
/// Only errors known to be such count: anything else is checked against a
/// trivial statement ([`reachable`]), so that an unknown error that some
/// row causes every time cannot hold a writer forever.
pub(crate) fn is_transient(e: &odbc_api::Error, engine: &Engine) -> bool {
    let odbc_api::Error::Diagnostics { record, .. } = e else { return false };
    let state = record.state.as_str();
    if *engine == Engine::Sqlite {
        // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR, SQLITE_FULL (the
        // driver reports most errors as HY000 with SQLite's code).
        return matches!(record.native_error, 5 | 6 | 10 | 13) || state.starts_with("08");
    }
    ["08", "40"].iter().any(|class| state.starts_with(class))
        || ["57P01", "57P02", "57P03", "57014", "55P03", "53100", "53300", "HYT00", "HYT01"].contains(&state)
}

/// Whether the database answers a trivial statement on `conn` (after a
/// rollback); the transaction it opens is rolled back.
pub(crate) fn reachable(conn: &Connection<'static>, engine: &Engine) -> bool {
    let trivial = if *engine == Engine::Oracle { "SELECT 1 FROM DUAL" } else { "SELECT 1" };
    let answered = conn.execute(trivial, (), None).is_ok();
    conn.rollback().is_ok() && answered
}

fn connect_error(connection_string: &str, target: &str, e: &odbc_api::Error) -> StorageError {
    let d = diag(e);
    let state = sqlstate(e).unwrap_or_default();
    if state == "IM002" || d.contains("Can't open lib") {
        if let Some(driver) = attribute(connection_string, "driver") {
            let registered = registered_drivers();
            // unixODBC takes an unregistered name for a library path, so
            // "Can't open lib" means either.
            let what = if registered.iter().any(|r| r.eq_ignore_ascii_case(&driver)) {
                "is registered in /etc/odbcinst.ini but its library cannot be loaded"
            } else {
                "is not registered with unixODBC"
            };
            let registered = if registered.is_empty() { "none".to_string() } else { registered.join(", ") };
            return StorageError::new(format!(
                "the ODBC driver '{driver}' named in the connection string {what} ({d}). {}. \
                 Drivers registered in /etc/odbcinst.ini (`odbcinst -q -d`): {registered}.",
                install_hint(&driver)
            ));
        }
        if let Some(dsn) = attribute(connection_string, "dsn") {
            return StorageError::new(format!(
                "the ODBC data source '{dsn}' is not defined in /etc/odbc.ini or ~/.odbc.ini, or its driver is missing ({d}); \
                 define it (`odbcinst -q -s` lists the defined ones) or give a Driver=...; connection string"
            ));
        }
    }
    StorageError::new(format!("could not connect to the database at {target}: {d}"))
}

/// Which Debian package (or vendor download) provides a driver.
fn install_hint(driver: &str) -> String {
    let l = driver.to_ascii_lowercase();
    let pkg = if l.contains("sqlite") {
        Some("libsqliteodbc")
    } else if l.contains("postgres") || l.contains("psql") {
        Some("odbc-postgresql")
    } else if l.contains("mariadb") || l.contains("mysql") {
        Some("odbc-mariadb")
    } else {
        None
    };
    match pkg {
        Some(p) => {
            format!("Install the Debian package {p} (apt-get install {p}; .ci/setup does it and registers the driver)")
        }
        None if l.contains("sql server") => {
            "Install Microsoft's ODBC driver (package msodbcsql18 from Microsoft's repository)".to_string()
        }
        None if l.contains("oracle") => "Install Oracle Instant Client with its ODBC package".to_string(),
        None => {
            "Install the driver's package, or use one of the registered names: the embedded database uses \
                 SQLite3 (Debian package libsqliteodbc), PostgreSQL uses 'PostgreSQL Unicode' (package odbc-postgresql)"
                .to_string()
        }
    }
}

fn registered_drivers() -> Vec<String> {
    odbc_api::environment()
        .ok()
        .and_then(|env| env.drivers().ok())
        .map(|ds| ds.into_iter().map(|d| d.description).collect())
        .unwrap_or_default()
}

/// Splits a connection string into (key, value) pairs; `{...}` values may
/// hold `;`.
pub(crate) fn attributes(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().trim_start_matches(';').trim().to_string();
        let after = &rest[eq + 1..];
        let (value, next) = if let Some(braced) = after.trim_start().strip_prefix('{') {
            // `}}` is an escaped `}` inside braces.
            let mut v = String::new();
            let mut chars = braced.char_indices().peekable();
            let mut end = braced.len();
            while let Some((i, c)) = chars.next() {
                if c == '}' {
                    if matches!(chars.peek(), Some((_, '}'))) {
                        v.push('}');
                        chars.next();
                        continue;
                    }
                    end = i + 1;
                    break;
                }
                v.push(c);
            }
            let tail = &braced[end.min(braced.len())..];
            let tail = tail.find(';').map(|p| &tail[p + 1..]).unwrap_or("");
            (v, tail)
        } else {
            match after.find(';') {
                Some(p) => (after[..p].trim().to_string(), &after[p + 1..]),
                None => (after.trim().to_string(), ""),
            }
        };
        if !key.is_empty() {
            out.push((key, value));
        }
        rest = next;
    }
    out
}

/// The value of `key` (case-insensitive) in a connection string.
pub(crate) fn attribute(s: &str, key: &str) -> Option<String> {
    attributes(s).into_iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
}

/// Where the database is, for messages, without credentials:
/// `'/data/ixn.db' (SQLite3)`, `127.0.0.1:5432/ixn (PostgreSQL Unicode)`,
/// `DSN 'prod'`.
pub(crate) fn describe_target(s: &str) -> String {
    let get = |k: &str| attribute(s, k).filter(|v| !v.is_empty());
    if let Some(dsn) = get("dsn") {
        return format!("DSN '{dsn}'");
    }
    let driver = get("driver").map(|d| format!(" ({d})")).unwrap_or_default();
    let server = get("server").or_else(|| get("servername")).or_else(|| get("host"));
    let db = get("database").or_else(|| get("dbname"));
    match (server, db) {
        (Some(srv), db) => {
            let port = get("port").map(|p| format!(":{p}")).unwrap_or_default();
            let db = db.map(|d| format!("/{d}")).unwrap_or_default();
            format!("{srv}{port}{db}{driver}")
        }
        (None, Some(db)) => format!("'{db}'{driver}"),
        (None, None) => {
            let masked: Vec<String> = attributes(s)
                .into_iter()
                .map(|(k, v)| {
                    let l = k.to_ascii_lowercase();
                    if l == "pwd" || l == "password" {
                        format!("{k}=***")
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect();
            format!("'{}'", masked.join(";"))
        }
    }
}

/// PostgreSQL advisory lock key of ixn's writer sessions ("ixn" in ASCII).
pub(crate) const WRITER_LOCK_KEY: i64 = 0x69_78_6e;

/// How long a start waits for the writer sessions of a previous server on
/// the same PostgreSQL database to end.
pub(crate) const PREVIOUS_WRITERS_WAIT_S: u32 = 30;

/// PostgreSQL only: waits until no other session holds ixn's writer lock.
/// A server killed with SIGKILL leaves its backends running until they
/// finish the statement they were given, so a COMMIT it sent may still
/// complete after a new server has loaded its rows; that late commit could
/// then overwrite what the new server writes. Every writer session holds
/// the lock shared ([`hold_writer_lock`]); taking it exclusively here
/// waits for the old sessions to end. A live server on the same database
/// holds it for good: the start then fails with a clear message.
pub(crate) fn wait_for_previous_writers(conn: &Connection<'static>, target: &str) -> Result<(), StorageError> {
    let run = |sql: &str| conn.execute(sql, (), None).map(drop);
    run(&format!("SET lock_timeout = '{PREVIOUS_WRITERS_WAIT_S}s'"))
        .map_err(|e| StorageError::new(format!("could not set lock_timeout on {target}: {}", diag(&e))))?;
    let taken = run(&format!("SELECT pg_advisory_lock({WRITER_LOCK_KEY})"));
    let reset = run("SET lock_timeout = 0");
    taken.map_err(|e| {
        StorageError::new(format!(
            "the database at {target} still has writer sessions of another ixn-server after \
             {PREVIOUS_WRITERS_WAIT_S} s (advisory lock {WRITER_LOCK_KEY}): another server is using this \
             database, or a previous one's transactions have not ended ({})",
            diag(&e)
        ))
    })?;
    run(&format!("SELECT pg_advisory_unlock({WRITER_LOCK_KEY})"))
        .map_err(|e| StorageError::new(format!("could not release the start lock on {target}: {}", diag(&e))))?;
    reset.map_err(|e| StorageError::new(format!("could not reset lock_timeout on {target}: {}", diag(&e))))
}

/// PostgreSQL only: a writer session holds ixn's writer lock shared for as
/// long as it lives (see [`wait_for_previous_writers`]).
pub(crate) fn hold_writer_lock(conn: &Connection<'static>) -> Result<(), odbc_api::Error> {
    conn.execute(&format!("SELECT pg_advisory_lock_shared({WRITER_LOCK_KEY})"), (), None).map(drop)
}

/// PostgreSQL only: a writer session finds rows by their primary key and
/// never by scanning the table. Its statements are prepared once, when the
/// table may be nearly empty, and PostgreSQL keeps the plan it made then: a
/// scan of a table of a few pages, which under load holds thousands of rows
/// and many more dead versions (measured: a fifth of the DELETEs scanned
/// it, about 550 rows each, a third of the database's CPU).
pub(crate) fn no_table_scans(conn: &Connection<'static>) -> Result<(), odbc_api::Error> {
    conn.execute("SET enable_seqscan = off", (), None).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_attributes_with_braces() {
        let s = "Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=5;Pwd={a;b}}c};Database=x";
        assert_eq!(attribute(s, "driver").as_deref(), Some("PostgreSQL Unicode"));
        assert_eq!(attribute(s, "PWD").as_deref(), Some("a;b}c"));
        assert_eq!(attribute(s, "database").as_deref(), Some("x"));
        assert_eq!(describe_target(s), "127.0.0.1:5/x (PostgreSQL Unicode)");
    }

    #[test]
    fn describes_sqlite_and_dsn() {
        assert_eq!(describe_target("Driver=SQLite3;Database=/d/ixn.db;"), "'/d/ixn.db' (SQLite3)");
        assert_eq!(describe_target("DSN=prod;Uid=a;Pwd=b"), "DSN 'prod'");
        assert_eq!(describe_target("Driver=X;Uid=a;Pwd=b"), "'Driver=X;Uid=a;Pwd=***'");
    }
}
