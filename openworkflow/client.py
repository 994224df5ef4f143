"""The client: start runs, wait for results, cancel, and read runs and steps."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from types import TracebackType
from typing import Any

from openworkflow.client_batch import RunRequest, run_params, schedule_run_params, start_runs
from openworkflow.connect import connect
from openworkflow.core.backend import (
    Backend,
    CancelWorkflowRunParams,
    FindWorkflowRunsByIdPrefixParams,
    GetWorkflowRunParams,
    ListStepAttemptsParams,
    ListWorkflowRunsParams,
    PausedWorkflow,
    RetryWorkflowRunParams,
    SendSignalParams,
    SetWorkflowRunPriorityParams,
    StepAttemptCounts,
    WorkflowRunCounts,
)
from openworkflow.core.cursor import Page
from openworkflow.core.duration import Duration
from openworkflow.core.flow_control import check_priority
from openworkflow.core.json import check_name, is_storable_text
from openworkflow.core.schedule_store import ScheduleSnapshot, StoredSchedule
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.streams import check_stream_key
from openworkflow.core.tags import check_tags
from openworkflow.core.workflow_definition import Workflow, WorkflowRef, spec_of
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import (
    AmbiguousRunIdError,
    InvalidRunIdPrefixError,
    ResultTimeoutError,
    WorkflowRunNotFoundError,
)
from openworkflow.notifications import RunPoll
from openworkflow.payload import payload_limits, to_stored_json
from openworkflow.run_events import wait_for_event
from openworkflow.run_forks import fork_run
from openworkflow.run_messages import checked_signal_data, send_run_message
from openworkflow.run_outcome import run_outcome, seconds_or_none
from openworkflow.run_streams import read_stream
from openworkflow.tracing import create_run
from openworkflow.worker.context import (
    DEFAULT_CONCURRENCY,
    DEFAULT_LEASE_DURATION,
    DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_STEP_CRASH_LIMIT,
)
from openworkflow.worker.worker import Worker


class RunHandle:
    """A started run: wait for its result, cancel it, or read its status.

    Attributes:
        id: The run id.
        workflow_run: The run as it was when the handle was made (may be None
            for a handle made from an id).
    """

    def __init__(
        self, client: OpenWorkflow, run_id: str, workflow_run: WorkflowRun | None = None
    ) -> None:
        self._client = client
        self.id = run_id
        self.workflow_run = workflow_run

    def __repr__(self) -> str:
        return f"<RunHandle {self.id}>"

    async def status(self) -> str:
        """The run's current status."""
        return (await self._client._require_run(self.id)).status

    async def cancel(self) -> WorkflowRun:
        """Cancel the run (see :meth:`OpenWorkflow.cancel`)."""
        return await self._client.cancel(self.id)

    async def signal(
        self, name: str, data: Any = None, *, idempotency_key: str | None = None
    ) -> None:
        """Send ``data`` to this run's waits on ``name`` (see :meth:`OpenWorkflow.signal`)."""
        await self._client.signal(self.id, name, data, idempotency_key=idempotency_key)

    async def get_event(self, key: str, timeout: Duration | None = None) -> Any:
        """The run's latest ``step.set_event`` value of ``key`` (:mod:`openworkflow.run_events`)."""
        return await wait_for_event(self._client.backend, self.id, key, timeout)

    def stream(self, key: str) -> AsyncIterator[Any]:
        """Every item of the run's ``step.stream`` ``key``, from the first, until the run ends.

        ``async for item in handle.stream("progress"):`` (see :mod:`openworkflow.run_streams`).
        """
        return read_stream(self._client.backend, self.id, check_stream_key(key))

    async def result(self, timeout: Duration | None = "5m") -> Any:
        """Wait for the run to finish and return its output.

        Wakes as soon as the run finishes when the worker shares this backend
        object, and otherwise polls (50 ms growing to 1 s). ``timeout=None``
        waits indefinitely. A run that continued as new
        (``step.continue_as_new``) is followed to the last run of its chain.

        Raises:
            WorkflowFailedError: the run failed.
            WorkflowCanceledError: the run was canceled.
            ResultTimeoutError: the run did not finish within ``timeout``.
            WorkflowRunNotFoundError: the run does not exist.
        """
        poll = RunPoll(self._client.backend, seconds_or_none(timeout))
        run_id = self.id
        while True:
            run = await self._client._require_run(run_id)
            if run.is_terminal and run.continued_as_id is not None:
                run_id = run.continued_as_id  # follow the chain
                poll.restart()
                continue
            if run.is_terminal:
                return run_outcome(run)
            if not await poll.pause(run_id):
                raise ResultTimeoutError(
                    f"Timed out waiting for workflow run {self.id} to finish",
                    workflow_run_id=self.id,
                )


