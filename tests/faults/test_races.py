"""F21: cancellation, deadlines and completion racing, on every backend.

Scenario (:func:`test_cancel_deadline_and_completion_race`, once per backend:
SQLite in memory, SQLite in a file, PostgreSQL in a fresh schema): two
in-process workers (8 slots each) execute a stream of runs of a workflow of
1-4 steps (random durations, some steps failing once or twice with a 1 ms
retry, some runs taking a 2 ms durable sleep, a few steps slower than the
one-write threshold), while three kinds of interference race with them:

- a third of the runs get a deadline 10-150 ms after creation;
- the workers' backend is wrapped (:class:`RacingBackend`) so that, at
  random, just before or just after any engine write (loading the history,
  creating or completing a step attempt, completing, failing, rescheduling or
  parking the run) the run is canceled, the deadline is waited out and
  swept by a claim from another "worker", or the call is delayed a few ms;
- a background task cancels random recent runs every 1-10 ms.

The oracle is outside the engine: triggers on the engine's tables record every
status change of a run and every step write with the run's status at that
moment (``pg_app.install_audit`` on PostgreSQL, :data:`SQLITE_AUDIT` on SQLite),
and the wrapper records every terminal outcome acknowledged to a caller
(completion, failure, cancel). The test checks that no run reached two
terminal states, that no terminal run changed (or was rewritten), that no
step attempt was written while its run was terminal, that no caller got two
different terminal acknowledgements for one run, that every run ended in the
acknowledged state (or, unacknowledged, failed by its deadline), that every
completed run has the right output, and that nothing is left unfinished.

The race also showed a defect (fixed since), pinned deterministically by
:func:`test_a_step_failing_while_its_run_is_canceled_logs_no_unretrieved_exception`:
when a step body fails while the write recording its attempt is refused (the
run was canceled meanwhile), the body's exception must still be retrieved, or
asyncio logs "Task exception was never retrieved" at ERROR.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import logging
import random
import sqlite3
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from pydantic import BaseModel

from openworkflow import (
    OpenWorkflow,
    PostgresBackend,
    RetryPolicy,
    RunInfo,
    SqliteBackend,
    Step,
    Worker,
    workflow,
)
from openworkflow.core import clock
from openworkflow.core.backend import (
    CancelWorkflowRunParams,
    ClaimWorkflowRunsParams,
    SleepWorkflowRunParams,
)
from openworkflow.core.retry import DEADLINE_EXCEEDED_MESSAGE
from openworkflow.errors import (
    InvalidRunStateError,
    WorkflowCanceledError,
    WriteConflictError,
)
from tests.faults.figures import Figure, report
from tests.faults.ledger import Expected, tally
from tests.faults.pg_app import TERMINAL_STATUSES, audit_violations, install_audit
from tests.fixtures.postgres import require_server_url
from tests.support.proxy import ProxyBackend

BACKEND_KINDS = ["sqlite_memory", "sqlite_file", "postgres"]
RUNS = 500
WORKERS = 2
CONCURRENCY = 8
P_CANCEL = 0.03
P_EXPIRE = 0.03
P_DELAY = 0.10
SAFETY_TIMEOUT_S = 90.0
INTERFERED = frozenset(
    {
        "list_step_attempts",
        "create_step_attempt",
        "create_completed_step_attempt",
        "complete_step_attempt",
        "fail_step_attempt",
        "complete_workflow_run",
        "fail_workflow_run",
        "reschedule_workflow_run_after_failed_step_attempt",
        "sleep_workflow_run",
    }
)

SQLITE_AUDIT = """
CREATE TABLE fault_run_audit (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, old_status TEXT,
  new_status TEXT NOT NULL
);
CREATE TABLE fault_step_audit (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, step_name TEXT NOT NULL,
  op TEXT NOT NULL, step_status TEXT NOT NULL, run_status TEXT, closing INTEGER NOT NULL DEFAULT 0
);
CREATE TRIGGER fault_audit_run_insert AFTER INSERT ON workflow_runs BEGIN
  INSERT INTO fault_run_audit (run_id, old_status, new_status) VALUES (NEW.id, NULL, NEW.status);
