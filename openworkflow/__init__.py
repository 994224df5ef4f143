"""OpenWorkflow for Python: durable workflows stored in SQLite or PostgreSQL.

Define workflows with :func:`workflow`, start them with :class:`OpenWorkflow`,
and execute them with a :class:`Worker`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from openworkflow.client import OpenWorkflow, RunHandle
from openworkflow.client_batch import RunRequest
from openworkflow.config import define_config
from openworkflow.connect import connect
from openworkflow.core.backend import Backend, StepAttemptCounts, WorkflowRunCounts
from openworkflow.core.concurrency import Concurrency
from openworkflow.core.cursor import Page
from openworkflow.core.flow_control import RateLimit
from openworkflow.core.retry import RetryPolicy
from openworkflow.core.schedule import Schedule
from openworkflow.core.step import Step
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_definition import (
    RunInfo,
    Workflow,
    WorkflowSpec,
    declare_workflow,
    workflow,
)
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import (
    ChildWorkflowCanceledError,
    ChildWorkflowError,
    ChildWorkflowFailedError,
    ChildWorkflowTimeoutError,
    CompensationError,
    EventNotSetError,
    InputValidationError,
    NonRetryableError,
    NotInStepError,
    OpenWorkflowError,
    ResultTimeoutError,
    RetryAfter,
    SignalValidationError,
    SignalWaitConflictError,
    StepCrashLoopError,
    StepFailedError,
    StepLimitExceededError,
    StepTimeoutError,
    WorkflowCanceledError,
    WorkflowFailedError,
)
from openworkflow.saga import Saga
from openworkflow.step_context import StepContext, step_context
from openworkflow.sync_client import SyncOpenWorkflow, SyncRunHandle
from openworkflow.worker.worker import Worker

if TYPE_CHECKING:
    from openworkflow.postgres.backend import PostgresBackend
    from openworkflow.sqlite.backend import SqliteBackend

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "ChildWorkflowCanceledError",
    "ChildWorkflowError",
    "ChildWorkflowFailedError",
    "ChildWorkflowTimeoutError",
    "CompensationError",
    "Concurrency",
    "EventNotSetError",
    "InputValidationError",
    "NonRetryableError",
    "NotInStepError",
    "OpenWorkflow",
    "OpenWorkflowError",
    "Page",
    "PostgresBackend",
    "RateLimit",
    "ResultTimeoutError",
    "RetryAfter",
    "RetryPolicy",
    "RunHandle",
    "RunInfo",
    "RunRequest",
    "Saga",
    "Schedule",
    "SignalValidationError",
    "SignalWaitConflictError",
    "SqliteBackend",
    "Step",
    "StepAttempt",
    "StepAttemptCounts",
    "StepContext",
    "StepCrashLoopError",
    "StepFailedError",
    "StepLimitExceededError",
    "StepTimeoutError",
    "SyncOpenWorkflow",
    "SyncRunHandle",
    "Worker",
    "Workflow",
    "WorkflowCanceledError",
    "WorkflowFailedError",
    "WorkflowRun",
    "WorkflowRunCounts",
    "WorkflowSpec",
    "connect",
    "declare_workflow",
    "define_config",
    "step_context",
    "workflow",
]


def __getattr__(name: str) -> Any:
    # The backends (and their drivers) load on first use: `import openworkflow`
    # does not import psycopg for a SQLite user.
    if name == "PostgresBackend":
        from openworkflow.postgres.backend import PostgresBackend

        return PostgresBackend
    if name == "SqliteBackend":
        from openworkflow.sqlite.backend import SqliteBackend

        return SqliteBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
