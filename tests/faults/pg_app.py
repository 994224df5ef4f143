"""A PostgreSQL worker process for the fault tests, and the helpers the tests drive it with.

Run it as ``python -m tests.faults.pg_app --schema S [options]``. Each
option falls back to an environment variable, so a URL holding a password
need not appear on the command line (where ``ps`` would show it):

- ``--url`` / ``OW_PROC_URL``: the PostgreSQL URL (else ``OPENWORKFLOW_TEST_POSTGRES_URL``)
- ``--schema`` / ``OW_PROC_SCHEMA``: the schema holding the tables (required)
- ``--namespace`` / ``OW_PROC_NAMESPACE``: the namespace (default ``default``)
- ``--concurrency`` / ``OW_PROC_CONCURRENCY``: worker slots (default 4)
- ``--lease`` / ``OW_PROC_LEASE``: the worker's lease duration (default ``30s``)
- ``--app-name`` / ``OW_PROC_APP_NAME``: the ``application_name`` of the engine's
  connections (default ``ow-proc``); the ledger's connections get ``<name>-ledger``,
  so a test can terminate the engine's backends, and only those of its own workers
- ``--step-crash-limit`` / ``OW_PROC_STEP_CRASH_LIMIT``: the worker's
  ``step_crash_limit`` (default: the worker's own)

Every step body appends a row to a ledger table in the same schema (an oracle
outside the engine), so the tests can count how often each step really ran
and in which process. The process prints ``ow-proc-ready pid=N`` once it is
claiming runs, and stops gracefully on SIGTERM or SIGINT.

The tests start it with :class:`WorkerProcess` and :func:`wait_all_ready`
(from :mod:`tests.support.processes`; the ledger plumbing is shared with
``process_app`` in :mod:`tests.faults.pg_ledger`) on a schema named by :func:`new_schema_name`,
holding the engine's tables and the ledger (:func:`create_ledger`).

:func:`install_audit` adds triggers to a test schema that record every status
change of a run and every step write together with the run's status at that
moment (under the run's row lock), so tests can check that no run reached two
terminal states and that nothing was written after a run became terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import psycopg
from psycopg import sql
from pydantic import BaseModel

from openworkflow import RetryPolicy, RunInfo, Step, Worker, workflow
from openworkflow.postgres import PostgresBackend
from tests.faults import pg_ledger
from tests.support import processes

LEDGER_TABLE = "proc_ledger"
READY_MARKER = "ow-proc-ready"
READY_TIMEOUT = 30.0
SLOW_STEP_SECONDS = 0.2
SLOW_STEP_NAMES = ("s0", "s1", "s2", "s3", "s4")
FAST_STEP_NAMES = ("one", "two", "three")

# -- the ledger (worker side) ------------------------------------------------------------


class Ledger(pg_ledger.LedgerPool):
    """Appends ``(run_id, step_name, attempt, pid)`` rows; ``attempt`` counts earlier rows.

    Its connections are checked before use; connecting, and waiting for a free
    connection, give up after 2 s.
    """

    def __init__(self, url: str, schema: str, max_size: int) -> None:
        table = sql.Identifier(schema, LEDGER_TABLE)
        super().__init__(
            url,
            sql.SQL(
                "INSERT INTO {table} (run_id, step_name, attempt, pid) "
                "SELECT %(run_id)s, %(step_name)s, count(*) + 1, %(pid)s FROM {table} "
                "WHERE run_id = %(run_id)s AND step_name = %(step_name)s "
                "RETURNING attempt"
            ).format(table=table),
            max_size=max_size,
            name="ledger",
            connect_timeout=2,
            timeout=2.0,
            open_timeout=10.0,
            check=True,
        )

    async def record(self, run_id: str, step_name: str) -> int:
        """Append one row and return its attempt number."""
        return await self.append({"run_id": run_id, "step_name": step_name})


_ledger: Ledger | None = None


def _the_ledger() -> Ledger:
    if _ledger is None:
        raise RuntimeError("the ledger is only open inside a worker process")
    return _ledger


# -- the workflows ---------------------------------------------------------------------------


class Numbered(BaseModel):
    """Input of both workflows."""

    n: int


def _tiny_work(seed: str) -> str:
    digest = seed.encode()
    for _ in range(200):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()[:8]


async def _fast_step(run_id: str, step_name: str, value: int) -> dict[str, Any]:
    await _the_ledger().record(run_id, step_name)
    _tiny_work(f"{run_id}:{step_name}")
    return {"value": value, "pid": os.getpid()}


@workflow(name="pg-proc-three-steps")
async def three_steps(input: Numbered, step: Step, run: RunInfo) -> dict[str, Any]:
    """Three quick ledgered steps: ``value = (n + 1) * 2 + 3``; ``pids`` says who ran each."""
    one = await step.run("one", functools.partial(_fast_step, run.id, "one", input.n + 1))
    two = await step.run("two", functools.partial(_fast_step, run.id, "two", one["value"] * 2))
    three = await step.run(
        "three", functools.partial(_fast_step, run.id, "three", two["value"] + 3)
    )
    return {"n": input.n, "value": three["value"], "pids": [one["pid"], two["pid"], three["pid"]]}


def expected_three_steps_value(n: int) -> int:
    """What :func:`three_steps` computes for input ``n``."""
    return (n + 1) * 2 + 3


SLOW_RETRY = RetryPolicy(initial_interval="200ms", maximum_interval="1s", maximum_attempts=30)


async def _slow_step(run_id: str, step_name: str, result: str) -> str:
    await _the_ledger().record(run_id, step_name)
    await asyncio.sleep(SLOW_STEP_SECONDS)
    return result


@workflow(name="pg-proc-five-slow-steps")
async def five_slow_steps(input: Numbered, step: Step, run: RunInfo) -> list[str]:
    """Five ledgered steps of about 200 ms each; returns ``["n:s0", ..., "n:s4"]``."""
    results: list[str] = []
    for name in SLOW_STEP_NAMES:
        results.append(
            await step.run(
                name,
                functools.partial(_slow_step, run.id, name, f"{input.n}:{name}"),
                retry_policy=SLOW_RETRY,
            )
        )
    return results


def expected_five_slow_steps_output(n: int) -> list[str]:
    """What :func:`five_slow_steps` returns for input ``n``."""
    return [f"{n}:{name}" for name in SLOW_STEP_NAMES]


WORKFLOWS = [three_steps, five_slow_steps]

# -- the worker process ------------------------------------------------------------------------


def parse_options(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options, each defaulting to its environment variable."""
    env = os.environ
    parser = argparse.ArgumentParser(prog="python -m tests.faults.pg_app")
    parser.add_argument(
        "--url", default=env.get("OW_PROC_URL") or env.get("OPENWORKFLOW_TEST_POSTGRES_URL")
    )
    parser.add_argument("--schema", default=env.get("OW_PROC_SCHEMA"))
    parser.add_argument("--namespace", default=env.get("OW_PROC_NAMESPACE", "default"))
    parser.add_argument("--concurrency", type=int, default=int(env.get("OW_PROC_CONCURRENCY", "4")))
    parser.add_argument("--lease", default=env.get("OW_PROC_LEASE", "30s"))
    parser.add_argument("--app-name", default=env.get("OW_PROC_APP_NAME", "ow-proc"))
    parser.add_argument(
        "--step-crash-limit",
        type=int,
        default=int(env["OW_PROC_STEP_CRASH_LIMIT"])
        if env.get("OW_PROC_STEP_CRASH_LIMIT")
        else None,
    )
    options = parser.parse_args(argv)
    if not options.url:
        parser.error("no URL: pass --url or set OW_PROC_URL")
    if not options.schema:
        parser.error("no schema: pass --schema or set OW_PROC_SCHEMA")
    return options


