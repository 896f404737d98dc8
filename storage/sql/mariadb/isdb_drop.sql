-- Removes the ixn Interaction Server database (isdb) tables, MariaDB.
DROP TABLE IF EXISTS interactions;
DROP TABLE IF EXISTS ixn_schema;
DROP TABLE IF EXISTS ixn_event_outbox;
