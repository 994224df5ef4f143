-- Messages to one run (ow.signal): buffered until that run's wait_for_signal
-- consumes them, oldest first, each by exactly one wait step attempt. This
-- port's own table: the original never reads it, so a TypeScript worker's
-- waits see only broadcast signals.
CREATE TABLE IF NOT EXISTS "run_messages" (
  "namespace_id" TEXT NOT NULL,
  "id" TEXT NOT NULL,
  "workflow_run_id" TEXT NOT NULL,
  "signal" TEXT NOT NULL,
  "data" TEXT,
  "idempotency_key" TEXT,
  "created_at" TEXT NOT NULL,
  "consumed_by_step_attempt_id" TEXT,
  "consumed_at" TEXT,
  PRIMARY KEY ("namespace_id", "id")
);

-- The oldest unconsumed message of a (run, signal).
CREATE INDEX IF NOT EXISTS "run_messages_unconsumed_idx"
ON "run_messages" ("namespace_id", "workflow_run_id", "signal", "created_at", "id")
WHERE "consumed_by_step_attempt_id" IS NULL;

-- The message a wait step attempt already consumed (a pass that crashed after taking it).
CREATE INDEX IF NOT EXISTS "run_messages_consumed_by_idx"
ON "run_messages" ("namespace_id", "consumed_by_step_attempt_id")
WHERE "consumed_by_step_attempt_id" IS NOT NULL;

-- A resend with the same idempotency key (same run, same name) is a no-op.
CREATE UNIQUE INDEX IF NOT EXISTS "run_messages_idempotency_key_idx"
ON "run_messages" ("namespace_id", "workflow_run_id", "signal", "idempotency_key")
WHERE "idempotency_key" IS NOT NULL;
