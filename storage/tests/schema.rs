//! Opening refuses databases whose schema does not match, and names what
//! is wrong; a missing driver names the package to install.

mod common;

use common::*;
use std::sync::Arc;

use ixn_storage::{sqlite_connection_string, CompletionSink, Storage, StorageConfig, StoreOp, WriteRequest};

fn open_err(cs: &str, create: bool) -> String {
    match Storage::open(StorageConfig { create_schema: create, ..StorageConfig::new(cs) }) {
        Ok(_) => panic!("open succeeded on a bad database"),
        Err(e) => {
            // Display is the message.
            assert_eq!(e.to_string(), e.message);
            e.message
        }
    }
}

fn sqlite(tag: &str) -> (TempDir, String) {
    let dir = TempDir::new(tag);
    let cs = sqlite_connection_string(&dir.0.join("ixn.db"));
    (dir, cs)
}

#[test]
fn empty_database_without_create_is_refused() {
    let (dir, cs) = sqlite("noschema");
    let m = open_err(&cs, false);
    assert!(m.contains("has no table 'interactions'"), "{m}");
    assert!(m.contains("storage/sql/sqlite/isdb.sql"), "{m}");
    assert!(m.contains(&dir.0.join("ixn.db").display().to_string()), "names the database: {m}");
}

#[test]
fn creates_once_then_validates() {
    let (_dir, cs) = sqlite("create");
    Storage::open(StorageConfig { create_schema: true, ..StorageConfig::new(cs.clone()) }).unwrap();
    // Second open: tables exist, nothing is created again.
    Storage::open(StorageConfig { create_schema: true, ..StorageConfig::new(cs.clone()) }).unwrap();
    Storage::open(StorageConfig::new(cs)).unwrap();
}

#[test]
fn wrong_version_is_refused() {
    let (_dir, cs) = sqlite("version");
    Storage::open(StorageConfig { create_schema: true, ..StorageConfig::new(cs.clone()) }).unwrap();
    run_sql(&cs, "UPDATE ixn_schema SET version = 4 WHERE name = 'isdb'", false);
    let m = open_err(&cs, true);
    assert!(m.ends_with("has isdb schema version 4, this server needs 3"), "no upgrade offered: {m}");
    run_sql(&cs, "DELETE FROM ixn_schema", false);
    let m = open_err(&cs, true);
    assert!(m.contains("no 'isdb' row in table ixn_schema"), "{m}");
}

/// The tables of isdb schema version 1 (no workbin_owner, submit_order, assigned_to), as the SQLite
/// and PostgreSQL isdb.sql created them, with one live interaction.
const ISDB_V1: &str = "
CREATE TABLE interactions (
  id                  VARCHAR(64)  NOT NULL PRIMARY KEY,
  tenant              VARCHAR(255),
  media_type          VARCHAR(255),
  interaction_type    VARCHAR(255),
  interaction_subtype VARCHAR(255),
  queue               VARCHAR(255),
  priority            BIGINT NOT NULL,
  submitted_by        VARCHAR(255),
  received_at         BIGINT,
  submitted_at        BIGINT,
  placed_in_queue_at  BIGINT,
  moved_to_queue_at   BIGINT,
  delivered_at        BIGINT,
  assigned_at         BIGINT,
  held_at             BIGINT,
  completed_at        BIGINT,
  properties          TEXT,
  version             BIGINT NOT NULL
);
CREATE TABLE ixn_schema (
  name    VARCHAR(64) NOT NULL PRIMARY KEY,
  version INT NOT NULL
);
INSERT INTO ixn_schema (name, version) VALUES ('isdb', 1);
INSERT INTO interactions (id, tenant, media_type, interaction_type, interaction_subtype, queue, priority,
  submitted_by, received_at, properties, version)
  VALUES ('0009fromv1', 'Environment', 'chat', 'Inbound', 'InboundNew', 'Chat inbound', 5, 'chat-server-1',
  1760000000000, '', 3);
";

