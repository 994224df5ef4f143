"""F24: a storm of saves under ``ow dev`` while runs are being started (SQLite).

``ow dev --no-dashboard`` runs as a real subprocess in a temporary project
whose workflow file is saved 50 times in 10 s, in ten bursts of five saves
50 ms apart (one burst a second, so a restart kills either a worker still
importing or one in the middle of a step); every save changes the string the
workflow returns (``v1`` ... ``v49``, then ``final``). Meanwhile the test
starts one run a second through the client; each run has a step of 800 ms
(longer than the dev worker's 500 ms shutdown timeout) and one of 50 ms.
Every step body appends to a ledger file (the oracle outside the engine).

After the storm: exactly one worker process is left and it is a child of
``ow dev`` (none orphaned, none lingering from an earlier restart); it started
after the last save, and runs started now return ``final``; every run of
the storm completed once (no run lost, no step completed twice). After
``ow dev`` is stopped with SIGINT (Ctrl-C) no process of the project is left.
The process tree is read from ``/proc`` (Linux only).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from openworkflow import OpenWorkflow, SqliteBackend, WorkflowRun
from tests.faults import proc_tree
from tests.faults.figures import Figure, report
from tests.faults.ledger import tally
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

SAVES = 50
BURST = 5
STORM_S = 10.0
RUNS_PER_TICK = 1
TICK_S = 1.0
FINAL = "final"
LATE_RUNS = 5

CONFIG = """
from openworkflow import define_config
config = define_config(backend="sqlite:///dev.db", dirs=["./openworkflow"])
"""

WORKFLOW = """
import asyncio
import os

from openworkflow import RunInfo, Step, workflow

VERSION = "{version}"


async def _work(run_id: str, name: str, seconds: float) -> str:
    with open(os.environ["OW_STORM_LEDGER"], "a", encoding="utf-8") as ledger:
        ledger.write(f"{{run_id}} {{name}} {{os.getpid()}}\\n")
    await asyncio.sleep(seconds)
    return name


@workflow(name="storm")
async def storm(step: Step, run: RunInfo) -> str:
    # Step a outlives ow dev's 500 ms shutdown timeout: a restart interrupts it.
    for name, seconds in (("a", 0.8), ("b", 0.05)):
        await step.run(name, lambda name=name, seconds=seconds: _work(run.id, name, seconds))
    return VERSION
"""


def _save(path: Path, version: str) -> None:
    path.write_text(WORKFLOW.format(version=version), encoding="utf-8")


@contextmanager
def _ow_dev(project: Path, ledger: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``ow dev --no-dashboard`` in ``project``; stopped with SIGINT (Ctrl-C) at the end."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPENWORKFLOW_")}
    env["OW_STORM_LEDGER"] = str(ledger)
    with (project / "dev.log").open("wb") as sink:
        # -P: the project folder is not put first on sys.path (as in tests/cli/helpers.py).
        process = subprocess.Popen(
            [sys.executable, "-P", "-m", "openworkflow", "dev", "--no-dashboard"],
            cwd=project,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _workers(project: Path, dev_pid: int) -> list[proc_tree.Proc]:
    """The project's processes other than ``ow dev`` itself (its workers, or orphans)."""
    return [proc for proc in proc_tree.in_folder(project) if proc.pid != dev_pid]


class _Watcher:
    """Samples the project's processes in a thread: every worker seen, and the most at once."""

    def __init__(self, project: Path, dev_pid: int) -> None:
        self.project, self.dev_pid = project, dev_pid
        self.seen: set[tuple[int, int]] = set()
        self.most_at_once = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> _Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            found = _workers(self.project, self.dev_pid)
            self.seen |= {proc.key for proc in found}
            self.most_at_once = max(self.most_at_once, len(found))