class OpenWorkflow:
    """The client for one backend (and its namespace).

    Example:
        ``async with OpenWorkflow("sqlite:///openworkflow/backend.db") as ow:``
        ``    handle = await ow.run(send_welcome_email, {"user_id": "u1"})``

    Args:
        backend: A backend object, or a URL for :func:`openworkflow.connect`.
            A backend opened from a URL is stopped by :meth:`close`.
        namespace_id: Namespace used when ``backend`` is a URL.
    """

    def __init__(self, backend: Backend | str, *, namespace_id: str = "default") -> None:
        payload_limits()  # an invalid OPENWORKFLOW_PAYLOAD_* variable fails here, not mid-run
        if isinstance(backend, str):
            check_name(namespace_id, "namespace_id")
        self._owns_backend = isinstance(backend, str)
        self.backend: Backend = (
            connect(backend, namespace_id=namespace_id) if isinstance(backend, str) else backend
        )
        namespace = getattr(self.backend, "namespace_id", None)
        if isinstance(namespace, str):
            check_name(namespace, "namespace_id")

    async def __aenter__(self) -> OpenWorkflow:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the backend if this client opened it from a URL."""
        if self._owns_backend:
            await self.backend.stop()

    async def run(
        self,
        workflow: WorkflowRef,
        input: Any = None,
        *,
        version: str | None = None,
        idempotency_key: str | None = None,
        available_at: datetime | Duration | None = None,
        deadline_at: datetime | Duration | None = None,
        priority: int | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> RunHandle:
        """Start a run of ``workflow`` and return its handle.

        The input is validated against the workflow's schema here, before
        anything is written. ``available_at`` schedules the run (a datetime or
        a duration from now); ``deadline_at`` fails it if not finished in time.
        With an ``idempotency_key``, a run of the same workflow and key created
        in the last 24 h is returned instead of a new one. ``priority``
        (default: the workflow's, else 0) orders the claim among due runs:
        higher first. A workflow with a ``concurrency`` limit gives the run its
        key, computed here from the validated input. ``tags`` are stored with it (rules: core.tags).

        Raises:
            InputValidationError: the input does not match the schema.
            PayloadError: the input cannot be stored as JSON, or is over the size limit.
            InvalidNameError: the name, version or idempotency key cannot be stored.
            InvalidDurationError: a time or duration cannot be understood.
            TypeError, ValueError: ``tags`` break a rule (nothing is written).
            Exception: whatever the workflow's concurrency key function raises
                (nothing is written).
        """
        request = RunRequest(input=input, idempotency_key=idempotency_key, version=version)
        request = replace(request, available_at=available_at, deadline_at=deadline_at)
        request = replace(request, priority=priority, tags=tags)
        # Traced when tracing is on (openworkflow.tracing); concurrent runs share one write.
        created = await create_run(self.backend, run_params(spec_of(workflow), request))
        return RunHandle(self, created.id, created)

    async def run_many(
        self,
        workflow: WorkflowRef,
        items: Iterable[Any],
        *,
        version: str | None = None,
        available_at: datetime | Duration | None = None,
        deadline_at: datetime | Duration | None = None,
        priority: int | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[RunHandle]:
        """Start one run of ``workflow`` per item; return their handles in the order of ``items``.

        An item is a run's input, or a :class:`~openworkflow.client_batch.RunRequest`
        (input, ``idempotency_key``, options; unset ones take this call's). All
        items are checked, then all runs written in one transaction, or none;
        keys work as in :meth:`run`, also between items (:mod:`.client_batch`).

        Raises:
            TypeError: ``items`` is a string, bytes or a dict, not a list of inputs.
            Whatever :meth:`run` raises, noting the bad item (nothing is written).
        """
        defaults = RunRequest(version=version, available_at=available_at, priority=priority)
        defaults = replace(defaults, deadline_at=deadline_at, tags=tags)
        created = await start_runs(self.backend, workflow, items, defaults)
        return [RunHandle(self, run.id, run) for run in created]

    def handle(self, run_id: str) -> RunHandle:
        """A handle for an existing run id."""
        return RunHandle(self, run_id)

    async def get_run(self, run_id: str) -> WorkflowRun | None:
        """Return the run, or None if it does not exist."""
        if not is_storable_text(run_id):
            return None  # no stored id has a NUL or a lone surrogate; do not ask the database
        return await self.backend.get_workflow_run(GetWorkflowRunParams(workflow_run_id=run_id))

    async def find_run(self, id_or_prefix: str) -> WorkflowRun:
        """The run with this id, or else the only run whose id starts with it (as git does).

        Raises:
            WorkflowRunNotFoundError: no run has this id or starts with it.
            AmbiguousRunIdError: several runs start with it.
        """
        exact = await self.get_run(id_or_prefix)
        if exact is not None:
            return exact
        try:
            found = await self.backend.find_workflow_runs_by_id_prefix(
                FindWorkflowRunsByIdPrefixParams(prefix=id_or_prefix, limit=3)
            )
        except InvalidRunIdPrefixError:
            raise WorkflowRunNotFoundError(id_or_prefix) from None
        if not found:
            raise WorkflowRunNotFoundError(id_or_prefix)
        if len(found) > 1:
            raise AmbiguousRunIdError(id_or_prefix, [run.id for run in found[:2]])
        return found[0]

    async def _require_run(self, run_id: str) -> WorkflowRun:
        run = await self.get_run(run_id)
        if run is None:
            raise WorkflowRunNotFoundError(run_id)
        return run

    async def list_runs(
        self,
        *,
        status: str | None = None,
        workflow_name: str | None = None,
        limit: int | None = None,
        after: str | None = None,
        before: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Page[WorkflowRun]:
        """List runs newest first; pass ``page.next`` as ``after`` for the next page.

        ``tags``: only the runs carrying every one of these key/value pairs.

        Raises:
            InvalidNameError: ``workflow_name`` is not a name that can be stored.
            ValueError: a cursor is not valid, or ``tags`` break a rule.
        """
        if workflow_name is not None:
            check_name(workflow_name, "workflow_name filter")
        return await self.backend.list_workflow_runs(
            ListWorkflowRunsParams(
                limit=limit,
                after=after,
                before=before,
                status=status,
                workflow_name=workflow_name,
                tags=check_tags(tags, "tags filter") or None,
            )
        )

    async def list_steps(
        self,
        run_id: str,
        *,
        limit: int | None = None,
        after: str | None = None,
        before: str | None = None,
    ) -> Page[StepAttempt]:
        """List a run's step attempts oldest first."""
        if not is_storable_text(run_id):
            raise WorkflowRunNotFoundError(run_id if isinstance(run_id, str) else repr(run_id))
        return await self.backend.list_step_attempts(
            ListStepAttemptsParams(workflow_run_id=run_id, limit=limit, after=after, before=before)
        )

    async def cancel(self, run_id: str) -> WorkflowRun:
        """Cancel a pending, running or sleeping run; canceling twice is fine.

        Raises:
            InvalidRunStateError: the run already completed or failed.
            WorkflowRunNotFoundError: no such run.
        """
        if not is_storable_text(run_id):
            raise WorkflowRunNotFoundError(run_id if isinstance(run_id, str) else repr(run_id))
        return await self.backend.cancel_workflow_run(
            CancelWorkflowRunParams(workflow_run_id=run_id)
        )

    async def set_priority(self, run_id: str, priority: int) -> WorkflowRun:
        """Change the priority of a run that has not finished (higher is claimed first).

        It takes effect at the run's next claim (a queued run, or a parked one
        when it wakes).

        Raises:
            InvalidRunStateError: the run already finished.
            WorkflowRunNotFoundError: no such run.
        """
        check_priority(priority, "priority")
        if not is_storable_text(run_id):
            raise WorkflowRunNotFoundError(run_id if isinstance(run_id, str) else repr(run_id))
        return await self.backend.set_workflow_run_priority(
            SetWorkflowRunPriorityParams(workflow_run_id=run_id, priority=priority)
        )

    async def pause_workflow(self, workflow_name: str) -> PausedWorkflow:
        """Stop workers from claiming the workflow's runs (every version); idempotent.

        Passes already running finish; new runs can still be started and wait.
        """
        check_name(workflow_name, "workflow name")
        return await self.backend.pause_workflow(workflow_name)

    async def resume_workflow(self, workflow_name: str) -> bool:
        """Let workers claim the workflow's runs again; False if it was not paused."""
        check_name(workflow_name, "workflow name")
        return await self.backend.resume_workflow(workflow_name)

    async def paused_workflows(self) -> list[PausedWorkflow]:
        """The workflows whose runs are not being claimed, by name."""
        return await self.backend.list_paused_workflows()

    async def list_schedules(self) -> ScheduleSnapshot:
        """The schedules workers stored, by name, with the database's time (``.now``).

        Each :class:`~openworkflow.core.schedule_store.StoredSchedule` has its
        cron rule, last tick served, pause, and ``next_tick()``.
        """
        return await self.backend.list_schedules()

    async def pause_schedule(self, name: str) -> StoredSchedule | None:
        """Stop a schedule's ticks (idempotent); None if no worker stored that schedule."""
        check_name(name, "schedule name")
        return await self.backend.pause_schedule(name)

    async def resume_schedule(self, name: str) -> StoredSchedule | None:
        """Let a schedule tick again from now (the ticks missed while paused are skipped).

        None if no worker stored that schedule.
        """
        check_name(name, "schedule name")
        return await self.backend.resume_schedule(name)

    async def trigger_schedule(self, name: str) -> RunHandle | None:
        """Start a run of a schedule's workflow now, with the schedule's input.

        The run serves no tick: its ``RunInfo.scheduled_at`` is None, and the
        schedule's own ticks (and ``overlap`` rule) are unaffected. None if no
        worker stored that schedule.
        """
        check_name(name, "schedule name")
        stored = (await self.backend.list_schedules([name])).schedules
        if not stored:
            return None
        created = await self.backend.create_workflow_run(schedule_run_params(stored[0]))
        return RunHandle(self, created.id, created)

    async def counts(self) -> WorkflowRunCounts:
        """Number of runs in each status."""
        return await self.backend.count_workflow_runs()

    async def step_counts(self) -> StepAttemptCounts:
        """Number of step attempts in each status."""
        return await self.backend.count_step_attempts()

    async def fork(self, run_id: str, *, from_step: str, input: Any = None) -> RunHandle:
        """Rerun a finished run from step ``from_step``: a new run, linked (see :mod:`.run_forks`).

        Steps before ``from_step`` replay from copies of their attempts; it and
        the later steps run again. ``input`` replaces the run's input (None keeps it).
        """
        replace = input is not None
        stored = to_stored_json(input, "fork input") if replace else None
        fork_id = await fork_run(self.backend, run_id, from_step, stored, replace_input=replace)
        return RunHandle(self, fork_id)

    async def retry(self, run_id: str) -> RunHandle:
        """Resume a failed or canceled run: the same run goes back to pending.

        Completed steps stay memoized, failed steps run again with fresh retry
        budgets, and the run's attempt count starts over.

        Raises:
            InvalidRunStateError: the run is not failed or canceled.
            WorkflowRunNotFoundError: no such run.
        """
        if not is_storable_text(run_id):
            raise WorkflowRunNotFoundError(run_id if isinstance(run_id, str) else repr(run_id))
        run = await self.backend.retry_workflow_run(RetryWorkflowRunParams(workflow_run_id=run_id))
        return RunHandle(self, run.id, run)

    async def send_signal(
        self, signal: str, data: Any = None, *, idempotency_key: str | None = None
    ) -> list[str]:
        """Deliver ``data`` to every run now waiting on ``signal``; return their ids.

        Signals are not buffered: with nobody waiting, nothing is stored. A
        repeated ``idempotency_key`` (same signal) returns the first send's runs
        without delivering again.

        Raises:
            PayloadError: ``data`` cannot be stored as JSON, or is over the size limit.
            InvalidNameError: the signal or key cannot be stored.
        """
        payload = checked_signal_data(signal, data, idempotency_key)
        result = await self.backend.send_signal(
            SendSignalParams(signal=signal, data=payload, idempotency_key=idempotency_key)
        )
        return list(result.workflow_run_ids)

    async def signal(
        self, run_id: str, name: str, data: Any = None, *, idempotency_key: str | None = None
    ) -> None:
        """Send ``data`` to ONE run, kept until its ``step.wait_for_signal(name)`` consumes it.

        Unlike :meth:`send_signal`, a signal sent before the run waits is kept;
        those of one (run, name) are consumed in the order sent, each by one
        wait, and a repeated ``idempotency_key`` (same run and name) is a no-op.

        Raises:
            WorkflowRunNotFoundError: no such run.
            InvalidRunStateError: the run has finished (completed, failed or canceled).
            PayloadError: ``data`` cannot be stored as JSON, or is over the size limit.
            InvalidNameError: the name or key cannot be stored.
        """
        await send_run_message(self.backend, run_id, name, data, idempotency_key)

    def new_worker(
        self,
        workflows: Iterable[Workflow],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        lease_duration: Duration = DEFAULT_LEASE_DURATION,
        heartbeat_interval: Duration | None = None,
        shutdown_timeout: Duration = DEFAULT_SHUTDOWN_TIMEOUT,
        step_crash_limit: int = DEFAULT_STEP_CRASH_LIMIT,
    ) -> Worker:
        """Create a :class:`Worker` on this client's backend (arguments as for ``Worker``)."""
        return Worker(
            self.backend,
            workflows,
            concurrency=concurrency,
            lease_duration=lease_duration,
            heartbeat_interval=heartbeat_interval,
            shutdown_timeout=shutdown_timeout,
            step_crash_limit=step_crash_limit,
        )