END;
CREATE TRIGGER fault_audit_run_update AFTER UPDATE ON workflow_runs
WHEN NEW.status IS NOT OLD.status OR OLD.status IN ('completed', 'succeeded', 'failed', 'canceled')
BEGIN
  INSERT INTO fault_run_audit (run_id, old_status, new_status)
  VALUES (NEW.id, OLD.status, NEW.status);
END;
CREATE TRIGGER fault_audit_step_insert AFTER INSERT ON step_attempts BEGIN
  INSERT INTO fault_step_audit (run_id, step_name, op, step_status, run_status)
  VALUES (NEW.workflow_run_id, NEW.step_name, 'INSERT', NEW.status,
    (SELECT status FROM workflow_runs
     WHERE namespace_id = NEW.namespace_id AND id = NEW.workflow_run_id));
END;
CREATE TRIGGER fault_audit_step_update AFTER UPDATE ON step_attempts BEGIN
  INSERT INTO fault_step_audit (run_id, step_name, op, step_status, run_status, closing)
  VALUES (NEW.workflow_run_id, NEW.step_name, 'UPDATE', NEW.status,
    (SELECT status FROM workflow_runs
     WHERE namespace_id = NEW.namespace_id AND id = NEW.workflow_run_id),
    -- A terminal transition closing the run's running attempts (SPEC 13).
    COALESCE(OLD.status = 'running' AND NEW.status = 'failed' AND NEW.finished_at = (
      SELECT finished_at FROM workflow_runs
      WHERE namespace_id = NEW.namespace_id AND id = NEW.workflow_run_id), 0));
END;
"""
"""The SQLite twin of ``pg_app.install_audit`` (writes are serialised, so it is exact)."""

_SQLITE_VIOLATIONS = {
    "two_terminal_states": (
        "SELECT run_id, group_concat(new_status) FROM fault_run_audit "
        "WHERE new_status IN ({terminal}) GROUP BY run_id HAVING count(*) > 1"
    ),
    "changed_after_terminal": (
        "SELECT run_id, old_status, new_status FROM fault_run_audit "
        "WHERE old_status IN ({terminal})"
    ),
    "step_after_terminal": (
        "SELECT run_id, step_name, op, step_status, run_status FROM fault_step_audit "
        "WHERE (run_status IS NULL OR run_status IN ({terminal})) AND NOT closing"
    ),
}

# -- the workflow ------------------------------------------------------------------------


class RaceInput(BaseModel):
    """What one run does: per step a duration (ms) and how often it fails first."""

    durations_ms: list[int]
    failures: list[int]
    nap_after: int = -1


FAST_RETRY = RetryPolicy(initial_interval="1ms", maximum_interval="1ms", maximum_attempts=2)


@dataclass
class StepLedger:
    """Step bodies' executions, kept outside the engine (in-process)."""

    executions: Counter[tuple[str, int]] = field(default_factory=Counter)
    succeeded: set[tuple[str, int]] = field(default_factory=set)
    reexecuted: Counter[str] = field(default_factory=Counter)
    """Per run: bodies started again after the same step had already succeeded."""


_ledger = StepLedger()


async def _body(run_id: str, index: int, duration_ms: int, failures: int) -> int:
    key = (run_id, index)
    if key in _ledger.succeeded:
        _ledger.reexecuted[run_id] += 1
    _ledger.executions[key] += 1
    await asyncio.sleep(duration_ms / 1000)
    if _ledger.executions[key] <= failures:
        raise RuntimeError(f"planned failure {_ledger.executions[key]} of step {index}")
    _ledger.succeeded.add(key)
    return index + 1


