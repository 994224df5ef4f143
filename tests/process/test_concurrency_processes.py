"""Three real ``ow worker start`` processes share per-key concurrency limits, one SIGKILLed.

A workflow with ``Concurrency(limit=1, key=...)`` gets 4 keys x 6 runs while
three worker processes (4 slots each) race to claim them. Its one step
appends ``start``/``end`` lines (key, pid, monotonic time) to a file per run,
an oracle outside the engine, and holds about 300 ms. The first run of key D
blocks in its step until the test creates a gate file; before that the test
SIGKILLs the worker process that runs it, so the run is only taken over once
its lease expires. A killed attempt's interval lasts until its takeover (the
run's next ``start``): the slot stays held meanwhile.

Checked on SQLite (a file database) and PostgreSQL (a schema of its own): per
key the runs' intervals never overlap, at some instant two keys ran at once,
key D's next run starts only after its first run was taken over, and every
run completes.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import psycopg
import pytest

from openworkflow import Concurrency, OpenWorkflow, connect, declare_workflow
from openworkflow.core.backend import Backend
from openworkflow.core.workflow_run import WorkflowRun
from tests.cli.helpers import Background, clean_env, write
from tests.fixtures.postgres import per_worker, prepare_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

WORKFLOW = "one-per-key"
KEYS = ("A", "B", "C", "D")
RUNS_PER_KEY = 12
WORKERS = 3
SCHEMA = per_worker("ow_concurrency_processes")
BOOT_TIMEOUT_S = 60.0
"""Far above the few seconds a worker needs, even with three booting at once on two cores."""
RUNS_TIMEOUT_S = 60.0
"""Far above the ~5 s the runs need (6 x 300 ms per key, plus one 1 s lease to expire)."""

SPEC = declare_workflow(WORKFLOW, concurrency=Concurrency(limit=1, key=lambda i: i["key"]))
"""What the test starts runs from: the same name and concurrency as the workers' workflow."""

FLOWS = """
import asyncio
import os
import time
from pathlib import Path

from openworkflow import Concurrency, RunInfo, Step, workflow

RECORDS = Path({records!r})
GATE = Path({gate!r})


def record(run_id: str, what: str, key: str) -> None:
    # One file per run, one process writing it at a time: lines never interleave.
    with (RECORDS / f"{{run_id}}.txt").open("a", encoding="utf-8") as file:
        file.write(f"{{what}} {{key}} {{os.getpid()}} {{time.monotonic()!r}}\\n")


async def hold(key: str, run_id: str, gated: bool) -> str:
    record(run_id, "start", key)
    while gated and not GATE.exists():
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    record(run_id, "end", key)
    return key


@workflow(name={workflow!r}, concurrency=Concurrency(limit=1, key=lambda i: i["key"]))
async def one_per_key(input: dict, step: Step, run: RunInfo) -> str:
    return await step.run("hold", hold, input["key"], run.id, input.get("gated", False))
"""


@dataclass
class Mark:
    """One line a step wrote: ``start`` or ``end``, by which process, when (monotonic)."""

    what: str
    key: str
    pid: int
    at: float


@dataclass
class RunRecord:
    """Every mark of one run, in the order written."""

    run_id: str
    marks: list[Mark] = field(default_factory=list)

    @property
    def starts(self) -> list[Mark]:
        """The step's starts: one per attempt that reached it."""
        return [mark for mark in self.marks if mark.what == "start"]

    @property
    def interval(self) -> tuple[float, float]:
        """From the first start to the last end: a killed attempt lasts until its takeover."""
        ends = [mark.at for mark in self.marks if mark.what == "end"]
        assert ends, f"run {self.run_id} never finished its step: {self.marks}"
        return self.starts[0].at, max(ends)


