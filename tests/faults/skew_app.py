"""A worker program whose engine clock is shifted, for the clock-skew fault tests (F7).

Run it as ``python -m tests.faults.skew_app --ledger FILE --offset-s SECONDS``
with either ``--sqlite PATH`` or ``--schema S`` (PostgreSQL; the URL comes
from ``OW_SKEW_URL``, never from argv). ``--offset-s`` moves the engine's
clock (:func:`openworkflow.core.clock.set_offset`, which every reader of the
engine's time sees) that many seconds ahead of the host's (negative: behind),
as a host whose clock is off would. The step bodies read the real time
(``time.time()``), shared by every process of the host, and append one JSON
line per event to the process's own ledger file (an oracle outside the engine):
``{"run": id, "step": name, "event": "start"|"end", "pid": N, "t": real time}``.

Workflows:

- ``skew-hold``: one step that works ``hold_ms`` (several leases long, so the
  lease must be renewed while it runs); returns ``n``.
- ``skew-nap``: step ``before``, a durable sleep of ``nap_ms``, step ``after``;
  each step returns ``{"t": real time, "pid": pid}``, so the real length of the
  sleep can be read back from the stored step outputs. Returns ``n``.

The process prints ``ow-skew-ready pid=N`` once it claims runs and stops
gracefully on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from openworkflow import RunInfo, SqliteBackend, Step, Worker, workflow
from openworkflow.core import clock
from openworkflow.core.backend import Backend
from openworkflow.postgres import PostgresBackend
from tests.support import processes

READY_MARKER = "ow-skew-ready"
URL_VARIABLE = "OW_SKEW_URL"

_ledger_path: Path | None = None


def _record(run_id: str, step_name: str, event: str) -> dict[str, Any]:
    """Append one event to this process's ledger; return the real time and the pid."""
    if _ledger_path is None:
        raise RuntimeError("the ledger is only open inside a worker process")
    row = {"run": run_id, "step": step_name, "event": event, "pid": os.getpid(), "t": time.time()}
    # One short O_APPEND write per line: lines of several tasks never interleave.
    with _ledger_path.open("a", encoding="utf-8") as ledger:
        ledger.write(json.dumps(row) + "\n")
    return {"t": row["t"], "pid": row["pid"]}


class HoldInput(BaseModel):
    """Input of ``skew-hold``."""

    n: int
    hold_ms: int


class NapInput(BaseModel):
    """Input of ``skew-nap``."""

    n: int
    nap_ms: int


async def _hold(run_id: str, hold_ms: int) -> None:
    _record(run_id, "hold", "start")
    await asyncio.sleep(hold_ms / 1000)
    _record(run_id, "hold", "end")


@workflow(name="skew-hold")
async def hold(input: HoldInput, step: Step, run: RunInfo) -> int:
    """One step several leases long: its lease must be renewed, never taken over."""
    run_id = run.id
    await step.run("hold", lambda: _hold(run_id, input.hold_ms))
    return input.n


@workflow(name="skew-nap")
async def nap(input: NapInput, step: Step, run: RunInfo) -> int:
    """A durable sleep between two steps that return the real time they ran at."""
    run_id = run.id
    await step.run("before", lambda: _record(run_id, "before", "end"))
    await step.sleep("nap", timedelta(milliseconds=input.nap_ms))
    await step.run("after", lambda: _record(run_id, "after", "start"))
    return input.n


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m tests.faults.skew_app")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--sqlite", help="the SQLite database file")
    target.add_argument("--schema", help="the PostgreSQL schema (URL in OW_SKEW_URL)")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--offset-s", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--lease", default="2s")
    return parser.parse_args(argv)


def _backend(options: argparse.Namespace) -> Backend:
    if options.sqlite is not None:
        return SqliteBackend(options.sqlite, namespace_id=options.namespace)
    url = os.environ.get(URL_VARIABLE)
    if not url:
        raise SystemExit(f"no URL: set {URL_VARIABLE}")
    return PostgresBackend(
        url, namespace_id=options.namespace, schema=options.schema, connect_timeout=5.0
    )


async def main(options: argparse.Namespace) -> None:
    """Shift the clock, then run one worker until SIGTERM or SIGINT."""
    global _ledger_path
    _ledger_path = Path(options.ledger)
    clock.set_offset(timedelta(seconds=options.offset_s) if options.offset_s else None)
    backend = _backend(options)
    worker = Worker(
        backend, [hold, nap], concurrency=options.concurrency, lease_duration=options.lease
    )
    stop_requested = processes.stop_on_signals()
    try:
        await processes.run_worker(worker, stop_requested, READY_MARKER)
    finally:
        await backend.stop()


class SkewedWorker(processes.WorkerProcess):
    """One worker subprocess of this module (test-process side)."""

    module = "tests.faults.skew_app"
    ready_marker = READY_MARKER

    def __init__(
        self, log_path: Path, ledger: Path, offset_s: float, args: list[str], url: str = ""
    ) -> None:
        self.offset_s = offset_s
        self.ledger = ledger
        env = {URL_VARIABLE: url} if url else {}
        super().__init__(
            log_path, ["--ledger", str(ledger), "--offset-s", str(offset_s), *args], env
        )


def read_ledger(paths: list[Path]) -> list[dict[str, Any]]:
    """Every ledger row of ``paths``, in real-time order."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        if path.exists():
            text = path.read_text(encoding="utf-8")
            rows += [json.loads(line) for line in text.splitlines() if line.strip()]
    return sorted(rows, key=lambda row: float(row["t"]))


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s pid=%(process)d %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("openworkflow").setLevel(logging.INFO)
    asyncio.run(main(parse_options()))
