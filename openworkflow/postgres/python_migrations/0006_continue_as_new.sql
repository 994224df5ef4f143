-- Continue-as-new: a run that ended by continuing as a fresh run names its
-- successor, so a caller waiting on the first run follows the chain to its
-- last run's result. Nullable: the original never writes it.
ALTER TABLE {schema}."workflow_runs" ADD COLUMN IF NOT EXISTS "continued_as_id" TEXT;
