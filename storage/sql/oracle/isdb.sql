-- ixn Interaction Server database (isdb), Oracle.
-- Run once: sqlplus <user>@<db> @storage/sql/oracle/isdb.sql  (empty strings are NULL in Oracle; ixn reads NULL names as empty)
-- Live interactions only: a row is replaced (DELETE then INSERT) on every
-- acknowledged change and deleted when the interaction completes. Times are
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
  id                  VARCHAR2(64)  NOT NULL PRIMARY KEY,
  tenant              VARCHAR2(255),
  media_type          VARCHAR2(255),
  interaction_type    VARCHAR2(255),
  interaction_subtype VARCHAR2(255),
  queue               VARCHAR2(255),
  priority            NUMBER(19) NOT NULL,
  submitted_by        VARCHAR2(255),
  received_at         NUMBER(19),
  submitted_at        NUMBER(19),
  placed_in_queue_at  NUMBER(19),
  moved_to_queue_at   NUMBER(19),
  delivered_at        NUMBER(19),
  assigned_at         NUMBER(19),
  held_at             NUMBER(19),
  completed_at        NUMBER(19),
  properties          CLOB,
  version             NUMBER(19) NOT NULL,
  workbin_owner       VARCHAR2(255),
  submit_order        NUMBER(19),
  assigned_to         VARCHAR2(255)
);
CREATE TABLE ixn_schema (
  name    VARCHAR2(64) NOT NULL PRIMARY KEY,
  version NUMBER(10) NOT NULL
);
INSERT INTO ixn_schema (name, version) VALUES ('isdb', 3);
COMMIT;
