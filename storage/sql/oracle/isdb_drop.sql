-- Removes the ixn Interaction Server database (isdb) tables, Oracle.
DROP TABLE interactions;
DROP TABLE ixn_schema;
-- The event log's outbox, if isdb_outbox.sql made it (fails harmlessly if not):
DROP TABLE ixn_event_outbox;
