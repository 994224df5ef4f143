"""Every step-attempt write of one pass, and the bookkeeping that must agree with it.

The recorder is the only place a pass creates, completes or fails step
attempts. It keeps, beside the :class:`StepHistory`, what the pass's end
depends on: whether new attempts are still allowed, which writes are in flight
(the pass waits for them before it ends), which function attempts this pass
started (handed back if it stops), and which exceptions came from a failed step
(so the outcome can tell a step's final failure from a workflow failure).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from openworkflow.core.backend import (
    CompleteStepAttemptParams,
    CreateCompletedStepAttemptParams,
    CreateStepAttemptParams,
    FailStepAttemptParams,
)
from openworkflow.core.error import serialize_error
from openworkflow.core.json import JsonValue
from openworkflow.core.step_attempt import StepAttempt, StepKind
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import StepLimitExceededError
from openworkflow.worker.context import PassContext
from openworkflow.worker.interrupts import StaleBranch, engine_call
from openworkflow.worker.replay import ReplayMonitor
from openworkflow.worker.step_history import StepHistory, Wait

T = TypeVar("T")


class AttemptRecorder:
    """Writes the step attempts of one pass (fenced on its claim) and keeps its books.

    Every write carries the run's ``attempts`` as this pass's claim left it, so
    a write still queued when the lease was lost never lands, even once the
    same worker id has claimed the run again (each claim bumps ``attempts``).
    """

    def __init__(
        self,
        context: PassContext,
        run: WorkflowRun,
        history: StepHistory,
        replay: ReplayMonitor,
    ) -> None:
        self._context = context
        self._run = run
        self.history = history
        self._replay = replay
        self._active = True
        self._in_flight = 0
        self._settled = asyncio.Event()
        self._settled.set()
        self._wait_creations: set[asyncio.Future[StepAttempt]] = set()
        self._started_attempt_ids: set[str] = set()  # running function attempts of this pass
        self._failures: dict[int, tuple[BaseException, str]] = {}  # id -> (error, step)
        self.step_limit_error: StepLimitExceededError | None = None

    # -- writes ----------------------------------------------------------------

    async def create(self, step_name: str, kind: StepKind, context: JsonValue) -> StepAttempt:
        """Record a new running attempt (after the limit and replay checks)."""
        self.check_can_create(step_name)
        attempt = await engine_call(
            self._context.backend.create_step_attempt(
                CreateStepAttemptParams(
                    workflow_run_id=self._run.id,
                    worker_id=self._context.worker_id,
                    claim_attempt=self._run.attempts,
                    step_name=step_name,
                    kind=kind,
                    config={},
                    context=context,
                )
            )
        )
        self.history.record_new_attempt(attempt)
        if kind == StepKind.FUNCTION:
            self._started_attempt_ids.add(attempt.id)
        return attempt

    async def create_completed(self, step_name: str, output: JsonValue) -> Any:
        """Record a quick function step with one write: inserted already completed."""
        completed = await engine_call(
            self._context.backend.create_completed_step_attempt(
                CreateCompletedStepAttemptParams(
                    workflow_run_id=self._run.id,
                    worker_id=self._context.worker_id,
                    claim_attempt=self._run.attempts,
                    step_name=step_name,
                    kind=StepKind.FUNCTION,
                    output=output,
                )
            )
        )
        self.history.record_new_attempt(completed)
        self.history.record_completion(completed)
        return completed.output

    async def complete(self, attempt: StepAttempt, output: JsonValue) -> Any:
        """Complete a running attempt; returns the stored output."""
        completed = await engine_call(
            self._context.backend.complete_step_attempt(
                CompleteStepAttemptParams(
                    workflow_run_id=self._run.id,
                    step_attempt_id=attempt.id,
                    worker_id=self._context.worker_id,
                    claim_attempt=self._run.attempts,
                    output=output,
                )
            )
        )
        self.history.record_completion(completed)
        return completed.output

    async def fail(
        self,
        step_name: str,
        attempt: StepAttempt,
        error: BaseException,
        *,
        stored: JsonValue = None,
    ) -> None:
        """Fail a running attempt and remember ``error`` as that step's failure.

        ``stored`` is the error JSON to write (default: ``error`` serialized).
        """
        failed = await engine_call(
            self._context.backend.fail_step_attempt(
                FailStepAttemptParams(
                    workflow_run_id=self._run.id,
                    step_attempt_id=attempt.id,
                    worker_id=self._context.worker_id,
                    claim_attempt=self._run.attempts,
                    error=serialize_error(error) if stored is None else stored,
                )
            )
        )
        self.history.record_failure(failed)
        self.remember_failure(error, step_name)

    async def create_wait(self, step_name: str, kind: StepKind, context: JsonValue) -> StepAttempt:
        """Create the attempt of a durable wait, even if this branch is cancelled meanwhile.

        Parallel waits each park the run; the first to do so ends the pass (and a
        TaskGroup then cancels its siblings while their inserts may already be on
        the way to the database). The creation is shielded and counted as in
        flight, so the pass waits for it, records it, and parks until the earliest
        wait instead of losing one.
        """
        self.begin_in_flight()
        creation = asyncio.ensure_future(self.create(step_name, kind, context))
        self._wait_creations.add(creation)  # a strong reference while it runs
        creation.add_done_callback(self._wait_creation_done)
        return await asyncio.shield(creation)

    def _wait_creation_done(self, creation: asyncio.Future[StepAttempt]) -> None:
        self._wait_creations.discard(creation)
        if not creation.cancelled():
            creation.exception()  # mark retrieved: a cancelled branch never awaits it
        self.end_in_flight()

    # -- the books ---------------------------------------------------------------

    def check_can_create(self, step_name: str) -> None:
        """Refuse new attempts once the pass ended, or past the step limit."""
        if not self._active:
            raise StaleBranch
        self._replay.step_starting(step_name)
        try:
            self.history.ensure_can_record_new_attempt()
        except StepLimitExceededError as error:
            self.step_limit_error = error
            raise

    def remember_failure(self, error: BaseException, step_name: str) -> None:
        """Note that ``error`` is ``step_name``'s final failure, raised into workflow code.

        The exception reaches workflow code as it is, so ``except ValueError:``
        works; if it escapes the workflow, the pass's outcome still knows it is a
        step's failure (the run fails, with no workflow-level retry).
        """
        self._failures[id(error)] = (error, step_name)

    def failed_step_of(self, error: BaseException) -> str | None:
        """The step whose final failure ``error`` is, if it escaped that step unchanged."""
        entry = self._failures.get(id(error))
        return entry[1] if entry is not None and entry[0] is error else None

    def abandoned_attempt_ids(self) -> tuple[str, ...]:
        """Function attempts this pass started that are still running (it is ending)."""
        return tuple(
            attempt.id
            for attempt in self.history.running.values()
            if attempt.id in self._started_attempt_ids
        )

    def earliest_wait_including(self, wait: Wait) -> Wait:
        """The earlier of ``wait`` and every running wait recorded so far."""
        return self.history.earliest_wait_including(wait)

    async def settling(self, call: Awaitable[T]) -> T:
        """Await ``call`` counted as in flight, so a pass ending early waits for it."""
        self.begin_in_flight()
        try:
            return await call
        finally:
            self.end_in_flight()

    def begin_in_flight(self) -> None:
        """Count a write (or wait resolution) the pass must let land before it ends."""
        self._in_flight += 1
        self._settled.clear()

    def end_in_flight(self) -> None:
        """The counted work is done."""
        self._in_flight -= 1
        if self._in_flight == 0:
            self._settled.set()

    async def close(self) -> None:
        """End the pass: refuse new attempts, let writes already under way land."""
        self._active = False
        await self._settled.wait()
