-- The event log's outbox, SQLite: a table of the main database, needed
-- only while the event log is on ([logger-settings]); run this script there
-- besides isdb.sql (the embedded SQLite default creates it itself). Each
-- change writes its events here in the same transaction as the change; the
-- server ships them to the event log's rpt_* tables (eldb.sql) and deletes
-- them here. Columns as in rpt_interaction.
CREATE TABLE ixn_event_outbox (
  generation      BIGINT NOT NULL,
  shard           INTEGER NOT NULL,
  seq             BIGINT NOT NULL,
  event_time      BIGINT NOT NULL,
  event_type      VARCHAR(64) NOT NULL,
  tenant          VARCHAR(255) NOT NULL,
  interaction_id  VARCHAR(64),
  media_type      VARCHAR(255),
  queue           VARCHAR(255),
  workbin         VARCHAR(255),
  workbin_owner   VARCHAR(255),
  agent           VARCHAR(255),
  place           VARCHAR(255),
  ticket          BIGINT,
  from_name       VARCHAR(255),
  reason          VARCHAR(255),
  details         TEXT,
  PRIMARY KEY (generation, shard, seq)
);
