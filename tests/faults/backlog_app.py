"""The worker process of F22's backlog test, and its handle in the test process.

Run it as ``python -m tests.faults.backlog_app --schema S --namespace NS``;
the PostgreSQL URL comes from ``OW_FAULT_URL`` (never from argv, where ``ps``
would show a password). It runs one worker with :data:`backlog_double`
registered until SIGTERM or SIGINT, and prints ``ow-backlog-ready pid=N`` once
it claims runs.

``backlog-double`` takes a number ``n`` and has one step, ``double``, whose
body appends ``(run_id, step_name, value, pid)`` to the ``backlog_ledger``
table of the test's schema before returning ``2 n``: the oracle outside the
engine that shows a step body running twice.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

from psycopg import sql

from openworkflow import RunInfo, Step, Worker, workflow
from openworkflow.postgres import PostgresBackend
from tests.faults import pg_ledger
from tests.support import processes

LEDGER_TABLE = "backlog_ledger"
READY_MARKER = "ow-backlog-ready"
URL_VARIABLE = "OW_FAULT_URL"
WORKFLOW_NAME = "backlog-double"

_ledger: pg_ledger.LedgerPool | None = None


def expected_output(n: int) -> dict[str, int]:
    """What ``backlog-double`` returns for input ``n``."""
    return {"n": n, "double": 2 * n}


async def _double(run_id: str, n: int) -> int:
    if _ledger is None:
        raise RuntimeError("the ledger is only open inside a worker process")
    await _ledger.append({"run_id": run_id, "step_name": "double", "value": 2 * n})
    return 2 * n


@workflow(name=WORKFLOW_NAME)
async def backlog_double(input: int, step: Step, run: RunInfo) -> dict[str, int]:
    """One ledgered step that doubles ``input``; returns ``{"n": input, "double": 2 input}``."""
    double = await step.run("double", _double, run.id, input)
    return {"n": input, "double": int(double)}


def parse_options(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (the URL comes from ``OW_FAULT_URL``)."""
    parser = argparse.ArgumentParser(prog="python -m tests.faults.backlog_app")
    parser.add_argument("--schema", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--concurrency", type=int, default=10)
    options = parser.parse_args(argv)
    options.url = os.environ.get(URL_VARIABLE)
    if not options.url:
        parser.error(f"no URL: set {URL_VARIABLE}")
    return options


async def main(options: argparse.Namespace) -> None:
    """Run one worker until SIGTERM or SIGINT, then stop it gracefully."""
    global _ledger
    backend = PostgresBackend(
        options.url,
        namespace_id=options.namespace,
        schema=options.schema,
        max_pool_size=4,
        connect_timeout=5.0,
    )
    _ledger = pg_ledger.LedgerPool(
        options.url,
        sql.SQL(
            "INSERT INTO {table} (run_id, step_name, value, pid)"
            " VALUES (%(run_id)s, %(step_name)s, %(value)s, %(pid)s) RETURNING id"
        ).format(table=sql.Identifier(options.schema, LEDGER_TABLE)),
        max_size=2,
        name="backlog-ledger",
        connect_timeout=5,
        timeout=10.0,
        open_timeout=20.0,
    )
    worker = Worker(backend, [backlog_double], concurrency=options.concurrency)
    await pg_ledger.serve(
        backend, _ledger, worker, ready_marker=READY_MARKER, stopped_marker="ow-backlog-stopped"
    )


# -- the test-process side ------------------------------------------------------------------


def create_ledger(url: str, schema: str) -> None:
    """Create the ledger table in ``schema`` (which must exist)."""
    pg_ledger.create_ledger_table(
        url, schema, LEDGER_TABLE, "value bigint NOT NULL", ("run_id", "step_name")
    )


class WorkerProcess(processes.WorkerProcess):
    """One ``backlog_app`` worker subprocess; stdout and stderr go to a log file."""

    module = "tests.faults.backlog_app"
    ready_marker = READY_MARKER

    def __init__(
        self, log_path: Path, *, url: str, schema: str, namespace: str, concurrency: int = 10
    ) -> None:
        super().__init__(
            log_path,
            ["--schema", schema, "--namespace", namespace, "--concurrency", str(concurrency)],
            {URL_VARIABLE: url},  # the URL (maybe with a password): never in argv
        )


if __name__ == "__main__":
    pg_ledger.configure_logging()
    asyncio.run(main(parse_options()))
