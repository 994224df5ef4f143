"""The blocking client, for Django, Flask and scripts: an event loop runs in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterable, Iterator, Mapping
from concurrent.futures import Future
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from openworkflow.client import OpenWorkflow, RunHandle
from openworkflow.core.backend import Backend, PausedWorkflow, StepAttemptCounts, WorkflowRunCounts
from openworkflow.core.cursor import Page
from openworkflow.core.duration import Duration
from openworkflow.core.schedule_store import ScheduleSnapshot, StoredSchedule
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_definition import WorkflowRef
from openworkflow.core.workflow_run import WorkflowRun

T = TypeVar("T")


class SyncRunHandle:
    """Blocking twin of :class:`RunHandle`, made by :class:`SyncOpenWorkflow`."""

    def __init__(self, client: SyncOpenWorkflow, handle: RunHandle) -> None:
        self._client = client
        self._handle = handle
        self.id = handle.id
        self.workflow_run = handle.workflow_run

    def result(self, timeout: Duration | None = "5m") -> Any:
        """Wait for the run's output (see :meth:`RunHandle.result`)."""
        return self._client._call(self._handle.result(timeout))

    def get_event(self, key: str, timeout: Duration | None = None) -> Any:
        """The latest value the run set under ``key`` (see :meth:`RunHandle.get_event`)."""
        return self._client._call(self._handle.get_event(key, timeout))

    def stream(self, key: str) -> Iterator[Any]:
        """Every item of the run's stream ``key`` until the run ends (:meth:`RunHandle.stream`).

        A plain iterator: ``for item in handle.stream("progress"):``.
        """
        return self._client._iterate(self._handle.stream(key))

    def cancel(self) -> WorkflowRun:
        """Cancel the run."""
        return self._client._call(self._handle.cancel())

    def status(self) -> str:
        """The run's current status."""
        return self._client._call(self._handle.status())

    def signal(self, name: str, data: Any = None, *, idempotency_key: str | None = None) -> None:
        """Send ``data`` to this run's waits on ``name`` (see :meth:`OpenWorkflow.signal`)."""
        self._client.signal(self.id, name, data, idempotency_key=idempotency_key)


