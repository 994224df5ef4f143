"""Soak: minutes of mixed load under worker kills and dropped connections, then a full check.

    .venv/bin/python -m benchmarks.soak --minutes 30 --backend postgres \\
        --url postgresql://postgres@127.0.0.1:5432/DB [--workers 3] [--rate 3] [--json]
    .venv/bin/python -m benchmarks.soak --minutes 30 --backend sqlite [--url sqlite:////x.db]

It generates a project folder (a config and a copy of
:mod:`benchmarks.soak_flows`), starts ``--workers`` ``ow worker start``
processes in it, and for ``--minutes`` starts runs at ``--rate`` per second:
plain runs, durable sleeps, signal waits (the soak sends each signal), parents
of child runs, steps that fail and retry, steps that fail for good (caught and
not), and runs the soak cancels at random. Meanwhile it SIGKILLs a random
worker every ``--kill-interval`` seconds (and starts a replacement) and, on
PostgreSQL, terminates random worker connections every
``--terminate-interval`` seconds, in the URL's database only. Then it stops
the faults, waits up to ``--drain-seconds`` for every run to finish, and checks
every run and step attempt (:mod:`benchmarks.soak_check`). It prints a summary
and exits 1 on any violation (keeping the folder, with the workers' logs).

On PostgreSQL the soak works in a fresh schema of the URL's database, dropped
at the end (``--keep`` keeps it, and the folder); point it at a database of
its own. Not part of CI: ``tests/project/test_soak_script.py`` runs it briefly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from benchmarks import soak_chaos, soak_check
from benchmarks.soak_load import Load
from openworkflow import OpenWorkflow, connect, event_loop


@dataclass
class Outcome:
    """What one soak did and found."""

    backend: str
    minutes: float
    folder: str
    runs_by_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    kills: int = 0
    terminations: int = 0
    termination_errors: int = 0
    signals: int = 0
    cancels: int = 0
    client_retries: int = 0
    worker_log_lines: dict[str, int] = field(default_factory=dict)
    drain_seconds: float = 0.0
    violations: list[tuple[str, str]] = field(default_factory=list)

    def violations_by_category(self) -> dict[str, int]:
        """How many violations of each category."""
        counts: dict[str, int] = {}
        for category, _ in self.violations:
            counts[category] = counts.get(category, 0) + 1
        return counts


@dataclass
class Faults:
    """The kill and termination loops' settings and counts."""

    args: argparse.Namespace
    pool: soak_chaos.WorkerPool
    rng: random.Random
    terminations: int = 0
    termination_errors: int = 0

    async def kill_workers(self, stop: asyncio.Event) -> None:
        """SIGKILL a random worker (and replace it) at random intervals until ``stop``."""
        if self.args.kill_interval[1] <= 0:
            return
        while not await _wait(stop, self.rng.uniform(*self.args.kill_interval)):
            self.pool.kill_one()

    async def terminate_connections(self, stop: asyncio.Event) -> None:
        """Terminate random worker connections (PostgreSQL) at random intervals until ``stop``."""
        if self.args.backend != "postgres" or self.args.terminate_interval[1] <= 0:
            return
        while not await _wait(stop, self.rng.uniform(*self.args.terminate_interval)):
            try:
                self.terminations += await soak_chaos.terminate_engine_connections(
                    self.args.url, self.args.terminate_most, self.rng
                )
            except psycopg.Error:
                self.termination_errors += 1

    async def report_progress(self, stop: asyncio.Event, load: Load) -> None:
        """A line on stderr every ``--progress`` seconds until ``stop``."""
        started = time.monotonic()
        while not await _wait(stop, self.args.progress):
            print(
                f"soak: {(time.monotonic() - started) / 60:.1f} min, {len(load.runs)} runs"
                f" started, {self.pool.kills} kills, {self.terminations} terminations",
                file=sys.stderr,
                flush=True,
            )

    async def reap_workers(self, stop: asyncio.Event) -> None:
        """Notice (and replace) workers that exited on their own, every second until ``stop``."""
        while not await _wait(stop, 1.0):
            self.pool.reap()


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop`` is set; return whether it is."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def soak(args: argparse.Namespace) -> Outcome:
    """Run the whole soak: load and faults, drain, check; clean up unless told to keep."""
    folder = Path(tempfile.mkdtemp(prefix="ow-soak-", dir=args.folder))
    outcome = Outcome(args.backend, args.minutes, str(folder))
    schema = f"ow_soak_{uuid.uuid4().hex[:10]}"
    url = args.url or f"sqlite:///{folder}/soak.db"
    backend = connect(url, schema=schema if args.backend == "postgres" else None)
    opener = getattr(backend, "open", None)
    if opener is not None:
        await opener()  # creates the schema and its tables before any worker starts
    rng = random.Random(args.seed)
    env = {"OPENWORKFLOW_BACKEND_URL": soak_chaos.worker_url(url, args.backend)}
    env |= {"OPENWORKFLOW_SCHEMA": schema, "OPENWORKFLOW_NAMESPACE_ID": "default"}
    config = soak_chaos.write_project(folder, concurrency=args.concurrency, lease=args.lease)
    pool = soak_chaos.WorkerPool(folder, config, env, args.workers, rng)
    client = OpenWorkflow(backend)
    load = Load(client, args.rate, rng)
    try:
        pool.start()
        faults = await _load_under_faults(args, load, pool, rng)
        outcome.drain_seconds = await _drain(load, client, args.drain_seconds)
        stored = await soak_check.read_database(backend)
        outcome.violations = soak_check.check(load.runs, stored)
        outcome.violations += [("worker-exit", text) for text in pool.unexpected_exits]
        outcome.violations += [("client", text) for text in load.start_errors]
        outcome.runs_by_kind = soak_check.runs_by_kind(load.runs, stored)
    finally:
        pool.stop()
        outcome.worker_log_lines = pool.logged_lines()
        await backend.stop()
    outcome.kills, outcome.terminations = pool.kills, faults.terminations
    outcome.termination_errors = faults.termination_errors
    outcome.signals, outcome.cancels = load.signals, load.cancels
    outcome.client_retries = load.client_retries
    _clean_up(args, folder, schema, keep=args.keep or bool(outcome.violations))
    return outcome


