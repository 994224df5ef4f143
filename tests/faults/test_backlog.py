"""F22: a backlog of 1,000,000 pending runs: claims, throughput, memory of a worker and a dashboard.

One run of ``backlog-double`` is created through the client; a bulk insert
(:mod:`tests.faults.backlog_data`) copies it into 999,999 more pending runs,
column for column as the engine writes a new run, and the table is analyzed.
Then, on that backlog:

- the worker's claim statement for 10 free slots under ``EXPLAIN ANALYZE``
  (:mod:`tests.faults.backlog_plan`, rolled back): its cost, and whether any
  plan reads ``workflow_runs`` sequentially;
- one worker process (:mod:`tests.faults.backlog_app`, 10 slots) claims and
  executes runs for :data:`WORK_S` seconds and is stopped gracefully: runs
  completed per second (from the database), its resident memory (sampled from
  ``/proc`` and its peak, ``VmHWM``), and every completed run checked in SQL
  (right output, one completed step attempt, one execution of the step body
  in the ledger);
- ``ow dashboard`` on the same schema: its memory before and after serving
  the runs list (first and second page), a completed run's page, the
  workflows page and ``/metrics``, and each page's response time;
- for both processes, what they read of ``workflow_runs`` according to the
  server's own counters (``pg_stat_user_tables``: sequential scans and the
  rows they read, rows fetched through indexes), which load does not blur.

A worker must not read the backlog to claim from it (no sequential scan,
asserted), and the dashboard must answer in pages: the memory bounds
(:data:`WORKER_RSS_MB`, :data:`DASHBOARD_RSS_MB`, far below what holding a
million runs takes) are the safety net; the figure, with the measured
numbers, is the result. Response times, rows read and throughput are
reported, never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, LiteralString

import httpx
import pytest

from benchmarks.claim_plan_keys import ServerCost
from openworkflow import OpenWorkflow
from openworkflow.postgres import PostgresBackend
from tests.cli.helpers import Background, clean_env
from tests.faults import backlog_app, backlog_data, backlog_plan, pg_ledger
from tests.faults.backlog_data import (
    Filled,
    TableReads,
    fill_backlog,
    rss_mb,
    scalar,
    table_reads,
)
from tests.faults.figures import Figure, report
from tests.fixtures.postgres import require_server_url
from tests.support.processes import wait_all_ready

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

BACKLOG = 1_000_000
WORK_S = 15.0
"""How long the worker claims from the backlog."""
CONCURRENCY = 10
WORKER_RSS_MB = 500
DASHBOARD_RSS_MB = 500
"""Safety nets: a million runs held in memory would take several GB."""
PAGE_REPEATS = 3

_RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@dataclass
class Backlog:
    """The test's schema, namespace and template run, and how the backlog was written."""

    url: str
    schema: str
    namespace: str
    folder: Path
    template_id: str = ""
    filled: Filled | None = None

    def value(self, text: LiteralString) -> Any:
        """The one value a query of :mod:`~tests.faults.backlog_data` returns for this backlog."""
        return scalar(self.url, text, self.schema, {"ns": self.namespace})

    def count(self, text: LiteralString) -> int:
        """:meth:`value` as an integer."""
        return int(self.value(text))


@pytest.fixture
async def backlog(tmp_path: Path) -> AsyncIterator[Backlog]:
    """A fresh schema holding :data:`BACKLOG` pending runs of ``backlog-double``; dropped after."""
    url = require_server_url()
    opened = Backlog(
        url, pg_ledger.new_schema_name("ow_backlog"), f"backlog-{uuid.uuid4().hex[:8]}", tmp_path
    )
    backend = PostgresBackend(
        url, namespace_id=opened.namespace, schema=opened.schema, listen=False
    )
    try:
        await backend.open()  # creates the schema and the tables
        backlog_app.create_ledger(url, opened.schema)
        handle = await OpenWorkflow(backend).run(backlog_app.backlog_double, BACKLOG)
        await backend.stop()
        opened.template_id = handle.id
        opened.filled = await asyncio.to_thread(
            fill_backlog, url, opened.schema, opened.namespace, handle.id, BACKLOG
        )
        yield opened
    finally:
        await backend.stop()
        pg_ledger.drop_schema(url, opened.schema)


@dataclass
class WorkerFigures:
    """What the worker phase measured."""

    ready_s: float = 0.0
    completed: int = 0
    window_s: float = 0.0
    rss_samples: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    reads: TableReads = field(default_factory=TableReads)

    @property
    def per_second(self) -> float:
        """Runs completed per second while the worker was claiming."""
        return self.completed / self.window_s if self.window_s else 0.0