def _project(kind: str, tmp_path: Path) -> tuple[Path, str]:
    """A project folder (config and flows) for ``kind``, and its database URL."""
    project = tmp_path / kind
    (project / "records").mkdir(parents=True)
    if kind == "sqlite":
        url = f"sqlite:///{project / 'ow.db'}"
    else:
        server = prepare_server()
        with psycopg.connect(server, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        url = f"{server}&schema={SCHEMA}"
    write(
        project / "openworkflow.config.py",
        f"""
        from openworkflow import define_config
        config = define_config(backend={url!r}, dirs=["./flows"],
                               worker={{"concurrency": 4, "lease_duration": "1s",
                                        "shutdown_timeout": "2s"}})
        """,
    )
    flows = FLOWS.format(
        records=str(project / "records"), gate=str(project / "gate"), workflow=WORKFLOW
    )
    write(project / "flows" / "flows.py", flows)
    return project, url


@asynccontextmanager
async def _opened(url: str) -> AsyncIterator[Backend]:
    backend = connect(url)
    try:
        yield backend
    finally:
        await backend.stop()


async def _start_runs(ow: OpenWorkflow) -> tuple[dict[str, str], str]:
    """Every run (id -> key), the gated first run of D created before any other D run."""
    keys: dict[str, str] = {}
    gated = (await ow.run(SPEC, {"key": "D", "gated": True})).id
    keys[gated] = "D"
    for index in range(RUNS_PER_KEY):
        for key in KEYS:
            if (key, index) != ("D", 0):
                keys[(await ow.run(SPEC, {"key": key})).id] = key
    return keys, gated


def _records(folder: Path) -> dict[str, RunRecord]:
    found: dict[str, RunRecord] = {}
    for path in folder.glob("*.txt"):
        record = found[path.stem] = RunRecord(path.stem)
        for line in path.read_text(encoding="utf-8").splitlines():
            what, key, pid, at = line.split()
            record.marks.append(Mark(what, key, int(pid), float(at)))
    return found


async def _runs(ow: OpenWorkflow, ids: list[str]) -> list[WorkflowRun]:
    runs = [await ow.get_run(run_id) for run_id in ids]
    assert all(run is not None for run in runs)
    return [run for run in runs if run is not None]


async def _kill_owner_of(
    gated: str, records: Path, workers: list[Background], gate: Path
) -> tuple[int, float]:
    """SIGKILL the worker process running ``gated``'s step, then open the gate.

    Returns the killed pid and when (monotonic) it was dead.
    """

    def started() -> bool:
        record = _records(records).get(gated)
        return record is not None and bool(record.starts)

    await wait_until(started, timeout=30, message="the gated run's step to start")
    pid = _records(records)[gated].starts[0].pid
    (owner,) = [worker for worker in workers if worker.process.pid == pid]
    owner.stop(signal.SIGKILL)
    killed_at = time.monotonic()
    gate.touch()
    return pid, killed_at


async def _wait_all_completed(ow: OpenWorkflow, ids: list[str]) -> list[WorkflowRun]:
    async def finished() -> list[WorkflowRun]:
        runs = await _runs(ow, ids)
        return runs if all(run.status in ("completed", "failed") for run in runs) else []

    return await wait_until(finished, timeout=RUNS_TIMEOUT_S, interval=0.1, message="every run")


def _assert_one_at_a_time_per_key(records: dict[str, RunRecord], keys: dict[str, str]) -> None:
    """Per key, no two runs' intervals overlap; across keys, some did."""
    intervals = sorted((record.interval, keys[run_id]) for run_id, record in records.items())
    for key in KEYS:
        mine = [interval for interval, owner in intervals if owner == key]
        assert len(mine) == RUNS_PER_KEY, key
        for (_, end), (start, _) in pairwise(mine):
            assert start >= end, f"key {key}: a run started at {start} before {end}"
    assert any(
        other_key != key and other_start < end
        for index, ((_, end), key) in enumerate(intervals)
        for (other_start, _), other_key in intervals[index + 1 :]
    ), "no two keys ever ran at once"


def _assert_takeover_first(
    records: dict[str, RunRecord], keys: dict[str, str], gated: str, killed: tuple[int, float]
) -> None:
    """The gated run was taken over after the kill, before any other run of D started."""
    pid, killed_at = killed
    starts = records[gated].starts
    assert len(starts) >= 2 and starts[0].pid == pid, starts
    takeover = starts[1]
    assert takeover.pid != pid and takeover.at > killed_at, (takeover, killed_at)
    others = [
        record for run_id, record in records.items() if keys[run_id] == "D" and run_id != gated
    ]
    assert all(record.starts[0].at >= takeover.at for record in others)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_worker_processes_run_one_per_key_across_a_sigkill(kind: str, tmp_path: Path) -> None:
    began = time.monotonic()
    project, url = _project(kind, tmp_path)
    workers = [Background(project, "worker", "start", env=clean_env()) for _ in range(WORKERS)]
    try:
        for worker in workers:
            worker.wait_for("Worker started", timeout=BOOT_TIMEOUT_S)
        async with _opened(url) as backend:
            ow = OpenWorkflow(backend)
            keys, gated = await _start_runs(ow)
            killed = await _kill_owner_of(gated, project / "records", workers, project / "gate")
            runs = await _wait_all_completed(ow, list(keys))
    finally:
        stopped = [worker.stop(signal.SIGTERM) for worker in workers]
    elapsed = time.monotonic() - began
    print(f"{kind}: {elapsed:.1f}s from the first worker's launch to the workers' exit")

    assert [run.status for run in runs] == ["completed"] * len(keys)
    assert all(run.output == keys[run.id] == run.concurrency_key for run in runs)
    assert [run.attempts >= 2 for run in runs if run.id == gated] == [True]
    records = _records(project / "records")
    assert sorted(records) == sorted(keys)
    _assert_one_at_a_time_per_key(records, keys)
    _assert_takeover_first(records, keys, gated, killed)
    survivors = [done for done in stopped if done.returncode != -signal.SIGKILL]
    assert len(survivors) == WORKERS - 1
    assert all(done.returncode == 0 for done in survivors), [done.stderr for done in survivors]