async def main(options: argparse.Namespace) -> None:
    """Run one worker until SIGTERM or SIGINT, then stop it gracefully."""
    global _ledger
    backend = PostgresBackend(
        with_application_name(options.url, options.app_name),
        namespace_id=options.namespace,
        schema=options.schema,
        max_pool_size=options.concurrency + 2,
        connect_timeout=2.0,
    )
    _ledger = Ledger(
        with_application_name(options.url, f"{options.app_name}-ledger"),
        options.schema,
        max_size=options.concurrency,
    )
    extra: dict[str, Any] = {}
    if (
        options.step_crash_limit is not None
        and "step_crash_limit" in inspect.signature(Worker).parameters
    ):
        extra["step_crash_limit"] = options.step_crash_limit
    worker = Worker(
        backend, WORKFLOWS, concurrency=options.concurrency, lease_duration=options.lease, **extra
    )
    await pg_ledger.serve(
        backend, _ledger, worker, ready_marker=READY_MARKER, stopped_marker="ow-proc-stopped"
    )


# -- helpers for the tests (test-process side) ---------------------------------------------------


def new_schema_name() -> str:
    """A fresh schema name for one test (``ow_proc_`` and 12 hex digits)."""
    return pg_ledger.new_schema_name("ow_proc")


def with_application_name(url: str, name: str) -> str:
    """``url`` with libpq's ``application_name`` set to ``name`` (replacing any)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "application_name"]
    query.append(("application_name", name))
    return parts._replace(query=urlencode(query, quote_via=quote)).geturl()


TERMINAL_STATUSES = ("completed", "succeeded", "failed", "canceled")

_AUDIT_DDL = """
CREATE TABLE {schema}.fault_run_audit (
  seq bigserial PRIMARY KEY, run_id text NOT NULL, old_status text, new_status text NOT NULL,
  worker_id text, at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE {schema}.fault_step_audit (
  seq bigserial PRIMARY KEY, run_id text NOT NULL, step_id text NOT NULL,
  step_name text NOT NULL, op text NOT NULL, step_status text NOT NULL, run_status text,
  closing boolean NOT NULL DEFAULT false,
  at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION {schema}.fault_audit_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO {schema}.fault_run_audit (run_id, old_status, new_status, worker_id)
    VALUES (NEW.id, NULL, NEW.status, NEW.worker_id);
  ELSIF NEW.status IS DISTINCT FROM OLD.status
      OR OLD.status IN ('completed', 'succeeded', 'failed', 'canceled') THEN
    INSERT INTO {schema}.fault_run_audit (run_id, old_status, new_status, worker_id)
    VALUES (NEW.id, OLD.status, NEW.status, NEW.worker_id);
  END IF;
  RETURN NULL;
END $$;
CREATE FUNCTION {schema}.fault_audit_step() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  closed_running boolean := false;
BEGIN
  IF TG_OP = 'UPDATE' THEN
    closed_running := OLD.status = 'running' AND NEW.status = 'failed';
  END IF;
  -- The engine's step writes hold the run's row lock: this sees the run's status
  -- as of the write, not a stale snapshot. A terminal transition closes the run's
  -- running attempts (SPEC 13) at the run's own finished_at: that is no late write.
  INSERT INTO {schema}.fault_step_audit
    (run_id, step_id, step_name, op, step_status, run_status, closing)
  SELECT NEW.workflow_run_id, NEW.id, NEW.step_name, TG_OP, NEW.status, wr.status,
         COALESCE(closed_running AND NEW.finished_at = wr.finished_at, false)
  FROM (SELECT 1) AS one
  LEFT JOIN {schema}.workflow_runs wr
    ON wr.namespace_id = NEW.namespace_id AND wr.id = NEW.workflow_run_id;
  RETURN NULL;
END $$;
CREATE TRIGGER fault_audit_run AFTER INSERT OR UPDATE ON {schema}.workflow_runs
  FOR EACH ROW EXECUTE FUNCTION {schema}.fault_audit_run();
CREATE TRIGGER fault_audit_step AFTER INSERT OR UPDATE ON {schema}.step_attempts
  FOR EACH ROW EXECUTE FUNCTION {schema}.fault_audit_step();
"""


def install_audit(url: str, schema: str) -> None:
    """Add the audit tables and triggers to ``schema`` (after the engine's migrations)."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(sql.SQL(_AUDIT_DDL).format(schema=sql.Identifier(schema)))


def audit_violations(url: str, schema: str) -> dict[str, list[Any]]:
    """What the audit saw going wrong, by kind (every list empty when all is well).

    - ``two_terminal_states``: runs that entered a terminal status more than once;
    - ``changed_after_terminal``: status changes or rewrites of a terminal run;
    - ``step_after_terminal``: step attempts written while their run was terminal.
    """
    terminal = list(TERMINAL_STATUSES)
    runs = sql.Identifier(schema, "fault_run_audit")
    steps = sql.Identifier(schema, "fault_step_audit")
    with psycopg.connect(url, autocommit=True) as connection:
        twice = connection.execute(
            sql.SQL(
                "SELECT run_id, array_agg(new_status ORDER BY seq) FROM {} "
                "WHERE new_status = ANY(%s) GROUP BY run_id HAVING count(*) > 1"
            ).format(runs),
            (terminal,),
        ).fetchall()
        changed = connection.execute(
            sql.SQL(
                "SELECT run_id, old_status, new_status FROM {} WHERE old_status = ANY(%s)"
            ).format(runs),
            (terminal,),
        ).fetchall()
        late = connection.execute(
            sql.SQL(
                "SELECT run_id, step_name, op, step_status, run_status FROM {} "
                "WHERE (run_status IS NULL OR run_status = ANY(%s)) AND NOT closing"
            ).format(steps),
            (terminal,),
        ).fetchall()
    return {
        "two_terminal_states": list(twice),
        "changed_after_terminal": list(changed),
        "step_after_terminal": list(late),
    }


def create_ledger(url: str, schema: str) -> None:
    """Create the ledger table in ``schema`` (which must exist)."""
    pg_ledger.create_ledger_table(
        url, schema, LEDGER_TABLE, "attempt integer NOT NULL", ("run_id", "step_name")
    )


class WorkerProcess(processes.WorkerProcess):
    """One worker subprocess (this module's ``main``); stdout and stderr go to a log file."""

    module = "tests.faults.pg_app"
    ready_marker = READY_MARKER
    stop_timeout = 20.0

    def __init__(
        self,
        log_path: Path,
        *,
        url: str,
        schema: str,
        namespace: str,
        concurrency: int,
        lease: str,
        app_name: str = "ow-proc",
        step_crash_limit: int | None = None,
    ) -> None:
        # The URL (maybe with a password) goes through the environment, not argv.
        env = {"OW_PROC_URL": url}
        if step_crash_limit is not None:
            env["OW_PROC_STEP_CRASH_LIMIT"] = str(step_crash_limit)
        super().__init__(
            log_path,
            [
                "--schema",
                schema,
                "--namespace",
                namespace,
                "--concurrency",
                str(concurrency),
                "--lease",
                lease,
                "--app-name",
                app_name,
            ],
            env,
        )


def wait_all_ready(workers: Sequence[WorkerProcess], timeout: float = READY_TIMEOUT) -> None:
    """Block until every worker printed its ready line (raises if one dies or time runs out)."""
    processes.wait_all_ready(workers, timeout)


if __name__ == "__main__":
    pg_ledger.configure_logging()
    asyncio.run(main(parse_options()))
