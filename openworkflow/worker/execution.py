"""Executing one claimed run: replay from the top, memoized steps, then one final transition.

An execution pass loads the run's step history, completes elapsed sleeps,
calls the workflow function with a :class:`StepExecutor`, and ends in exactly
one of: complete, park (durable wait), reschedule (step retry) or fail.
Every write is fenced on run ownership by the backend, so a canceled run or
a lost lease turns later writes into no-ops that are swallowed here.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from openworkflow.core import clock
from openworkflow.core.backend import (
    Backend,
    CompleteStepAttemptParams,
    CompleteWorkflowRunParams,
    CreateCompletedStepAttemptParams,
    CreateStepAttemptParams,
    CreateWorkflowRunParams,
    FailStepAttemptParams,
    FailWorkflowRunParams,
    GetSignalDeliveryParams,
    GetWorkflowRunParams,
    ListStepAttemptsParams,
    RescheduleWorkflowRunAfterFailedStepAttemptParams,
    SendSignalParams,
    SetStepAttemptChildWorkflowRunParams,
    SleepWorkflowRunParams,
)
from openworkflow.core.duration import Duration, resolve_time
from openworkflow.core.error import serialize_error
from openworkflow.core.json import JsonConversionError, JsonValue, check_name, to_json_value
from openworkflow.core.retry import (
    DEFAULT_STEP_RETRY_POLICY,
    DEFAULT_WORKFLOW_RETRY_POLICY,
    TERMINAL_STEP_RETRY_POLICY,
    ResolvedRetryPolicy,
    RetryPolicy,
    compute_failed_workflow_run_update,
)
from openworkflow.core.step_attempt import (
    StepAttempt,
    signal_wait_context,
    sleep_context,
    workflow_context,
)
from openworkflow.core.workflow_definition import (
    RunInfo,
    Workflow,
    WorkflowRef,
    WorkflowSpec,
    pydantic_message,
    spec_of,
)
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import (
    BackendError,
    BackendUnavailableError,
    ChildWorkflowError,
    InputValidationError,
    NonRetryableError,
    PayloadError,
    SignalValidationError,
    SignalWaitConflictError,
    StepCrashLoopError,
    StepLimitExceededError,
    WriteConflictError,
)
from openworkflow.worker.step_history import (
    WORKFLOW_STEP_LIMIT,
    ReplayCheck,
    StepHistory,
    Wait,
    default_wait_timeout_at,
    names_of,
    wait_resume_at,
)
from openworkflow.worker.waits import (
    child_error_from_attempt,
    child_outcome,
    resolve_timeout,
    signal_run_ids,
)

logger = logging.getLogger("openworkflow.worker")
replay_logger = logging.getLogger("openworkflow.replay")

T = TypeVar("T")

QUICK_STEP_S = 0.05
"""A step function that returns within this time is recorded with one write."""

DEFAULT_STEP_CRASH_LIMIT = 3
"""Unfinished attempts after which a step is failed instead of run again (poison)."""


class _Suspend(BaseException):
    """Internal: park the run until ``wait.resume_at``.

    A BaseException so that ``except Exception`` in workflow code cannot
    swallow a durable wait.
    """

    def __init__(self, wait: Wait) -> None:
        super().__init__("workflow run suspended")
        self.wait = wait


class _StaleBranch(BaseException):
    """Internal: a parallel branch tried to write after its pass ended."""


class _EngineFault(BaseException):
    """Internal: the engine's own read or write failed (database down, run moved on).

    A BaseException so that workflow code cannot swallow it: the pass ends
    without a transition, and the run resumes from its last recorded step.
    """

    def __init__(self, error: BackendError) -> None:
        super().__init__(str(error))
        self.error = error


async def _engine_call(call: Awaitable[T]) -> T:
    """Await an engine backend call, turning its failures into :class:`_EngineFault`."""
    try:
        return await call
    except BackendError as error:
        raise _EngineFault(error) from error


@dataclass(frozen=True, slots=True)
class _StepFailure:
    step_name: str
    failed_attempts: int
    retry_policy: ResolvedRetryPolicy


class StepExecutor:
    """The ``step`` object handed to workflow functions.

    Each call resolves its durable name synchronously, when it is made, so
    steps started together with ``asyncio.gather`` are named in call order.
    """

    def __init__(
        self,
        *,
        backend: Backend,
        workflow_run: WorkflowRun,
        worker_id: str,
        history: StepHistory,
        thread_pool: Executor | None,
        step_crash_limit: int = DEFAULT_STEP_CRASH_LIMIT,
        last_chance: asyncio.Lock | None = None,
    ) -> None:
        self._backend = backend
        self._run = workflow_run
        self._worker_id = worker_id
        self._history = history
        self._thread_pool = thread_pool
        self._step_crash_limit = step_crash_limit
        self._last_chance = last_chance
        self.replay = ReplayCheck(history)
        self.divergences: list[str] = []
        self._open_calls = 0  # step calls made and not finished yet
        self._started_attempt_ids: set[str] = set()  # running function attempts of this pass
        # After a crash (the lease expired mid-pass), record each step before
        # running it, so a step that kills its worker leaves a trace to count.
        self._record_before_running = workflow_run.lease_expired or bool(history.unfinished_counts)
        self._active = True
        self._in_flight = 0
        self._settled = asyncio.Event()
        self._settled.set()
        self._wait_creations: set[asyncio.Future[StepAttempt]] = set()
        self.failures: dict[int, tuple[BaseException, _StepFailure]] = {}
        self.step_limit_error: StepLimitExceededError | None = None
        self._signal_waits: dict[str, str] = {}  # signal -> step waiting on it, this pass

    # -- public step API -------------------------------------------------------

    def run(
        self,
        name: str,
        fn: Callable[[], Any],
        *,
        retry_policy: RetryPolicy | None = None,
    ) -> Awaitable[Any]:
        """Run ``fn`` once and memoize its JSON result under ``name``.

        A sync ``fn`` runs in a worker thread; an async one (or one returning
        an awaitable) is awaited. Returns the JSON round-tripped result, the
        same on the first execution and on every replay.
        """
        _check_step_name(name)
        if not callable(fn):
            raise TypeError(f"step {name!r}: fn must be callable, got {type(fn).__name__}")
        policy = (
            retry_policy.resolve(DEFAULT_STEP_RETRY_POLICY)
            if retry_policy is not None
            else DEFAULT_STEP_RETRY_POLICY
        )
        return self._tracked(self._run_function(self._resolve(name), fn, policy))

    def sleep(self, name: str, duration: Duration) -> Awaitable[None]:
        """Durably sleep: park the run (freeing the worker slot) for ``duration``."""
        _check_step_name(name)
        return self._tracked(self._sleep(self._resolve(name), duration))

    def run_workflow(
        self,
        workflow: WorkflowRef,
        input: Any = None,
        *,
        name: str | None = None,
        timeout: datetime | Duration | None = None,
    ) -> Awaitable[Any]:
        """Start a child run (once, however often this run replays) and wait for its output.

        The run parks while the child works and is woken by the child's end.
        ``timeout`` (default one year) is a duration or a datetime; when it
        passes the step raises :class:`ChildWorkflowTimeoutError` and the child
        keeps running. A failed or canceled child raises
        :class:`ChildWorkflowFailedError` / :class:`ChildWorkflowCanceledError`;
        these are not retried (the child has its own retry policy).
        """
        spec = spec_of(workflow)
        step_name = self._resolve(_base_name(name, spec.name))
        return self._tracked(self._settling(self._run_workflow(step_name, spec, input, timeout)))

    def send_signal(
        self, signal: str, data: Any = None, *, name: str | None = None
    ) -> Awaitable[list[str]]:
        """Deliver ``data`` to every run waiting on ``signal``, once; return their ids."""
        _check_signal(signal)
        step_name = self._resolve(_base_name(name, signal))
        return self._tracked(self._send_signal(step_name, signal, data))

    def wait_for_signal(
        self,
        signal: str,
        *,
        name: str | None = None,
        timeout: datetime | Duration | None = None,
        schema: Any = None,
    ) -> Awaitable[dict[str, Any] | None]:
        """Park until ``signal`` is delivered (``{"data": payload}``) or ``timeout`` (None).

        With ``schema`` (a pydantic model or any type pydantic accepts), the
        payload is validated and returned parsed; a mismatch fails the step
        for good with :class:`SignalValidationError`.
        """
        _check_signal(signal)
        step_name = self._resolve(_base_name(name, signal))
        if self._history.find_cached(step_name) is not None:
            other = step_name  # already answered: no longer waiting
        else:
            other = self._signal_waits.setdefault(signal, step_name)
            if other == step_name:
                running = self._history.running_signal_wait(signal, excluding=step_name)
                other = running or step_name
        if other != step_name:
            # Raised when awaited, like every step error, so sibling coroutines
            # already handed to gather() are not left un-awaited.
            return self._tracked(
                _raise(
                    SignalWaitConflictError(
                        f'Signal "{signal}" is already being waited on by step "{other}"'
                    )
                )
            )
        adapter = None if schema is None else TypeAdapter(schema)
        return self._tracked(self._wait_until_answered(step_name, signal, timeout, adapter))

    async def _wait_until_answered(
        self,
        step_name: str,
        signal: str,
        timeout: datetime | Duration | None,
        adapter: TypeAdapter[Any] | None,
    ) -> dict[str, Any] | None:
        try:
            return await self._settling(self._wait_for_signal(step_name, signal, timeout, adapter))
        finally:
            # Answered, timed out or failed: a later wait on the signal is allowed.
            if self._signal_waits.get(signal) == step_name:
                del self._signal_waits[signal]

    # -- internals -------------------------------------------------------------

    async def _run_function(
        self, step_name: str, fn: Callable[[], Any], policy: ResolvedRetryPolicy
    ) -> Any:
        cached = self._history.find_cached(step_name)
        if cached is not None:
            return cached.output
        self._begin_in_flight()
        call: asyncio.Future[Any] | None = None
        last_chance: asyncio.Lock | None = None
        try:
            self._check_can_create_attempt(step_name)
            last_chance = await self._guard_crash_loop(step_name)
            if self._record_before_running:
                attempt = await self._create_attempt(step_name, "function", None)
                call = asyncio.ensure_future(self._call(fn))
            else:
                call = asyncio.ensure_future(self._call(fn))
                # A step that returns quickly is recorded with one write (inserted as
                # completed); a slower one gets its running attempt now, so it shows
                # as running while it works. Either way the output is durable before
                # the workflow sees it.
                await asyncio.wait({call}, timeout=QUICK_STEP_S)
                if call.done() and not call.cancelled() and call.exception() is None:
                    output = _json_output_or_none(call.result(), self._output_label(step_name))
                    if output is not None:
                        return await self._create_completed_attempt(step_name, output[0])
                attempt = await self._create_attempt(step_name, "function", None)
            try:
                output_value = to_json_value(await call, self._output_label(step_name))
            except JsonConversionError as error:
                failure = PayloadError(
                    f"step {step_name!r} of workflow {self._run.workflow_name!r} returned a value "
                    f"that cannot be stored as JSON: {error}"
                )
                await self._fail_attempt(step_name, attempt, failure, TERMINAL_STEP_RETRY_POLICY)
                raise failure from None
            except Exception as error:
                terminal = isinstance(error, NonRetryableError)
                await self._fail_attempt(
                    step_name, attempt, error, TERMINAL_STEP_RETRY_POLICY if terminal else policy
                )
                raise
            return await self._complete_attempt(attempt, output_value)
        except BaseException:
            if call is not None and not call.done():
                call.cancel()  # the pass is ending (lease lost, stop): do not leave it running
            elif call is not None and not call.cancelled():
                call.exception()  # its own failure lost to the pass's end: mark it read
            raise
        finally:
            if last_chance is not None:
                last_chance.release()
            self._end_in_flight()

    def _output_label(self, step_name: str) -> str:
        return f"output of step {step_name!r} of workflow {self._run.workflow_name!r}"

    def _resolve(self, base: str) -> str:
        """Give the call its durable name, and check it against the recorded order."""
        step_name = self._history.resolve_step_name(base)
        self._report(
            self.replay.resolved(
                step_name, concurrent=self._open_calls > 0, chain=asyncio.current_task()
            )
        )
        self._open_calls += 1
        return step_name

    async def _tracked(self, call: Awaitable[T]) -> T:
        try:
            return await call
        finally:
            self._open_calls -= 1

    def _report(self, divergence: str | None) -> None:
        """Log a replay divergence (each distinct one once per pass) and keep it."""
        if divergence is None or divergence in self.divergences:
            return
        self.divergences.append(divergence)
        replay_logger.warning(
            "Workflow run %s (%s): %s", self._run.id, self._run.workflow_name, divergence
        )

    def check_all_reached(self) -> None:
        """At completion: report recorded steps this replay never called."""
        unreached = self.replay.unreached()
        if unreached:
            self._report(
                f"the run completed without reaching recorded steps {names_of(unreached)}: "
                "steps were removed, renamed or skipped since this run started"
            )

    async def _guard_crash_loop(self, step_name: str) -> asyncio.Lock | None:
        """Fail a poison step; hold the last-chance lock for a step one crash short.

        Returns the lock to release when the step body is done, if taken.
        """
        unfinished = self._history.unfinished_attempt_count(step_name)
        if self._run.lease_expired and unfinished >= self._step_crash_limit:
            await self._fail_crash_loop(step_name, unfinished)
        if unfinished == 0 or unfinished < self._step_crash_limit - 1 or self._last_chance is None:
            return None
        # A step on its last chance runs alone among such steps in this worker:
        # if it kills the process, another last-chance step (perhaps innocent, a
        # bystander of earlier crashes) has not started, so its count does not
        # grow with the poison's.
        await self._last_chance.acquire()
        return self._last_chance

    async def _fail_crash_loop(self, step_name: str, unfinished: int) -> None:
        """Record the step as failed for good instead of running it again (poison)."""
        failure = StepCrashLoopError(step_name, unfinished, self._step_crash_limit)
        logger.error("Workflow run %s: %s", self._run.id, failure)
        attempt = await self._create_attempt(step_name, "function", None)
        await self._fail_attempt(step_name, attempt, failure, TERMINAL_STEP_RETRY_POLICY)
        raise failure

    async def _create_completed_attempt(self, step_name: str, output: JsonValue) -> Any:
        completed = await _engine_call(
            self._backend.create_completed_step_attempt(
                CreateCompletedStepAttemptParams(
                    workflow_run_id=self._run.id,
                    worker_id=self._worker_id,
                    step_name=step_name,
                    kind="function",
                    output=output,
                )
            )
        )
        self._history.record_new_attempt(completed)
        self._history.record_completion(completed)
        return completed.output

    async def _call(self, fn: Callable[[], Any]) -> Any:
        if _is_async_callable(fn):
            return await fn()
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._thread_pool, fn)
        if inspect.isawaitable(result):
            return await result
        return result

    async def _sleep(self, step_name: str, duration: Duration) -> None:
        if self._history.find_cached(step_name) is not None:
            return
        attempt = self._history.running.get(step_name)
        if attempt is not None and attempt.kind == "sleep":
            # Replayed while still asleep (a sibling wait woke the run): keep the
            # original wake-up time instead of starting the sleep over.
            resume_at = wait_resume_at(attempt) or resolve_time(duration)
            if clock.now() >= resume_at:
                await self._complete_attempt(attempt, None)
                return
        else:
            resume_at = resolve_time(duration)
            attempt = await self._create_wait_attempt(step_name, "sleep", sleep_context(resume_at))
        raise _Suspend(self._history.earliest_wait_including(Wait(attempt, resume_at)))

    async def _settling(self, wait: Awaitable[T]) -> T:
        """Count a wait's resolution as in flight, so a pass ending early waits for it.

        When a parallel branch parks, sibling waits that are being resolved
        (a child that finished, a delivered signal) still record their answer
        before the run parks; otherwise parking would reconcile that answer
        into "available now" and the run would spin until the other wait ends.
        """
        self._begin_in_flight()
        try:
            return await wait
        finally:
            self._end_in_flight()

    async def _run_workflow(
        self,
        step_name: str,
        spec: WorkflowSpec,
        input: Any,
        timeout: datetime | Duration | None,
    ) -> Any:
        cached = self._history.find_cached(step_name)
        if cached is not None:
            return cached.output
        failed = self._history.failed.get(step_name)
        if failed is not None and failed.child_workflow_run_id is not None:
            # A child's failure is final: replays raise it again, never respawn.
            error = child_error_from_attempt(failed, step_name)
            self.failures[id(error)] = (
                error,
                _StepFailure(step_name, 1, TERMINAL_STEP_RETRY_POLICY),
            )
            raise error
        attempt = self._history.running.get(step_name)
        if attempt is None or attempt.kind != "workflow":
            timeout_at = resolve_timeout(timeout)
            attempt = await self._create_wait_attempt(
                step_name, "workflow", workflow_context(timeout_at)
            )
        if attempt.child_workflow_run_id is None:
            try:
                stored_input = spec.validate_input(input)
            except (InputValidationError, PayloadError) as error:
                await self._fail_attempt(step_name, attempt, error, TERMINAL_STEP_RETRY_POLICY)
                raise
            attempt = await self._start_child(attempt, spec, stored_input)
        return await self._resolve_child(step_name, attempt)

    async def _start_child(
        self, attempt: StepAttempt, spec: WorkflowSpec, stored_input: JsonValue
    ) -> StepAttempt:
        """Create the child (idempotently: a replay after a crash finds it again) and link it."""
        child = await _engine_call(
            self._backend.create_workflow_run(
                CreateWorkflowRunParams(
                    workflow_name=spec.name,
                    version=spec.version,
                    idempotency_key=f"__workflow:{attempt.namespace_id}:{attempt.id}",
                    input=stored_input,
                    parent_step_attempt_namespace_id=attempt.namespace_id,
                    parent_step_attempt_id=attempt.id,
                )
            )
        )
        linked = await _engine_call(
            self._backend.set_step_attempt_child_workflow_run(
                SetStepAttemptChildWorkflowRunParams(
                    workflow_run_id=self._run.id,
                    step_attempt_id=attempt.id,
                    worker_id=self._worker_id,
                    child_workflow_run_namespace_id=child.namespace_id,
                    child_workflow_run_id=child.id,
                )
            )
        )
        self._history.record_update(linked)
        return linked

    async def _resolve_child(self, step_name: str, attempt: StepAttempt) -> Any:
        child_id = attempt.child_workflow_run_id
        child = await _engine_call(
            self._backend.get_workflow_run(GetWorkflowRunParams(workflow_run_id=child_id or ""))
        )
        timeout_at = wait_resume_at(attempt) or default_wait_timeout_at(attempt.created_at)
        outcome = child_outcome(step_name, child_id, child, timeout_at, clock.now())
        if outcome is None:
            raise _Suspend(self._history.earliest_wait_including(Wait(attempt, timeout_at)))
        if isinstance(outcome, ChildWorkflowError):
            await self._fail_attempt(step_name, attempt, outcome, TERMINAL_STEP_RETRY_POLICY)
            raise outcome
        return await self._complete_attempt(attempt, outcome.output)

    async def _send_signal(self, step_name: str, signal: str, data: Any) -> list[str]:
        cached = self._history.find_cached(step_name)
        if cached is not None:
            return signal_run_ids(cached.output)
        payload = to_json_value(data)
        self._begin_in_flight()
        try:
            attempt = self._history.running.get(step_name)
            if attempt is None or attempt.kind != "signal-send":
                attempt = await self._create_attempt(step_name, "signal-send", None)
            try:
                sent = await self._backend.send_signal(
                    SendSignalParams(
                        signal=signal,
                        data=payload,
                        idempotency_key=f"__signal:{self._run.id}:{step_name}",
                    )
                )
            except BackendUnavailableError as error:
                raise _EngineFault(error) from error  # retried: the key makes it idempotent
            except BackendError as error:
                await self._fail_attempt(step_name, attempt, error, TERMINAL_STEP_RETRY_POLICY)
                raise
            output = {"workflowRunIds": list(sent.workflow_run_ids)}
            return signal_run_ids(await self._complete_attempt(attempt, output))
        finally:
            self._end_in_flight()

    async def _wait_for_signal(
        self,
        step_name: str,
        signal: str,
        timeout: datetime | Duration | None,
        adapter: TypeAdapter[Any] | None,
    ) -> dict[str, Any] | None:
        cached = self._history.find_cached(step_name)
        if cached is not None:
            return _parse_signal_output(cached.output, adapter)
        attempt = self._history.running.get(step_name)
        if attempt is None or attempt.kind != "signal-wait":
            timeout_at = resolve_timeout(timeout)
            attempt = await self._create_wait_attempt(
                step_name, "signal-wait", signal_wait_context(signal, timeout_at)
            )
        timeout_at = wait_resume_at(attempt) or default_wait_timeout_at(attempt.created_at)
        delivery = await _engine_call(
            self._backend.get_signal_delivery(GetSignalDeliveryParams(step_attempt_id=attempt.id))
        )
        if delivery is None:
            if clock.now() < timeout_at:
                raise _Suspend(self._history.earliest_wait_including(Wait(attempt, timeout_at)))
            await self._complete_attempt(attempt, None)
            return None
        if adapter is None:
            await self._complete_attempt(attempt, {"data": delivery.data})
            return {"data": delivery.data}
        try:
            parsed = adapter.validate_python(delivery.data)
        except ValidationError as error:
            failure = SignalValidationError(
                f"Signal schema validation failed: {pydantic_message(error)}"
            )
            await self._fail_attempt(step_name, attempt, failure, TERMINAL_STEP_RETRY_POLICY)
            raise failure from None
        await self._complete_attempt(attempt, {"data": adapter.dump_python(parsed, mode="json")})
        return {"data": parsed}

    async def _complete_attempt(self, attempt: StepAttempt, output: JsonValue) -> Any:
        completed = await _engine_call(
            self._backend.complete_step_attempt(
                CompleteStepAttemptParams(
                    workflow_run_id=self._run.id,
                    step_attempt_id=attempt.id,
                    worker_id=self._worker_id,
                    output=output,
                )
            )
        )
        self._history.record_completion(completed)
        return completed.output

    async def _create_wait_attempt(
        self, step_name: str, kind: str, context: JsonValue
    ) -> StepAttempt:
        """Create the attempt of a durable wait, even if this branch is cancelled meanwhile.

        Parallel waits each park the run; the first to do so ends the pass (and a
        TaskGroup then cancels its siblings while their inserts may already be on
        the way to the database). The creation is shielded and counted as in
        flight, so the pass waits for it, records it, and parks until the earliest
        wait instead of losing one.
        """
        self._begin_in_flight()
        creation = asyncio.ensure_future(self._create_attempt(step_name, kind, context))
        self._wait_creations.add(creation)  # a strong reference while it runs
        creation.add_done_callback(self._wait_creation_done)
        return await asyncio.shield(creation)

    def _wait_creation_done(self, creation: asyncio.Future[StepAttempt]) -> None:
        self._wait_creations.discard(creation)
        if not creation.cancelled():
            creation.exception()  # mark retrieved: a cancelled branch never awaits it
        self._end_in_flight()

    def _check_can_create_attempt(self, step_name: str) -> None:
        if not self._active:
            raise _StaleBranch
        self._report(self.replay.starting_new(step_name))
        try:
            self._history.ensure_can_record_new_attempt()
        except StepLimitExceededError as error:
            self.step_limit_error = error
            raise

    def abandoned_attempt_ids(self) -> tuple[str, ...]:
        """Function attempts this pass started that are still running (it is ending)."""
        return tuple(
            attempt.id
            for attempt in self._history.running.values()
            if attempt.id in self._started_attempt_ids
        )

    async def _create_attempt(self, step_name: str, kind: str, context: JsonValue) -> StepAttempt:
        self._check_can_create_attempt(step_name)
        attempt = await _engine_call(
            self._backend.create_step_attempt(
                CreateStepAttemptParams(
                    workflow_run_id=self._run.id,
                    worker_id=self._worker_id,
                    step_name=step_name,
                    kind=kind,
                    config={},
                    context=context,
                )
            )
        )
        self._history.record_new_attempt(attempt)
        if kind == "function":
            self._started_attempt_ids.add(attempt.id)
        return attempt

    async def _fail_attempt(
        self,
        step_name: str,
        attempt: StepAttempt,
        error: BaseException,
        policy: ResolvedRetryPolicy,
    ) -> None:
        failed = await _engine_call(
            self._backend.fail_step_attempt(
                FailStepAttemptParams(
                    workflow_run_id=self._run.id,
                    step_attempt_id=attempt.id,
                    worker_id=self._worker_id,
                    error=serialize_error(error),
                )
            )
        )
        count = self._history.record_failure(failed)
        # The original exception reaches workflow code unchanged, so `except
        # ValueError:` works; the engine remembers it was a step failure.
        self.failures[id(error)] = (error, _StepFailure(step_name, count, policy))

    def _begin_in_flight(self) -> None:
        self._in_flight += 1
        self._settled.clear()

    def _end_in_flight(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._settled.set()

    async def close(self) -> None:
        """End the pass: refuse new attempts, let step bodies already running persist."""
        self._active = False
        await self._settled.wait()

    def earliest_wait_including(self, wait: Wait) -> Wait:
        """The earlier of ``wait`` and every running wait recorded so far."""
        return self._history.earliest_wait_including(wait)

    def step_failure_of(self, error: BaseException) -> _StepFailure | None:
        """The step failure ``error`` came from, if it escaped a step unchanged."""
        entry = self.failures.get(id(error))
        return entry[1] if entry is not None and entry[0] is error else None


async def _raise(error: BaseException) -> Any:
    raise error


def _json_output_or_none(value: Any, what: str) -> tuple[JsonValue] | None:
    """``(json_value,)`` for a storable step result, or None when it cannot be stored.

    The slow path then records the attempt and fails it with the usual message.
    """
    try:
        return (to_json_value(value, what),)
    except JsonConversionError:
        return None


def _base_name(name: str | None, default: str) -> str:
    if name is None:
        return default
    _check_step_name(name)
    return name


def _check_signal(signal: object) -> None:
    if not isinstance(signal, str) or not signal:
        raise TypeError(f"signal must be a non-empty string, got {signal!r}")
    check_name(signal, "signal")


def _parse_signal_output(output: Any, adapter: TypeAdapter[Any] | None) -> dict[str, Any] | None:
    """A completed wait's stored output, with the payload parsed again by the schema."""
    if not isinstance(output, dict):
        return None
    if adapter is None:
        return {"data": output.get("data")}
    return {"data": adapter.validate_python(output.get("data"))}


