"""Every error OpenWorkflow raises, in one tree.

::

    OpenWorkflowError
    ├── WorkflowDefinitionError        a bad @workflow: not async, unknown parameter, bad schema
    │   └── InvalidScheduleError           a bad schedule: cron, time zone, policy (also ValueError)
    ├── DuplicateWorkflowError         two implementations of one (name, version)
    ├── InputValidationError           input rejected by the workflow's schema (also ValueError)
    ├── InvalidDurationError           a duration or time that cannot be parsed (also ValueError)
    ├── PayloadError                   a value that cannot be stored as JSON (also TypeError)
    ├── InvalidNameError               a name the database cannot store (also ValueError)
    ├── InvalidDatabaseUrlError        a database URL that cannot be used (also ValueError)
    ├── InvalidSchemaNameError         a PostgreSQL schema name that is not an identifier
    ├── InvalidRunIdPrefixError        a run id (prefix) to look up that no run id can start with
    ├── NonRetryableError              raise it in a step to fail the step without retries
    ├── RetryAfter                     raise it in a step: run it again later, no attempt spent
    ├── StepFailedError                a step's final failure whose exception cannot be rebuilt
    ├── StepLimitExceededError         a run made more than 1000 step attempts
    ├── StepCrashLoopError             a step left unfinished too often (a poison run)
    ├── StepTimeoutError               a step attempt ran past its timeout (also TimeoutError)
    ├── NotInStepError                 step_context() outside a step body (also RuntimeError)
    ├── CompensationError              saga compensations failed for good (the others still ran)
    ├── WorkflowRunNotFoundError       no run with that id in this namespace
    ├── AmbiguousRunIdError            a run id prefix that several runs start with
    ├── InvalidRunStateError           e.g. canceling a completed run
    ├── ForkStepNotFoundError          ow.fork(): no step of that name in the run (also LookupError)
    ├── WorkflowFailedError            handle.result() of a failed run
    ├── WorkflowCanceledError          handle.result() of a canceled run
    ├── ResultTimeoutError             handle.result() gave up waiting (also TimeoutError)
    ├── EventNotSetError               handle.get_event(): the run ended without setting the key
    ├── ChildWorkflowError             step.run_workflow(): the child did not complete
    │   ├── ChildWorkflowFailedError       the child failed (its error is attached)
    │   ├── ChildWorkflowCanceledError     the child was canceled
    │   └── ChildWorkflowTimeoutError      the parent stopped waiting (also TimeoutError)
    ├── SignalWaitConflictError        two waits on one signal in one run
    ├── SignalValidationError          a signal payload failed its schema (also ValueError)
    ├── ReplayDivergenceError          testing.replay(): today's code left a recorded run's steps
    ├── UnprotectedBindError           a dashboard on a public address without auth
    ├── InvalidDashboardAuthError      OPENWORKFLOW_DASHBOARD_AUTH is not user:password
    ├── UnknownHostError               the dashboard's address does not resolve
    ├── ListenError                    the dashboard's address cannot be bound (port in use)
    └── BackendError                   the database could not do what was asked
        ├── WriteConflictError         a fenced write found no row it owns ("Failed to ...")
        ├── BackendUnavailableError    the database cannot be reached (retried)
        ├── BackendClosedError         the backend was stopped
        └── DatabaseNotFoundError      no SQLite file yet, and the caller asked not to create it
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any


class OpenWorkflowError(Exception):
    """Root of every error raised by OpenWorkflow."""


class WorkflowDefinitionError(OpenWorkflowError, TypeError):
    """A workflow function or declaration is not usable as written."""


class InvalidScheduleError(WorkflowDefinitionError, ValueError):
    """A schedule that cannot be used as written: bad cron, unknown time zone, bad policy."""


class DuplicateWorkflowError(OpenWorkflowError):
    """Two implementations were registered for the same (name, version)."""


class InputValidationError(OpenWorkflowError, ValueError):
    """Input does not match the workflow's schema; nothing was written.

    Attributes:
        workflow_name: The workflow whose schema rejected the input.
        errors: pydantic's list of error dicts.
    """

    def __init__(self, message: str, *, workflow_name: str, errors: list[Any]) -> None:
        super().__init__(message)
        self.workflow_name = workflow_name
        self.errors = errors


class InvalidDurationError(OpenWorkflowError, ValueError):
    """A duration or point in time could not be understood."""


class PayloadError(OpenWorkflowError, TypeError):
    """A value (input, step output, workflow output) cannot be stored as JSON."""


class InvalidNameError(OpenWorkflowError, ValueError):
    """A name (workflow, version, step, namespace, signal, idempotency key) cannot be stored.

    Names are stored byte for byte, so they must be strings without NUL
    characters or lone surrogates, of at most 512 UTF-8 bytes; nothing was
    written. ``field`` names which one was refused.
    """

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class InvalidDatabaseUrlError(OpenWorkflowError, ValueError):
    """A database URL that cannot be used (wrong form, bad port)."""


class InvalidSchemaNameError(OpenWorkflowError, ValueError):
    """A schema name that is not a plain PostgreSQL identifier."""


class InvalidRunIdPrefixError(OpenWorkflowError, ValueError):
    """A run id prefix to look runs up by is empty, too long or has non-id characters."""


class NonRetryableError(OpenWorkflowError):
    """Raised inside a step to fail that step at once, skipping its retry policy."""


class RetryAfter(OpenWorkflowError):
    """Raise it in a step to run the step again after ``delay``, without spending an attempt.

    For services that say when to come back (HTTP 429 with ``Retry-After``). The
    run is rescheduled; the step's retry policy does not count this attempt.

    Attributes:
        delay: A ``timedelta``, seconds, or a string such as ``"30s"``.
    """

    def __init__(self, delay: timedelta | float | str, message: str = "") -> None:
        super().__init__(message or f"retry after {delay}")
        self.delay = delay


class StepFailedError(OpenWorkflowError):
    """A step failed for good and its exception cannot be rebuilt as it was.

    Raised on the first pass and on every replay alike, in place of an
    exception whose class or arguments cannot be restored from the database.

    Attributes:
        error_type: The original exception's class name.
        message: The original exception's message.
    """

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}" if message else error_type)
        self.error_type = error_type
        self.message = message


class CompensationError(OpenWorkflowError):
    """Some compensations failed for good (the others still ran).

    ``__cause__`` is the first failure. Raised by ``async with Saga(step)``,
    ``__context__`` is the error that started the compensation.

    Attributes:
        failed: The names of the compensations that failed, in the order they ran.
        errors: Their final failures, in the same order.
    """

    def __init__(self, failed: list[str], errors: list[Exception]) -> None:
        details = "; ".join(
            f"{name} ({type(error).__name__}: {error})"
            for name, error in zip(failed, errors, strict=True)
        )
        noun = "compensation" if len(failed) == 1 else "compensations"
        super().__init__(f"{len(failed)} {noun} failed: {details}")
        self.failed = failed
        self.errors = errors


class NotInStepError(OpenWorkflowError, RuntimeError):
    """``openworkflow.step_context()`` was called outside a step body run by ``step.run``."""


class StepTimeoutError(OpenWorkflowError, TimeoutError):
    """One attempt of a step ran past the ``timeout`` given to ``step.run``.

    An async body was cancelled; a sync body's late result is discarded. The
    attempt counts as failed and is retried by the step's retry policy.

    Attributes:
        step_name: The step's durable name.
        timeout_ms: The timeout, in milliseconds.
    """

    def __init__(self, step_name: str, timeout_ms: int) -> None:
        super().__init__(f"step {step_name!r} timed out after {_seconds(timeout_ms)}")
        self.step_name = step_name
        self.timeout_ms = timeout_ms


def _seconds(milliseconds: int) -> str:
    return f"{milliseconds / 1000:g}s"


class StepLimitExceededError(OpenWorkflowError):
    """A run exceeded the number of step attempts it may record."""

    code = "STEP_LIMIT_EXCEEDED"

    def __init__(self, limit: int, step_count: int) -> None:
        super().__init__(
            f"Exceeded the step limit of {limit} attempts (current count: {step_count})"
        )
        self.limit = limit
        self.step_count = step_count


class StepCrashLoopError(OpenWorkflowError):
    """A step was left unfinished too many times, so it is failed instead of run again.

    Each time a worker crashed, hung or lost its lease while running the step,
    an unfinished (``running``) attempt was left behind. After ``limit`` of
    them the step is treated as poison: running it again would likely take
    down another worker.
    """

    code = "STEP_CRASH_LOOP"

    def __init__(self, step_name: str, unfinished: int, limit: int) -> None:
        super().__init__(
            f"step {step_name!r} was left unfinished {unfinished} times (its worker crashed, "
            f"hung or lost its lease while running it; the limit is {limit}), so it is failed "
            "instead of being run again. Fix the step, then retry the run "
            "(`ow runs retry <id>`); to allow more, raise the worker's step_crash_limit "
            "(config worker={...}, OPENWORKFLOW_WORKER_STEP_CRASH_LIMIT or Worker(...))."
        )
        self.step_name = step_name
        self.unfinished = unfinished
        self.limit = limit


class WorkflowRunNotFoundError(OpenWorkflowError, LookupError):
    """No workflow run with this id exists in the backend's namespace."""

    def __init__(self, workflow_run_id: str) -> None:
        super().__init__(f"Workflow run {workflow_run_id} does not exist")
        self.workflow_run_id = workflow_run_id


