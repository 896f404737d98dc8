-- The event log's outbox, Oracle: a table of the main database, needed
-- only while the event log is on ([logger-settings]); run this script there
-- besides isdb.sql (the embedded SQLite default creates it itself). Each
-- change writes its events here in the same transaction as the change; the
-- server ships them to the event log's rpt_* tables (eldb.sql) and deletes
-- them here. Columns as in rpt_interaction.
CREATE TABLE ixn_event_outbox (
  generation      NUMBER(19) NOT NULL,
  shard           NUMBER(10) NOT NULL,
  seq             NUMBER(19) NOT NULL,
  event_time      NUMBER(19) NOT NULL,
  event_type      VARCHAR2(64) NOT NULL,
  tenant          VARCHAR2(255) NOT NULL,
  interaction_id  VARCHAR2(64),
  media_type      VARCHAR2(255),
  queue           VARCHAR2(255),
  workbin         VARCHAR2(255),
  workbin_owner   VARCHAR2(255),
  agent           VARCHAR2(255),
  place           VARCHAR2(255),
  ticket          NUMBER(19),
  from_name       VARCHAR2(255),
  reason          VARCHAR2(255),
  details         CLOB,
  PRIMARY KEY (generation, shard, seq)
);
COMMIT;
