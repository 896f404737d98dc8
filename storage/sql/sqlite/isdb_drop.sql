-- Removes the ixn Interaction Server database (isdb) tables, SQLite.
DROP TABLE IF EXISTS interactions;
DROP TABLE IF EXISTS ixn_schema;
DROP TABLE IF EXISTS ixn_event_outbox;