class AmbiguousRunIdError(OpenWorkflowError, LookupError):
    """A run id prefix matched several runs; give more of the id.

    Attributes:
        prefix: What was looked up.
        candidates: Ids of (some of) the runs it matched.
    """

    def __init__(self, prefix: str, candidates: list[str]) -> None:
        shown = ", ".join(candidates)
        super().__init__(
            f"run id prefix {prefix!r} matches several runs ({shown}, ...): give more of the id"
        )
        self.prefix = prefix
        self.candidates = candidates


class InvalidRunStateError(OpenWorkflowError):
    """The run's status does not allow the requested operation."""


class ForkStepNotFoundError(OpenWorkflowError, LookupError):
    """``ow.fork(run_id, from_step=NAME)``: the run never ran a step named ``NAME``.

    Attributes:
        workflow_run_id: The run to fork.
        from_step: The step name asked for.
        step_names: The run's step names, in the order they first ran (at most ten).
    """

    def __init__(self, workflow_run_id: str, from_step: str, step_names: list[str]) -> None:
        known = ", ".join(repr(name) for name in step_names) or "none"
        super().__init__(
            f"workflow run {workflow_run_id} has no step {from_step!r} to fork from; "
            f"its steps: {known}"
        )
        self.workflow_run_id = workflow_run_id
        self.from_step = from_step
        self.step_names = step_names


