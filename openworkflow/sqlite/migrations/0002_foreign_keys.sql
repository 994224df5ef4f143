-- SQLite declares foreign keys with the tables (migration 1); this version
-- exists so that version numbers match the PostgreSQL migrations.
INSERT OR IGNORE INTO "openworkflow_migrations" ("version")
VALUES (2);