@workflow(name="race-steps")
async def race_steps(input: RaceInput, step: Step, run: RunInfo) -> int:
    """Sum of ``index + 1`` over the steps; may nap durably after one of them."""
    total = 0
    for index, (duration, failures) in enumerate(
        zip(input.durations_ms, input.failures, strict=True)
    ):
        total += await step.run(
            f"s{index}",
            functools.partial(_body, run.id, index, duration, failures),
            retry_policy=FAST_RETRY,
        )
        if index == input.nap_after:
            await step.sleep("nap", "2ms")
    return total


def _random_input(rng: random.Random) -> RaceInput:
    steps = rng.randint(1, 4)
    durations = [60 if rng.random() < 0.05 else rng.randint(0, 4) for _ in range(steps)]
    failures = [rng.choice((0, 0, 0, 0, 0, 1, 2)) for _ in range(steps)]
    nap_after = rng.randrange(steps) if rng.random() < 0.3 else -1
    return RaceInput(durations_ms=durations, failures=failures, nap_after=nap_after)


# -- the interference ----------------------------------------------------------------------


@dataclass
class Chaos:
    """Interferes with runs and records what every caller was told."""

    backend: Any
    rng: random.Random
    deadlines: dict[str, datetime] = field(default_factory=dict)
    acks: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    cancels_refused: int = 0
    cancels_sent: int = 0
    sweeps: int = 0
    delays: int = 0
    sweeper_id: str = field(default_factory=lambda: f"sweeper-{uuid.uuid4()}")

    async def cancel(self, run_id: str) -> None:
        """Cancel ``run_id``; record the acknowledgement or the refusal."""
        self.cancels_sent += 1
        try:
            run = await self.backend.cancel_workflow_run(
                CancelWorkflowRunParams(workflow_run_id=run_id)
            )
        except InvalidRunStateError:
            self.cancels_refused += 1
            return
        assert run.status == "canceled", run
        self.acks[run_id].add("canceled")

    async def sweep(self) -> None:
        """Claim as another worker (this runs the deadline sweep) and hand claims back."""
        self.sweeps += 1
        claimed = await self.backend.claim_workflow_runs(
            ClaimWorkflowRunsParams(worker_ids=[self.sweeper_id], lease_duration_ms=30_000)
        )
        for run in claimed:
            with contextlib.suppress(WriteConflictError):  # canceled or swept meanwhile
                await self.backend.sleep_workflow_run(
                    SleepWorkflowRunParams(
                        workflow_run_id=run.id,
                        worker_id=self.sweeper_id,
                        available_at=clock.now() - timedelta(milliseconds=1),
                    )
                )

    async def interfere(self, run_id: str) -> None:
        """At random: cancel the run, let its deadline pass and sweep, delay, or nothing."""
        roll = self.rng.random()
        if roll < P_CANCEL:
            await self.cancel(run_id)
        elif roll < P_CANCEL + P_EXPIRE:
            deadline = self.deadlines.get(run_id)
            if deadline is not None:
                wait = (deadline - clock.now()).total_seconds()
                if wait < 0.05:
                    await asyncio.sleep(max(wait, 0) + 0.002)
            await self.sweep()
        elif roll < P_CANCEL + P_EXPIRE + P_DELAY:
            self.delays += 1
            await asyncio.sleep(self.rng.uniform(0, 0.005))

    def acknowledge(self, run_id: str, status: str) -> None:
        """A caller was told the run reached ``status``."""
        if status in TERMINAL_STATUSES:
            self.acks[run_id].add(status)


class RacingBackend(ProxyBackend):
    """The workers' backend: every engine write may be raced by a cancel, a deadline or a delay."""

    def __init__(self, inner: Any, chaos: Chaos) -> None:
        super().__init__(inner)
        self._chaos = chaos

    def intercept(self, name: str, target: Any) -> Any:
        if name not in INTERFERED:
            return target
        return self._raced(name, target)

    def _raced(self, name: str, call: Callable[[Any], Awaitable[Any]]) -> Any:
        chaos = self._chaos

        async def raced(params: Any) -> Any:
            run_id = params.workflow_run_id
            await chaos.interfere(run_id)
            result = await call(params)
            if name in ("complete_workflow_run", "fail_workflow_run"):
                chaos.acknowledge(run_id, result.status)
            await chaos.interfere(run_id)
            return result

        return raced


