"""Real processes exit promptly after using a backend (issue 14, item 1).

Several processes open a backend on one fresh PostgreSQL schema at the same
moment (so they migrate under the advisory lock and their pools grow while
they run), list runs, and end. A pool worker left connecting used to ignore
the cancellation ``asyncio.run`` sends at exit, and about one try in three
hung for ever. Each round uses a new schema, every process has a timeout,
and every one must exit with code 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.cli.helpers import OW, clean_env
from tests.fixtures.postgres import require_server_url
from tests.support.processes import ROOT

pytestmark = pytest.mark.slow
ROUNDS = 8
PROCESSES = 4
EXIT_TIMEOUT_S = 30.0
"""Far above the second or so a process needs; a hang is for ever."""

_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from openworkflow import OpenWorkflow, PostgresBackend, SqliteBackend

    KIND, TARGET, CLOSE = sys.argv[1], sys.argv[2], sys.argv[3] == "close"

    async def main() -> None:
        if KIND == "postgres":
            url, _, schema = TARGET.partition("#")
            backend = PostgresBackend(url, schema=schema)
        else:
            backend = SqliteBackend(TARGET)
        async with OpenWorkflow(backend) as ow:
            page = await ow.list_runs()
        if CLOSE:
            await backend.stop()
        print("listed", len(page.data), flush=True)

    asyncio.run(main())
    """
)


def _fresh_schema() -> str:
    return f"ow_close_{uuid.uuid4().hex[:12]}"


def _drop(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def schemas() -> Iterator[list[str]]:
    """Schemas a test creates, dropped afterwards."""
    created: list[str] = []
    yield created
    url = require_server_url()
    for schema in created:
        _drop(url, schema)


def _run_together(commands: list[list[str]], env: dict[str, str], cwd: Path) -> list[str]:
    """Start every command at once; each must exit with 0 within the timeout. Their stdout."""
    started = [
        subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for command in commands
    ]
    outputs, problems = [], []
    for index, process in enumerate(started):  # collect every process before asserting
        try:
            stdout, stderr = process.communicate(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            problems.append(f"process {index} did not exit:\n{stdout}{stderr}")
            continue
        if process.returncode != 0:
            problems.append(f"process {index} failed:\n{stdout}{stderr}")
        outputs.append(stdout)
    assert not problems, "\n".join(problems)
    return outputs


def _script_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.mark.parametrize("close", ["close", "no-close"])
def test_postgres_processes_on_a_fresh_schema_all_exit(close: str, schemas: list[str]) -> None:
    url = require_server_url()
    for _ in range(ROUNDS):
        schema = _fresh_schema()
        schemas.append(schema)
        command = [sys.executable, "-c", _SCRIPT, "postgres", f"{url}#{schema}", close]
        outputs = _run_together([command] * PROCESSES, _script_env(), ROOT)
        assert outputs == ["listed 0\n"] * PROCESSES


@pytest.mark.parametrize("close", ["close", "no-close"])
def test_sqlite_processes_on_a_fresh_file_all_exit(close: str, tmp_path: Path) -> None:
    for round_ in range(ROUNDS // 2):
        database = tmp_path / f"round-{round_}.db"
        command = [sys.executable, "-c", _SCRIPT, "sqlite", str(database), close]
        outputs = _run_together([command] * PROCESSES, _script_env(), ROOT)
        assert outputs == ["listed 0\n"] * PROCESSES


def test_cli_runs_list_on_a_fresh_schema_all_exit(tmp_path: Path, schemas: list[str]) -> None:
    url = require_server_url()
    for _ in range(ROUNDS):
        schema = _fresh_schema()
        schemas.append(schema)
        env = clean_env(OPENWORKFLOW_BACKEND_URL=url, OPENWORKFLOW_SCHEMA=schema)
        outputs = _run_together([[*OW, "runs", "list", "--json"]] * PROCESSES, env, tmp_path)
        assert [json.loads(output)["data"] for output in outputs] == [[]] * PROCESSES