def _save_at(index: int) -> float:
    """When save ``index`` (from 0) happens: bursts of :data:`BURST` saves 50 ms apart, then a
    pause, so some restarts kill a worker still importing and others one in the middle of a step.
    """
    bursts = SAVES // BURST
    return (index // BURST) * STORM_S / bursts + (index % BURST) * 0.05


async def _storm(client: OpenWorkflow, source: Path) -> tuple[list[str], int]:
    """Save ``source`` :data:`SAVES` times in :data:`STORM_S` s while starting runs.

    Returns the ids of the runs started, and the uptime ticks just before the last save.
    """
    run_ids: list[str] = []
    started = time.monotonic()
    next_tick = started
    last_save = 0
    for index in range(1, SAVES + 1):
        await asyncio.sleep(max(0.0, started + _save_at(index - 1) - time.monotonic()))
        # Read before the write: a worker spawned right after it (a restart already under way)
        # may start within the same clock tick (10 ms), and it still imports the saved code.
        last_save = proc_tree.now_ticks()
        _save(source, FINAL if index == SAVES else f"v{index}")
        if time.monotonic() >= next_tick:
            handles = [await client.run("storm") for _ in range(RUNS_PER_TICK)]
            run_ids += [handle.id for handle in handles]
            next_tick += TICK_S
    return run_ids, last_save


async def _wait_terminal(client: OpenWorkflow, run_ids: list[str], timeout: float) -> None:
    """Wait until every run is finished, or ``timeout`` (the tally then counts the rest lost)."""
    deadline = time.monotonic() + timeout
    pending = list(run_ids)
    while pending and time.monotonic() < deadline:
        runs = [await client.get_run(run_id) for run_id in pending]
        pending = [rid for rid, run in zip(pending, runs, strict=True) if not _finished(run)]
        await asyncio.sleep(0.2)


def _finished(run: WorkflowRun | None) -> bool:
    return run is not None and run.finished_at is not None


@dataclass
class Seen:
    """What the test observed, for the figure and the checks."""

    run_ids: list[str] = field(default_factory=list)
    late_ids: list[str] = field(default_factory=list)
    final_worker: bool = False
    left: list[proc_tree.Proc] = field(default_factory=list)
    after_exit: list[tuple[int, int]] = field(default_factory=list)
    workers_seen: int = 0
    most_at_once: int = 0
    storm_s: float = 0.0
    settled_s: float = 0.0
    restarts: int = 0
    dev_pid: int = 0
    final_worker_s: float = 0.0


async def _run_the_storm(project: Path, ledger: Path, client: OpenWorkflow, seen: Seen) -> None:
    """``ow dev`` through the storm and after it, filling ``seen``."""
    source = project / "openworkflow" / "storm.py"
    with _ow_dev(project, ledger) as dev:
        warmup = await client.run("storm")
        assert await warmup.result(timeout="60s") == "v0", "ow dev did not start"
        began = time.monotonic()
        with _Watcher(project, dev.pid) as watcher:
            seen.run_ids, last_save = await _storm(client, source)
            seen.storm_s = time.monotonic() - began

            def final_worker() -> bool:
                found = _workers(project, dev.pid)
                return any(p.ppid == dev.pid and p.started_since(last_save) for p in found)

            with contextlib.suppress(TimeoutError, AssertionError):
                await wait_until(final_worker, timeout=30, message="a worker of the final code")
                seen.final_worker = True
                seen.final_worker_s = time.monotonic() - began - seen.storm_s
            await asyncio.sleep(1.0)  # an orphan of a late restart would still show now
            seen.left = _workers(project, dev.pid)
            seen.dev_pid = dev.pid
            seen.late_ids = [(await client.run("storm")).id for _ in range(LATE_RUNS)]
            await _wait_terminal(client, [*seen.run_ids, *seen.late_ids], 40)
            seen.settled_s = time.monotonic() - began
    seen.workers_seen, seen.most_at_once = len(watcher.seen), watcher.most_at_once
    seen.after_exit = [key for key in watcher.seen if proc_tree.alive(key)]
    seen.after_exit += [proc.key for proc in proc_tree.in_folder(project)]
    log = (project / "dev.log").read_text(encoding="utf-8", errors="replace")
    seen.restarts = log.count("restarting the worker")


async def test_a_storm_of_saves_under_ow_dev_orphans_and_loses_nothing(tmp_path: Path) -> None:
    """F24: 50 saves in 10 s under ``ow dev`` while runs start: no orphan, nothing lost."""
    project, ledger = tmp_path / "project", tmp_path / "ledger.txt"
    (project / "openworkflow").mkdir(parents=True)
    (project / "openworkflow.config.py").write_text(textwrap.dedent(CONFIG), encoding="utf-8")
    _save(project / "openworkflow" / "storm.py", "v0")
    backend = SqliteBackend(str(project / "dev.db"))
    client = OpenWorkflow(backend)
    seen = Seen()
    try:
        await _run_the_storm(project, ledger, client, seen)
        counted = await tally(backend, [*seen.run_ids, *seen.late_ids])
        outputs = {rid: (await client.get_run(rid)) for rid in [*seen.run_ids, *seen.late_ids]}
    finally:
        await backend.stop()
    versions = {f"v{index}" for index in range(SAVES)} | {FINAL}
    odd = [rid for rid in seen.run_ids if getattr(outputs[rid], "output", None) not in versions]
    late = [getattr(outputs[rid], "output", None) for rid in seen.late_ids]
    bodies = Counter(tuple(line.split()[:2]) for line in _lines(ledger))
    returned = sorted({str(output) for output in late})
    report(
        Figure(
            fault_id="F24",
            title="50 saves in 10 s under ow dev while runs start (SQLite)",
            runs=len(seen.run_ids) + len(seen.late_ids),
            faults=SAVES,
            lost=counted.lost + len(odd),
            duplicated=counted.duplicated,
            reexecuted_steps=sum(bodies.values()) - len(bodies),
            recovery_s=[seen.final_worker_s] if seen.final_worker else [],
            details=(
                f"SQLite only; {SAVES} saves in {seen.storm_s:.1f} s, {seen.restarts} restarts, "
                f"{seen.workers_seen} worker processes seen (most at once {seen.most_at_once}); "
                f"after the storm {len(seen.left)} worker(s) left, of the final code "
                f"{seen.final_worker}; {LATE_RUNS} later runs returned {returned}; "
                f"left after ow dev exited {len(seen.after_exit)}; all runs finished "
                f"{seen.settled_s - seen.storm_s:.1f} s after the storm (dev worker: concurrency "
                "1); recovery = last save to a worker of the final code"
            ),
        )
    )
    assert counted.lost == 0 and counted.duplicated == 0 and odd == [], (counted, odd)
    assert [proc.ppid for proc in seen.left] == [seen.dev_pid], f"after the storm: {seen.left}"
    assert seen.final_worker, "no worker started after the last save"
    assert late == [FINAL] * LATE_RUNS, f"runs after the storm returned {late}"
    assert seen.after_exit == [], f"processes left after ow dev exited: {seen.after_exit}"


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []
