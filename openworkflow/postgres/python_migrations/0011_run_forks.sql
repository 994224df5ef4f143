-- Forks (ow.fork(run_id, from_step=NAME)): which run a fork was made from and
-- from which step. This port's own table: a TypeScript worker never reads nor
-- writes it, and sees a fork as an ordinary run with a history.
CREATE TABLE IF NOT EXISTS {schema}."run_forks" (
  "namespace_id" TEXT NOT NULL,
  "workflow_run_id" TEXT NOT NULL,
  "forked_from_id" TEXT NOT NULL,
  "from_step" TEXT NOT NULL,
  "created_at" TIMESTAMPTZ NOT NULL,
  PRIMARY KEY ("namespace_id", "workflow_run_id")
);
CREATE INDEX IF NOT EXISTS "run_forks_source_idx"
  ON {schema}."run_forks" ("namespace_id", "forked_from_id");
