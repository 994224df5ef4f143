"""One pass over one claimed run, top to bottom.

A pass loads the run's step history (unless the claim saw none), completes the
sleeps whose time has come (re-parking at once if only sleeps are running),
calls the workflow function with a ``step`` (:class:`StepExecutor`), waits for
the writes still under way, decides its :data:`~openworkflow.worker.outcome.PassOutcome`
and makes the one fenced write that outcome needs. Every write is fenced on
run ownership by the backend, so a canceled run or a lost lease turns later
writes into conflicts that end the pass quietly.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable
from typing import Any

from openworkflow.core import clock
from openworkflow.core.backend import (
    Backend,
    CompleteStepAttemptParams,
    CompleteWorkflowRunParams,
    CreateWorkflowRunParams,
    FailWorkflowRunParams,
    GetWorkflowRunParams,
    ListStepAttemptsParams,
    RescheduleWorkflowRunAfterFailedStepAttemptParams,
    SleepWorkflowRunParams,
)
from openworkflow.core.flow_control import SetWorkflowRunSuccessorParams
from openworkflow.core.json import JsonValue
from openworkflow.core.retry import DEFAULT_WORKFLOW_RETRY_POLICY, ResolvedRetryPolicy
from openworkflow.core.step_attempt import StepAttempt, StepKind
from openworkflow.core.waits import WaitContext
from openworkflow.core.workflow_definition import RunInfo, Workflow
from openworkflow.core.workflow_run import WorkflowRun, WorkflowRunStatus
from openworkflow.errors import StepLimitExceededError, WriteConflictError
from openworkflow.tracing import current_trace_context
from openworkflow.worker.attempts import AttemptRecorder
from openworkflow.worker.context import PassContext
from openworkflow.worker.function_steps import FunctionSteps
from openworkflow.worker.interrupts import Suspend, deciding_error, engine_call
from openworkflow.worker.outcome import (
    Completed,
    ContinuedAsNew,
    Dropped,
    Failed,
    HandedBack,
    Parked,
    PassOutcome,
    Rescheduled,
    outcome_of_error,
    outcome_of_return,
)
from openworkflow.worker.replay import ReplayMonitor
from openworkflow.worker.step import StepExecutor
from openworkflow.worker.step_history import WORKFLOW_STEP_LIMIT, StepHistory
from openworkflow.worker.stream_steps import StreamSteps
from openworkflow.worker.traces import PassTrace, start_pass
from openworkflow.worker.wait_steps import WaitSteps

logger = logging.getLogger("openworkflow.worker")


class WorkflowExecution:
    """One pass over one claimed run, ending in a single fenced transition."""

    def __init__(self, context: PassContext, workflow_run: WorkflowRun, workflow: Workflow) -> None:
        self.context = context
        self.run = workflow_run
        self.workflow = workflow
        self.recorder: AttemptRecorder | None = None
        #: Set once the final write (complete, fail, park) is under way: a lease
        #: renewal refused from then on may just mean that write has landed.
        self.finishing = False
        #: Set by the worker when the run was canceled; step bodies see it as
        #: ``step_context().cancel_requested`` (a sync body cannot be cancelled).
        self.cancel_requested = threading.Event()
        self.trace: PassTrace | None = None
        #: The outcome once decided, and the run as the final write left it (for metrics).
        self.outcome: PassOutcome | None = None
        self.written: WorkflowRun | None = None
        self._raised: BaseException | None = None  # what decided the outcome, if raised

    async def execute(self) -> None:
        """Run the pass; errors from user code end in an outcome, never escape."""
        self.trace = start_pass(self.run)  # None unless tracing is on
        if self.trace is None:
            await self._write(await self._decide())
            return
        with self.trace:  # the pass's span, current while it runs
            outcome = await self._decide()
            self.trace.record_outcome(outcome, self._raised)
            await self._write(outcome)

    async def _decide(self) -> PassOutcome:
        """Call the workflow function; the outcome that decides the pass's write."""
        try:
            output = await self._replay()
        except BaseException as raised:
            if self.recorder is not None and not isinstance(raised, asyncio.CancelledError):
                await self.recorder.close()
            self._raised = deciding_error(raised)
            return outcome_of_error(
                self._raised, self.run, self.recorder, self._workflow_retry_policy()
            )
        return outcome_of_return(output, self.run, self._workflow_retry_policy())

    async def _replay(self) -> Any:
        """Load the history, then call the workflow function from the top; its output."""
        history = await self._load_history()
        if await engine_call(self._complete_elapsed_sleeps(history)) and (
            history.only_sleeps_running()
        ):
            # Nothing but a sleep can have ended early: re-park without replaying.
            wait = history.earliest_running_wait()
            if wait is not None and clock.now() < wait.resume_at:
                raise Suspend(wait)
        replay = ReplayMonitor(history, self.run)
        recorder = self.recorder = AttemptRecorder(self.context, self.run, history, replay)
        step = StepExecutor(
            recorder=recorder,
            replay=replay,
            functions=FunctionSteps(
                self.context,
                self.run,
                recorder,
                self.cancel_requested,
                workflow_input=self._validated_input,
            ),
            waits=WaitSteps(self.context, self.run, recorder, self.workflow.spec),
            streams=StreamSteps(self.context, self.run),
            trace=self.trace,
        )
        output = await self.workflow.fn(**_workflow_arguments(self.workflow, self.run, step))
        await recorder.close()
        replay.run_completed()
        return output

    def _validated_input(self) -> Any:
        """The run's input as the workflow function receives it (for rate-limit keys)."""
        return self.workflow.spec.parse_input(self.run.input)

    def abandoned_attempt_ids(self) -> tuple[str, ...]:
        """Function attempts of this pass left running (for a graceful hand-back)."""
        return self.recorder.abandoned_attempt_ids() if self.recorder is not None else ()

    # -- reading the history -------------------------------------------------------

    async def _load_history(self) -> StepHistory:
        limit = self.workflow.spec.max_step_attempts
        if self.run.has_step_attempts is False:  # the claim saw none: skip the read
            return StepHistory([], limit)
        return await engine_call(load_step_history(self.context.backend, self.run.id, limit))

    async def _complete_elapsed_sleeps(self, history: StepHistory) -> bool:
        """Complete running sleeps whose time has come; True if one is still pending."""
        pending = False
        now = clock.now()
        for attempt in list(history.running.values()):
            context = WaitContext.of(attempt)
            if context is None or context.kind != StepKind.SLEEP:
                continue
            if context.until is not None and context.until > now:
                pending = True
                continue
            completed = await self.context.backend.complete_step_attempt(
                CompleteStepAttemptParams(
                    workflow_run_id=self.run.id,
                    step_attempt_id=attempt.id,
                    worker_id=self.context.worker_id,
                    claim_attempt=self.run.attempts,
                    output=None,
                )
            )
            history.record_completion(completed)
        return pending

    # -- the one write -------------------------------------------------------------

    async def _write(self, outcome: PassOutcome) -> None:
        """Make the write ``outcome`` needs: one fenced transition, or none."""
        backend, run_id, worker_id = self.context.backend, self.run.id, self.context.worker_id
        claim = self.run.attempts  # the claim fence: refused once a newer claim holds the run
        self.outcome = outcome
        match outcome:
            case Dropped(reason):
                logger.debug("run %s: ending the pass without a write: %s", run_id, reason)
            case HandedBack(cause):
                raise cause  # the worker backs off; the run resumes after its lease
            case Completed(output):
                await self._transition(
                    backend.complete_workflow_run(
                        CompleteWorkflowRunParams(
                            workflow_run_id=run_id,
                            worker_id=worker_id,
                            claim_attempt=claim,
                            output=output,
                        )
                    )
                )
            case ContinuedAsNew(input, concurrency):
                await self._transition(self._continue_as_new(input, concurrency))
            case Parked(until):
                await self._transition(
                    backend.sleep_workflow_run(
                        SleepWorkflowRunParams(
                            workflow_run_id=run_id,
                            worker_id=worker_id,
                            claim_attempt=claim,
                            available_at=until,
                        )
                    )
                )
            case Rescheduled(error, available_at):
                await self._transition(
                    backend.reschedule_workflow_run_after_failed_step_attempt(
                        RescheduleWorkflowRunAfterFailedStepAttemptParams(
                            workflow_run_id=run_id,
                            worker_id=worker_id,
                            claim_attempt=claim,
                            error=error,
                            available_at=available_at,
                        )
                    )
                )
            case Failed(error, policy):
                await self._transition(
                    backend.fail_workflow_run(
                        FailWorkflowRunParams(
                            workflow_run_id=run_id,
                            worker_id=worker_id,
                            claim_attempt=claim,
                            error=error,
                            retry_policy=policy,
                            attempts=self.run.attempts,
                            deadline_at=self.run.deadline_at,
                        )
                    )
                )

    async def _continue_as_new(
        self, input: JsonValue, concurrency: tuple[str | None, int | None]
    ) -> WorkflowRun:
        """Start the successor (once: a pass that crashed here finds it again), link it, complete.

        The successor is not fenced by this run's lease; if the run was
        canceled meanwhile, linking it fails and the run stays canceled.
        """
        backend, run, worker_id = self.context.backend, self.run, self.context.worker_id
        successor = await backend.create_workflow_run(
            CreateWorkflowRunParams(
                workflow_name=run.workflow_name,
                version=run.version,
                idempotency_key=f"__continue:{run.namespace_id}:{run.id}",
                context=current_trace_context(),  # the successor continues this trace
                input=input,
                priority=run.priority,
                concurrency_key=concurrency[0],
                concurrency_limit=concurrency[1],
            )
        )
        await backend.set_workflow_run_successor(
            SetWorkflowRunSuccessorParams(
                workflow_run_id=run.id, worker_id=worker_id, successor_id=successor.id
            )
        )
        return await backend.complete_workflow_run(
            CompleteWorkflowRunParams(
                workflow_run_id=run.id, worker_id=worker_id, claim_attempt=run.attempts, output=None
            )
        )

    async def _transition(self, write: Awaitable[WorkflowRun]) -> None:
        """Apply the final write; a conflict because the run moved on is not an error."""
        self.finishing = True
        try:
            self.written = await write
        except WriteConflictError:
            current = await self.context.backend.get_workflow_run(
                GetWorkflowRunParams(workflow_run_id=self.run.id)
            )
            if (
                current is None
                or current.status != WorkflowRunStatus.RUNNING
                or current.worker_id != self.context.worker_id
                or current.attempts != self.run.attempts  # the same worker id claimed it again
            ):
                logger.debug(
                    "run %s moved on (canceled or reclaimed); dropping the transition", self.run.id
                )
                return
            raise

    def _workflow_retry_policy(self) -> ResolvedRetryPolicy:
        policy = self.workflow.spec.retry_policy
        if policy is None:
            return DEFAULT_WORKFLOW_RETRY_POLICY
        return policy.resolve(DEFAULT_WORKFLOW_RETRY_POLICY)


async def load_step_history(
    backend: Backend, workflow_run_id: str, step_limit: int = WORKFLOW_STEP_LIMIT
) -> StepHistory:
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
        if len(attempts) > step_limit:
            raise StepLimitExceededError(step_limit, len(attempts))
        if page.next is None:
            return StepHistory(attempts, step_limit)
        cursor = page.next


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
                scheduled_at=run.scheduled_at,
            )
        else:
            arguments["version"] = run.version
    return arguments
