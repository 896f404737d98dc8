-- ixn Event Logger database (eldb), SQLite.
-- The event log: every reporting event of every interaction and agent,
-- each stored once. ixn-server ships events here from the outbox
-- (ixn_event_outbox, isdb_outbox.sql) in the main database; this may be
-- that database or another one ([logger-settings] connection-string).
-- rpt_interaction holds interaction events, rpt_agent agent events.
-- Columns: generation names the run of the server that made the event (its
-- start time, ms since the Unix epoch); shard and seq are the event's
-- number on that shard in that run (the number reporting cursors count),
-- so (generation, shard, seq) is unique and orders each interaction's and
-- each agent's events. event_time is when the change was made (ms since
-- the Unix epoch), event_type the reporting event's name
-- (EventPlacedInQueue...). The other columns hold the event's attributes
-- (docs/protocol.md, "Reporting events"): queue or workbin (with its
-- owner) is where the interaction is after the change; agent the agent the
-- event is about or the party it names; from_name the queue it came from
-- (EventPlacedInQueue) or the agent transferring it (EventAgentInvited);
-- details the hex of the protocol's key-value list encoding of the rest:
-- Properties (EventPropertiesChanged), MediaList (EventAgentLogin),
-- Capacity (EventMediaAdded). Text longer than a column is cut to it.
CREATE TABLE rpt_interaction (
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
CREATE TABLE rpt_agent (
  generation      BIGINT NOT NULL,
  shard           INTEGER NOT NULL,
  seq             BIGINT NOT NULL,
  event_time      BIGINT NOT NULL,
  event_type      VARCHAR(64) NOT NULL,
  tenant          VARCHAR(255) NOT NULL,
  agent           VARCHAR(255),
  place           VARCHAR(255),
  media_type      VARCHAR(255),
  reason          VARCHAR(255),
  details         TEXT,
  PRIMARY KEY (generation, shard, seq)
);
CREATE TABLE rpt_schema (
  name    VARCHAR(64) NOT NULL PRIMARY KEY,
  version INTEGER NOT NULL
);
INSERT INTO rpt_schema (name, version) VALUES ('eldb', 1);