def _check_step_name(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"step name must be a non-empty string, got {name!r}")
    check_name(name, "step name")


def _is_async_callable(fn: Callable[..., Any]) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async __call__ objects
    )


# -- the execution pass ---------------------------------------------------------


async def load_step_history(backend: Backend, workflow_run_id: str) -> StepHistory:
    """Load every step attempt of the run (all pages) into a :class:`StepHistory`."""
    attempts: list[StepAttempt] = []
    cursor: str | None = None
    while True:
        page = await backend.list_step_attempts(
            ListStepAttemptsParams(
                workflow_run_id=workflow_run_id, after=cursor, limit=WORKFLOW_STEP_LIMIT
            )
        )
        attempts.extend(page.data)
        if len(attempts) > WORKFLOW_STEP_LIMIT:
            raise StepLimitExceededError(WORKFLOW_STEP_LIMIT, len(attempts))
        if page.next is None:
            return StepHistory(attempts)
        cursor = page.next


async def _complete_elapsed_sleeps(
    backend: Backend, run: WorkflowRun, worker_id: str, history: StepHistory
) -> bool:
    """Complete running sleeps whose time has come; return True if one is still pending."""
    pending = False
    now = clock.now()
    for attempt in list(history.running.values()):
        if attempt.kind != "sleep":
            continue
        context = attempt.context if isinstance(attempt.context, dict) else {}
        resume_at = context.get("resumeAt")
        if isinstance(resume_at, str) and clock.from_iso(resume_at) > now:
            pending = True
            continue
        completed = await backend.complete_step_attempt(
            CompleteStepAttemptParams(
                workflow_run_id=run.id,
                step_attempt_id=attempt.id,
                worker_id=worker_id,
                output=None,
            )
        )
        history.record_completion(completed)
    return pending


