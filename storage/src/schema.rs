//! Creating and validating the isdb schema.

use odbc_api::Connection;

use crate::conn::diag;
use crate::records::COLUMNS;
use crate::{msg_id, Engine, StorageError};

/// The schema version this server reads and writes. Version 2 added the
/// nullable columns `interactions.workbin_owner` and
/// `interactions.submit_order` (after `version`, in that order); version 3
/// added the nullable column `interactions.assigned_to` (after
/// `submit_order`).
pub(crate) const SCHEMA_VERSION: i32 = 3;

/// What each version added, for the refusal of an older database.
const ADDED_IN: [(i64, &str); 2] = [
    (2, "the columns interactions.workbin_owner and interactions.submit_order"),
    (3, "the column interactions.assigned_to"),
];

/// The statements that bring a database at schema version `from` (1 or 2)
/// to [`SCHEMA_VERSION`] in place, for this engine's `isdb.sql` (the
/// `*_nvc.sql` variants take NVARCHAR(255) / NVARCHAR2(255) for the name
/// columns instead); `None` for any other version. The message that
/// refuses such a database and docs/storage.md give them. Existing rows
/// get NULL in the added columns: in a queue, submission order derived
/// from the id, nobody handling it. `ALTER TABLE ... ADD` appends, so the
/// columns end in the order of the creation scripts.
pub(crate) fn upgrade_from(engine: &Engine, from: i64) -> Option<Vec<String>> {
    let (name, int) = match engine {
        Engine::Oracle => ("VARCHAR2(255)", "NUMBER(19)"),
        _ => ("VARCHAR(255)", "BIGINT"),
    };
    let mut v = Vec::new();
    if from == 1 {
        v.push(format!("ALTER TABLE interactions ADD workbin_owner {name}"));
        v.push(format!("ALTER TABLE interactions ADD submit_order {int}"));
    }
    if from == 1 || from == 2 {
        v.push(format!("ALTER TABLE interactions ADD assigned_to {name}"));
    } else {
        return None;
    }
    v.push(format!("UPDATE ixn_schema SET version = {SCHEMA_VERSION} WHERE name = 'isdb'"));
    if *engine == Engine::Oracle {
        v.push("COMMIT".to_string());
    }
    Some(v)
}

/// The refusal of a database at `version` (not [`SCHEMA_VERSION`]).
fn wrong_version(engine: &Engine, target: &str, script: &str, version: i64) -> String {
    let Some(upgrade) = upgrade_from(engine, version) else {
        return format!(
            "the database at {target} has isdb schema version {version}, this server needs {SCHEMA_VERSION}"
        );
    };
    let nvc = match engine {
        Engine::MsSql => " (NVARCHAR(255) instead of VARCHAR(255) if the tables came from isdb_nvc.sql)",
        Engine::Oracle => " (NVARCHAR2(255) instead of VARCHAR2(255) if the tables came from isdb_nvc.sql)",
        _ => "",
    };
    let added: Vec<String> =
        ADDED_IN.iter().filter(|(v, _)| *v > version).map(|(v, what)| format!("version {v} adds {what}")).collect();
    format!(
        "the database at {target} has isdb schema version {version}, this server needs {SCHEMA_VERSION} ({}); \
         upgrade it in place, keeping its interactions, with `{};`{nvc}, or drop the tables and recreate them \
         with {script}",
        added.join(", "),
        upgrade.join("; ")
    )
}

const SQLITE_ISDB: &str = include_str!("../sql/sqlite/isdb.sql");
const POSTGRESQL_ISDB: &str = include_str!("../sql/postgresql/isdb.sql");

