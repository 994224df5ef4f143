-- Tags of runs (ow.run(..., tags=...)): string pairs written
-- with the run, in the same transaction, and never changed. "created_at" is a
-- copy of the run's, so the filter index below yields a tag's runs newest
-- first (the order of list_runs) and a page stops after "limit" rows however
-- many runs carry the tag. This port's own table: a TypeScript worker never
-- reads nor writes it (its runs have no tags).
CREATE TABLE IF NOT EXISTS "run_tags" (
  "namespace_id" TEXT NOT NULL,
  "workflow_run_id" TEXT NOT NULL,
  "key" TEXT NOT NULL,
  "value" TEXT NOT NULL,
  "created_at" TEXT NOT NULL,
  PRIMARY KEY ("namespace_id", "workflow_run_id", "key")
);
CREATE INDEX IF NOT EXISTS "run_tags_filter_idx"
  ON "run_tags" ("namespace_id", "key", "value", "created_at", "workflow_run_id");