/// The tables of isdb schema version 2 (no assigned_to), as the SQLite and
/// PostgreSQL isdb.sql created them, with two live interactions: one in a
/// workbin with a submit order, one in a queue without.
const ISDB_V2: &str = "
CREATE TABLE interactions (
  id                  VARCHAR(64)  NOT NULL PRIMARY KEY,
  tenant              VARCHAR(255),
  media_type          VARCHAR(255),
  interaction_type    VARCHAR(255),
  interaction_subtype VARCHAR(255),
  queue               VARCHAR(255),
  priority            BIGINT NOT NULL,
  submitted_by        VARCHAR(255),
  received_at         BIGINT,
  submitted_at        BIGINT,
  placed_in_queue_at  BIGINT,
  moved_to_queue_at   BIGINT,
  delivered_at        BIGINT,
  assigned_at         BIGINT,
  held_at             BIGINT,
  completed_at        BIGINT,
  properties          TEXT,
  version             BIGINT NOT NULL,
  workbin_owner       VARCHAR(255),
  submit_order        BIGINT
);
CREATE TABLE ixn_schema (
  name    VARCHAR(64) NOT NULL PRIMARY KEY,
  version INT NOT NULL
);
INSERT INTO ixn_schema (name, version) VALUES ('isdb', 2);
INSERT INTO interactions (id, tenant, media_type, interaction_type, interaction_subtype, queue, priority,
  submitted_by, received_at, properties, version, workbin_owner, submit_order)
  VALUES ('0009fromv2wb', 'Environment', 'chat', 'Inbound', 'InboundNew', 'Chat workbin', 5, 'chat-server-1',
  1760000000000, '', 3, 'Agent Smith', 9223372036854710272);
INSERT INTO interactions (id, tenant, media_type, interaction_type, interaction_subtype, queue, priority,
  submitted_by, received_at, properties, version)
  VALUES ('0009fromv2q', 'Environment', 'chat', 'Inbound', 'InboundNew', 'Chat inbound', 5, 'chat-server-1',
  1760000000001, '', 1);
";

/// Opens `cs`, expecting it refused for schema version `version` with
/// `upgrade` as the statements; checks the message, runs the statements
/// exactly as the message gives them.
fn refused_then_upgraded(cs: &str, script: &str, version: i64, adds: &str, upgrade: &str) {
    let m = open_err(cs, true);
    assert!(m.contains(&format!("has isdb schema version {version}, this server needs 3 ({adds})")), "{m}");
    assert!(m.contains(&format!("`{upgrade}`")), "gives the upgrade statements: {m}");
    assert!(m.ends_with(&format!("recreate them with {script}")), "{m}");
    let given = m.split('`').nth(1).unwrap();
    assert_eq!(given, upgrade);
    run_sql(cs, given, false);
}

/// Writes `r` (an upgraded row, now with an agent) through a writer and
/// reads the database back: it must hold exactly `want`.
fn write_then_load(cs: &str, r: &ixn_storage::InteractionRecord, want: Vec<ixn_storage::InteractionRecord>) {
    let sink = Collect::new();
    let writers =
        Storage::open(StorageConfig::new(cs)).unwrap().start(vec![sink.clone() as Arc<dyn CompletionSink>]).unwrap();
    writers.handle().submit(WriteRequest {
        shard: 0,
        token: 1,
        op: StoreOp::Upsert(Box::new(r.clone())),
        log: Vec::new(),
    });
    assert!(sink.wait(1, 30)[&1]);
    writers.shutdown();
    let mut loaded = Storage::open(StorageConfig::new(cs)).unwrap().load_live().unwrap();
    loaded.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(loaded, want);
}

