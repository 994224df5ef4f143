"""Worker metrics for Prometheus: what a worker claimed, how its passes ended, how long steps took.

``Worker(backend, workflows, metrics=True)`` (or ``metrics=WorkerMetrics(...)``)
records into the worker's own :class:`~prometheus_client.CollectorRegistry`,
never the process-wide one, so several workers (or tests) in one process do
not clash; ``ow worker start --metrics-port P`` serves it at ``/metrics``.

Every pass over a claimed run is counted once by how it ended, from the
run's state after the pass's final write:

- ``runs_completed``: the run completed (continue-as-new included);
- ``runs_failed``: the run failed for good (no retry left);
- ``runs_rescheduled{reason}``: the run is due again later without having
  finished: ``retry`` (a step or the workflow failed and is retried by its
  policy), ``handed_back`` (a database error, or the worker stopped before the
  pass ended), ``unregistered`` (this worker has no definition for it) or
  ``throttled`` (put back before starting: created without its concurrency
  key, which the worker computed, or its start's rate limit had no token; also
  the rare run failed there because its key function raised);
- ``runs_parked``: the run waits (sleep, child run, signal, message, a
  step's rate limit) and is due again when that wait ends.

A pass whose run moved on meanwhile (canceled, reclaimed after a lost lease)
counts in none of them, so ``claimed`` minus the others is such passes plus
those under way. Labels are bounded: ``workflow`` (the run's workflow name, at
most ``max_workflows`` distinct values, later ones as :data:`OTHER`), plus
``step`` on the step histogram only with ``step_labels=True`` (at most
``max_steps`` (workflow, step) pairs); never run ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from openworkflow.core.queue_age import OldestDuePendingReader
from openworkflow.core.workflow_run import WorkflowRun, WorkflowRunStatus
from openworkflow.worker.outcome import Parked, PassOutcome

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from openworkflow.core.backend import Backend

logger = logging.getLogger("openworkflow.worker")

T = TypeVar("T")

PREFIX = "openworkflow_worker_"
OTHER = "__other__"
"""The label value of workflows (or steps) past the cardinality cap."""

RETRY, HANDED_BACK, UNREGISTERED, THROTTLED = "retry", "handed_back", "unregistered", "throttled"
RESCHEDULE_REASONS = (RETRY, HANDED_BACK, UNREGISTERED, THROTTLED)
"""The values of ``runs_rescheduled_total{reason}``."""

DEFAULT_MAX_WORKFLOWS = 1000
DEFAULT_MAX_STEPS = 1000
DEFAULT_QUEUE_AGE_INTERVAL_S = 15.0
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
CLAIM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

STEP_TIMER: ContextVar[StepTimer | None] = ContextVar("openworkflow_step_timer", default=None)
"""The step timer of the pass under way; set by a worker with metrics, read once per pass."""


class _Labels:
    """Label values under a cap: the first ``limit`` distinct ones, then :data:`OTHER`."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[object] = set()
        self._lock = threading.Lock()  # step bodies observe from their threads too

    def admit(self, key: object) -> bool:
        """Whether ``key`` has (or now gets) a label value of its own."""
        if key in self._seen:
            return True
        with self._lock:
            if len(self._seen) >= self._limit:
                return False
            self._seen.add(key)
            return True


class _QueueAge(Collector):
    """``oldest_due_pending_run_age_seconds``, present only once the backend answered."""

    def __init__(self) -> None:
        self.value: float | None = None

    def collect(self) -> Iterator[Metric]:
        if self.value is not None:
            yield GaugeMetricFamily(
                PREFIX + "oldest_due_pending_run_age_seconds",
                "Seconds the oldest due pending run of the namespace has waited (0: none due).",
                value=self.value,
            )


