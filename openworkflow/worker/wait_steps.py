"""Durable waits and messages: sleeps, child workflows, signal sends and signal waits.

A wait records a running attempt whose context says when it gives up
(``resumeAt`` / ``timeoutAt``), then parks the run by raising
:class:`~openworkflow.worker.interrupts.Suspend`; a later pass finds the
attempt running and either resolves it (the child ended, the signal came, the
time passed) or parks again until the earliest of the run's waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from openworkflow.core import clock
from openworkflow.core.backend import (
    CreateWorkflowRunParams,
    GetSignalDeliveryParams,
    GetWorkflowRunParams,
    SendSignalParams,
    SetStepAttemptChildWorkflowRunParams,
    SignalDelivery,
)
from openworkflow.core.concurrency import concurrency_columns
from openworkflow.core.duration import Duration, resolve_time
from openworkflow.core.events import SetRunEventParams
from openworkflow.core.json import JsonValue
from openworkflow.core.messages import TakeRunMessageParams
from openworkflow.core.step_attempt import StepAttempt, StepKind
from openworkflow.core.waits import (
    child_error_from_attempt,
    child_outcome,
    default_wait_timeout_at,
    resolve_timeout,
    signal_run_ids,
    signal_wait_context,
    sleep_context,
    wait_resume_at,
    workflow_context,
)
from openworkflow.core.workflow_definition import WorkflowSpec, pydantic_message
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import (
    BackendError,
    BackendUnavailableError,
    ChildWorkflowError,
    InputValidationError,
    PayloadError,
    SignalValidationError,
)
from openworkflow.payload import current_limits, to_stored_json
from openworkflow.tracing import current_trace_context
from openworkflow.worker.attempts import AttemptRecorder
from openworkflow.worker.context import PassContext
from openworkflow.worker.interrupts import ContinueAsNew, EngineFault, Suspend, engine_call
from openworkflow.worker.step_history import Wait

CHILD_CALLS_PER_PASS = 64
"""How many child-workflow calls (create, link, read) one pass makes at a time.