def _workflow_arguments(workflow: Workflow, run: WorkflowRun, step: StepExecutor) -> dict[str, Any]:
    arguments: dict[str, Any] = {}
    for name in workflow.parameters:
        if name == "input":
            arguments["input"] = workflow.spec.parse_input(run.input)
        elif name == "step":
            arguments["step"] = step
        elif name == "run":
            arguments["run"] = RunInfo(
                id=run.id,
                workflow_name=run.workflow_name,
                created_at=run.created_at,
                started_at=run.started_at,
            )
        else:
            arguments["version"] = run.version
    return arguments


def _unwrap_group(error: BaseException) -> BaseException:
    """Pick what decides the outcome from a TaskGroup's exception group.

    A step failure or other error wins over parking (the run must not sleep
    on a failure); among several parks, the earliest wait wins.
    """
    if not isinstance(error, BaseExceptionGroup):
        return error
    leaves: list[BaseException] = []

    def collect(group: BaseExceptionGroup[BaseException]) -> None:
        for item in group.exceptions:
            if isinstance(item, BaseExceptionGroup):
                collect(item)
            else:
                leaves.append(item)

    collect(error)
    faults = [leaf for leaf in leaves if isinstance(leaf, _EngineFault)]
    if faults:
        return faults[0]
    failures = [leaf for leaf in leaves if not isinstance(leaf, _Suspend | _StaleBranch)]
    if failures:
        return failures[0]
    suspends = [leaf for leaf in leaves if isinstance(leaf, _Suspend)]
    if suspends:
        return min(suspends, key=lambda s: s.wait.resume_at)
    return leaves[0] if leaves else error


