"""OpenWorkflow for Python: durable workflows stored in SQLite or PostgreSQL.

Define workflows with :func:`workflow`, start them with :class:`OpenWorkflow`,
and execute them with a :class:`Worker`.
"""

from __future__ import annotations

from openworkflow.client import OpenWorkflow, RunHandle, SyncOpenWorkflow, SyncRunHandle
from openworkflow.config import define_config
from openworkflow.connect import connect
from openworkflow.core.backend import Backend, StepAttemptCounts, WorkflowRunCounts
from openworkflow.core.cursor import Page
from openworkflow.core.retry import RetryPolicy
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
    InputValidationError,
    NonRetryableError,
    OpenWorkflowError,
    ResultTimeoutError,
    StepCrashLoopError,
    StepLimitExceededError,
    WorkflowCanceledError,
    WorkflowFailedError,
)
from openworkflow.postgres import PostgresBackend
from openworkflow.sqlite import SqliteBackend
from openworkflow.worker.worker import Worker

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "InputValidationError",
    "NonRetryableError",
    "OpenWorkflow",
    "OpenWorkflowError",
    "Page",
    "PostgresBackend",
    "ResultTimeoutError",
    "RetryPolicy",
    "RunHandle",
    "RunInfo",
    "SqliteBackend",
    "Step",
    "StepAttempt",
    "StepAttemptCounts",
    "StepCrashLoopError",
    "StepLimitExceededError",
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
    "workflow",
]
