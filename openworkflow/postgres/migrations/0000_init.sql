CREATE SCHEMA IF NOT EXISTS {schema};

CREATE TABLE IF NOT EXISTS {schema}."openworkflow_migrations" (
  "version" BIGINT NOT NULL PRIMARY KEY
);

INSERT INTO {schema}."openworkflow_migrations" ("version")
VALUES (0)
ON CONFLICT DO NOTHING;
