-- The event log's outbox, Microsoft SQL Server (NVARCHAR names): a table of the main database, needed
-- only while the event log is on ([logger-settings]); run this script there
-- besides isdb.sql (the embedded SQLite default creates it itself). Each
-- change writes its events here in the same transaction as the change; the
-- server ships them to the event log's rpt_* tables (eldb.sql) and deletes
-- them here. Columns as in rpt_interaction.
CREATE TABLE ixn_event_outbox (
  generation      BIGINT NOT NULL,
  shard           INT NOT NULL,
  seq             BIGINT NOT NULL,
  event_time      BIGINT NOT NULL,
  event_type      VARCHAR(64) NOT NULL,
  tenant          NVARCHAR(255) NOT NULL,
  interaction_id  VARCHAR(64),
  media_type      NVARCHAR(255),
  queue           NVARCHAR(255),
  workbin         NVARCHAR(255),
  workbin_owner   NVARCHAR(255),
  agent           NVARCHAR(255),
  place           NVARCHAR(255),
  ticket          BIGINT,
  from_name       NVARCHAR(255),
  reason          NVARCHAR(255),
  details         VARCHAR(MAX),
  PRIMARY KEY (generation, shard, seq)
);