/// A version-1 database is refused with the statements that upgrade it to
/// version 3; they work, and the interaction it held loads back with no
/// workbin owner, no submit order and no agent; a write of it with a
/// submit order and an agent then reads back.
fn version_1_is_refused_then_upgraded(cs: &str, script: &str) {
    run_sql(cs, ISDB_V1, false);
    refused_then_upgraded(
        cs,
        script,
        1,
        "version 2 adds the columns interactions.workbin_owner and interactions.submit_order, \
         version 3 adds the column interactions.assigned_to",
        "ALTER TABLE interactions ADD workbin_owner VARCHAR(255); \
         ALTER TABLE interactions ADD submit_order BIGINT; \
         ALTER TABLE interactions ADD assigned_to VARCHAR(255); \
         UPDATE ixn_schema SET version = 3 WHERE name = 'isdb';",
    );
    let loaded = Storage::open(StorageConfig::new(cs)).unwrap().load_live().unwrap();
    assert_eq!(loaded.len(), 1);
    let r = &loaded[0];
    assert_eq!(
        (r.id.as_str(), r.queue.as_str(), r.version, r.received_at),
        ("0009fromv1", "Chat inbound", 3, Some(1_760_000_000_000))
    );
    assert_eq!((&r.workbin_owner, r.submit_order, &r.assigned_to), (&None, None, &None));
    // The upgraded table takes the new columns.
    let mut r = r.clone();
    r.version = 4;
    r.submit_order = Some(LARGE_SUBMIT_ORDER);
    r.assigned_to = Some("agent7".into());
    write_then_load(cs, &r, vec![r.clone()]);
}

/// A version-2 database is refused with the statements that add
/// assigned_to; they work, both interactions load back as they were with
/// no agent (NULL is None), and one then takes agent7.
fn version_2_is_refused_then_upgraded(cs: &str, script: &str) {
    run_sql(cs, ISDB_V2, false);
    refused_then_upgraded(
        cs,
        script,
        2,
        "version 3 adds the column interactions.assigned_to",
        "ALTER TABLE interactions ADD assigned_to VARCHAR(255); UPDATE ixn_schema SET version = 3 WHERE name = 'isdb';",
    );
    let loaded = Storage::open(StorageConfig::new(cs)).unwrap().load_live().unwrap();
    let mut loaded = loaded;
    loaded.sort_by(|a, b| a.id.cmp(&b.id));
    let got: Vec<_> = loaded
        .iter()
        .map(|r| (r.id.as_str(), r.version, r.workbin_owner.as_deref(), r.submit_order, r.assigned_to.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("0009fromv2q", 1, None, None, None),
            ("0009fromv2wb", 3, Some("Agent Smith"), Some(LARGE_SUBMIT_ORDER), None),
        ]
    );
    let mut handled = loaded[0].clone();
    handled.version = 2;
    handled.assigned_at = Some(1_760_000_000_300);
    handled.assigned_to = Some("agent7".into());
    write_then_load(cs, &handled, vec![handled.clone(), loaded[1].clone()]);
}

#[test]
fn version_1_database_is_refused_with_the_upgrade() {
    let (_dir, cs) = sqlite("version1");
    version_1_is_refused_then_upgraded(&cs, "storage/sql/sqlite/isdb.sql");
}

#[test]
fn version_2_database_is_refused_with_the_upgrade() {
    let (_dir, cs) = sqlite("version2");
    version_2_is_refused_then_upgraded(&cs, "storage/sql/sqlite/isdb.sql");
}

#[test]
fn version_3_without_assigned_to_is_refused() {
    // Says version 3, but the ALTER was never run.
    let (_dir, cs) = sqlite("noassigned");
    run_sql(&cs, &ISDB_V2.replace("VALUES ('isdb', 2)", "VALUES ('isdb', 3)"), false);
    let m = open_err(&cs, true);
    assert!(m.contains("does not match isdb schema version 3: it lacks column(s) assigned_to ("), "{m}");
}

#[test]
fn missing_schema_table_is_refused() {
    let (_dir, cs) = sqlite("noversion");
    Storage::open(StorageConfig { create_schema: true, ..StorageConfig::new(cs.clone()) }).unwrap();
    run_sql(&cs, "DROP TABLE ixn_schema", false);
    // Not recreated: the database is not empty.
    let m = open_err(&cs, true);
    assert!(m.contains("has no table 'ixn_schema'"), "{m}");
}

