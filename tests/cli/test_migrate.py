"""``ow migrate``: print the SQL without connecting, or apply it and report the version."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg

from openworkflow.postgres.schema import migration_scripts as postgres_scripts
from openworkflow.sqlite.backend import migration_scripts as sqlite_scripts
from tests.cli.helpers import clean_env, ow, sqlite_project
from tests.fixtures.postgres import require_server_url


def test_migrate_print_for_sqlite_does_not_touch_the_database(tmp_path: Path) -> None:
    sqlite_project(tmp_path)
    result = ow(tmp_path, "migrate", "--print")
    assert result.returncode == 0, result.stderr
    assert 'CREATE TABLE IF NOT EXISTS "workflow_runs"' in result.stdout
    assert f"-- migration {len(sqlite_scripts()) - 1}" in result.stdout
    assert not (tmp_path / "openworkflow" / "backend.db").exists()

    applied = ow(tmp_path, "migrate", "--json")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["migration_version"] == len(sqlite_scripts()) - 1
    assert (tmp_path / "openworkflow" / "backend.db").exists()


def test_migrate_on_postgres_with_a_fresh_schema(tmp_path: Path) -> None:
    url = require_server_url()
    schema = f"ow_cli_{uuid.uuid4().hex[:10]}"
    env = clean_env(OPENWORKFLOW_BACKEND_URL=url, OPENWORKFLOW_SCHEMA=schema)
    sqlite_project(tmp_path)
    try:
        printed = ow(tmp_path, "migrate", "--print", env=env)
        assert printed.returncode == 0, printed.stderr
        assert f'CREATE SCHEMA IF NOT EXISTS "{schema}"' in printed.stdout
        assert f'"{schema}"."workflow_runs"' in printed.stdout
        with psycopg.connect(url) as connection:
            found = connection.execute(
                "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (schema,)
            ).fetchone()
        assert found is None  # --print never connects

        applied = ow(tmp_path, "migrate", env=env)
        assert applied.returncode == 0, applied.stderr
        assert f"schema version {len(postgres_scripts(schema)) - 1}" in applied.stdout

        doctor = ow(tmp_path, "doctor", "--json", env=env)
        report = json.loads(doctor.stdout)
        assert report["backend"]["schema"] == schema
        assert report["backend"]["migration_version"] == len(postgres_scripts(schema)) - 1
        assert doctor.returncode == 0, doctor.stdout
    finally:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
