CREATE TABLE IF NOT EXISTS "openworkflow_migrations" (
  "version" INTEGER NOT NULL PRIMARY KEY
);

INSERT OR IGNORE INTO "openworkflow_migrations" ("version")
VALUES (0);
