-- Removes the ixn Interaction Server database (isdb) tables, Oracle, NVARCHAR2 variant.
DROP TABLE interactions;
DROP TABLE ixn_schema;
