-- Removes the ixn Event Logger database (eldb) tables, Oracle.
DROP TABLE rpt_interaction;
DROP TABLE rpt_agent;
DROP TABLE rpt_schema;
