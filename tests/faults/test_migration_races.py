"""F18: migrations started by many processes at once, and a migration failing halfway.

Scenarios, each on PostgreSQL (a fresh schema) and on SQLite (a fresh file):

- **Ten migrators at once** (:func:`test_ten_processes_migrate_an_empty_database_at_once`):
  ten processes import OpenWorkflow, wait at a barrier (a "go" file), then all
  open a backend on the same empty schema or file (which migrates it) and
  create one run each. Every process must succeed; the final version is the
  latest; ``openworkflow_migrations`` holds exactly one row per version; the
  tables, indexes and constraints are exactly those a single migrator creates;
  all ten runs exist.
- **A migration failing at step k** (:func:`test_a_failed_migration_keeps_the_previous_version`):
  for every version k, migration k is made to fail after all of its own
  statements (a division by zero on PostgreSQL, a missing table on SQLite,
  appended to the script). Opening the backend fails with ``BackendError``;
  the version stays k-1; the database holds exactly what migrations 0..k-1
  create (migration k left nothing behind); the advisory lock was released;
  and a later start with the real migrations completes to the latest version
  with one row per version.

This module is also the migrating processes' program::

    python -m tests.faults.test_migration_races postgres URL SCHEMA GO_FILE
    python -m tests.faults.test_migration_races sqlite PATH GO_FILE
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import openworkflow.postgres.schema as pg_schema
import openworkflow.sqlite.schema as sqlite_backend
from openworkflow import PostgresBackend, SqliteBackend
from openworkflow.core.backend import CreateWorkflowRunParams
from openworkflow.errors import BackendError
from tests.faults.figures import Figure, report
from tests.fixtures.postgres import require_server_url
from tests.support.processes import ROOT

MIGRATORS = 10
ARMED_MARKER = "ow-migrator-armed"
BACKENDS = ["postgres", "sqlite"]

# -- the migrating process -------------------------------------------------------------------


async def _migrate_and_create_run(kind: str, location: str, schema: str | None) -> str:
    backend: Any
    if kind == "postgres":
        backend = PostgresBackend(location, schema=schema or "", listen=False, max_pool_size=1)
    else:
        backend = SqliteBackend(location)
    try:
        if kind == "postgres":
            await backend.open()
        run = await backend.create_workflow_run(
            CreateWorkflowRunParams(workflow_name="migration-race", input={"pid": os.getpid()})
        )
        return str(run.id)
    finally:
        await backend.stop()


def main(argv: list[str]) -> int:
    """``postgres URL SCHEMA GO_FILE`` or ``sqlite PATH GO_FILE``: wait for GO, migrate."""
    kind, location, *rest = argv
    schema = rest[0] if kind == "postgres" else None
    go = Path(rest[-1])
    print(f"{ARMED_MARKER} pid={os.getpid()}", flush=True)
    while not go.exists():
        time.sleep(0.001)
    try:
        run_id = asyncio.run(_migrate_and_create_run(kind, location, schema))
    except BaseException:
        traceback.print_exc()
        return 1
    print(f"created run {run_id}", flush=True)
    return 0


# -- reading a database's version and objects ---------------------------------------------------


def _pg_version_rows(
    url: str, schema: str, ledger: str = "openworkflow_migrations"
) -> list[tuple[int, int]]:
    with psycopg.connect(url, autocommit=True) as connection:
        exists = connection.execute(
            "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))", (schema, ledger)
        ).fetchone()
        if exists is None or exists[0] is None:
            return []
        rows = connection.execute(
            sql.SQL('SELECT "version", count(*) FROM {} GROUP BY 1 ORDER BY 1').format(
                sql.Identifier(schema, ledger)
            )
        ).fetchall()
    return [(int(version), int(count)) for version, count in rows]


def _pg_objects(url: str, schema: str) -> set[tuple[str, str]]:
    """(kind, name) of every table, index, sequence and constraint in ``schema``."""
    with psycopg.connect(url, autocommit=True) as connection:
        relations = connection.execute(
            "SELECT c.relkind::text, c.relname::text FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s",
            (schema,),
        ).fetchall()
        constraints = connection.execute(
            "SELECT 'constraint:' || con.contype::text || ':' || con.convalidated::text, "
            "con.conname::text FROM pg_constraint con "
            "JOIN pg_namespace n ON n.oid = con.connamespace WHERE n.nspname = %s",
            (schema,),
        ).fetchall()
    return {(str(kind), str(name)) for kind, name in [*relations, *constraints]}


def _pg_apply(url: str, schema: str, scripts: list[str]) -> None:
    """A reference migrator: apply ``scripts`` one transaction each, no engine code."""
    with psycopg.connect(url, autocommit=True) as connection:
        for script in scripts:
            with connection.transaction():
                connection.execute(script.encode())


def _pg_reference_scripts(schema: str) -> list[str]:
    """The original's migrations, then this port's own ledger and migrations."""
    return [
        *pg_schema.migration_scripts(schema),
        pg_schema.render(pg_schema.PYTHON_LEDGER, schema),
        *(script for _, script in pg_schema.python_migration_scripts(schema)),
    ]


def _sqlite_reference_scripts() -> list[str]:
    """The original's migrations, then this port's own ledger and migrations."""
    return [
        *sqlite_backend.migration_scripts(),
        sqlite_backend.PYTHON_LEDGER,
        *(script for _, script in sqlite_backend.python_migration_scripts()),
    ]


def _pg_drop(url: str, *schemas: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        for schema in schemas:
            connection.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )


@contextlib.contextmanager
def _sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as connection:
        yield connection


def _sqlite_version_rows(
    path: Path, ledger: str = "openworkflow_migrations"
) -> list[tuple[int, int]]:
    with _sqlite(path) as connection:
        exists = connection.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = ?", (ledger,)
        ).fetchone()[0]
        if not exists:
            return []
        rows = connection.execute(
            f'SELECT "version", count(*) FROM "{ledger}" GROUP BY 1 ORDER BY 1'
        ).fetchall()
    return [(int(version), int(count)) for version, count in rows]


def _sqlite_objects(path: Path) -> set[tuple[str, str]]:
    with _sqlite(path) as connection:
        rows = connection.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
    return {(f"{kind}:{text}", str(name)) for kind, name, text in rows}


def _sqlite_apply(path: Path, scripts: list[str]) -> None:
    with _sqlite(path) as connection:
        connection.isolation_level = None
        for script in scripts:
            connection.executescript(f"BEGIN IMMEDIATE;\n{script}\nCOMMIT;")


# -- ten migrators at once ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", BACKENDS)
async def test_ten_processes_migrate_an_empty_database_at_once(kind: str, tmp_path: Path) -> None:
    """F18: Ten processes migrating one empty database at once: one migrates, all end up on the same
    version.
    """
    go = tmp_path / "go"
    schema = f"ow_migrate_{uuid.uuid4().hex[:12]}"
    reference = f"{schema}_ref"
    database = tmp_path / "fresh.db"
    if kind == "postgres":
        url = require_server_url()
        arguments = ["postgres", url, schema, str(go)]
        latest = len(pg_schema.migration_scripts(schema)) - 1
    else:
        url = ""
        arguments = ["sqlite", str(database), str(go)]
        latest = len(sqlite_backend.migration_scripts()) - 1
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    logs = [tmp_path / f"migrator-{index}.log" for index in range(MIGRATORS)]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for log_path in logs:
            with log_path.open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "tests.faults.test_migration_races", *arguments],
                        cwd=ROOT,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + 60
        while not all(ARMED_MARKER in path.read_text() for path in logs):
            assert all(process.poll() is None for process in processes), [
                path.read_text() for path in logs
            ]
            assert time.monotonic() < deadline, "the migrators did not start"
            await asyncio.sleep(0.02)
        began = time.monotonic()
        go.touch()  # all ten migrate at once
        codes = [await asyncio.to_thread(process.wait, 60) for process in processes]
        took = time.monotonic() - began
        outputs = [path.read_text() for path in logs]
        failures = sum(1 for code in codes if code != 0)
        assert failures == 0, [text for code, text in zip(codes, outputs, strict=True) if code]
        run_ids = {
            line.split()[-1]
            for text in outputs
            for line in text.splitlines()
            if "created run" in line
        }

        if kind == "postgres":
            rows = _pg_version_rows(url, schema)
            _pg_apply(url, reference, _pg_reference_scripts(reference))
            objects = {(k, n.replace(reference, schema)) for k, n in _pg_objects(url, reference)}
            assert _pg_objects(url, schema) == objects
            python_rows = _pg_version_rows(url, schema, "openworkflow_python_migrations")
            assert python_rows == [(v, 1) for v in range(len(pg_schema.python_migration_scripts()))]
            with psycopg.connect(url, autocommit=True) as connection:
                count = connection.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(
                        sql.Identifier(schema, "workflow_runs")
                    )
                ).fetchone()
        else:
            rows = _sqlite_version_rows(database)
            ref_path = tmp_path / "reference.db"
            _sqlite_apply(ref_path, _sqlite_reference_scripts())
            assert _sqlite_objects(database) == _sqlite_objects(ref_path)
            python_rows = _sqlite_version_rows(database, "openworkflow_python_migrations")
            assert python_rows == [
                (v, 1) for v in range(len(sqlite_backend.python_migration_scripts()))
            ]
            with _sqlite(database) as connection:
                count = connection.execute("SELECT count(*) FROM workflow_runs").fetchone()
                journal = connection.execute("PRAGMA journal_mode").fetchone()[0]
            assert journal == "wal"
        assert rows == [(version, 1) for version in range(latest + 1)], rows
        assert count is not None and int(count[0]) == MIGRATORS
        lost = MIGRATORS - len(run_ids)
        assert lost == 0, outputs
        report(
            Figure(
                fault_id="F18",
                title=f"{MIGRATORS} processes migrate an empty {kind} database at once",
                runs=MIGRATORS,
                faults=MIGRATORS,
                lost=lost,
                details=(
                    f"failures 0, final version {rows[-1][0]} = latest {latest}, "
                    f"one row per version, objects identical to a single migrator's, "
                    f"all {MIGRATORS} migrated and created a run within {took:.1f} s"
                ),
            )
        )
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        if kind == "postgres":
            _pg_drop(url, schema, reference)


# -- a migration failing halfway -----------------------------------------------------------------


def _failing_at(
    real: Callable[..., list[str]], step: int, statement: str
) -> Callable[..., list[str]]:
    def scripts(*args: Any) -> list[str]:
        found = real(*args)
        found[step] = f"{found[step]}\n{statement}\n"
        return found

    return scripts


async def _open_pg(url: str, schema: str) -> None:
    backend = PostgresBackend(url, schema=schema, listen=False, max_pool_size=1)
    try:
        await asyncio.wait_for(backend.open(), 30)  # a leaked advisory lock would hang here
    finally:
        await backend.stop()


async def _open_sqlite(path: Path) -> None:
    await SqliteBackend(str(path)).stop()


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_failed_migration_keeps_the_previous_version(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F18: A migration that fails midway leaves the previous version in place."""
    url = require_server_url() if kind == "postgres" else ""
    base = f"ow_migfail_{uuid.uuid4().hex[:10]}"
    real_pg = pg_schema.migration_scripts
    real_sqlite = sqlite_backend.migration_scripts
    latest = len(real_sqlite()) - 1
    schemas: list[str] = []
    injected = 0
    counts = {"lost": 0, "duplicated": 0}

    def count(rows: list[tuple[int, int]], versions: int) -> None:
        # Read from the version table: a missing version is lost, one applied twice duplicated.
        present = {version for version, _ in rows}
        counts["lost"] += sum(version not in present for version in range(versions))
        counts["duplicated"] += sum(max(n - 1, 0) for _, n in rows)

    try:
        for step in range(latest + 1):
            if kind == "postgres":
                schema, reference = f"{base}_{step}", f"{base}_{step}_ref"
                schemas += [schema, reference]
                monkeypatch.setattr(
                    pg_schema, "migration_scripts", _failing_at(real_pg, step, "SELECT 1/0;")
                )
                with pytest.raises(BackendError, match="could not migrate"):
                    await _open_pg(url, schema)
                monkeypatch.setattr(pg_schema, "migration_scripts", real_pg)
                rows = _pg_version_rows(url, schema)
                _pg_apply(url, reference, real_pg(reference)[:step])
                left = _pg_objects(url, schema)
                wanted = {(k, n.replace(reference, schema)) for k, n in _pg_objects(url, reference)}
            else:
                path, ref_path = tmp_path / f"fail-{step}.db", tmp_path / f"ref-{step}.db"
                monkeypatch.setattr(
                    sqlite_backend,
                    "migration_scripts",
                    _failing_at(real_sqlite, step, "SELECT * FROM no_such_table;"),
                )
                with pytest.raises(BackendError, match="no such table"):
                    await _open_sqlite(path)
                monkeypatch.setattr(sqlite_backend, "migration_scripts", real_sqlite)
                rows = _sqlite_version_rows(path)
                _sqlite_apply(ref_path, real_sqlite()[:step])
                left, wanted = _sqlite_objects(path), _sqlite_objects(ref_path)
            injected += 1
            count(rows, step)
            assert rows == [(version, 1) for version in range(step)], (step, rows)
            assert left == wanted, (step, left ^ wanted)

            # A later start, with the real migrations, completes.
            if kind == "postgres":
                await _open_pg(url, schema)
                rows = _pg_version_rows(url, schema)
            else:
                await _open_sqlite(path)
                rows = _sqlite_version_rows(path)
            count(rows, latest + 1)
            assert rows == [(version, 1) for version in range(latest + 1)], (step, rows)
        report(
            Figure(
                fault_id="F18",
                title=f"{kind} migration failing at step k, then a normal start",
                runs=0,
                faults=injected,
                lost=counts["lost"],
                duplicated=counts["duplicated"],
                details=(
                    f"k = 0..{latest}: version stays k-1 {injected}/{latest + 1}, nothing of "
                    f"migration k left behind {injected}/{latest + 1}, next start reaches "
                    f"version {latest} with one row per version {injected}/{latest + 1}"
                ),
            )
        )
    finally:
        if kind == "postgres":
            _pg_drop(url, *schemas)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