class WorkflowFailedError(OpenWorkflowError):
    """The awaited run failed; ``error`` is its stored error object."""

    def __init__(self, message: str, *, workflow_run_id: str, error: Any) -> None:
        super().__init__(message)
        self.workflow_run_id = workflow_run_id
        self.error = error


class WorkflowCanceledError(OpenWorkflowError):
    """The awaited run was canceled."""

    def __init__(self, message: str, *, workflow_run_id: str) -> None:
        super().__init__(message)
        self.workflow_run_id = workflow_run_id


class ResultTimeoutError(OpenWorkflowError, TimeoutError):
    """``handle.result(timeout=...)`` ran out of time; the run itself goes on."""

    def __init__(self, message: str, *, workflow_run_id: str) -> None:
        super().__init__(message)
        self.workflow_run_id = workflow_run_id


class EventNotSetError(OpenWorkflowError, LookupError):
    """``handle.get_event(key)``: the run finished without ever setting ``key``.

    Attributes:
        workflow_run_id: The run waited on.
        key: The event key that was never set.
    """

    def __init__(self, workflow_run_id: str, key: str) -> None:
        super().__init__(f"Workflow run {workflow_run_id} finished without setting event {key!r}")
        self.workflow_run_id = workflow_run_id
        self.key = key


class ChildWorkflowError(OpenWorkflowError):
    """A child workflow awaited by ``step.run_workflow()`` did not complete.

    Attributes:
        workflow_run_id: The child run's id.
        step_name: The parent's durable step name.
    """

    def __init__(self, message: str, *, workflow_run_id: str | None, step_name: str) -> None:
        super().__init__(message)
        self.workflow_run_id = workflow_run_id
        self.step_name = step_name


