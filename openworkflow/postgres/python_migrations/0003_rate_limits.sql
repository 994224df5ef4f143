-- Rate limits: "limit" token rows per bucket and key, created on first use.
-- A grant at time t takes a token last granted at or before t - per (or
-- never) and stamps it with t, so no interval of length per holds more than
-- "limit" grants: the strict sliding window. Tokens numbered at or above the
-- current limit are ignored (a lowered limit binds at once); a missing row
-- is a free token, so rows may be pruned.
CREATE TABLE IF NOT EXISTS {schema}."rate_limit_tokens" (
  "namespace_id" TEXT NOT NULL,
  "bucket" TEXT NOT NULL,
  "rate_key" TEXT NOT NULL,
  "token" INTEGER NOT NULL,
  "granted_at" TIMESTAMPTZ,
  "run_id" TEXT,
  PRIMARY KEY ("namespace_id", "bucket", "rate_key", "token")
);

-- The free token with the oldest grant, and the instant the window has room.
CREATE INDEX IF NOT EXISTS "rate_limit_tokens_granted_at_idx"
ON {schema}."rate_limit_tokens" ("namespace_id", "bucket", "rate_key", "granted_at");
