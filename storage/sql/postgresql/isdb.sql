-- ixn Interaction Server database (isdb), PostgreSQL.
-- Run once: psql -d <database> -f storage/sql/postgresql/isdb.sql (or let ixn
-- create it: create_schema; the test suite does that).
-- Live interactions only: a row is written in place (INSERT ... ON CONFLICT
-- DO UPDATE) on every acknowledged change and deleted when the interaction
-- completes. Times are
-- epoch milliseconds; properties hold the hex of the protocol's key-value
-- list encoding. workbin_owner is set while the interaction is in a workbin
-- (queue then names the workbin): the agent, place or group owning that
-- workbin content; NULL while it is in a queue. submit_order is the
-- interaction's position in submission order (microseconds since 2024-01-01
-- shifted left 13 bits plus a per-shard sequence), the tie-breaker of view
-- order; NULL in rows upgraded from version 1. assigned_to is the login id
-- of the agent handling the interaction (it accepted an invitation); NULL
-- while nobody handles it.
-- Keep in step with storage/sql/*/isdb.sql (schema version 3; version 1
-- lacked workbin_owner, submit_order and assigned_to, version 2 lacked
-- assigned_to: docs/storage.md says how to upgrade).
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
  submit_order        BIGINT,
  assigned_to         VARCHAR(255)
);
-- The table holds few live rows but every change leaves a dead row version
-- (an update or a delete): hundreds of thousands a minute at a few thousand
-- cycles a second. PostgreSQL's defaults wait for a fifth of the table and
-- pause between pages; vacuum it after a thousand dead rows, without pauses.
-- (autovacuum_naptime, server-wide, bounds how soon: see tuning.md.)
ALTER TABLE interactions SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
  autovacuum_vacuum_cost_delay = 0);
CREATE TABLE ixn_schema (
  name    VARCHAR(64) NOT NULL PRIMARY KEY,
  version INT NOT NULL
);
INSERT INTO ixn_schema (name, version) VALUES ('isdb', 3);