/// The statements of a script: split on `;`, `--` comments removed.
pub(crate) fn statements(script: &str) -> Vec<String> {
    let without_comments: String = script
        .lines()
        .map(|l| match l.find("--") {
            Some(p) => &l[..p],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    without_comments.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

fn creation_script(engine: &Engine) -> Option<&'static str> {
    match engine {
        Engine::Sqlite => Some(SQLITE_ISDB),
        Engine::Postgres => Some(POSTGRESQL_ISDB),
        _ => None,
    }
}

/// Runs `sql`; Ok(true) if it succeeded, Ok(false) plus the diagnostic if
/// it failed.
fn probe(conn: &Connection<'_>, sql: &str) -> Result<(), String> {
    match conn.execute(sql, (), None) {
        Ok(_) => Ok(()),
        Err(e) => Err(diag(&e)),
    }
}

fn script_path(engine: &Engine) -> String {
    format!("storage/sql/{}/isdb.sql", engine.script_dir())
}

/// How many of ixn's two tables the database has. Asks the catalog where
/// the engine has a known one (so a first start logs no failed
/// statements), else probes with SELECTs.
fn existing_tables(conn: &Connection<'_>, engine: &Engine) -> usize {
    let catalog = match engine {
        Engine::Sqlite => {
            Some("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('interactions', 'ixn_schema')")
        }
        Engine::Postgres => Some(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() \
             AND table_name IN ('interactions', 'ixn_schema')",
        ),
        _ => None,
    };
    if let Some(sql) = catalog {
        if let Ok(n) = query_i64(conn, sql) {
            return n.unwrap_or(0) as usize;
        }
    }
    ["interactions", "ixn_schema"]
        .iter()
        .filter(|t| probe(conn, &format!("SELECT 1 FROM {t} WHERE 1=0")).is_ok())
        .count()
}

/// Creates the schema when asked and absent, then validates it. Logs 27113.
pub(crate) fn ensure(
    conn: &Connection<'_>,
    conn_id: u64,
    engine: &Engine,
    target: &str,
    create: bool,
) -> Result<(), StorageError> {
    if create && existing_tables(conn, engine) == 0 {
        let Some(script) = creation_script(engine) else {
            return Err(StorageError::new(format!(
                "the {engine} database at {target} has no ixn tables and ixn creates them only for SQLite and \
                 PostgreSQL; create them with {}",
                script_path(engine)
            )));
        };
        create_schema(conn, engine, target, script)?;
    }

    tracing::info!(
        msg_id = msg_id::CHECKING_INTEGRITY,
        connection_id = conn_id,
        target,
        "Checking database integrity (connection ID: {conn_id})"
    );
    validate(conn, engine, target)?;
    tracing::info!(
        msg_id = msg_id::INTEGRITY_OK,
        connection_id = conn_id,
        engine = %engine,
        "Database integrity checked: schema isdb version {SCHEMA_VERSION} (connection ID: {conn_id})"
    );
    Ok(())
}

fn create_schema(conn: &Connection<'_>, engine: &Engine, target: &str, script: &str) -> Result<(), StorageError> {
    run_script(conn, target, "the ixn tables", script)?;
    tracing::info!(
        msg_id = msg_id::SCHEMA_CREATED,
        target,
        script = %script_path(engine),
        "Database schema isdb version {SCHEMA_VERSION} created in {target} from {}",
        script_path(engine)
    );
    Ok(())
}

fn validate(conn: &Connection<'_>, engine: &Engine, target: &str) -> Result<(), StorageError> {
    let script = script_path(engine);
    if let Err(d) = probe(conn, "SELECT 1 FROM interactions WHERE 1=0") {
        return Err(StorageError::new(format!(
            "the database at {target} has no table 'interactions' ({d}); create it with {script}"
        )));
    }
    if let Err(d) = probe(conn, "SELECT name, version FROM ixn_schema WHERE 1=0") {
        return Err(StorageError::new(format!(
            "the database at {target} has no table 'ixn_schema' with columns name and version ({d}), so its \
             schema version is unknown; create the tables with {script}"
        )));
    }
    let version = schema_version(conn).map_err(|d| {
        StorageError::new(format!("could not read the schema version from ixn_schema in the database at {target}: {d}"))
    })?;
    match version {
        None => {
            return Err(StorageError::new(format!(
                "the database at {target} has no 'isdb' row in table ixn_schema, so its schema version is unknown; \
                 this server needs version {SCHEMA_VERSION} (create the tables with {script})"
            )))
        }
        Some(v) if v != i64::from(SCHEMA_VERSION) => {
            return Err(StorageError::new(wrong_version(engine, target, &script, v)))
        }
        Some(_) => {}
    }
    let all = format!("SELECT {} FROM interactions WHERE 1=0", COLUMNS.join(", "));
    if let Err(d) = probe(conn, &all) {
        let missing: Vec<&str> = COLUMNS
            .iter()
            .copied()
            .filter(|c| probe(conn, &format!("SELECT {c} FROM interactions WHERE 1=0")).is_err())
            .collect();
        let what = if missing.is_empty() {
            format!("its columns cannot be read together ({d})")
        } else {
            format!("it lacks column(s) {} ({d})", missing.join(", "))
        };
        return Err(StorageError::new(format!(
            "table 'interactions' in the database at {target} does not match isdb schema version {SCHEMA_VERSION}: \
             {what}; recreate it with {script}"
        )));
    }
    Ok(())
}

/// The version in the 'isdb' row of ixn_schema, `None` if there is no row.
fn schema_version(conn: &Connection<'_>) -> Result<Option<i64>, String> {
    query_i64(conn, "SELECT version FROM ixn_schema WHERE name = 'isdb'")
}

/// The first column of the first row of `sql` as an integer.
fn query_i64(conn: &Connection<'_>, sql: &str) -> Result<Option<i64>, String> {
    let cursor = conn.execute(sql, (), None).map_err(|e| diag(&e))?;
    let Some(mut cursor) = cursor else { return Ok(None) };
    use odbc_api::Cursor;
    let Some(mut row) = cursor.next_row().map_err(|e| diag(&e))? else { return Ok(None) };
    let mut v = odbc_api::Nullable::<i64>::null();
    row.get_data(1, &mut v).map_err(|e| diag(&e))?;
    Ok(v.into_opt())
}

/// Runs a creation script in one transaction: a half-created schema would
/// fail validation on every later start.
fn run_script(conn: &Connection<'_>, target: &str, what: &str, script: &str) -> Result<(), StorageError> {
    let fail = |stmt: &str, e: &odbc_api::Error| {
        StorageError::new(format!(
            "could not create {what} in the database at {target}: {} (statement: {})",
            diag(e),
            stmt.split_whitespace().collect::<Vec<_>>().join(" ")
        ))
    };
    conn.set_autocommit(false).map_err(|e| fail("SET AUTOCOMMIT OFF", &e))?;
    let run = || -> Result<(), StorageError> {
        for stmt in statements(script) {
            conn.execute(&stmt, (), None).map_err(|e| fail(&stmt, &e))?;
        }
        conn.commit().map_err(|e| fail("COMMIT", &e))
    };
    let result = run();
    if result.is_err() {
        let _ = conn.rollback();
    }
    conn.set_autocommit(true).map_err(|e| fail("SET AUTOCOMMIT ON", &e))?;
    result
}

const SQLITE_OUTBOX: &str = include_str!("../sql/sqlite/isdb_outbox.sql");
const POSTGRESQL_OUTBOX: &str = include_str!("../sql/postgresql/isdb_outbox.sql");
const SQLITE_ELDB: &str = include_str!("../sql/sqlite/eldb.sql");
const POSTGRESQL_ELDB: &str = include_str!("../sql/postgresql/eldb.sql");

/// The event log's outbox in the main database: created when asked (the
/// embedded default) and absent, then checked.
pub(crate) fn ensure_outbox(
    conn: &Connection<'_>,
    engine: &Engine,
    target: &str,
    create: bool,
) -> Result<(), StorageError> {
    let columns = crate::events::EVENT_COLUMNS.join(", ");
    let check = format!("SELECT {columns} FROM ixn_event_outbox WHERE 1=0");
    let script = format!("storage/sql/{}/isdb_outbox.sql", engine.script_dir());
    if probe(conn, &check).is_err() && create {
        let sql = match engine {
            Engine::Sqlite => SQLITE_OUTBOX,
            Engine::Postgres => POSTGRESQL_OUTBOX,
            _ => "",
        };
        if !sql.is_empty() {
            run_script(conn, target, "the event log's outbox", sql)?;
            tracing::info!(
                msg_id = msg_id::SCHEMA_CREATED,
                target,
                script = %script,
                "Event log outbox (ixn_event_outbox) created in {target} from {script}"
            );
        }
    }
    probe(conn, &check).map_err(|d| {
        StorageError::new(format!(
            "the event log is on ([logger-settings]) but the database at {target} has no table ixn_event_outbox              with the columns this server writes ({d}); create it with {script}"
        ))
    })
}

/// The eldb tables of the event log's database: created when asked and
/// absent, then checked (tables, columns, `rpt_schema` version 1).
pub(crate) fn ensure_eldb(
    conn: &Connection<'_>,
    engine: &Engine,
    target: &str,
    create: bool,
) -> Result<(), StorageError> {
    use crate::events::{AGENT_COLUMNS, EVENT_COLUMNS};
    let script = format!("storage/sql/{}/eldb.sql", engine.script_dir());
    let version = || query_i64(conn, "SELECT version FROM rpt_schema WHERE name = 'eldb'");
    if version().is_err() && create {
        let sql = match engine {
            Engine::Sqlite => SQLITE_ELDB,
            Engine::Postgres => POSTGRESQL_ELDB,
            _ => "",
        };
        if !sql.is_empty() {
            run_script(conn, target, "the event log tables", sql)?;
            tracing::info!(
                msg_id = msg_id::SCHEMA_CREATED,
                target,
                script = %script,
                "Event log schema eldb version {ELDB_VERSION} created in {target} from {script}"
            );
        }
    }
    match version() {
        Ok(Some(v)) if v == i64::from(ELDB_VERSION) => {}
        Ok(Some(v)) => {
            return Err(StorageError::new(format!(
                "the event log database at {target} has eldb schema version {v}, this server needs {ELDB_VERSION};                  recreate its tables with {script}"
            )))
        }
        Ok(None) => {
            return Err(StorageError::new(format!(
                "the event log database at {target} has no 'eldb' row in table rpt_schema; create its tables with                  {script}"
            )))
        }
        Err(d) => {
            return Err(StorageError::new(format!(
                "the event log database at {target} has no table rpt_schema ({d}); create its tables with {script}"
            )))
        }
    }
    let agent: Vec<&str> = AGENT_COLUMNS.iter().map(|c| c.name()).collect();
    for (table, cols) in [("rpt_interaction", EVENT_COLUMNS.join(", ")), ("rpt_agent", agent.join(", "))] {
        if let Err(d) = probe(conn, &format!("SELECT {cols} FROM {table} WHERE 1=0")) {
            return Err(StorageError::new(format!(
                "table {table} in the event log database at {target} does not match eldb schema version                  {ELDB_VERSION} ({d}); recreate it with {script}"
            )));
        }
    }
    tracing::info!(
        msg_id = msg_id::INTEGRITY_OK,
        target,
        "Event log database integrity checked: schema eldb version {ELDB_VERSION}"
    );
    Ok(())
}

/// The eldb schema version this server writes.
pub(crate) const ELDB_VERSION: i32 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_scripts() {
        let s = statements(SQLITE_ISDB);
        assert_eq!(s.len(), 3);
        assert!(s[0].starts_with("CREATE TABLE interactions"));
        assert!(s[2].starts_with("INSERT INTO ixn_schema"));
        assert!(s[0].ends_with("submit_order        BIGINT,\n  assigned_to         VARCHAR(255)\n)"), "{}", s[0]);
        // PostgreSQL's has the table's vacuum settings besides.
        let pg = statements(POSTGRESQL_ISDB);
        assert_eq!(pg.len(), 4);
        assert!(pg[1].starts_with("ALTER TABLE interactions SET (autovacuum_vacuum_scale_factor = 0"), "{}", pg[1]);
    }

    #[test]
    fn version_2_is_refused_with_the_upgrade() {
        let m = wrong_version(&Engine::Sqlite, "'/d/ixn.db' (SQLite3)", "storage/sql/sqlite/isdb.sql", 2);
        assert_eq!(
            m,
            "the database at '/d/ixn.db' (SQLite3) has isdb schema version 2, this server needs 3 (version 3 adds \
             the column interactions.assigned_to); upgrade it in place, keeping its interactions, with \
             `ALTER TABLE interactions ADD assigned_to VARCHAR(255); \
             UPDATE ixn_schema SET version = 3 WHERE name = 'isdb';`, \
             or drop the tables and recreate them with storage/sql/sqlite/isdb.sql"
        );
        let m = wrong_version(&Engine::Oracle, "DSN 'o'", "storage/sql/oracle/isdb.sql", 2);
        assert!(
            m.contains(
                "`ALTER TABLE interactions ADD assigned_to VARCHAR2(255); \
                 UPDATE ixn_schema SET version = 3 WHERE name = 'isdb'; COMMIT;` (NVARCHAR2(255) instead of \
                 VARCHAR2(255) if the tables came from isdb_nvc.sql), or drop"
            ),
            "{m}"
        );
        let m = wrong_version(&Engine::MsSql, "DSN 'm'", "storage/sql/mssql/isdb.sql", 2);
        assert!(
            m.contains(
                "`ALTER TABLE interactions ADD assigned_to VARCHAR(255); \
                 UPDATE ixn_schema SET version = 3 WHERE name = 'isdb';` (NVARCHAR(255) instead of"
            ),
            "{m}"
        );
        let m = wrong_version(&Engine::MariaDb, "DSN 'a'", "storage/sql/mariadb/isdb.sql", 2);
        assert!(
            m.contains(
                "`ALTER TABLE interactions ADD assigned_to VARCHAR(255); \
                 UPDATE ixn_schema SET version = 3 WHERE name = 'isdb';`, or drop"
            ),
            "{m}"
        );
        let m = wrong_version(&Engine::Postgres, "h:1/x (PostgreSQL Unicode)", "storage/sql/postgresql/isdb.sql", 2);
        assert!(m.contains("`ALTER TABLE interactions ADD assigned_to VARCHAR(255); UPDATE"), "{m}");
        assert!(m.ends_with("recreate them with storage/sql/postgresql/isdb.sql"), "{m}");
    }

    #[test]
    fn version_1_is_refused_with_the_upgrade_to_3() {
        let m = wrong_version(&Engine::Sqlite, "'/d/ixn.db' (SQLite3)", "storage/sql/sqlite/isdb.sql", 1);
        assert_eq!(
            m,
            "the database at '/d/ixn.db' (SQLite3) has isdb schema version 1, this server needs 3 (version 2 adds \
             the columns interactions.workbin_owner and interactions.submit_order, version 3 adds the column \
             interactions.assigned_to); upgrade it in place, keeping its interactions, with \
             `ALTER TABLE interactions ADD workbin_owner VARCHAR(255); \
             ALTER TABLE interactions ADD submit_order BIGINT; \
             ALTER TABLE interactions ADD assigned_to VARCHAR(255); \
             UPDATE ixn_schema SET version = 3 WHERE name = 'isdb';`, \
             or drop the tables and recreate them with storage/sql/sqlite/isdb.sql"
        );
        let m = wrong_version(&Engine::Oracle, "DSN 'o'", "storage/sql/oracle/isdb.sql", 1);
        assert!(
            m.contains(
                "`ALTER TABLE interactions ADD workbin_owner VARCHAR2(255); \
                 ALTER TABLE interactions ADD submit_order NUMBER(19); \
                 ALTER TABLE interactions ADD assigned_to VARCHAR2(255); \
                 UPDATE ixn_schema SET version = 3 WHERE name = 'isdb'; COMMIT;` (NVARCHAR2(255) instead of"
            ),
            "{m}"
        );
        let m = wrong_version(&Engine::MsSql, "DSN 'm'", "storage/sql/mssql/isdb.sql", 1);
        assert!(
            m.contains(
                "ADD workbin_owner VARCHAR(255); ALTER TABLE interactions ADD submit_order BIGINT; \
                 ALTER TABLE interactions ADD assigned_to VARCHAR(255); UPDATE ixn_schema SET version = 3"
            ) && m.contains("(NVARCHAR(255) instead of"),
            "{m}"
        );
        let m = wrong_version(&Engine::MariaDb, "DSN 'a'", "storage/sql/mariadb/isdb.sql", 1);
        assert!(
            m.contains(
                "ADD workbin_owner VARCHAR(255); ALTER TABLE interactions ADD submit_order BIGINT; \
                 ALTER TABLE interactions ADD assigned_to VARCHAR(255); UPDATE ixn_schema SET version = 3"
            ),
            "{m}"
        );
    }

    #[test]
    fn other_versions_are_refused_without_an_upgrade() {
        for v in [0, 4, 99, -1] {
            assert_eq!(upgrade_from(&Engine::Sqlite, v), None);
            let m =
                wrong_version(&Engine::Postgres, "h:1/x (PostgreSQL Unicode)", "storage/sql/postgresql/isdb.sql", v);
            assert_eq!(
                m,
                format!("the database at h:1/x (PostgreSQL Unicode) has isdb schema version {v}, this server needs 3")
            );
        }
    }

    /// Upgrading adds exactly the columns a version lacks, with the types
    /// the creation script gives them, in the script's order.
    #[test]
    fn upgrades_add_the_missing_columns_with_the_script_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
        for (engine, rel) in [
            (Engine::Sqlite, "sqlite/isdb.sql"),
            (Engine::Postgres, "postgresql/isdb.sql"),
            (Engine::MsSql, "mssql/isdb.sql"),
            (Engine::Oracle, "oracle/isdb.sql"),
            (Engine::MariaDb, "mariadb/isdb.sql"),
        ] {
            let script = std::fs::read_to_string(dir.join(rel)).unwrap();
            let create = &statements(&script)[0];
            let ty = |c: &str| {
                let l = create.lines().find(|l| l.trim_start().starts_with(&format!("{c} "))).unwrap();
                l.split_whitespace().nth(1).unwrap().trim_end_matches(',').to_string()
            };
            for (from, added) in [(1, &COLUMNS[18..]), (2, &COLUMNS[20..])] {
                let up = upgrade_from(&engine, from).unwrap();
                let alters: Vec<String> =
                    added.iter().map(|c| format!("ALTER TABLE interactions ADD {c} {}", ty(c))).collect();
                assert_eq!(&up[..alters.len()], &alters[..], "{rel} from {from}");
                assert_eq!(up[alters.len()], "UPDATE ixn_schema SET version = 3 WHERE name = 'isdb'", "{rel}");
                let rest: Vec<&str> = up[alters.len() + 1..].iter().map(String::as_str).collect();
                assert_eq!(rest, if engine == Engine::Oracle { vec!["COMMIT"] } else { vec![] }, "{rel}");
            }
        }
    }

    #[test]
    fn scripts_say_version_3_and_end_with_workbin_owner_submit_order_and_assigned_to() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
        for rel in [
            "sqlite/isdb.sql",
            "postgresql/isdb.sql",
            "mssql/isdb.sql",
            "mssql/isdb_nvc.sql",
            "oracle/isdb.sql",
            "oracle/isdb_nvc.sql",
            "mariadb/isdb.sql",
        ] {
            let script = std::fs::read_to_string(dir.join(rel)).unwrap();
            let stmts = statements(&script);
            let create = &stmts[0];
            let names: Vec<&str> =
                create.lines().skip(1).filter_map(|l| l.strip_prefix("  ")?.split_whitespace().next()).collect();
            assert_eq!(names, COLUMNS, "{rel}: columns in statement order");
            assert_eq!(names[names.len() - 3..], ["workbin_owner", "submit_order", "assigned_to"], "{rel}");
            let line = |c: &str| create.lines().find(|l| l.trim_start().starts_with(&format!("{c} "))).unwrap();
            let ty = |l: &str| l.split_whitespace().nth(1).unwrap().trim_end_matches(',').to_string();
            let name_type = ty(line("queue"));
            for c in ["workbin_owner", "assigned_to"] {
                assert!(!line(c).contains("NOT NULL"), "{rel}: {c} is nullable");
                assert_eq!(ty(line(c)), name_type, "{rel}: {c} has the type of the other names");
            }
            assert!(name_type.ends_with("(255)"), "{rel}: {name_type}");
            let order = line("submit_order");
            assert!(!order.contains("NOT NULL"), "{rel}: submit_order is nullable");
            assert_eq!(ty(order), ty(line("received_at")), "{rel}: submit_order has the type of the other integers");
            assert!(
                stmts.iter().any(|s| s == "INSERT INTO ixn_schema (name, version) VALUES ('isdb', 3)"),
                "{rel}: schema version 3"
            );
            assert!(!script.contains("VALUES ('isdb', 2)"), "{rel}: no other version");
            assert!(script.contains("(schema version 3;"), "{rel}: header says version 3");
        }
    }

    #[test]
    fn scripts_name_every_column() {
        for script in [SQLITE_ISDB, POSTGRESQL_ISDB] {
            let create = &statements(script)[0];
            for c in COLUMNS {
                assert!(create.contains(&format!("\n  {c} ")), "{c} missing");
            }
        }
    }
}
