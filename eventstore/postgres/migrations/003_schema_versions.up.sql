-- Schema versions (docs/evolution.md): each event records the version of its
-- type's schema it was written with, each snapshot the version of the
-- aggregate's snapshot schema. Rows stored before read as version 1. A
-- column added with a constant DEFAULT is only recorded in the catalog
-- (PostgreSQL 11 and later): no row is rewritten, and the CHECK constraints
-- are NOT VALID so that adding them does not scan the tables either (they
-- hold for every row written from now on; the rows before are all 1).
ALTER TABLE {{.Events}} ADD COLUMN schema_version integer NOT NULL DEFAULT 1;
ALTER TABLE {{.Events}} ADD CONSTRAINT {{.EventsSchemaVersionCheck}} CHECK (schema_version >= 1) NOT VALID;
ALTER TABLE {{.Snapshots}} ADD COLUMN schema_version integer NOT NULL DEFAULT 1;
ALTER TABLE {{.Snapshots}} ADD CONSTRAINT {{.SnapshotsSchemaVersionCheck}} CHECK (schema_version >= 1) NOT VALID;
