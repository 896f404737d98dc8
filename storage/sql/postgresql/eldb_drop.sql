-- Removes the ixn Event Logger database (eldb) tables, PostgreSQL.
DROP TABLE IF EXISTS rpt_interaction;
DROP TABLE IF EXISTS rpt_agent;
DROP TABLE IF EXISTS rpt_schema;
