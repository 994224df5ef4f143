"""The worker: claims runs into concurrency slots, keeps their leases, stops gracefully."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from openworkflow.core import clock
from openworkflow.core.backend import Backend, ClaimWorkflowRunsParams
from openworkflow.core.duration import Duration, parse_duration_ms
from openworkflow.core.registry import WorkflowRegistry
from openworkflow.core.workflow_definition import Workflow
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import BackendError, BackendUnavailableError
from openworkflow.event_loop import cancel_and_wait
from openworkflow.notifications import ChangeNotifier, notifier_of
from openworkflow.worker.admission import put_back_before_start
from openworkflow.worker.context import (
    DEFAULT_CONCURRENCY,
    DEFAULT_LEASE_DURATION,
    DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_STEP_CRASH_LIMIT,
    PassContext,
)
from openworkflow.worker.db_clock import DatabaseClock, stamps_database_time
from openworkflow.worker.execution import WorkflowExecution
from openworkflow.worker.fault_backoff import FaultBackoff
from openworkflow.worker.hand_back import HandBack
from openworkflow.worker.idle import IdleWait
from openworkflow.worker.lease import LeaseKeeper
from openworkflow.worker.metrics import HANDED_BACK, STEP_TIMER, THROTTLED, WorkerMetrics
from openworkflow.worker.metrics import resolve as resolve_metrics
from openworkflow.worker.presence import WorkerPresence
from openworkflow.worker.retention import RetentionPolicy, RetentionPruner
from openworkflow.worker.scheduler import Scheduler
from openworkflow.worker.step_threads import step_thread_pool
from openworkflow.worker.unregistered import UnregisteredRuns

logger = logging.getLogger("openworkflow.worker")

STEP_THREAD_PREFIX = "openworkflow-step"
"""Name prefix of the threads sync step bodies run in."""


@dataclass(eq=False)
class _Slot:
    """One concurrency slot; its id is the ``worker_id`` written on the runs it claims."""

    worker_id: str
    run: WorkflowRun | None = None
    task: asyncio.Task[None] | None = None
    execution_task: asyncio.Task[None] | None = field(default=None, repr=False)
    execution: WorkflowExecution | None = field(default=None, repr=False)


def _check_whole_number(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


class Worker:
    """Executes workflow runs from a backend.

    Example:
        ``async with Worker(backend, [send_welcome_email], concurrency=10): ...``

    Args:
        backend: Where runs are claimed from.
        workflows: The workflows this worker can execute (exact name and version).
        concurrency: How many runs execute at once (one slot, one worker id each).
        lease_duration: How long a claim is held without a heartbeat; renewed at half.
            (A cancel reaches the run's pass within a second all the same: the
            worker watches the run between renewals.)
        heartbeat_interval: Override for the renewal period (default: half the lease).
        shutdown_timeout: How long :meth:`stop` waits for running passes to finish
            before cancelling them and releasing their leases.
        step_crash_limit: After a step was left unfinished this many times (its
            worker crashed, hung or lost its lease while running it), the step is
            failed with :class:`~openworkflow.errors.StepCrashLoopError` instead of
            being run again, so a poison run cannot take down worker after worker.
            Checked on passes that recover a run from an expired lease; a step one
            short of the limit runs alone among such steps in this worker, so runs
            that merely shared a worker with the poison are not failed with it.
        retention: Age per finished status (``{"completed": "7d", "failed": "30d"}``):
            the worker prunes older finished runs in the background (None: never).
        metrics: A :class:`~openworkflow.worker.metrics.WorkerMetrics` to report
            to (True: a new one, as :attr:`metrics`; None: no metrics, no cost).
    """

    def __init__(
        self,
        backend: Backend,
        workflows: Iterable[Workflow],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        lease_duration: Duration = DEFAULT_LEASE_DURATION,
        heartbeat_interval: Duration | None = None,
        shutdown_timeout: Duration = DEFAULT_SHUTDOWN_TIMEOUT,
        step_crash_limit: int = DEFAULT_STEP_CRASH_LIMIT,
        retention: RetentionPolicy | None = None,
        metrics: WorkerMetrics | bool | None = None,
    ) -> None:
        _check_whole_number("concurrency", concurrency)
        _check_whole_number("step_crash_limit", step_crash_limit)
        self.step_crash_limit = step_crash_limit
        self.pruner = RetentionPruner(backend, retention)
        # Steps one crash away from the limit run one at a time (see execution).
        self._last_chance = asyncio.Lock()
        self.backend = backend
        self.registry = WorkflowRegistry(workflows)
        self._unregistered = UnregisteredRuns(backend, self.registry)
        self.concurrency = concurrency
        self.lease_duration_ms = int(parse_duration_ms(lease_duration))
        if self.lease_duration_ms < 10:
            raise ValueError(f"lease_duration must be at least 10 ms, got {lease_duration!r}")
        self.heartbeat_interval_s = (
            parse_duration_ms(heartbeat_interval)
            if heartbeat_interval is not None
            else self.lease_duration_ms / 2
        ) / 1000
        self.shutdown_timeout_s = parse_duration_ms(shutdown_timeout) / 1000
        self._slots = [_Slot(str(uuid.uuid4())) for _ in range(concurrency)]
        self._thread_pool = step_thread_pool(concurrency, STEP_THREAD_PREFIX)
        #: Where this worker reports its metrics (None: it does not).
        self.metrics = resolve_metrics(metrics)
        if self.metrics is not None:
            self.metrics.attach(concurrency, lambda: len(self.active_run_ids))
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stop_now = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._empty_polls = 0
        self._idle = self._new_idle_wait()
        self._faults = FaultBackoff()  # spaces claims out while the database refuses writes
        #: This worker's id in the database's list of live workers (slots have their own).
        self.id = str(uuid.uuid4())
        # Claims take only the registered workflows' runs; one claim at a time
        # hands out free slots (the regular claim, or the sweep for unrouted runs).
        self._routes = [(item.name, item.version) for item in self.registry]
        self._claim_lock = asyncio.Lock()
        self._presence = WorkerPresence(
            backend,
            self.id,
            self._routes,
            lease_duration_ms=self.lease_duration_ms,
            claim_lock=self._claim_lock,
            free_slots=lambda: [slot.worker_id for slot in self._slots if slot.task is None],
            start_runs=self._start_claimed,
        )

    @functools.cached_property
    def _enforce_concurrency(self) -> bool:
        """Whether a registered workflow has a concurrency limit (else the cheaper claim)."""
        return any(item.spec.concurrency is not None for item in self.registry)

    @functools.cached_property
    def _database_clock(self) -> DatabaseClock | None:
        """On PostgreSQL, the database's clock (estimated from claims and renewals), which rules.

        The claim loop and the passes read it as ``clock.now()``, not this host's clock.
        """
        return DatabaseClock() if stamps_database_time(self.backend) else None

    def _new_idle_wait(self) -> IdleWait:
        """The waits between claims; on PostgreSQL they allow for the database clock's estimate."""
        database_clock = self._database_clock
        return IdleWait(
            self.backend,
            notifier_of(self.backend),
            clock_uncertainty=None if database_clock is None else database_clock.uncertainty,
        )

    @functools.cached_property
    def _hand_back(self) -> HandBack:
        """Hands runs back as due now (after a database fault, and at shutdown)."""
        return HandBack(
            self.backend,
            self._database_clock,
            lease_duration_ms=self.lease_duration_ms,
            stop_now=self._stop_now,
            metrics=self.metrics,
        )

    @functools.cached_property
    def _notifier(self) -> ChangeNotifier | None:
        """The backend's wake-ups, looked up once (not per claim loop or per pass)."""
        return notifier_of(self.backend)

    @functools.cached_property
    def _scheduler(self) -> Scheduler:
        """Creates the runs of the registered workflows' schedule ticks."""
        return Scheduler(self.backend, self.registry)

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Start claiming runs in the background (idempotent)."""
        if self._loop_task is None:
            self._scheduler.start()  # first: a schedule input its schema rejects raises here
            self._loop_task = asyncio.create_task(
                self._run_loop(), name="openworkflow-worker", context=self._task_context()
            )
            self._presence.start()
            self.pruner.start()
            if self.metrics is not None:
                self.metrics.start(self.backend)

    async def stop(self) -> None:
        """Stop gracefully: stop claiming, let passes finish, release what is left.

        Passes still running after ``shutdown_timeout`` are cancelled and their
        leases released so another worker resumes them at once. Calling stop
        again while a stop is under way stops at once.
        """
        if self._stopping:
            self._stop_now.set()
            return
        self._stopping = True
        self._slot_freed.set()
        await self._scheduler.stop()
        await self._presence.stop()
        await self.pruner.stop()
        if self.metrics is not None:
            await self.metrics.stop()
        await cancel_and_wait(self._loop_task)
        await self._idle.stop()
        await self._drain()
        self._thread_pool.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def active_run_ids(self) -> list[str]:
        """Ids of the runs this worker is executing now."""
        return [slot.run.id for slot in self._slots if slot.run is not None]

    # -- claiming ----------------------------------------------------------------

    async def tick(self) -> int:
        """Claim runs for the free slots (one query for all of them); return how many."""
        if self._stopping:
            return 0
        async with self._claim_lock:
            free = [slot.worker_id for slot in self._slots if slot.task is None]
            if not free:
                return 0
            claim = self.backend.claim_workflow_runs(
                ClaimWorkflowRunsParams(
                    worker_ids=free,
                    lease_duration_ms=self.lease_duration_ms,
                    workflows=self._routes,
                    enforce_concurrency=self._enforce_concurrency,
                )
            )
            sent_at = clock.precise_uncorrected_now()
            runs = await (claim if self.metrics is None else self.metrics.timed_claim(claim))
            if self._database_clock is not None:
                self._database_clock.observe(sent_at, runs)
            self._start_claimed(runs)
        return len(runs)

    async def run_schedules(self) -> int:
        """Create the runs of the schedule ticks due now; return how many were created.

        The background scheduler does this about once a second while the
        worker runs; call it by hand to drive a stopped worker, as with :meth:`tick`.
        """
        return await self._scheduler.run_due()

    async def sweep_unrouted(self) -> int:
        """Register this worker, then claim due runs no live worker knows; how many.

        The worker's loop does this every few seconds; a test driving
        :meth:`tick` by hand calls it to see runs of unknown workflows.
        """
        if self._stopping:
            return 0
        return await self._presence.sweep()

    def _start_claimed(self, runs: list[WorkflowRun]) -> None:
        """Hand each claimed run to the free slot it was claimed for."""
        slots = {slot.worker_id: slot for slot in self._slots}
        for run in runs:
            slot = slots.get(run.worker_id or "")
            if slot is None or slot.task is not None:  # pragma: no cover - backend contract
                logger.error("Backend returned run %s for an unknown slot", run.id)
                continue
            self._start_slot(slot, run)

    async def _run_loop(self) -> None:
        while not self._stopping:
            await self._faults.wait()
            self._idle.begin()
            try:
                claimed = await self.tick()
            except BackendUnavailableError as error:
                logger.warning("Worker tick failed, backing off: %s", error)
                claimed = 0
            except Exception:
                logger.exception("Worker tick failed; backing off")
                claimed = 0
            if claimed:
                self._empty_polls = 0
                if any(slot.task is None for slot in self._slots):
                    # Fewer runs were due than slots were free: the queue is empty for
                    # now, so wait for a wake-up (or the shortest poll) before asking again.
                    await self._idle.wait(1)
                continue
            if all(slot.task is not None for slot in self._slots):
                self._idle.busy()
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            self._empty_polls += 1
            # Until a wake-up, the next run known to come due, or the poll backoff.
            await self._idle.wait(self._empty_polls)

    def _start_slot(self, slot: _Slot, run: WorkflowRun) -> None:
        if self.metrics is not None:
            self.metrics.run_claimed(run)
        self._idle.claimed(run.id)
        slot.run = run
        slot.task = asyncio.create_task(
            self._process(slot, run),
            name=f"openworkflow-run-{run.id}",
            context=self._task_context(),
        )

    def _task_context(self) -> contextvars.Context | None:
        """A task's context: there ``clock.now()`` reads the database's clock when it rules."""
        return None if self._database_clock is None else self._database_clock.context()

    def _free_slot(self, slot: _Slot) -> None:
        slot.run = None
        slot.task = None
        slot.execution_task = None
        slot.execution = None
        self._slot_freed.set()

    # -- executing ---------------------------------------------------------------

    async def _process(self, slot: _Slot, run: WorkflowRun) -> None:
        metrics = self.metrics
        try:
            workflow = await self._startable(slot, run)
            if workflow is None:
                return
            context = PassContext(
                backend=self.backend,
                worker_id=slot.worker_id,
                thread_pool=self._thread_pool,
                step_crash_limit=self.step_crash_limit,
                last_chance=self._last_chance,
            )
            execution = WorkflowExecution(context, run, workflow)
            slot.execution = execution
            if metrics is not None:  # this task's context: the pass's task inherits it
                STEP_TIMER.set(metrics.step_timer(run))
            slot.execution_task = asyncio.create_task(execution.execute())
            lease = LeaseKeeper(
                self.backend,
                self._notifier,
                slot.worker_id,
                execution,
                slot.execution_task,
                lease_duration_ms=self.lease_duration_ms,
                heartbeat_interval_s=self.heartbeat_interval_s,
                metrics=metrics,
                database_clock=self._database_clock,
            )
            heartbeat = asyncio.create_task(lease.keep())
            try:
                await slot.execution_task
            except asyncio.CancelledError:
                if not slot.execution_task.cancelled():
                    raise
            finally:
                heartbeat.cancel()
            if metrics is not None and not slot.execution_task.cancelled():
                metrics.pass_ended(run, execution.outcome, execution.written)
            self._faults.pass_succeeded()
        except BackendError as error:
            # The engine could not record progress (the database is unreachable):
            # nothing was decided, so hand the run back instead of failing it.
            logger.warning("Workflow run %s paused: %s", run.id, error)
            self._faults.pass_faulted()
            if metrics is not None:
                metrics.run_rescheduled(run.workflow_name, HANDED_BACK)
            await self._hand_back.after_fault(slot.worker_id, run, slot.execution)
        except Exception:
            logger.exception("Critical error while executing workflow run %s", run.id)
        finally:
            # Before the slot is free: the claim loop must know when the run comes due.
            ended = slot.execution
            written = ended.written if ended is not None else None
            self._idle.pass_ended(run.id, written, started=ended is not None)
            self._free_slot(slot)

    async def _startable(self, slot: _Slot, run: WorkflowRun) -> Workflow | None:
        """The run's workflow, or None when the run was put back instead of started."""
        workflow = self.registry.get(run.workflow_name, run.version)
        if workflow is None:
            written = await self._unregistered.reschedule(slot.worker_id, run)
            if self.metrics is not None:
                self.metrics.unregistered_ended(run, written)
            return None
        if await put_back_before_start(self.backend, slot.worker_id, run, workflow.spec):
            if self.metrics is not None:  # keyed for its concurrency limit, or rate limited
                self.metrics.run_rescheduled(run.workflow_name, THROTTLED)
            return None
        return workflow

    # -- stopping ----------------------------------------------------------------

    async def _drain(self) -> None:
        busy = [
            (slot, slot.run, slot.task, slot.execution_task, slot.execution)
            for slot in self._slots
            if slot.task is not None and slot.run is not None
        ]
        pending: set[asyncio.Future[Any]] = {task for _, _, task, _, _ in busy if task is not None}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_timeout_s
        stop_now = asyncio.ensure_future(self._stop_now.wait())
        try:
            while pending and not self._stop_now.is_set():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                done, _ = await asyncio.wait(
                    {*pending, stop_now}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                pending -= done
        finally:
            stop_now.cancel()
        for slot, run, task, execution_task, execution in busy:
            if run is not None and task is not None and not task.done():
                await self._hand_back.release(slot.worker_id, run, task, execution_task, execution)