#[test]
fn missing_columns_are_named() {
    let (_dir, cs) = sqlite("columns");
    run_sql(
        &cs,
        "CREATE TABLE interactions (id VARCHAR(64) PRIMARY KEY, tenant VARCHAR(255), media_type VARCHAR(255), \
         interaction_type VARCHAR(255), interaction_subtype VARCHAR(255), queue VARCHAR(255), priority BIGINT, \
         submitted_by VARCHAR(255), received_at BIGINT, submitted_at BIGINT, placed_in_queue_at BIGINT, \
         moved_to_queue_at BIGINT, delivered_at BIGINT, assigned_at BIGINT, completed_at BIGINT, properties TEXT);
         CREATE TABLE ixn_schema (name VARCHAR(64), version INT);
         INSERT INTO ixn_schema VALUES ('isdb', 3)",
        false,
    );
    let m = open_err(&cs, true);
    assert!(m.contains("lacks column(s) held_at, version, workbin_owner, submit_order, assigned_to ("), "{m}");
}

#[test]
fn missing_driver_names_the_package() {
    let m = open_err("Driver=NoSuchDriver;Database=/tmp/x.db;", false);
    assert!(m.contains("'NoSuchDriver'"), "{m}");
    assert!(m.contains("not registered"), "{m}");
    assert!(m.contains("libsqliteodbc") && m.contains("odbc-postgresql"), "suggests packages: {m}");
    assert!(m.contains("Can't open lib 'NoSuchDriver'"), "keeps the diagnostic: {m}");
    // A known driver name missing from this machine names its own package.
    let m = open_err("Driver={MariaDB Unicode};Server=127.0.0.1;", false);
    assert!(m.contains("odbc-mariadb"), "{m}");
    let m = open_err("DSN=no_such_dsn;", false);
    assert!(m.contains("data source 'no_such_dsn' is not defined"), "{m}");
}

#[test]
fn unreachable_server_is_a_connection_error() {
    let m = open_err("Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=1;Database=x;Uid=u;Pwd=secret;", false);
    assert!(m.starts_with("could not connect to the database at 127.0.0.1:1/x"), "{m}");
    assert!(!m.contains("secret"), "no password in messages: {m}");
}

#[test]
fn postgres_schema_validation() {
    let Some(cs) = pg_connection_string() else { return };
    let cs = pg_private_db(&cs, "ixn_storage_schema");
    let m = open_err(&cs, false);
    assert!(m.contains("has no table 'interactions'") && m.contains("storage/sql/postgresql/isdb.sql"), "{m}");
    Storage::open(StorageConfig { create_schema: true, ..StorageConfig::new(cs.clone()) }).unwrap();
    run_sql(&cs, "UPDATE ixn_schema SET version = 4", false);
    let m = open_err(&cs, true);
    assert!(m.ends_with("has isdb schema version 4, this server needs 3"), "{m}");
    run_sql(&cs, "UPDATE ixn_schema SET version = 3; ALTER TABLE interactions DROP COLUMN properties", false);
    let m = open_err(&cs, true);
    assert!(m.contains("lacks column(s) properties ("), "{m}");
    run_sql(
        &cs,
        "ALTER TABLE interactions ADD properties TEXT; ALTER TABLE interactions DROP COLUMN assigned_to",
        false,
    );
    let m = open_err(&cs, true);
    assert!(m.contains("lacks column(s) assigned_to ("), "{m}");
    run_script(&cs, "postgresql/isdb_drop.sql", false);
    version_1_is_refused_then_upgraded(&cs, "storage/sql/postgresql/isdb.sql");
    run_script(&cs, "postgresql/isdb_drop.sql", false);
    version_2_is_refused_then_upgraded(&cs, "storage/sql/postgresql/isdb.sql");
    run_script(&cs, "postgresql/isdb_drop.sql", false);
}