class WorkerMetrics:
    """Counters, histograms and gauges of one worker (see the module doc for what counts).

    Args:
        registry: Where to register (default: a new registry of its own).
        step_labels: Add a ``step`` label (the step's name) to the step
            duration histogram; off by default, as step names may be many.
        max_workflows: Distinct ``workflow`` label values; later ones are :data:`OTHER`.
        max_steps: Distinct (workflow, step) pairs with ``step_labels``.
        queue_age_interval: Seconds between two reads of the oldest due
            pending run's age (one indexed query per read).
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        step_labels: bool = False,
        max_workflows: int = DEFAULT_MAX_WORKFLOWS,
        max_steps: int = DEFAULT_MAX_STEPS,
        queue_age_interval: float = DEFAULT_QUEUE_AGE_INTERVAL_S,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.step_labels = step_labels
        self.queue_age_interval = queue_age_interval
        self._workflows = _Labels(max_workflows)
        self._steps = _Labels(max_steps)
        self._define(self.registry)
        self._queue_age = _QueueAge()
        self.registry.register(self._queue_age)
        self._busy: list[Callable[[], int]] = []
        self._refresher: asyncio.Task[None] | None = None

    def _define(self, registry: CollectorRegistry) -> None:
        def counter(name: str, text: str, labels: tuple[str, ...] = ("workflow",)) -> Counter:
            return Counter(PREFIX + name, text, labels, registry=registry)

        self.claimed = counter("runs_claimed", "Runs this worker claimed, by workflow.")
        self.completed = counter("runs_completed", "Runs completed by this worker's passes.")
        self.failed = counter("runs_failed", "Runs failed for good by this worker's passes.")
        self.rescheduled = counter(
            "runs_rescheduled",
            "Passes that left their run due again later (retry, handed_back, unregistered, "
            "throttled).",
            ("workflow", "reason"),
        )
        self.parked = counter("runs_parked", "Passes that parked their run on a wait.")
        self.lease_renewal_failures = counter(
            "lease_renewal_failures", "Lease renewals that failed or were refused.", ()
        )
        self.step_duration = Histogram(
            PREFIX + "step_duration_seconds",
            "Seconds a function step's body ran (each attempt that ran, returned or raised).",
            ("workflow", "step") if self.step_labels else ("workflow",),
            buckets=STEP_BUCKETS,
            registry=registry,
        )
        self.claim_duration = Histogram(
            PREFIX + "claim_duration_seconds",
            "Seconds each claim query took (whether it found runs or not).",
            buckets=CLAIM_BUCKETS,
            registry=registry,
        )
        self.slots = Gauge(PREFIX + "slots", "Concurrency slots of this worker.", registry=registry)
        self.slots_busy = Gauge(
            PREFIX + "slots_busy", "Slots executing a run now.", registry=registry
        )
        self.slots_busy.set_function(lambda: sum(busy() for busy in self._busy))

    # -- labels ------------------------------------------------------------------

    def workflow_label(self, name: str) -> str:
        """``name``, or :data:`OTHER` once ``max_workflows`` other names were seen."""
        return name if self._workflows.admit(name) else OTHER

    # -- what the worker reports -----------------------------------------------------

    def attach(self, slots: int, busy: Callable[[], int]) -> None:
        """A worker with ``slots`` slots reports here; ``busy`` counts its busy ones."""
        self.slots.inc(slots)
        self._busy.append(busy)

    def run_claimed(self, run: WorkflowRun) -> None:
        """A run was claimed into a slot."""
        self.claimed.labels(self.workflow_label(run.workflow_name)).inc()

    def run_rescheduled(self, workflow_name: str, reason: str) -> None:
        """A run was put back to be due again later (``reason``: see the module doc)."""
        self.rescheduled.labels(self.workflow_label(workflow_name), reason).inc()

    def pass_ended(
        self, run: WorkflowRun, outcome: PassOutcome | None, written: WorkflowRun | None
    ) -> None:
        """A pass decided ``outcome``; its final write left the run ``written`` (None: none)."""
        if written is None:
            return  # no write landed: the run moved on (canceled, reclaimed), a stale branch
        label = self.workflow_label(run.workflow_name)
        status = written.status
        if status in (WorkflowRunStatus.COMPLETED, WorkflowRunStatus.SUCCEEDED):
            self.completed.labels(label).inc()
        elif status == WorkflowRunStatus.FAILED:
            self.failed.labels(label).inc()
        elif isinstance(outcome, Parked):
            self.parked.labels(label).inc()
        elif status != WorkflowRunStatus.CANCELED:
            self.rescheduled.labels(label, RETRY).inc()

    def unregistered_ended(self, run: WorkflowRun, written: WorkflowRun) -> None:
        """A run of a workflow this worker lacks was rescheduled (or failed: past its deadline)."""
        if written.status == WorkflowRunStatus.FAILED:
            self.failed.labels(self.workflow_label(run.workflow_name)).inc()
        else:
            self.run_rescheduled(run.workflow_name, UNREGISTERED)

    def lease_renewal_failed(self) -> None:
        """A lease renewal raised, timed out, or was refused without the run being canceled."""
        self.lease_renewal_failures.inc()

    async def timed_claim(self, claim: Awaitable[T]) -> T:
        """Await one claim query, observing its duration however it ends."""
        started = time.perf_counter()
        try:
            return await claim
        finally:
            self.claim_duration.observe(time.perf_counter() - started)

    def step_timer(self, run: WorkflowRun) -> StepTimer:
        """What a pass over ``run`` times its step bodies with."""
        return StepTimer(self, self.workflow_label(run.workflow_name))

    # -- the oldest due pending run ---------------------------------------------------

    def start(self, backend: Backend) -> None:
        """Read the oldest due pending run's age now and every ``queue_age_interval``."""
        if self._refresher is None and isinstance(backend, OldestDuePendingReader):
            self._refresher = asyncio.get_running_loop().create_task(
                self._refresh_forever(backend), name="openworkflow-worker-metrics"
            )

    async def stop(self) -> None:
        """Stop reading the oldest due pending run's age."""
        task, self._refresher = self._refresher, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def refresh_queue_age(self, backend: OldestDuePendingReader) -> None:
        """Read the age once (a failed read leaves the gauge out, not stale)."""
        try:
            age = await backend.oldest_due_pending_age_s()
        except Exception as error:
            logger.debug("Could not read the oldest due pending run's age: %s", error)
            self._queue_age.value = None
            return
        self._queue_age.value = 0.0 if age is None else age

    async def _refresh_forever(self, backend: OldestDuePendingReader) -> None:
        while True:
            await self.refresh_queue_age(backend)
            await asyncio.sleep(self.queue_age_interval)