class ChildWorkflowFailedError(ChildWorkflowError):
    """The child run failed; ``child_error`` holds its stored error (name, message, stack)."""

    def __init__(
        self,
        message: str,
        *,
        workflow_run_id: str | None,
        step_name: str,
        child_error: object = None,
    ) -> None:
        super().__init__(message, workflow_run_id=workflow_run_id, step_name=step_name)
        self.child_error = child_error


class ChildWorkflowCanceledError(ChildWorkflowError):
    """The child run was canceled."""


class ChildWorkflowTimeoutError(ChildWorkflowError, TimeoutError):
    """The parent stopped waiting for the child; the child keeps running."""


class SignalWaitConflictError(OpenWorkflowError):
    """Another step of the same run already waits on this signal."""


class SignalValidationError(OpenWorkflowError, ValueError):
    """A delivered signal payload did not match the wait's schema."""


class ReplayDivergenceError(OpenWorkflowError):
    """Replaying a recorded run with today's workflow code left the recorded steps.

    Raised by :func:`openworkflow.testing.replay` for the first step where the
    code diverges; :func:`openworkflow.testing.replay_many` raises one listing
    every diverging history (``errors`` holds each one's error).

    Attributes:
        kind: How it diverged: ``"added"`` (a step with no history runs while
            recorded steps remain, or after a finished run's last step: added
            or renamed), ``"reordered"``, ``"removed"`` (the workflow ended
            without reaching recorded steps), ``"kind_changed"`` (the name was
            recorded for another kind of step) or ``"child_changed"`` (a
            child-workflow step now starts another workflow).
        step_name: The durable name of the step where the code diverges.
        workflow_name: The recorded run's workflow.
        workflow_run_id: The recorded run's id.
        source: The history file replayed, or None for a history given as a dict.
        errors: For :func:`~openworkflow.testing.replay_many`, every history's
            error, in order; otherwise just this one.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        step_name: str,
        workflow_name: str,
        workflow_run_id: str,
        source: str | None = None,
        errors: tuple[ReplayDivergenceError, ...] = (),
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.step_name = step_name
        self.workflow_name = workflow_name
        self.workflow_run_id = workflow_run_id
        self.source = source
        self.errors = errors or (self,)


class UnprotectedBindError(OpenWorkflowError, ValueError):
    """A non-loopback address without credentials and without ``insecure``."""


class InvalidDashboardAuthError(OpenWorkflowError, ValueError):
    """``OPENWORKFLOW_DASHBOARD_AUTH`` is not ``user:password`` (the message omits the value)."""


class UnknownHostError(OpenWorkflowError, ValueError):
    """The address to listen on does not resolve."""


class ListenError(OpenWorkflowError):
    """The address resolves but cannot be bound (port in use, no permission)."""


class BackendError(OpenWorkflowError):
    """The backend failed to carry out an operation."""


class WriteConflictError(BackendError):
    """A write fenced on run ownership or state matched no row.

    The run was canceled, finished, or claimed by another worker; the message
    keeps the original's wording (``Failed to create step attempt``).
    """


class BackendUnavailableError(BackendError):
    """The database could not be reached (connection refused, dropped or restarting).

    Nothing was decided: the worker backs off and retries, and a run it was
    executing is resumed from its last recorded step.
    """


class BackendClosedError(BackendError):
    """The backend was stopped and can no longer be used."""


class DatabaseNotFoundError(BackendError):
    """The database file does not exist and the backend was asked not to create it.

    Attributes:
        path: The database file that was looked for.
    """

    def __init__(self, path: str) -> None:
        super().__init__(f"no database yet at {path} (a worker or `ow run` creates it)")
        self.path = path
