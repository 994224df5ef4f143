-- SQLite validates foreign keys itself when PRAGMA foreign_keys = ON; this
-- version exists so that version numbers match the PostgreSQL migrations.
INSERT OR IGNORE INTO "openworkflow_migrations" ("version")
VALUES (3);