async def _load_under_faults(
    args: argparse.Namespace, load: Load, pool: soak_chaos.WorkerPool, rng: random.Random
) -> Faults:
    """Start runs for ``--minutes`` while the faults run; then stop both."""
    faults = Faults(args, pool, rng)
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(load.produce(stop)),
        asyncio.create_task(faults.kill_workers(stop)),
        asyncio.create_task(faults.terminate_connections(stop)),
        asyncio.create_task(faults.reap_workers(stop)),
        asyncio.create_task(faults.report_progress(stop, load)),
    ]
    try:
        await _wait(stop, args.minutes * 60)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    pool.reap()  # a worker that died on its own now is still a violation
    return faults


async def _drain(load: Load, client: OpenWorkflow, seconds: float) -> float:
    """Send the signals and cancels still to come, then wait (``seconds`` at most) for quiet."""
    started = time.monotonic()
    await load.finish_actions()
    deadline = started + seconds
    while time.monotonic() < deadline:
        counts = await load.retrying(client.counts)
        if counts.pending == 0 and counts.running == 0:
            break
        await asyncio.sleep(0.5)
    return time.monotonic() - started


def _clean_up(args: argparse.Namespace, folder: Path, schema: str, *, keep: bool) -> None:
    """Drop the schema and the folder, unless kept (asked for, or kept to look at violations)."""
    if keep:
        return
    if args.backend == "postgres":
        with psycopg.connect(args.url, autocommit=True, connect_timeout=10) as connection:
            connection.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )
    shutil.rmtree(folder, ignore_errors=True)


def summary(outcome: Outcome) -> list[str]:
    """The printed summary: runs by kind and status, faults, violations (the first 30)."""
    lines = [f"soak: {outcome.backend}, {outcome.minutes:g} min of load; folder {outcome.folder}"]
    lines.append("runs by kind and status:")
    for kind, counts in outcome.runs_by_kind.items():
        cells = ", ".join(f"{status} {count}" for status, count in counts.items())
        lines.append(f"  {kind:<12} {cells}")
    lines += [
        f"worker kills: {outcome.kills}; connection terminations: {outcome.terminations}"
        f" ({outcome.termination_errors} failed attempts)",
        f"signals sent: {outcome.signals}; cancels accepted: {outcome.cancels};"
        f" client retries: {outcome.client_retries}; drain: {outcome.drain_seconds:.1f} s;"
        f" worker log lines: {outcome.worker_log_lines}",
        f"violations: {len(outcome.violations)} {outcome.violations_by_category() or ''}".rstrip(),
    ]
    lines += [f"  [{category}] {text}" for category, text in outcome.violations[:30]]
    return lines


def to_json(outcome: Outcome) -> dict[str, Any]:
    """The machine-readable result (``--json``)."""
    document = {key: value for key, value in vars(outcome).items() if key != "violations"}
    document["violations"] = [{"category": c, "detail": d} for c, d in outcome.violations]
    document["violations_by_category"] = outcome.violations_by_category()
    return document


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The soak's options."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--minutes", type=float, default=30.0, help="how long runs keep coming")
    add("--backend", choices=["postgres", "sqlite"], default="postgres")
    add("--url", help="the database URL (required for postgres; sqlite: a file in the folder)")
    add("--workers", type=int, default=3, help="worker processes kept running")
    add("--concurrency", type=int, default=10, help="each worker's concurrency")
    add("--rate", type=float, default=3.0, help="new runs per second")
    add("--lease", default="5s", help="the workers' lease (how soon a killed worker's runs move)")
    add("--kill-interval", type=float, nargs=2, default=[5.0, 20.0], metavar=("MIN", "MAX"))
    add("--terminate-interval", type=float, nargs=2, default=[3.0, 10.0], metavar=("MIN", "MAX"))
    add("--terminate-most", type=int, default=3, help="connections ended at most per time")
    add("--drain-seconds", type=float, default=180.0, help="how long to wait for the last runs")
    add("--progress", type=float, default=60.0, help="seconds between progress lines on stderr")
    add("--seed", type=int, default=None, help="the random seed (for a repeatable plan)")
    add("--folder", help="where the soak's folder is made (default: the temporary directory)")
    add("--keep", action="store_true", help="keep the folder and the PostgreSQL schema")
    add("--json", action="store_true", help="print one JSON document instead of the summary")
    args = parser.parse_args(argv)
    if args.backend == "postgres" and not args.url:
        parser.error("--backend postgres needs --url")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the soak; print the summary (or JSON); 1 on any violation."""
    args = parse_args(argv)
    outcome = event_loop.run(soak(args))
    if args.json:
        print(json.dumps(to_json(outcome)), flush=True)
    else:
        print("\n".join(summary(outcome)), flush=True)
    return 1 if outcome.violations else 0


if __name__ == "__main__":
    sys.exit(main())