async def _run_worker(backlog: Backlog) -> WorkerFigures:
    """One worker on the backlog for :data:`WORK_S` s, then a graceful stop."""
    figures = WorkerFigures()
    worker = backlog_app.WorkerProcess(
        backlog.folder / "worker.log",
        url=backlog.url,
        schema=backlog.schema,
        namespace=backlog.namespace,
        concurrency=CONCURRENCY,
    )
    try:
        started = time.monotonic()
        await asyncio.to_thread(_wait_ready, worker)
        figures.ready_s = time.monotonic() - started
        before = await asyncio.to_thread(backlog.count, backlog_data.COMPLETED)
        window_start = time.monotonic()
        while time.monotonic() - window_start < WORK_S:
            assert worker.is_alive(), f"the worker died:\n{worker.log()[-4000:]}"
            figures.rss_samples.append(rss_mb(worker.pid)[0])
            await asyncio.sleep(0.5)
        after = await asyncio.to_thread(backlog.count, backlog_data.COMPLETED)
        figures.window_s = time.monotonic() - window_start
        figures.completed = after - before
        figures.peak_rss_mb = rss_mb(worker.pid)[1]
        code = await asyncio.to_thread(worker.stop)
        assert code == 0, worker.log()[-4000:]
    finally:
        worker.kill()
    return figures


def _wait_ready(worker: backlog_app.WorkerProcess) -> None:
    wait_all_ready([worker], timeout=60.0)


@dataclass
class PageTime:
    """One page's status and response times (first request, then the median of the rest)."""

    path: str
    status: int
    first_s: float
    median_s: float

    def text(self) -> str:
        """``/path 123 ms (then 45 ms)``."""
        return f"{self.path} {self.first_s * 1000:.0f} ms (then {self.median_s * 1000:.0f} ms)"


@dataclass
class DashboardFigures:
    """What the dashboard phase measured."""

    pages: list[PageTime] = field(default_factory=list)
    start_rss_mb: float = 0.0
    end_rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    listed_ids: int = 0
    has_older_page: bool = False
    pending_metric: float | None = None
    reads: TableReads = field(default_factory=TableReads)


@contextlib.contextmanager
def _dashboard(backlog: Backlog) -> Iterator[tuple[Background, str]]:
    """``ow dashboard`` on the backlog's schema and namespace (settings from the environment)."""
    server = Background(
        backlog.folder,
        "dashboard",
        "--port",
        "0",
        env=clean_env(
            OPENWORKFLOW_BACKEND_URL=backlog.url,
            OPENWORKFLOW_SCHEMA=backlog.schema,
            OPENWORKFLOW_NAMESPACE_ID=backlog.namespace,
        ),
    )
    try:
        server.wait_for("Dashboard running at", timeout=60)
        match = re.search(r"Dashboard running at (http://127\.0\.0\.1:\d+)", server.stderr)
        assert match, server.stderr
        yield server, match.group(1)
    finally:
        finished = server.stop(signal.SIGINT)
        assert finished.returncode == 0, finished.stderr[-4000:]


async def _time_page(http: httpx.AsyncClient, path: str) -> tuple[PageTime, str]:
    """Request ``path`` :data:`PAGE_REPEATS` times; the times and the last body."""
    times: list[float] = []
    statuses: set[int] = set()
    body = ""
    for _ in range(PAGE_REPEATS):
        started = time.perf_counter()
        response = await http.get(path)
        times.append(time.perf_counter() - started)
        statuses.add(response.status_code)
        body = response.text
    status = statuses.pop() if len(statuses) == 1 else -1
    return PageTime(path, status, times[0], statistics.median(times[1:])), body


async def _serve_pages(backlog: Backlog, completed_id: str) -> DashboardFigures:
    """Start the dashboard, time its pages on the backlog, note its memory; stop it."""
    figures = DashboardFigures()
    with _dashboard(backlog) as (server, base_url):
        pid = server.process.pid
        figures.start_rss_mb = rss_mb(pid)[0]
        async with httpx.AsyncClient(base_url=base_url, timeout=120) as http:
            first, listing = await _time_page(http, "/")
            figures.pages.append(first)
            figures.listed_ids = len(set(_RUN_ID.findall(listing)))
            older = re.search(r'id="page-older" rel="next" href="([^"]+)"', listing)
            figures.has_older_page = older is not None
            if older is not None:
                second, _ = await _time_page(http, older.group(1).replace("&amp;", "&"))
                second.path = "/ (page 2)"
                figures.pages.append(second)
            for path in (f"/runs/{completed_id}", "/workflows", "/metrics"):
                page, body = await _time_page(http, path)
                figures.pages.append(page)
                if path == "/metrics":
                    figures.pending_metric = _pending_sample(body)
        figures.end_rss_mb, figures.peak_rss_mb = rss_mb(pid)
    return figures


def _pending_sample(metrics: str) -> float | None:
    match = re.search(r'^openworkflow_workflow_runs\{status="pending"\} (\S+)$', metrics, re.M)
    return float(match.group(1)) if match else None