# -- backends with an audit ------------------------------------------------------------------


@dataclass
class Audited:
    """A backend under test and a way to read its audit tables."""

    backend: Any
    violations: Callable[[], Awaitable[dict[str, list[Any]]]]
    rows: Callable[[], Awaitable[list[tuple[str, str, Any, Any]]]]


def _sqlite_violations(connection: sqlite3.Connection) -> dict[str, list[Any]]:
    terminal = ", ".join(f"'{status}'" for status in TERMINAL_STATUSES)
    return {
        kind: connection.execute(query.format(terminal=terminal)).fetchall()
        for kind, query in _SQLITE_VIOLATIONS.items()
    }


def _sqlite_rows(connection: sqlite3.Connection) -> list[tuple[str, str, Any, Any]]:
    rows = connection.execute("SELECT id, status, output, error FROM workflow_runs").fetchall()
    return [(str(r[0]), str(r[1]), r[2], r[3]) for r in rows]


@contextlib.asynccontextmanager
async def _postgres_audited() -> AsyncIterator[Audited]:
    url = require_server_url()
    schema = f"ow_race_{uuid.uuid4().hex[:12]}"
    backend = PostgresBackend(url, schema=schema, max_pool_size=12)
    try:
        await backend.open()
        install_audit(url, schema)

        async def violations() -> dict[str, list[Any]]:
            return await asyncio.to_thread(audit_violations, url, schema)

        async def rows() -> list[tuple[str, str, Any, Any]]:
            async with await psycopg.AsyncConnection.connect(url) as connection:
                cursor = await connection.execute(
                    sql.SQL("SELECT id, status, output, error FROM {}").format(
                        sql.Identifier(schema, "workflow_runs")
                    )
                )
                return [(str(r[0]), str(r[1]), r[2], r[3]) for r in await cursor.fetchall()]

        yield Audited(backend, violations, rows)
    finally:
        await backend.stop()
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )


@contextlib.asynccontextmanager
async def _sqlite_audited(path: Path | None) -> AsyncIterator[Audited]:
    backend = SqliteBackend(":memory:" if path is None else str(path))

    async def on_connection(fn: Callable[[sqlite3.Connection], Any]) -> Any:
        if path is None:
            # The in-memory database lives on the backend's own connection.
            return await backend._db.run(fn)
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as connection:
            return fn(connection)

    async def violations() -> dict[str, list[Any]]:
        result: dict[str, list[Any]] = await on_connection(_sqlite_violations)
        return result

    async def rows() -> list[tuple[str, str, Any, Any]]:
        result: list[tuple[str, str, Any, Any]] = await on_connection(_sqlite_rows)
        return result

    try:
        await on_connection(lambda connection: connection.executescript(SQLITE_AUDIT))
        yield Audited(backend, violations, rows)
    finally:
        await backend.stop()


@pytest.fixture(params=BACKEND_KINDS)
async def audited(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Audited]:
    """A fresh backend of each kind, with audit triggers on its tables."""
    kind = str(request.param)
    if kind == "postgres":
        context = _postgres_audited()
    else:
        context = _sqlite_audited(tmp_path / "race.db" if kind == "sqlite_file" else None)
    async with context as found:
        yield found


# -- the test --------------------------------------------------------------------------------


