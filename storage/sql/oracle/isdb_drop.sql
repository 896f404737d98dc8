-- Removes the ixn Interaction Server database (isdb) tables, Oracle.
DROP TABLE interactions;
DROP TABLE ixn_schema;