class SyncOpenWorkflow:
    """Blocking client for Django, Flask and scripts; an event loop runs in a thread.

    Example:
        ``with SyncOpenWorkflow("sqlite:///openworkflow/backend.db") as ow:``
        ``    ow.run("send-welcome-email", {"user_id": "u1"}).result()``
    """

    def __init__(self, backend: Backend | str, *, namespace_id: str = "default") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="openworkflow-sync-client"
        )
        self._thread.start()
        self._closed = False
        try:
            self._client = self._call(_make_client(backend, namespace_id))
        except BaseException:
            self._shutdown_loop()
            raise

    def _call(self, coroutine: Coroutine[Any, Any, T] | Awaitable[T]) -> T:
        if self._closed:
            raise RuntimeError("this SyncOpenWorkflow is closed")
        future: Future[T] = asyncio.run_coroutine_threadsafe(_awaited(coroutine), self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. Ctrl-C while waiting: stop the call on the loop too
            raise

    def _iterate(self, items: AsyncIterator[T]) -> Iterator[T]:
        """Drive an async iterator from this thread, one item per call on the loop."""
        while True:
            next_items = self._call(_next_item(items))
            if not next_items:
                return
            try:
                yield next_items[0]
            except GeneratorExit:  # the caller stopped early: let the reader clean up
                close = getattr(items, "aclose", None)  # an async generator's
                if close is not None:
                    with contextlib.suppress(RuntimeError):  # the client closed meanwhile
                        self._call(close())
                raise

    def run(
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
    ) -> SyncRunHandle:
        """Start a run (see :meth:`OpenWorkflow.run`)."""
        started = self._client.run(
            workflow,
            input,
            version=version,
            idempotency_key=idempotency_key,
            available_at=available_at,
            deadline_at=deadline_at,
            priority=priority,
            tags=tags,
        )
        return SyncRunHandle(self, self._call(started))

    def run_many(
        self,
        workflow: WorkflowRef,
        items: Iterable[Any],
        *,
        version: str | None = None,
        available_at: datetime | Duration | None = None,
        deadline_at: datetime | Duration | None = None,
        priority: int | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[SyncRunHandle]:
        """Start one run per item, all or none; handles in order (:meth:`OpenWorkflow.run_many`).

        An item is an input or a :class:`~openworkflow.client_batch.RunRequest`.
        """
        started = self._client.run_many(
            workflow,
            items,
            version=version,
            available_at=available_at,
            deadline_at=deadline_at,
            priority=priority,
            tags=tags,
        )
        return [SyncRunHandle(self, handle) for handle in self._call(started)]

    def handle(self, run_id: str) -> SyncRunHandle:
        """A handle for an existing run id."""
        return SyncRunHandle(self, self._client.handle(run_id))

    def get_run(self, run_id: str) -> WorkflowRun | None:
        """Return the run, or None."""
        return self._call(self._client.get_run(run_id))

    def list_runs(
        self,
        *,
        status: str | None = None,
        workflow_name: str | None = None,
        limit: int | None = None,
        after: str | None = None,
        before: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Page[WorkflowRun]:
        """List runs newest first (see :meth:`OpenWorkflow.list_runs`)."""
        listed = self._client.list_runs(
            status=status,
            workflow_name=workflow_name,
            limit=limit,
            after=after,
            before=before,
            tags=tags,
        )
        return self._call(listed)

    def list_steps(
        self,
        run_id: str,
        *,
        limit: int | None = None,
        after: str | None = None,
        before: str | None = None,
    ) -> Page[StepAttempt]:
        """List a run's step attempts."""
        return self._call(self._client.list_steps(run_id, limit=limit, after=after, before=before))

    def find_run(self, id_or_prefix: str) -> WorkflowRun:
        """The run with this id or unique id prefix (see :meth:`OpenWorkflow.find_run`)."""
        return self._call(self._client.find_run(id_or_prefix))

    def cancel(self, run_id: str) -> WorkflowRun:
        """Cancel a run."""
        return self._call(self._client.cancel(run_id))

    def set_priority(self, run_id: str, priority: int) -> WorkflowRun:
        """Change an unfinished run's priority (see :meth:`OpenWorkflow.set_priority`)."""
        return self._call(self._client.set_priority(run_id, priority))

    def pause_workflow(self, workflow_name: str) -> PausedWorkflow:
        """Stop claims of a workflow's runs (see :meth:`OpenWorkflow.pause_workflow`)."""
        return self._call(self._client.pause_workflow(workflow_name))

    def resume_workflow(self, workflow_name: str) -> bool:
        """Let workers claim a workflow's runs again; False if it was not paused."""
        return self._call(self._client.resume_workflow(workflow_name))

    def list_schedules(self) -> ScheduleSnapshot:
        """The stored schedules and the database time (see :meth:`OpenWorkflow.list_schedules`)."""
        return self._call(self._client.list_schedules())

    def pause_schedule(self, name: str) -> StoredSchedule | None:
        """Stop a schedule's ticks; None if no such schedule."""
        return self._call(self._client.pause_schedule(name))

    def resume_schedule(self, name: str) -> StoredSchedule | None:
        """Let a schedule tick again from now; None if no such schedule."""
        return self._call(self._client.resume_schedule(name))

    def trigger_schedule(self, name: str) -> SyncRunHandle | None:
        """Start a run of a schedule's workflow now (see :meth:`OpenWorkflow.trigger_schedule`)."""
        handle = self._call(self._client.trigger_schedule(name))
        return None if handle is None else SyncRunHandle(self, handle)

    def paused_workflows(self) -> list[PausedWorkflow]:
        """The workflows whose runs are not claimed (see :meth:`OpenWorkflow.paused_workflows`)."""
        return self._call(self._client.paused_workflows())

    def counts(self) -> WorkflowRunCounts:
        """Number of runs in each status."""
        return self._call(self._client.counts())

    def step_counts(self) -> StepAttemptCounts:
        """Number of step attempts in each status."""
        return self._call(self._client.step_counts())

    def retry(self, run_id: str) -> SyncRunHandle:
        """Resume a failed or canceled run (see :meth:`OpenWorkflow.retry`)."""
        return SyncRunHandle(self, self._call(self._client.retry(run_id)))

    def send_signal(
        self, signal: str, data: Any = None, *, idempotency_key: str | None = None
    ) -> list[str]:
        """Deliver a signal to every waiting run (see :meth:`OpenWorkflow.send_signal`)."""
        return self._call(self._client.send_signal(signal, data, idempotency_key=idempotency_key))

    def signal(
        self, run_id: str, name: str, data: Any = None, *, idempotency_key: str | None = None
    ) -> None:
        """Send ``data`` to one run, kept until it waits (see :meth:`OpenWorkflow.signal`)."""
        self._call(self._client.signal(run_id, name, data, idempotency_key=idempotency_key))

    def close(self) -> None:
        """Close the client (and its backend if opened from a URL)."""
        if self._closed:
            return
        self._call(self._client.close())
        self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncOpenWorkflow:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def _make_client(backend: Backend | str, namespace_id: str) -> OpenWorkflow:
    return OpenWorkflow(backend, namespace_id=namespace_id)


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


async def _next_item(items: AsyncIterator[T]) -> list[T]:
    """``[the next item]``, or ``[]`` once ``items`` is exhausted."""
    try:
        return [await anext(items)]
    except StopAsyncIteration:
        return []