def _decode(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _failed_by_deadline(status: str, error: Any) -> bool:
    return status == "failed" and DEADLINE_EXCEEDED_MESSAGE in str(_decode(error))


@dataclass
class Stream:
    """The runs the producer created."""

    inputs: dict[str, RaceInput] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    producing: bool = True


async def _drive(ow: OpenWorkflow, chaos: Chaos, rng: random.Random, stream: Stream) -> None:
    """Create the runs in bursts while a canceler races them; wait until all are terminal."""

    async def canceler() -> None:
        while stream.producing:
            await asyncio.sleep(rng.uniform(0.001, 0.01))
            if stream.created:
                await chaos.cancel(rng.choice(stream.created[-30:]))

    cancel_task = asyncio.create_task(canceler())
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        while len(stream.created) < RUNS:
            for _ in range(min(10, RUNS - len(stream.created))):
                run_input = _random_input(rng)
                deadline = None
                if rng.random() < 1 / 3:
                    deadline = clock.now() + timedelta(milliseconds=rng.randint(10, 150))
                handle = await ow.run(race_steps, run_input, deadline_at=deadline)
                stream.inputs[handle.id] = run_input
                if deadline is not None:
                    chaos.deadlines[handle.id] = deadline
                stream.created.append(handle.id)
            await asyncio.sleep(rng.uniform(0.005, 0.02))
        stream.producing = False
        await cancel_task
        # A generous safety timeout, not a timed assertion.
        while True:
            counts = await ow.counts()
            if counts.completed + counts.failed + counts.canceled >= RUNS:
                return
            assert loop.time() - started < SAFETY_TIMEOUT_S, f"runs left unfinished: {counts}"
            await asyncio.sleep(0.05)
    finally:
        stream.producing = False
        cancel_task.cancel()


def _judge(
    rows: dict[str, tuple[str, Any, Any]], stream: Stream, chaos: Chaos
) -> tuple[list[str], dict[str, set[str]]]:
    """Runs lost or ended wrongly, and runs acknowledged in two terminal states."""
    lost: list[str] = []
    for run_id in stream.created:
        status, output, error = rows[run_id]
        acks = chaos.acks.get(run_id, set())
        if status not in TERMINAL_STATUSES:
            lost.append(f"{run_id}: {status}")
        elif acks and status not in acks:
            lost.append(f"{run_id}: acknowledged {acks}, ended {status}")
        elif not acks and not _failed_by_deadline(status, error):
            lost.append(f"{run_id}: ended {status} ({error}) without acknowledgement")
        elif status == "completed":
            expected = sum(range(1, len(stream.inputs[run_id].durations_ms) + 1))
            if _decode(output) != expected:
                lost.append(f"{run_id}: output {output!r}, expected {expected}")
    conflicting = {run_id: acks for run_id, acks in chaos.acks.items() if len(acks) > 1}
    return lost, conflicting


def _is_unretrieved_step_error(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return "Task exception was never retrieved" in message and "StepExecutor._call" in message


async def test_cancel_deadline_and_completion_race(
    audited: Audited, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    """F21: Cancels, deadlines and completions racing every engine write: each run ends once, in one
    terminal status.
    """
    caplog.set_level(logging.WARNING, logger="openworkflow")
    kind = request.node.callspec.params["audited"]
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    chaos = Chaos(audited.backend, random.Random(rng.random()))
    racing = RacingBackend(audited.backend, chaos)
    workers = [
        Worker(racing, [race_steps], concurrency=CONCURRENCY, lease_duration="30s")
        for _ in range(WORKERS)
    ]
    stream = Stream()
    for worker in workers:
        await worker.start()
    try:
        await _drive(OpenWorkflow(audited.backend), chaos, rng, stream)
    finally:
        for worker in workers:
            await worker.stop()

    violations = await audited.violations()
    rows = {run_id: (status, out, err) for run_id, status, out, err in await audited.rows()}
    assert set(rows) == set(stream.created)
    lost, conflicting_acks = _judge(rows, stream, chaos)
    final = Counter(status for status, _, _ in rows.values())
    by_deadline = sum(1 for status, _, error in rows.values() if _failed_by_deadline(status, error))
    duplicated = sum(len(found) for found in violations.values()) + len(conflicting_acks)
    # asyncio's "Task exception was never retrieved" for a step body that failed while
    # its pass was ending (see the test below): counted, and must be none.
    unretrieved = [record for record in caplog.records if _is_unretrieved_step_error(record)]
    errors = [
        record.getMessage()
        for record in caplog.records
        if (record.levelno >= logging.ERROR or "Critical" in record.getMessage())
        and not _is_unretrieved_step_error(record)
    ]

    assert not lost, lost[:20]
    assert not unretrieved, [record.getMessage() for record in unretrieved[:3]]
    assert duplicated == 0, (violations, conflicting_acks)
    assert not errors, errors[:10]
    report(
        Figure(
            fault_id="F21",
            title=f"cancel, deadline and completion racing ({kind})",
            runs=RUNS,
            faults=chaos.cancels_sent + chaos.sweeps + len(chaos.deadlines) + chaos.delays,
            lost=len(lost),
            duplicated=duplicated,
            reexecuted_steps=sum(_ledger.reexecuted[run_id] for run_id in stream.created),
            details=(
                f"{chaos.cancels_sent} cancels ({chaos.cancels_refused} refused as already "
                f"finished), {len(chaos.deadlines)} deadlines, {chaos.sweeps} racing sweeps, "
                f"{chaos.delays} delayed writes; final completed {final['completed']} / "
                f"canceled {final['canceled']} / failed {final['failed']} "
                f"({by_deadline} by deadline); runs with two terminal states 0, terminal "
                f"changed 0, steps written after terminal 0, conflicting acks 0; "
                f"unretrieved step exceptions logged {len(unretrieved)}; "
                f"seed {seed}"
            ),
        )
    )


# -- a defect found by the race: a step's failure nobody retrieves ------------------------------


async def _fail_after_60_ms() -> None:
    await asyncio.sleep(0.06)
    raise RuntimeError("the step failed after its run was canceled")


@workflow(name="race-slow-failure")
async def slow_failure(step: Step) -> None:
    """One step that fails after 60 ms (longer than the one-write threshold)."""
    await step.run("fails", _fail_after_60_ms)


class _CancelBeforeStepAttempt(ProxyBackend):
    """Cancels the run just before the worker records a step attempt, then lets it fail."""

    async def create_step_attempt(self, params: Any) -> Any:
        await self.inner.cancel_workflow_run(
            CancelWorkflowRunParams(workflow_run_id=params.workflow_run_id)
        )
        await asyncio.sleep(0.05)  # the step body fails meanwhile
        return await self.inner.create_step_attempt(params)


async def test_a_step_failing_while_its_run_is_canceled_logs_no_unretrieved_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The race, made deterministic: cancel lands while a slow step is failing.

    The step runs longer than the one-write threshold, so the worker records a
    running attempt; the run is canceled just before that write, and the step
    body fails while the (refused) write is on its way. The pass ends without
    a transition, correctly, but the body's exception must not be reported by
    asyncio as "never retrieved" (an ERROR with the user's traceback).
    """
    backend = SqliteBackend(":memory:")
    try:
        handle = await OpenWorkflow(backend).run(slow_failure)
        async with Worker(_CancelBeforeStepAttempt(backend), [slow_failure]):
            with pytest.raises(WorkflowCanceledError):
                await handle.result(timeout="30s")
        gc.collect()  # an unretrieved exception is reported when its task is freed
        await asyncio.sleep(0)
        counted = await tally(backend, {handle.id: Expected("canceled")})
    finally:
        await backend.stop()
    unretrieved = [r.getMessage() for r in caplog.records if _is_unretrieved_step_error(r)]
    report(
        Figure(
            fault_id="F21",
            title="a step failing while its run is canceled (SQLite, deterministic)",
            runs=1,
            faults=1,
            lost=counted.lost,
            duplicated=counted.duplicated,
            details=f"'never retrieved' step errors logged {len(unretrieved)}",
        )
    )
    assert not unretrieved
    assert counted.lost == 0 and counted.duplicated == 0, counted
