-- Start rate limits: the instant a run's start was granted by its workflow's
-- rate limit, when it was reserved ahead (the run was over the limit and went
-- back to the queue until then). Claimed again, the run starts on it. Nullable:
-- the original never writes it.
ALTER TABLE {schema}."workflow_runs" ADD COLUMN IF NOT EXISTS "start_granted_at" TIMESTAMPTZ;