@dataclass(frozen=True, slots=True)
class StepTimer:
    """Observes the step bodies of one pass (the workflow label is resolved once)."""

    metrics: WorkerMetrics
    workflow: str

    def observe(self, step_name: str, seconds: float) -> None:
        """One step body ran for ``seconds``."""
        metrics = self.metrics
        if not metrics.step_labels:
            metrics.step_duration.labels(self.workflow).observe(seconds)
            return
        step = step_name if metrics._steps.admit((self.workflow, step_name)) else OTHER
        metrics.step_duration.labels(self.workflow, step).observe(seconds)


def resolve(metrics: WorkerMetrics | bool | None) -> WorkerMetrics | None:
    """``Worker(metrics=...)``: True makes a :class:`WorkerMetrics`, False or None none."""
    if metrics is True:
        return WorkerMetrics()
    if metrics is None or metrics is False:
        return None
    if not isinstance(metrics, WorkerMetrics):
        raise TypeError(f"metrics must be a WorkerMetrics, True or None, got {metrics!r}")
    return metrics


@dataclass(frozen=True, slots=True)
class MetricsEndpoint:
    """A registry served over HTTP at :attr:`url` (in a daemon thread) until :meth:`close`."""

    url: str
    server: WSGIServer
    thread: threading.Thread

    def close(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(registry: CollectorRegistry, host: str, port: int) -> MetricsEndpoint:
    """Serve ``registry`` at ``http://host:port/metrics`` (port 0 picks a free one).

    Raises:
        OSError: the address cannot be bound.
    """
    server, thread = start_http_server(port, addr=host, registry=registry)
    shown = f"[{host}]" if ":" in host else host
    return MetricsEndpoint(f"http://{shown}:{server.server_port}/metrics", server, thread)
