"""Function steps (``step.run``): run the body once, store its JSON result, guard crash loops.

A body that returns within :data:`QUICK_STEP_S` is recorded with one write (an
attempt inserted already completed); a slower one gets its running attempt
first, so it shows as running while it works. Either way the output is durable
before the workflow sees it. After a crash (the lease expired mid-pass), each
step is recorded before it runs, so a step that kills its worker leaves a trace,
and a step left unfinished ``step_crash_limit`` times fails for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import threading
import time
import types
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, NoReturn

from pydantic import TypeAdapter

from openworkflow.core import clock
from openworkflow.core.duration import resolve_time
from openworkflow.core.error import serialize_error
from openworkflow.core.flow_control import (
    AcquireRateLimitParams,
    RateLimit,
    rate_key_of,
    step_rate_bucket,
)
from openworkflow.core.json import JsonConversionError, JsonValue
from openworkflow.core.retry import (
    ResolvedRetryPolicy,
    compute_failed_workflow_run_update,
)
from openworkflow.core.step_attempt import StepAttempt, StepKind
from openworkflow.core.step_result import result_adapter, stored_output, typed_result
from openworkflow.core.workflow_run import WorkflowRun, WorkflowRunStatus
from openworkflow.errors import (
    NonRetryableError,
    PayloadError,
    RetryAfter,
    StepCrashLoopError,
    StepTimeoutError,
)
from openworkflow.payload import to_stored_json
from openworkflow.step_context import StepContext, enter_step_context
from openworkflow.worker.attempts import AttemptRecorder
from openworkflow.worker.context import PassContext
from openworkflow.worker.failures import (
    deferral_json,
    final_failure_json,
    final_failure_of,
    raised_on_first_pass,
)
from openworkflow.worker.interrupts import RateLimited, StepRetry, engine_call
from openworkflow.worker.metrics import STEP_TIMER, StepTimer
from openworkflow.worker.step_threads import StepThreads

logger = logging.getLogger("openworkflow.worker")

QUICK_STEP_S = 0.05
"""A step function that returns within this time is recorded with one write."""

TIMED_STEP_THREAD_PREFIX = "openworkflow-timed-step"
"""Name of the thread a sync body with a ``timeout`` runs in (its own, not the pool's)."""


class FunctionSteps:
    """Runs the function steps of one pass."""

    def __init__(
        self,
        context: PassContext,
        run: WorkflowRun,
        recorder: AttemptRecorder,
        cancel_event: threading.Event | None = None,
        workflow_input: Callable[[], Any] | None = None,
    ) -> None:
        self._context = context
        # The workflow's validated input, for rate-limit keys that are callables of it.
        self._workflow_input = workflow_input if workflow_input is not None else _no_input
        # Set when the run is canceled; step bodies read it via step_context().
        self._cancel_event = cancel_event if cancel_event is not None else threading.Event()
        self._run = run
        self._recorder = recorder
        self._history = recorder.history
        # After a crash (the lease expired mid-pass), record each step before
        # running it, so a step that kills its worker leaves a trace to count.
        self._record_before_running = run.lease_expired or bool(self._history.unfinished_counts)
        # Set by a worker with metrics (once per pass: nothing per step when off).
        self._timer = STEP_TIMER.get()

    async def run(
        self,
        step_name: str,
        fn: Callable[[], Any],
        policy: ResolvedRetryPolicy,
        timeout_ms: int | None = None,
        rate_limit: RateLimit | None = None,
    ) -> Any:
        """The step's stored output, running ``fn`` first if it has none yet.

        With a ``rate_limit``, each run of the body (a retry too) first takes
        a token; without one the pass ends in :class:`RateLimited`, before any
        attempt is written. One coroutine on purpose: this is the hot path of
        every pass.
        """
        adapter = result_adapter(fn, step_name)
        cached = self._history.find_cached(step_name)
        if cached is not None:
            return typed_result(adapter, cached.output, step_name)
        memoized = self._memoized_failure(step_name)
        if memoized is not None:
            raise memoized
        call: asyncio.Future[Any] | None = None
        last_chance: asyncio.Lock | None = None
        self._recorder.begin_in_flight()
        try:
            self._recorder.check_can_create(step_name)
            last_chance = await self._guard_crash_loop(step_name)
            if rate_limit is not None:
                await self._take_rate_limit(fn, rate_limit)
            attempt = None
            if self._record_before_running:
                attempt = await self._recorder.create(step_name, StepKind.FUNCTION, None)
            # The attempt's time starts with its body (after the write above).
            timer = _AttemptTimer(timeout_ms)
            body = self._call if self._timer is None else self._timed_call
            call = asyncio.ensure_future(body(fn, self._step_context(step_name, timer), timer))
            if attempt is None:
                await asyncio.wait({call}, timeout=timer.quick_wait(QUICK_STEP_S))
                if call.done() and not call.cancelled() and call.exception() is None:
                    output = _json_output_or_none(
                        adapter, call.result(), self._output_label(step_name)
                    )
                    if output is not None and self._fits_annotation(adapter, output[0], step_name):
                        # What replays will read (PostgreSQL's jsonb orders keys).
                        stored = await self._recorder.create_completed(step_name, output[0])
                        return typed_result(adapter, stored, step_name)
                attempt = await self._recorder.create(step_name, StepKind.FUNCTION, None)
            return await self._finish(step_name, attempt, call, policy, timer, adapter)
        except BaseException:
            if call is not None and not call.done():
                call.cancel()  # the pass is ending (lease lost, stop): do not leave it running
            elif call is not None and not call.cancelled():
                call.exception()  # its own failure lost to the pass's end: mark it read
            raise
        finally:
            if last_chance is not None:
                last_chance.release()
            self._recorder.end_in_flight()

    async def _take_rate_limit(self, fn: Callable[[], Any], rate_limit: RateLimit) -> None:
        """Take a token of the step's rate limit, or end the pass until the window has room."""
        params = AcquireRateLimitParams(
            bucket=step_rate_bucket(self._run.workflow_name, fn, rate_limit),
            key=rate_key_of(rate_limit, self._workflow_input),
            limit=rate_limit.limit,
            per_ms=rate_limit.per_ms,
            workflow_run_id=self._run.id,
        )
        grant = await engine_call(self._context.backend.acquire_rate_limit(params))
        if not grant.granted:
            raise RateLimited(grant.retry_at if grant.retry_at is not None else clock.now())

    async def _finish(
        self,
        step_name: str,
        attempt: StepAttempt,
        call: asyncio.Future[Any],
        policy: ResolvedRetryPolicy,
        timer: _AttemptTimer,
        adapter: TypeAdapter[Any] | None,
    ) -> Any:
        """Await the body and record its output, or its failure under ``policy``.

        A retry's backoff counts from the moment the body ended (in its thread,
        for a sync body), not from the write of the attempt or its failure.
        """
        try:
            value = await timer.bound(call)
        except Exception as error:
            failure = timer.failure(step_name, error)
            failed_at = timer.ended_at() or clock.now()
            await self._retry_or_fail(step_name, attempt, failure, policy, failed_at)
        try:
            label = self._output_label(step_name)
            output_value = stored_output(adapter, value, label, to_stored_json)
            typed_result(adapter, output_value, step_name)  # a mismatch fails before storing
        except JsonConversionError as error:
            failure = PayloadError(
                f"step {step_name!r} of workflow {self._run.workflow_name!r} returned a value "
                f"that cannot be stored as JSON: {error}"
            )
            raise await self._fail_for_good(step_name, attempt, failure) from None
        except PayloadError as error:  # the output does not match the return annotation
            raise await self._fail_for_good(step_name, attempt, error) from None
        # What replays will read (PostgreSQL's jsonb orders keys).
        stored = await self._recorder.complete(attempt, output_value)
        return typed_result(adapter, stored, step_name)

    @staticmethod
    def _fits_annotation(
        adapter: TypeAdapter[Any] | None, output: JsonValue, step_name: str
    ) -> bool:
        """Whether the output validates (else the slow path records the mismatch)."""
        if adapter is None:
            return True
        try:
            typed_result(adapter, output, step_name)
        except PayloadError:
            return False
        return True

    def _step_context(self, step_name: str, timer: _AttemptTimer) -> StepContext:
        return StepContext(
            run_id=self._run.id,
            workflow_name=self._run.workflow_name,
            step_name=step_name,
            attempt=self._history.failed_attempt_count(step_name) + 1,
            deadline=timer.deadline,
            cancel_event=self._cancel_event,
        )

    async def _retry_or_fail(
        self,
        step_name: str,
        attempt: StepAttempt,
        error: Exception,
        policy: ResolvedRetryPolicy,
        failed_at: datetime,
    ) -> NoReturn:
        """Record the failure; retry the step by its policy, or fail it for good.

        A retry ends the pass (:class:`StepRetry`) without the workflow seeing
        the error; a final failure is memoized and raised into workflow code.
        The backoff counts from ``failed_at``, when the body was seen to fail.
        """
        if isinstance(error, NonRetryableError):
            raise await self._fail_for_good(step_name, attempt, error) from None
        if isinstance(error, RetryAfter):
            await self._defer(step_name, attempt, error)
        serialized = serialize_error(error)
        decision = compute_failed_workflow_run_update(
            policy,
            self._history.failed_attempt_count(step_name) + 1,
            self._run.deadline_at,
            serialized,
            failed_at,
        )
        if decision.status == WorkflowRunStatus.FAILED or decision.available_at is None:
            raise await self._fail_for_good(step_name, attempt, error) from None
        await self._recorder.fail(step_name, attempt, error, stored=serialized)
        raise StepRetry(serialized, decision.available_at)

    async def _defer(self, step_name: str, attempt: StepAttempt, error: RetryAfter) -> NoReturn:
        """Run the step again after the delay it asked for, without spending an attempt."""
        available_at = resolve_time(error.delay)
        deadline = self._run.deadline_at
        if deadline is not None and available_at >= deadline:
            raise await self._fail_for_good(step_name, attempt, error) from None
        stored = deferral_json(error)
        await self._recorder.fail(step_name, attempt, error, stored=stored)
        raise StepRetry(stored, available_at)

    async def _fail_for_good(
        self, step_name: str, attempt: StepAttempt, error: BaseException
    ) -> BaseException:
        """Record a final failure with its memo; return what workflow code is to see."""
        stored = final_failure_json(error)
        await self._recorder.fail(step_name, attempt, error, stored=stored)
        raised = raised_on_first_pass(error, stored)
        if raised is not error:
            self._recorder.remember_failure(raised, step_name)
        return raised

    def _memoized_failure(self, step_name: str) -> BaseException | None:
        """The final failure an earlier pass recorded for this step, rebuilt, if any."""
        failed = self._history.failed.get(step_name)
        memo = None if failed is None else final_failure_of(failed)
        if memo is None:
            return None
        raised = memo.rebuild()
        self._recorder.remember_failure(raised, step_name)
        return raised

    def _output_label(self, step_name: str) -> str:
        return f"output of step {step_name!r} of workflow {self._run.workflow_name!r}"

    async def _guard_crash_loop(self, step_name: str) -> asyncio.Lock | None:
        """Fail a poison step; hold the last-chance lock for a step one crash short.

        Returns the lock to release when the step body is done, if taken.
        """
        limit = self._context.step_crash_limit
        last_chance = self._context.last_chance
        unfinished = self._history.unfinished_attempt_count(step_name)
        if self._run.lease_expired and unfinished >= limit:
            await self._fail_crash_loop(step_name, unfinished)
        if unfinished == 0 or unfinished < limit - 1 or last_chance is None:
            return None
        # A step on its last chance runs alone among such steps in this worker:
        # if it kills the process, another last-chance step (perhaps innocent, a
        # bystander of earlier crashes) has not started, so its count does not
        # grow with the poison's.
        await last_chance.acquire()
        return last_chance

    async def _fail_crash_loop(self, step_name: str, unfinished: int) -> None:
        """Record the step as failed for good instead of running it again (poison)."""
        failure = StepCrashLoopError(step_name, unfinished, self._context.step_crash_limit)
        logger.error("Workflow run %s: %s", self._run.id, failure)
        attempt = await self._recorder.create(step_name, StepKind.FUNCTION, None)
        raise await self._fail_for_good(step_name, attempt, failure)

    async def _timed_call(
        self, fn: Callable[[], Any], context: StepContext, timer: _AttemptTimer
    ) -> Any:
        """:meth:`_call`, its duration observed however the body ends (metrics on)."""
        step_timer: StepTimer | None = self._timer
        started = time.perf_counter()
        try:
            return await self._call(fn, context, timer)
        finally:
            if step_timer is not None:
                step_timer.observe(context.step_name, time.perf_counter() - started)

    async def _call(self, fn: Callable[[], Any], context: StepContext, timer: _AttemptTimer) -> Any:
        """Run the body; ``timer`` notes when it ended (a sync body's, in its thread)."""
        # Runs in its own task, so the step context set here is the body's alone.
        enter_step_context(context)
        if _is_async_callable(fn):
            try:
                return await fn()
            finally:
                timer.mark_end()
        if context.deadline is not None:
            # A body past its timeout keeps its thread until it returns: it must
            # not hold one of the pool's, or its retry would wait behind it.
            result = await _in_own_thread(fn, timer)
        else:
            pool = self._context.thread_pool
            # A thread does not inherit context variables: hand it a copy of ours.
            if isinstance(pool, StepThreads):
                result = await pool.start(_run_sync, contextvars.copy_context(), fn, timer)
            else:
                result = await asyncio.get_running_loop().run_in_executor(
                    pool, _run_sync, contextvars.copy_context(), fn, timer
                )
        if inspect.isawaitable(result):
            try:
                return await result
            finally:
                timer.mark_end()
        return result


class _AttemptTimer:
    """The ``timeout`` of one attempt: when it runs out, and how to bound the body by it."""

    __slots__ = ("_ended", "_loop_deadline", "_timeout", "deadline", "timeout_ms")

    def __init__(self, timeout_ms: int | None) -> None:
        self.timeout_ms = timeout_ms
        self._timeout: asyncio.Timeout | None = None
        self._ended: float | None = None  # time.monotonic() as the body ended
        if timeout_ms is None:
            self.deadline: datetime | None = None
            self._loop_deadline: float | None = None
        else:
            self.deadline = clock.now() + timedelta(milliseconds=timeout_ms)
            self._loop_deadline = asyncio.get_running_loop().time() + timeout_ms / 1000

    def mark_end(self) -> None:
        """Note that the body ended now (called in a sync body's thread, as it ends).

        Under load the event loop may see a thread's result tens of
        milliseconds later; a retry's backoff counts from this moment. Only a
        monotonic reading here: every body ends, few fail (see :meth:`ended_at`).
        """
        self._ended = time.monotonic()

    def ended_at(self) -> datetime | None:
        """When the body ended by the engine's clock; None if it has not (it timed out)."""
        if self._ended is None:
            return None
        return clock.now() - timedelta(seconds=time.monotonic() - self._ended)

    def quick_wait(self, quick_s: float) -> float:
        """How long to wait for a quick result: never past the deadline."""
        if self._loop_deadline is None:
            return quick_s
        return max(0.0, min(quick_s, self._loop_deadline - asyncio.get_running_loop().time()))

    async def bound(self, call: asyncio.Future[Any]) -> Any:
        """Await the body; past the deadline it is cancelled (a thread's result is dropped)."""
        if self._loop_deadline is None:
            return await call
        self._timeout = asyncio.timeout_at(self._loop_deadline)
        async with self._timeout:
            value = await call
        if self._timeout.expired():  # the body swallowed its cancellation: still too late
            raise TimeoutError
        return value

    def failure(self, step_name: str, error: Exception) -> Exception:
        """:class:`StepTimeoutError` when the deadline passed, else the body's own error.

        Past the deadline, whatever the cancelled body raised on its way out is
        a consequence of the timeout, not the attempt's failure.
        """
        if self.timeout_ms is not None and self._timeout is not None and self._timeout.expired():
            return StepTimeoutError(step_name, self.timeout_ms)
        return error


def _no_input() -> Any:
    return None


def _in_own_thread(fn: Callable[[], Any], timer: _AttemptTimer) -> asyncio.Future[Any]:
    """Run a sync body in a new daemon thread (with our context); its result as a future.

    A result arriving after the future was cancelled (the attempt timed out)
    is dropped. Daemon: an abandoned body does not keep the process alive.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # cancelled: the attempt timed out, or the pass ended
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def body() -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = _run_sync(context, fn, timer)
        except BaseException as raised:  # handed to the awaiting task, as an executor does
            error = raised
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=body, name=TIMED_STEP_THREAD_PREFIX, daemon=True).start()
    return future


def _run_sync(context: contextvars.Context, fn: Callable[[], Any], timer: _AttemptTimer) -> Any:
    """Call a sync body in ``context`` (in its thread); note in ``timer`` when it ended."""
    try:
        return context.run(fn)
    except StopIteration as error:
        # A future refuses StopIteration (it would end the awaiting coroutine):
        # the step would wait forever. Generators turn it into this error too.
        raise RuntimeError(f"step body raised StopIteration: {error!r}") from error
    finally:
        timer.mark_end()


def _json_output_or_none(
    adapter: TypeAdapter[Any] | None, value: Any, what: str
) -> tuple[JsonValue] | None:
    """``(json_value,)`` for a storable step result, or None when it cannot be stored.

    The slow path then records the attempt and fails it with the usual message.
    """
    try:
        return (stored_output(adapter, value, what, to_stored_json),)
    except JsonConversionError:
        return None


def _is_async_callable(fn: Callable[..., Any]) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    if isinstance(fn, types.FunctionType):  # most bodies: its __call__ is never async
        return False
    # An object whose __call__ is async.
    return inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004