class WorkflowExecution:
    """One pass over one claimed run, ending in a single fenced transition."""

    def __init__(
        self,
        *,
        backend: Backend,
        workflow_run: WorkflowRun,
        workflow: Workflow,
        worker_id: str,
        thread_pool: Executor | None = None,
        step_crash_limit: int = DEFAULT_STEP_CRASH_LIMIT,
        last_chance: asyncio.Lock | None = None,
    ) -> None:
        self.backend = backend
        self.run = workflow_run
        self.workflow = workflow
        self.worker_id = worker_id
        self.thread_pool = thread_pool
        self.step_crash_limit = step_crash_limit
        self.last_chance = last_chance
        self.executor: StepExecutor | None = None
        #: Set once the final write (complete, fail, park) is under way: a lease
        #: renewal refused from then on may just mean that write has landed.
        self.finishing = False

    async def execute(self) -> None:
        """Run the pass; errors from user code end in a transition, never escape."""
        executor: StepExecutor | None = None
        try:
            history = (
                StepHistory([])
                if self.run.has_step_attempts is False  # the claim saw none
                else await _engine_call(load_step_history(self.backend, self.run.id))
            )
            if (
                await _engine_call(
                    _complete_elapsed_sleeps(self.backend, self.run, self.worker_id, history)
                )
                and history.only_sleeps_running()
            ):
                # Nothing but a sleep can have ended early: re-park without replaying.
                wait = history.earliest_running_wait()
                if wait is not None and clock.now() < wait.resume_at:
                    raise _Suspend(wait)
            executor = self.executor = StepExecutor(
                backend=self.backend,
                workflow_run=self.run,
                worker_id=self.worker_id,
                history=history,
                thread_pool=self.thread_pool,
                step_crash_limit=self.step_crash_limit,
                last_chance=self.last_chance,
            )
            output = await self.workflow.fn(
                **_workflow_arguments(self.workflow, self.run, executor)
            )
            await executor.close()
            executor.check_all_reached()
        except BaseException as raised:
            if executor is not None and not isinstance(raised, asyncio.CancelledError):
                await executor.close()
            await self._handle_outcome(_unwrap_group(raised), executor)
            return
        await self._complete(output)

    def abandoned_attempt_ids(self) -> tuple[str, ...]:
        """Function attempts of this pass left running (for a graceful hand-back)."""
        return self.executor.abandoned_attempt_ids() if self.executor is not None else ()

    async def _complete(self, output: Any) -> None:
        try:
            stored = to_json_value(output, f"output of workflow {self.run.workflow_name!r}")
        except JsonConversionError as error:
            failure = PayloadError(
                f"workflow {self.run.workflow_name!r} returned a value that cannot be stored as "
                f"JSON: {error}"
            )
            await self._fail_run(serialize_error(failure), self._workflow_retry_policy())
            return
        await self._transition(
            self.backend.complete_workflow_run(
                CompleteWorkflowRunParams(
                    workflow_run_id=self.run.id, worker_id=self.worker_id, output=stored
                )
            )
        )

    async def _handle_outcome(self, error: BaseException, executor: StepExecutor | None) -> None:
        if isinstance(error, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
            raise error
        if isinstance(error, _StaleBranch):
            return
        if isinstance(error, _EngineFault):
            if isinstance(error.error, WriteConflictError):
                logger.debug("run %s moved on (%s); ending the pass", self.run.id, error.error)
                return
            raise error.error  # the worker backs off; the run resumes after its lease
        if isinstance(error, _Suspend):
            # Parallel waits (gather/TaskGroup) each raise their own suspend and the
            # first one raised wins; the executor has since recorded every sibling
            # wait (close() waited for them), so park until the earliest of all.
            wait = error.wait if executor is None else executor.earliest_wait_including(error.wait)
            await self._transition(
                self.backend.sleep_workflow_run(
                    SleepWorkflowRunParams(
                        workflow_run_id=self.run.id,
                        worker_id=self.worker_id,
                        available_at=wait.resume_at,
                    )
                )
            )
            return
        limit_error = executor.step_limit_error if executor is not None else None
        if isinstance(error, StepLimitExceededError) or limit_error is not None:
            await self._fail_run(
                _serialize_limit(limit_error or error),  # type: ignore[arg-type]
                DEFAULT_WORKFLOW_RETRY_POLICY,
            )
            return
        failure = executor.step_failure_of(error) if executor is not None else None
        if failure is not None:
            await self._retry_step(error, failure)
            return
        await self._fail_run(serialize_error(error), self._workflow_retry_policy())

    async def _retry_step(self, error: BaseException, failure: _StepFailure) -> None:
        serialized = serialize_error(error)
        decision = compute_failed_workflow_run_update(
            failure.retry_policy,
            failure.failed_attempts,
            self.run.deadline_at,
            serialized,
            clock.now(),
        )
        if decision.status == "failed" or decision.available_at is None:
            await self._fail_run(serialized, DEFAULT_WORKFLOW_RETRY_POLICY)
            return
        await self._transition(
            self.backend.reschedule_workflow_run_after_failed_step_attempt(
                RescheduleWorkflowRunAfterFailedStepAttemptParams(
                    workflow_run_id=self.run.id,
                    worker_id=self.worker_id,
                    error=serialized,
                    available_at=decision.available_at,
                )
            )
        )

    def _workflow_retry_policy(self) -> ResolvedRetryPolicy:
        policy = self.workflow.spec.retry_policy
        if policy is None:
            return DEFAULT_WORKFLOW_RETRY_POLICY
        return policy.resolve(DEFAULT_WORKFLOW_RETRY_POLICY)

    async def _fail_run(self, error: JsonValue, policy: ResolvedRetryPolicy) -> None:
        await self._transition(
            self.backend.fail_workflow_run(
                FailWorkflowRunParams(
                    workflow_run_id=self.run.id,
                    worker_id=self.worker_id,
                    error=error,
                    retry_policy=policy,
                    attempts=self.run.attempts,
                    deadline_at=self.run.deadline_at,
                )
            )
        )

    async def _transition(self, write: Awaitable[WorkflowRun]) -> None:
        """Apply the final write; a conflict because the run moved on is not an error."""
        self.finishing = True
        try:
            await write
        except WriteConflictError:
            current = await self.backend.get_workflow_run(
                GetWorkflowRunParams(workflow_run_id=self.run.id)
            )
            if (
                current is None
                or current.status != "running"
                or (current.worker_id != self.worker_id)
            ):
                logger.debug(
                    "run %s moved on (canceled or reclaimed); dropping the transition", self.run.id
                )
                return
            raise


def _serialize_limit(error: StepLimitExceededError) -> dict[str, Any]:
    return {
        "name": "StepLimitExceededError",
        "message": str(error),
        "code": error.code,
        "limit": error.limit,
        "stepCount": error.step_count,
    }
