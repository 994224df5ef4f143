from __future__ import annotations

import re

import openworkflow


def test_public_names_are_pinned() -> None:
    assert openworkflow.__all__ == sorted(openworkflow.__all__)
    assert set(openworkflow.__all__) == {
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
    }
    for name in openworkflow.__all__:
        assert getattr(openworkflow, name) is not None


def test_every_error_is_an_open_workflow_error() -> None:
    from openworkflow import errors

    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, errors.OpenWorkflowError)


def test_every_error_class_is_in_the_documented_tree() -> None:
    from openworkflow import errors

    tree = errors.__doc__ or ""
    for name, value in vars(errors).items():
        if isinstance(value, type) and issubclass(value, Exception):
            assert re.search(rf"^[│├└─ ]*{name}\b", tree, re.MULTILINE), name


def test_step_shows_only_what_workflow_code_calls() -> None:
    public = sorted(name for name in dir(openworkflow.Step) if not name.startswith("_"))
    assert public == [
        "continue_as_new",
        "run",
        "run_workflow",
        "send_signal",
        "set_event",
        "sleep",
        "start_workflow",
        "stream",
        "wait_for_signal",
    ]


def test_importing_the_package_loads_no_database_driver() -> None:
    import subprocess
    import sys

    probe = "import sys, openworkflow; print(sorted(m for m in sys.modules if 'psycopg' in m))"
    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == "[]"
    assert openworkflow.PostgresBackend.__name__ == "PostgresBackend"  # loaded on first use
