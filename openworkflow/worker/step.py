"""The ``step`` object a pass hands to workflow code: names each call, then delegates.

Each call resolves its durable name synchronously, when it is made, so steps
started together with ``asyncio.gather`` are named in call order; the replay
monitor sees every call in that order. Function steps go to
:class:`FunctionSteps`, waits and messages to :class:`WaitSteps`.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, NoReturn, TypeVar

from pydantic import TypeAdapter

from openworkflow.core.duration import Duration, parse_duration_ms
from openworkflow.core.events import check_event_key
from openworkflow.core.flow_control import RateLimit
from openworkflow.core.json import JsonConversionError, check_name
from openworkflow.core.retry import DEFAULT_STEP_RETRY_POLICY, RetryPolicy
from openworkflow.core.step_attempt import StepKind
from openworkflow.core.streams import check_stream_key
from openworkflow.core.workflow_definition import WorkflowRef, spec_of
from openworkflow.errors import PayloadError, SignalWaitConflictError
from openworkflow.payload import to_stored_json
from openworkflow.worker.attempts import AttemptRecorder
from openworkflow.worker.function_steps import FunctionSteps
from openworkflow.worker.replay import ReplayMonitor
from openworkflow.worker.stream_steps import StreamSteps
from openworkflow.worker.traces import PassTrace
from openworkflow.worker.wait_steps import WaitSteps

T = TypeVar("T")

# Step kinds as plain strings, for span attributes (read once, not on every call).
_FUNCTION, _SLEEP, _WORKFLOW = (
    StepKind.FUNCTION.value,
    StepKind.SLEEP.value,
    StepKind.WORKFLOW.value,
)
_SIGNAL_SEND, _SIGNAL_WAIT = StepKind.SIGNAL_SEND.value, StepKind.SIGNAL_WAIT.value


class StepExecutor:
    """Implements :class:`openworkflow.Step` for one pass."""

    def __init__(
        self,
        *,
        recorder: AttemptRecorder,
        replay: ReplayMonitor,
        functions: FunctionSteps,
        waits: WaitSteps,
        streams: StreamSteps,
        trace: PassTrace | None = None,
    ) -> None:
        self._recorder = recorder
        self._history = recorder.history
        self._replay = replay
        self._functions = functions
        self._waits = waits
        self._streams = streams
        self._trace = trace  # the pass's span when tracing is on; steps get theirs from it
        self._open_calls = 0  # step calls made and not finished yet
        self._signal_waits: dict[str, str] = {}  # signal -> step waiting on it, this pass

    def run(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        retry_policy: RetryPolicy | None = None,
        timeout: Duration | None = None,
        rate_limit: RateLimit | None = None,
    ) -> Awaitable[Any]:
        """See :meth:`openworkflow.Step.run`."""
        _check_step_name(name)
        if not callable(fn):
            raise TypeError(f"step {name!r}: fn must be callable, got {type(fn).__name__}")
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise TypeError(
                f"step {name!r}: rate_limit must be a RateLimit, got {type(rate_limit).__name__}"
            )
        if args:
            fn = functools.partial(fn, *args)
        policy = (
            retry_policy.resolve(DEFAULT_STEP_RETRY_POLICY)
            if retry_policy is not None
            else DEFAULT_STEP_RETRY_POLICY
        )
        timeout_ms = None if timeout is None else _step_timeout_ms(name, timeout)
        step_name = self._resolve(name)
        call = self._functions.run(step_name, fn, policy, timeout_ms, rate_limit)
        return self._tracked(call, step_name, _FUNCTION)

    def sleep(self, name: str, duration: Duration) -> Awaitable[None]:
        """See :meth:`openworkflow.Step.sleep`."""
        _check_step_name(name)
        step_name = self._resolve(name)
        return self._tracked(self._waits.sleep(step_name, duration), step_name, _SLEEP)

    def run_workflow(
        self,
        workflow: WorkflowRef,
        input: Any = None,
        *,
        name: str | None = None,
        timeout: datetime | Duration | None = None,
    ) -> Awaitable[Any]:
        """See :meth:`openworkflow.Step.run_workflow`."""
        spec = spec_of(workflow)
        step_name = self._resolve(_base_name(name, spec.name))
        call = self._waits.run_workflow(step_name, spec, input, timeout)
        return self._tracked(self._recorder.settling(call), step_name, _WORKFLOW)

    def start_workflow(
        self, workflow: WorkflowRef, input: Any = None, *, name: str | None = None
    ) -> Awaitable[str]:
        """See :meth:`openworkflow.Step.start_workflow`."""
        spec = spec_of(workflow)
        step_name = self._resolve(_base_name(name, spec.name))
        body = self._waits.start_child_body(step_name, spec, input)
        call = self._functions.run(step_name, body, DEFAULT_STEP_RETRY_POLICY)
        return self._tracked(call, step_name, _FUNCTION)

    def set_event(self, key: str, value: Any, *, name: str | None = None) -> Awaitable[None]:
        """See :meth:`openworkflow.Step.set_event`."""
        check_event_key(key)
        try:
            stored = to_stored_json(value, f"value of event {key[:40]!r}")
        except JsonConversionError as error:
            raise PayloadError(f"event {key!r} value cannot be stored as JSON: {error}") from None
        step_name = self._resolve(_base_name(name, f"event:{key}"))
        body = self._waits.set_event_body(key, stored)
        call = self._functions.run(step_name, body, DEFAULT_STEP_RETRY_POLICY)
        return self._tracked(call, step_name, _FUNCTION)

    def stream(self, key: str, value: Any) -> Awaitable[None]:
        """See :meth:`openworkflow.Step.stream`."""
        check_stream_key(key)
        try:
            stored = to_stored_json(value, f"item of stream {key[:40]!r}")
        except JsonConversionError as error:
            raise PayloadError(f"stream {key!r} item cannot be stored as JSON: {error}") from None
        return self._streams.append(key, stored)

    async def continue_as_new(self, input: Any = None) -> NoReturn:
        """See :meth:`openworkflow.Step.continue_as_new`."""
        # The pass ends here; steps still in flight in parallel branches land
        # first (the outcome waits for them), then the run completes.
        raise self._waits.continue_as_new(input)

    def send_signal(
        self, signal: str, data: Any = None, *, name: str | None = None
    ) -> Awaitable[list[str]]:
        """See :meth:`openworkflow.Step.send_signal`."""
        _check_signal(signal)
        step_name = self._resolve(_base_name(name, signal))
        call = self._waits.send_signal(step_name, signal, data)
        return self._tracked(call, step_name, _SIGNAL_SEND)

    def wait_for_signal(
        self,
        signal: str,
        *,
        name: str | None = None,
        timeout: datetime | Duration | None = None,
        schema: Any = None,
    ) -> Awaitable[dict[str, Any] | None]:
        """See :meth:`openworkflow.Step.wait_for_signal`."""
        _check_signal(signal)
        step_name = self._resolve(_base_name(name, signal))
        other = self._signal_waiter(signal, step_name)
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
        call = self._wait_until_answered(step_name, signal, timeout, adapter)
        return self._tracked(call, step_name, _SIGNAL_WAIT)

    def _signal_waiter(self, signal: str, step_name: str) -> str:
        """The step that waits on ``signal`` now: ``step_name`` unless another already does."""
        if self._history.find_cached(step_name) is not None:
            return step_name  # already answered: no longer waiting
        other = self._signal_waits.setdefault(signal, step_name)
        if other == step_name:
            running = self._history.running_signal_wait(signal, excluding=step_name)
            other = running or step_name
        return other

    async def _wait_until_answered(
        self,
        step_name: str,
        signal: str,
        timeout: datetime | Duration | None,
        adapter: TypeAdapter[Any] | None,
    ) -> dict[str, Any] | None:
        try:
            return await self._recorder.settling(
                self._waits.wait_for_signal(step_name, signal, timeout, adapter)
            )
        finally:
            # Answered, timed out or failed: a later wait on the signal is allowed.
            if self._signal_waits.get(signal) == step_name:
                del self._signal_waits[signal]

    def _resolve(self, base: str) -> str:
        """Give the call its durable name, and check it against the recorded order."""
        step_name = self._history.resolve_step_name(base)
        self._replay.step_called(
            step_name, concurrent=self._open_calls > 0, chain=asyncio.current_task()
        )
        self._open_calls += 1
        return step_name

    async def _tracked(
        self, call: Awaitable[T], step_name: str | None = None, kind: str | None = None
    ) -> T:
        try:
            if self._trace is None or step_name is None or kind is None:
                return await call
            return await self._trace.step(call, step_name, kind, self._history)
        finally:
            self._open_calls -= 1


async def _raise(error: BaseException) -> Any:
    raise error


def _base_name(name: str | None, default: str) -> str:
    if name is None:
        return default
    _check_step_name(name)
    return name


_MAX_STEP_TIMEOUT_MS = 100 * 31_557_600_000
"""100 years: an attempt's deadline must still be a datetime."""


def _step_timeout_ms(name: str, timeout: Duration) -> int:
    try:
        timeout_ms = parse_duration_ms(timeout)
    except (TypeError, ValueError) as error:
        raise TypeError(f"step {name!r}: invalid timeout {timeout!r}: {error}") from None
    if timeout_ms <= 0:
        raise ValueError(f"step {name!r}: timeout must be positive, got {timeout!r}")
    if timeout_ms > _MAX_STEP_TIMEOUT_MS:
        raise ValueError(f"step {name!r}: timeout must be at most 100 years, got {timeout!r}")
    return math.ceil(timeout_ms)  # "0.4ms" is 1 ms, not "must be positive"


def _check_signal(signal: object) -> None:
    if not isinstance(signal, str) or not signal:
        raise TypeError(f"signal must be a non-empty string, got {signal!r}")
    check_name(signal, "signal")


def _check_step_name(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"step name must be a non-empty string, got {name!r}")
    check_name(name, "step name")
