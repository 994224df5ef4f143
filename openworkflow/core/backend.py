"""The storage seam: the ``Backend`` protocol and one frozen params type per method.

The method list is the TypeScript original's, in snake_case. A backend is
bound to one namespace; every method reads and writes only that namespace.
Writes that advance a run or its steps are *fenced*: they take effect only
while the run is ``running`` and owned by ``worker_id``, and raise
:class:`~openworkflow.errors.WriteConflictError` (message ``Failed to ...``)
when no such row exists (given a claim, :class:`ClaimFenced`, also once a
newer claim has bumped the run's ``attempts``). Decisions that are not SQL
(retry, counts folding, cancel conflicts) live in :mod:`openworkflow.core`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from openworkflow.core.cursor import Page

# Re-exported: the flow-control params belong to the same protocol.
from openworkflow.core.flow_control import (
    ClaimUnroutedWorkflowRunsParams as ClaimUnroutedWorkflowRunsParams,
)
from openworkflow.core.flow_control import FlowControlStore
from openworkflow.core.flow_control import PausedWorkflow as PausedWorkflow
from openworkflow.core.flow_control import (
    SetWorkflowRunPriorityParams as SetWorkflowRunPriorityParams,
)
from openworkflow.core.flow_control import WorkerRegistration as WorkerRegistration
from openworkflow.core.flow_control import WorkflowKey as WorkflowKey
from openworkflow.core.json import JsonValue
from openworkflow.core.operations import OperationsStore
from openworkflow.core.retry import ResolvedRetryPolicy
from openworkflow.core.run_batch import CreateWorkflowRunParams as CreateWorkflowRunParams
from openworkflow.core.run_data import RunDataStore
from openworkflow.core.schedule_store import ScheduleStore
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_run import WorkflowRun

DEFAULT_NAMESPACE_ID = "default"
RUN_IDEMPOTENCY_PERIOD_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class GetWorkflowRunParams:
    """Input of :meth:`Backend.get_workflow_run`."""

    workflow_run_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ListWorkflowRunsParams:
    """Input of :meth:`Backend.list_workflow_runs`; filters combine with AND."""

    limit: int | None = None
    after: str | None = None
    before: str | None = None
    status: str | None = None
    workflow_name: str | None = None
    tags: Mapping[str, str] | None = None  # runs carrying every one of these pairs


@dataclass(frozen=True, slots=True, kw_only=True)
class FindWorkflowRunsByIdPrefixParams:
    """Input of :meth:`Backend.find_workflow_runs_by_id_prefix`.

    ``prefix`` is checked with :func:`openworkflow.core.id_prefix.check_run_id_prefix`
    (non-empty, only run id characters; uppercase is folded to lowercase) and
    ``limit`` with :func:`~openworkflow.core.id_prefix.check_prefix_limit` (1 to 1000).
    """

    prefix: str
    limit: int = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimWorkflowRunParams:
    """Input of :meth:`Backend.claim_workflow_run`."""

    worker_id: str
    lease_duration_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimWorkflowRunsParams:
    """Input of :meth:`Backend.claim_workflow_runs`: one worker id per run wanted.

    ``workflows``: only runs of these (name, version) pairs (None: any; empty:
    none). Never runs of a paused workflow; nor, while enforcing, of a full key.
    """

    worker_ids: Sequence[str]
    lease_duration_ms: int
    workflows: Sequence[WorkflowKey] | None = None
    #: False: a cheaper claim that ignores concurrency keys, for a worker none
    #: of whose workflows is limited (limits bind where the code declares them).
    enforce_concurrency: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtendWorkflowRunLeaseParams:
    """Input of :meth:`Backend.extend_workflow_run_lease`."""

    workflow_run_id: str
    worker_id: str
    lease_duration_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimFenced:
    """Base of the fenced writes' params: they may carry the writer's claim.

    ``claim_attempt`` is the run's ``attempts`` as that claim left it (every
    claim bumps it): the write lands only while it is unchanged. None fences
    on ``worker_id`` alone, as TypeScript workers' writes are.
    """

    claim_attempt: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SleepWorkflowRunParams(ClaimFenced):
    """Input of :meth:`Backend.sleep_workflow_run`."""

    workflow_run_id: str
    worker_id: str
    available_at: datetime
    #: Function-step attempts this pass started and abandoned (it was stopped
    #: or hit a database fault, not a crash): deleted with the park when still
    #: running, so they are not taken for crash evidence by the next pass.
    abandoned_step_attempt_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class CompleteWorkflowRunParams(ClaimFenced):
    """Input of :meth:`Backend.complete_workflow_run`."""

    workflow_run_id: str
    worker_id: str
    output: JsonValue


@dataclass(frozen=True, slots=True, kw_only=True)
class FailWorkflowRunParams(ClaimFenced):
    """Input of :meth:`Backend.fail_workflow_run`.

    When ``attempts`` is None, both it and ``deadline_at`` are read from the row.
    """

    workflow_run_id: str
    worker_id: str
    error: JsonValue
    retry_policy: ResolvedRetryPolicy
    attempts: int | None = None
    deadline_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RescheduleWorkflowRunAfterFailedStepAttemptParams(ClaimFenced):
    """Input of :meth:`Backend.reschedule_workflow_run_after_failed_step_attempt`."""

    workflow_run_id: str
    worker_id: str
    error: JsonValue
    available_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelWorkflowRunParams:
    """Input of :meth:`Backend.cancel_workflow_run`."""

    workflow_run_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryWorkflowRunParams:
    """Input of :meth:`Backend.retry_workflow_run`."""

    workflow_run_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateStepAttemptParams(ClaimFenced):
    """Input of :meth:`Backend.create_step_attempt`."""

    workflow_run_id: str
    worker_id: str
    step_name: str
    kind: str
    config: JsonValue = field(default_factory=dict)
    context: JsonValue = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateCompletedStepAttemptParams(ClaimFenced):
    """Input of :meth:`Backend.create_completed_step_attempt`."""

    workflow_run_id: str
    worker_id: str
    step_name: str
    kind: str
    output: JsonValue
    config: JsonValue = field(default_factory=dict)
    context: JsonValue = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GetStepAttemptParams:
    """Input of :meth:`Backend.get_step_attempt`."""

    step_attempt_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ListStepAttemptsParams:
    """Input of :meth:`Backend.list_step_attempts`."""

    workflow_run_id: str
    limit: int | None = None
    after: str | None = None
    before: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CompleteStepAttemptParams(ClaimFenced):
    """Input of :meth:`Backend.complete_step_attempt`."""

    workflow_run_id: str
    step_attempt_id: str
    worker_id: str
    output: JsonValue


@dataclass(frozen=True, slots=True, kw_only=True)
class FailStepAttemptParams(ClaimFenced):
    """Input of :meth:`Backend.fail_step_attempt`."""

    workflow_run_id: str
    step_attempt_id: str
    worker_id: str
    error: JsonValue


@dataclass(frozen=True, slots=True, kw_only=True)
class SetStepAttemptChildWorkflowRunParams(ClaimFenced):
    """Input of :meth:`Backend.set_step_attempt_child_workflow_run`."""

    workflow_run_id: str
    step_attempt_id: str
    worker_id: str
    child_workflow_run_namespace_id: str
    child_workflow_run_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SendSignalParams:
    """Input of :meth:`Backend.send_signal`."""

    signal: str
    data: JsonValue = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SendSignalResult:
    """The runs a signal was delivered to."""

    workflow_run_ids: list[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class GetSignalDeliveryParams:
    """Input of :meth:`Backend.get_signal_delivery`."""

    step_attempt_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalDelivery:
    """A payload delivered to a waiting step (``data`` may be ``None``)."""

    data: JsonValue


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowRunCounts:
    """Runs per status, with legacy ``sleeping``/``succeeded`` folded in."""

    pending: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0
    canceled: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class StepAttemptCounts:
    """Step attempts per status, with the legacy ``succeeded`` folded into completed."""

    running: int = 0
    completed: int = 0
    failed: int = 0


@runtime_checkable
class Backend(FlowControlStore, ScheduleStore, RunDataStore, OperationsStore, Protocol):
    """Durable storage of runs and steps in one namespace (more in the protocol's bases)."""

    @property
    def namespace_id(self) -> str:
        """The namespace every call reads and writes."""
        ...

    async def create_workflow_run(self, params: CreateWorkflowRunParams) -> WorkflowRun:
        """Insert a ``pending`` run with 0 attempts and return it.

        With an idempotency key, under a lock, return the existing run of the
        same workflow name and key created in the last 24 h instead (any
        status, any version).
        """
        ...

    async def get_workflow_run(self, params: GetWorkflowRunParams) -> WorkflowRun | None:
        """Return the run, or None."""
        ...

    async def list_workflow_runs(self, params: ListWorkflowRunsParams) -> Page[WorkflowRun]:
        """List runs newest first (``created_at``, ``id`` descending), cursor-paginated."""
        ...

    async def find_workflow_runs_by_id_prefix(
        self, params: FindWorkflowRunsByIdPrefixParams
    ) -> list[WorkflowRun]:
        """Return up to ``limit`` runs whose id starts with ``prefix``, in id order.

        A whole id finds just that run. Ask for two to tell a unique prefix
        from an ambiguous one.

        Raises:
            InvalidRunIdPrefixError: the prefix is empty, too long or has a
                character no run id has.
            ValueError: ``limit`` is not a whole number from 1 to 1000.
        """
        ...

    async def count_workflow_runs(self) -> WorkflowRunCounts:
        """Count runs by status."""
        ...

    async def count_step_attempts(self) -> StepAttemptCounts:
        """Count step attempts by status (every run of the namespace)."""
        ...

    async def claim_workflow_run(self, params: ClaimWorkflowRunParams) -> WorkflowRun | None:
        """Fail runs past their deadline, then atomically claim one available run.

        Pending runs come first, then by ``available_at``, then ``created_at``.
        The claimed run is ``running``, owned by ``worker_id``, leased until
        now + lease, with ``attempts + 1``.
        """
        ...

    async def claim_workflow_runs(self, params: ClaimWorkflowRunsParams) -> list[WorkflowRun]:
        """Claim up to ``len(worker_ids)`` runs in one go, as :meth:`claim_workflow_run` would.

        Each claimed run is owned by a different one of the worker ids; the
        list is in claim order. Fewer (or none) when fewer are available.
        """
        ...

    async def extend_workflow_run_lease(self, params: ExtendWorkflowRunLeaseParams) -> WorkflowRun:
        """Fenced: push the lease of an owned running run to now + lease."""
        ...

    async def sleep_workflow_run(self, params: SleepWorkflowRunParams) -> WorkflowRun:
        """Fenced: park the run (running, no owner, available at the given time).

        If a wait already has its answer (a terminal child or a delivered
        signal), the run is made available now instead.
        """
        ...

    async def complete_workflow_run(self, params: CompleteWorkflowRunParams) -> WorkflowRun:
        """Fenced: mark completed with the output; wake a waiting parent."""
        ...

    async def fail_workflow_run(self, params: FailWorkflowRunParams) -> WorkflowRun:
        """Fenced: apply the retry decision (pending later, or failed); wake a parent if failed."""
        ...

    async def reschedule_workflow_run_after_failed_step_attempt(
        self, params: RescheduleWorkflowRunAfterFailedStepAttemptParams
    ) -> WorkflowRun:
        """Fenced: back to pending at ``available_at`` with the step's error."""
        ...

    async def cancel_workflow_run(self, params: CancelWorkflowRunParams) -> WorkflowRun:
        """Cancel a pending, running or parked run; idempotent; raises for finished runs."""
        ...

    async def retry_workflow_run(self, params: RetryWorkflowRunParams) -> WorkflowRun:
        """Put a failed or canceled run back to ``pending`` (not in the original).

        Completed steps stay memoized; failed attempts (memoized final failures
        and the waits a terminal transition closed included) are removed, and so
        are running function attempts left by rows an older engine wrote, so those
        steps run again with fresh retry budgets. Raises for other statuses.
        """
        ...

    async def create_step_attempt(self, params: CreateStepAttemptParams) -> StepAttempt:
        """Fenced: insert a ``running`` step attempt."""
        ...

    async def get_step_attempt(self, params: GetStepAttemptParams) -> StepAttempt | None:
        """Return the step attempt, or None."""
        ...

    async def list_step_attempts(self, params: ListStepAttemptsParams) -> Page[StepAttempt]:
        """List a run's step attempts oldest first, cursor-paginated."""
        ...

    async def create_completed_step_attempt(
        self, params: CreateCompletedStepAttemptParams
    ) -> StepAttempt:
        """Fenced: insert an attempt that already finished, with its output, in one write.

        For a step whose function returned before its attempt was recorded:
        the same row :meth:`create_step_attempt` then
        :meth:`complete_step_attempt` would leave, without the intermediate
        ``running`` version.
        """
        ...

    async def complete_step_attempt(self, params: CompleteStepAttemptParams) -> StepAttempt:
        """Fenced: mark completed; a repeat keeps the first output."""
        ...

    async def fail_step_attempt(self, params: FailStepAttemptParams) -> StepAttempt:
        """Fenced: mark failed; a repeat keeps the first error."""
        ...

    async def set_step_attempt_child_workflow_run(
        self, params: SetStepAttemptChildWorkflowRunParams
    ) -> StepAttempt:
        """Fenced, on a running attempt: link the child run it started."""
        ...

    async def send_signal(self, params: SendSignalParams) -> SendSignalResult:
        """Deliver to every running wait on this signal (one delivery each) and wake them."""
        ...

    async def get_signal_delivery(self, params: GetSignalDeliveryParams) -> SignalDelivery | None:
        """Return the delivery made to a waiting step attempt, or None."""
        ...

    async def stop(self) -> None:
        """Release connections; the backend cannot be used afterwards."""
        ...


# -- optional capabilities --------------------------------------------------------------
#
# Beyond the protocol, a backend may offer these; callers check with
# ``isinstance`` instead of probing attributes. (The third, in-process
# wake-ups, is :class:`openworkflow.notifications.NotifyingBackend`.)


@runtime_checkable
class OpenableBackend(Protocol):
    """A backend that connects lazily and can be told to connect (and listen) now."""

    async def open(self) -> None:
        """Connect, migrate and start listening now instead of on first use."""
        ...


@runtime_checkable
class MigratableBackend(Protocol):
    """A backend whose database records the schema migrations applied to it."""

    async def migration_version(self) -> int | None:
        """The highest applied migration, or -1 when none is.

        Read through the backend's own connection (never creating a
        database); None when it cannot be read (e.g. an in-memory database).
        """
        ...