@dataclass
class Counted:
    """What the database holds after the worker stopped (counted in SQL)."""

    statuses: dict[str, int]
    wrong_outputs: int
    unrun: int
    duplicated: int
    reexecuted: int

    @property
    def lost(self) -> int:
        """Runs gone, failed or canceled, or completed with a wrong output or without their step."""
        kept = sum(self.statuses.get(name, 0) for name in ("pending", "running", "completed"))
        return (BACKLOG - kept) + self.wrong_outputs + self.unrun


def _count(backlog: Backlog) -> Counted:
    statuses = backlog_data.rows(
        backlog.url, backlog_data.STATUSES, backlog.schema, {"ns": backlog.namespace}
    )
    return Counted(
        statuses={str(status): int(count) for status, count in statuses},
        wrong_outputs=backlog.count(backlog_data.WRONG_OUTPUTS),
        unrun=backlog.count(backlog_data.UNRUN),
        duplicated=backlog.count(backlog_data.DUPLICATED),
        reexecuted=backlog.count(backlog_data.REEXECUTED),
    )


def _details(
    filled: Filled,
    claim: ServerCost,
    worker: WorkerFigures,
    dashboard: DashboardFigures,
    counted: Counted,
) -> str:
    samples = worker.rss_samples or [0.0]
    pages = ", ".join(page.text() for page in dashboard.pages)
    return (
        f"bulk insert {filled.insert_s:.1f} s + index builds {filled.index_s:.1f} s"
        f" + analyze {filled.analyze_s:.1f} s; claim of {CONCURRENCY} slots: execution"
        f" {claim.execution} ms, {claim.blocks} buffers, leased {claim.leased}, seq scan of runs"
        f" {'yes' if claim.seq_scanned else 'no'}; worker ready after {worker.ready_s:.1f} s,"
        f" {worker.per_second:.0f} runs/s ({worker.completed} runs in {worker.window_s:.1f} s,"
        f" {CONCURRENCY} slots), worker RSS {statistics.median(samples):.0f} MB median,"
        f" {worker.peak_rss_mb:.0f} MB peak, its reads of workflow_runs {worker.reads.text()};"
        f" dashboard reads {dashboard.reads.text()}; dashboard RSS {dashboard.start_rss_mb:.0f} MB"
        f" at start, {dashboard.end_rss_mb:.0f} MB after the pages"
        f" ({dashboard.peak_rss_mb:.0f} MB peak); pages (first, then median of"
        f" {PAGE_REPEATS - 1}): {pages}; runs list shows {dashboard.listed_ids} ids;"
        f" /metrics pending {dashboard.pending_metric}; statuses {counted.statuses}"
    )


async def test_a_million_pending_runs(backlog: Backlog) -> None:
    """A worker claims from a 1M backlog and the dashboard pages it, both in bounded memory."""
    claim = await backlog_plan.claim_cost(
        backlog.url, backlog.schema, backlog.namespace, backlog_app.WORKFLOW_NAME, CONCURRENCY
    )
    reads = [await asyncio.to_thread(table_reads, backlog.url, backlog.schema)]
    worker = await _run_worker(backlog)
    reads.append(await asyncio.to_thread(table_reads, backlog.url, backlog.schema))
    completed_id = await asyncio.to_thread(backlog.value, backlog_data.LATEST_COMPLETED)
    dashboard = await _serve_pages(backlog, str(completed_id or backlog.template_id))
    reads.append(await asyncio.to_thread(table_reads, backlog.url, backlog.schema))
    worker.reads, dashboard.reads = reads[1] - reads[0], reads[2] - reads[1]
    counted = await asyncio.to_thread(_count, backlog)
    assert backlog.filled is not None
    report(
        Figure(
            fault_id="F22",
            title="backlog of 1,000,000 pending runs (PostgreSQL)",
            runs=BACKLOG,
            faults=1,
            lost=counted.lost,
            duplicated=counted.duplicated,
            reexecuted_steps=counted.reexecuted,
            details=_details(backlog.filled, claim, worker, dashboard, counted),
        )
    )
    # F22: claiming stays index-driven, in the plan and in what the worker really read.
    assert not claim.seq_scanned and claim.leased == CONCURRENCY, claim
    assert worker.reads.seq_scans == 0, worker.reads
    assert counted.lost == 0, counted
    assert counted.duplicated == 0 and counted.reexecuted == 0, counted
    assert worker.completed > 0, "the worker completed no run from the backlog"
    assert counted.statuses.get("completed", 0) >= worker.completed
    assert all(page.status == 200 for page in dashboard.pages), dashboard.pages
    assert 0 < dashboard.listed_ids <= 100 and dashboard.has_older_page, dashboard
    assert dashboard.pending_metric is not None and dashboard.pending_metric > 0
    assert worker.peak_rss_mb < WORKER_RSS_MB, worker
    assert dashboard.peak_rss_mb < DASHBOARD_RSS_MB, dashboard