A fan-out starts thousands of ``step.run_workflow`` calls at once; unbounded,
they fill the connection pool and the run's lease heartbeat (and every other
run's) waits behind them until the lease expires. The step attempts themselves
are inserted in group-committed batches and are not bounded.
"""


class WaitSteps:
    """Runs the waiting and messaging steps of one pass."""

    def __init__(
        self,
        context: PassContext,
        run: WorkflowRun,
        recorder: AttemptRecorder,
        spec: WorkflowSpec,
    ) -> None:
        self._context = context
        self._run = run
        self._recorder = recorder
        self._history = recorder.history
        self._spec = spec
        self._child_calls = asyncio.Semaphore(CHILD_CALLS_PER_PASS)

    def start_child_body(
        self, step_name: str, spec: WorkflowSpec, input: Any
    ) -> Callable[[], Awaitable[str]]:
        """The body of ``step.start_workflow``: create the child once; its id is the output.

        The input is validated (and the child's concurrency key computed) here,
        in the pass, so a bad input raises into the workflow as it would from
        ``ow.run``. The child is created under an idempotency key made of this
        run and the step's name, so a pass that crashed after creating it finds
        the same child again; it is not linked as a waited-for child, so its
        end wakes nobody.
        """
        validated, stored_input = spec.validate_input_value(input, current_limits())
        key, limit = concurrency_columns(spec.concurrency, validated)
        backend, run = self._context.backend, self._run

        async def start_child() -> str:
            child = await engine_call(
                backend.create_workflow_run(
                    CreateWorkflowRunParams(
                        workflow_name=spec.name,
                        version=spec.version,
                        idempotency_key=f"__start:{run.namespace_id}:{run.id}:{step_name}",
                        context=current_trace_context(),  # the step's span: same trace
                        input=stored_input,
                        priority=spec.priority,
                        concurrency_key=key,
                        concurrency_limit=limit,
                    )
                )
            )
            return child.id

        return start_child

    def set_event_body(self, key: str, value: JsonValue) -> Callable[[], Awaitable[None]]:
        """The body of ``step.set_event``: store the run's event, fenced by ownership."""
        backend, run, worker_id = self._context.backend, self._run, self._context.worker_id

        async def set_event() -> None:
            await engine_call(
                backend.set_run_event(
                    SetRunEventParams(
                        workflow_run_id=run.id, worker_id=worker_id, key=key, value=value
                    )
                )
            )

        return set_event

    def continue_as_new(self, input: Any) -> ContinueAsNew:
        """The interrupt that ends the pass by continuing as a fresh run with ``input``.

        The input is validated by the run's own workflow (a bad one raises here,
        into the workflow), and the successor's concurrency key computed from it.
        """
        spec = self._spec
        validated, stored_input = spec.validate_input_value(input, current_limits())
        return ContinueAsNew(stored_input, concurrency_columns(spec.concurrency, validated))

    def _park(self, attempt: StepAttempt, resume_at: datetime) -> Suspend:
        """Park until the earliest of this wait and every running wait recorded so far."""
        return Suspend(self._history.earliest_wait_including(Wait(attempt, resume_at)))

    # -- sleep -------------------------------------------------------------------

    async def sleep(self, step_name: str, duration: Duration) -> None:
        """Park the run until ``duration`` from the sleep's first pass has passed."""
        if self._history.find_cached(step_name) is not None:
            return
        attempt = self._history.running.get(step_name)
        if attempt is not None and attempt.kind == StepKind.SLEEP:
            # Replayed while still asleep (a sibling wait woke the run): keep the
            # original wake-up time instead of starting the sleep over.
            resume_at = wait_resume_at(attempt) or resolve_time(duration)
            if clock.now() >= resume_at:
                await self._recorder.complete(attempt, None)
                return
        else:
            # In a worker on PostgreSQL, clock.now() (under resolve_time) is the
            # database's time: the wake-up is compared with its NOW() by the claim.
            resume_at = resolve_time(duration)
            attempt = await self._recorder.create_wait(
                step_name, StepKind.SLEEP, sleep_context(resume_at)
            )
        raise self._park(attempt, resume_at)

    # -- child workflows -----------------------------------------------------------

    async def run_workflow(
        self,
        step_name: str,
        spec: WorkflowSpec,
        input: Any,
        timeout: datetime | Duration | None,
    ) -> Any:
        """Start the child once (its input validated first) and wait for its output.

        A child whose workflow has a ``concurrency`` limit gets its key from
        the validated input; if the key function raises, the step fails with
        that error and no child is created, as for an invalid input.
        """
        cached = self._history.find_cached(step_name)
        if cached is not None:
            return cached.output
        failed = self._history.failed.get(step_name)
        if failed is not None and failed.child_workflow_run_id is not None:
            # A child's failure is final: replays raise it again, never respawn.
            error = child_error_from_attempt(failed, step_name)
            self._recorder.remember_failure(error, step_name)
            raise error
        attempt = self._history.running.get(step_name)
        if attempt is None or attempt.kind != StepKind.WORKFLOW:
            timeout_at = resolve_timeout(timeout)
            attempt = await self._recorder.create_wait(
                step_name, StepKind.WORKFLOW, workflow_context(timeout_at)
            )
        if attempt.child_workflow_run_id is None:
            stored_input, concurrency = await self._child_input(step_name, attempt, spec, input)
            attempt = await self._start_child(attempt, spec, stored_input, concurrency)
        return await self._resolve_child(step_name, attempt)

    async def _child_input(
        self, step_name: str, attempt: StepAttempt, spec: WorkflowSpec, input: Any
    ) -> tuple[JsonValue, tuple[str | None, int | None]]:
        """The child's stored input and concurrency columns; the step fails if either fails."""
        try:
            validated, stored_input = spec.validate_input_value(input, current_limits())
        except (InputValidationError, PayloadError) as error:
            await self._recorder.fail(step_name, attempt, error)
            raise
        try:
            concurrency = concurrency_columns(spec.concurrency, validated)
        except Exception as error:  # the user's key function: no child, as for a bad input
            await self._recorder.fail(step_name, attempt, error)
            raise
        return stored_input, concurrency

    async def _start_child(
        self,
        attempt: StepAttempt,
        spec: WorkflowSpec,
        stored_input: JsonValue,
        concurrency: tuple[str | None, int | None],
    ) -> StepAttempt:
        """Create the child (idempotently: a replay after a crash finds it again) and link it."""
        async with self._child_calls:
            return await self._create_and_link(attempt, spec, stored_input, concurrency)

    async def _create_and_link(
        self,
        attempt: StepAttempt,
        spec: WorkflowSpec,
        stored_input: JsonValue,
        concurrency: tuple[str | None, int | None],
    ) -> StepAttempt:
        backend = self._context.backend
        child = await engine_call(
            backend.create_workflow_run(
                CreateWorkflowRunParams(
                    workflow_name=spec.name,
                    version=spec.version,
                    idempotency_key=f"__workflow:{attempt.namespace_id}:{attempt.id}",
                    context=current_trace_context(),  # the step's span: same trace
                    input=stored_input,
                    parent_step_attempt_namespace_id=attempt.namespace_id,
                    parent_step_attempt_id=attempt.id,
                    concurrency_key=concurrency[0],
                    concurrency_limit=concurrency[1],
                )
            )
        )
        linked = await engine_call(
            backend.set_step_attempt_child_workflow_run(
                SetStepAttemptChildWorkflowRunParams(
                    workflow_run_id=self._run.id,
                    step_attempt_id=attempt.id,
                    worker_id=self._context.worker_id,
                    claim_attempt=self._run.attempts,
                    child_workflow_run_namespace_id=child.namespace_id,
                    child_workflow_run_id=child.id,
                )
            )
        )
        self._history.record_update(linked)
        return linked

    async def _resolve_child(self, step_name: str, attempt: StepAttempt) -> Any:
        child_id = attempt.child_workflow_run_id
        async with self._child_calls:
            child = await engine_call(
                self._context.backend.get_workflow_run(
                    GetWorkflowRunParams(workflow_run_id=child_id or "")
                )
            )
        timeout_at = wait_resume_at(attempt) or default_wait_timeout_at(attempt.created_at)
        outcome = child_outcome(step_name, child_id, child, timeout_at, clock.now())
        if outcome is None:
            raise self._park(attempt, timeout_at)
        if isinstance(outcome, ChildWorkflowError):
            await self._recorder.fail(step_name, attempt, outcome)
            raise outcome
        return await self._recorder.complete(attempt, outcome.output)

    # -- signals -----------------------------------------------------------------

    async def send_signal(self, step_name: str, signal: str, data: Any) -> list[str]:
        """Deliver ``data`` to the runs waiting on ``signal`` (once); their ids."""
        cached = self._history.find_cached(step_name)
        if cached is not None:
            return signal_run_ids(cached.output)
        payload = to_stored_json(data)
        return await self._recorder.settling(self._deliver(step_name, signal, payload))

    async def _deliver(self, step_name: str, signal: str, payload: JsonValue) -> list[str]:
        attempt = self._history.running.get(step_name)
        if attempt is None or attempt.kind != StepKind.SIGNAL_SEND:
            attempt = await self._recorder.create(step_name, StepKind.SIGNAL_SEND, None)
        try:
            sent = await self._context.backend.send_signal(
                SendSignalParams(
                    signal=signal,
                    data=payload,
                    idempotency_key=f"__signal:{self._run.id}:{step_name}",
                )
            )
        except BackendUnavailableError as error:
            raise EngineFault(error) from error  # retried: the key makes it idempotent
        except BackendError as error:
            await self._recorder.fail(step_name, attempt, error)
            raise
        output = {"workflowRunIds": list(sent.workflow_run_ids)}
        return signal_run_ids(await self._recorder.complete(attempt, output))

    async def _received(self, signal: str, attempt: StepAttempt) -> SignalDelivery | None:
        """A broadcast delivery to the wait, else a message to this run (taken by the attempt).

        The attempt's id binds the message it takes, so a replay or a pass
        that crashed after taking it gets the same message back.
        """
        backend = self._context.backend
        delivery = await engine_call(
            backend.get_signal_delivery(GetSignalDeliveryParams(step_attempt_id=attempt.id))
        )
        if delivery is not None:
            return delivery
        taken = await engine_call(
            backend.take_run_message(
                TakeRunMessageParams(
                    workflow_run_id=self._run.id,
                    worker_id=self._context.worker_id,
                    signal=signal,
                    step_attempt_id=attempt.id,
                )
            )
        )
        return SignalDelivery(data=taken.data) if taken.found else None

    async def wait_for_signal(
        self,
        step_name: str,
        signal: str,
        timeout: datetime | Duration | None,
        adapter: TypeAdapter[Any] | None,
    ) -> dict[str, Any] | None:
        """``{"data": payload}`` once ``signal`` is delivered, None at the timeout."""
        cached = self._history.find_cached(step_name)
        if cached is not None:
            return _parse_signal_output(cached.output, adapter)
        attempt = self._history.running.get(step_name)
        if attempt is None or attempt.kind != StepKind.SIGNAL_WAIT:
            timeout_at = resolve_timeout(timeout)
            attempt = await self._recorder.create_wait(
                step_name, StepKind.SIGNAL_WAIT, signal_wait_context(signal, timeout_at)
            )
        timeout_at = wait_resume_at(attempt) or default_wait_timeout_at(attempt.created_at)
        delivery = await self._received(signal, attempt)
        if delivery is None:
            if clock.now() < timeout_at:
                raise self._park(attempt, timeout_at)
            await self._recorder.complete(attempt, None)
            return None
        if adapter is None:
            await self._recorder.complete(attempt, {"data": delivery.data})
            return {"data": delivery.data}
        try:
            parsed = adapter.validate_python(delivery.data)
        except ValidationError as error:
            failure = SignalValidationError(
                f"Signal schema validation failed: {pydantic_message(error)}"
            )
            await self._recorder.fail(step_name, attempt, failure)
            raise failure from None
        await self._recorder.complete(attempt, {"data": adapter.dump_python(parsed, mode="json")})
        return {"data": parsed}


def _parse_signal_output(output: Any, adapter: TypeAdapter[Any] | None) -> dict[str, Any] | None:
    """A completed wait's stored output, with the payload parsed again by the schema."""
    if not isinstance(output, dict):
        return None
    if adapter is None:
        return {"data": output.get("data")}
    return {"data": adapter.validate_python(output.get("data"))}
