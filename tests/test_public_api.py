from __future__ import annotations

import openworkflow


def test_public_names_are_pinned() -> None:
    assert openworkflow.__all__ == sorted(openworkflow.__all__)
    assert set(openworkflow.__all__) == {
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
    }
    for name in openworkflow.__all__:
        assert getattr(openworkflow, name) is not None


def test_every_error_is_an_open_workflow_error() -> None:
    from openworkflow import errors

    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, errors.OpenWorkflowError)
