from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from openworkflow import RetryPolicy
from openworkflow.core.retry import (
    DEFAULT_STEP_RETRY_POLICY,
    DEFAULT_WORKFLOW_RETRY_POLICY,
    compute_failed_workflow_run_update,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_backoff_formula_matches_the_original() -> None:
    policy = DEFAULT_STEP_RETRY_POLICY
    assert [policy.delay_ms(n) for n in (1, 2, 3, 4, 8, 20)] == [
        1000,
        2000,
        4000,
        8000,
        100_000,
        100_000,
    ]


def test_omitted_fields_take_the_defaults_of_where_the_policy_is_used() -> None:
    partial = RetryPolicy(initial_interval="2s")
    assert partial.resolve(DEFAULT_STEP_RETRY_POLICY).maximum_attempts == 10
    assert partial.resolve(DEFAULT_WORKFLOW_RETRY_POLICY).maximum_attempts == 1
    assert partial.resolve(DEFAULT_STEP_RETRY_POLICY).initial_interval_ms == 2000


@pytest.mark.parametrize(
    "kwargs",
    [{"maximum_attempts": -1}, {"backoff_coefficient": 0}, {"initial_interval": "nope"}],
)
def test_invalid_policies_are_refused_when_written(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"RetryPolicy|invalid duration"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_retry_decision_order() -> None:
    policy = RetryPolicy(maximum_attempts=3).resolve(DEFAULT_WORKFLOW_RETRY_POLICY)
    error = {"message": "boom"}
    retry = compute_failed_workflow_run_update(policy, 1, None, error, NOW)
    assert (retry.status, retry.available_at) == ("pending", NOW + timedelta(seconds=1))
    assert compute_failed_workflow_run_update(policy, 3, None, error, NOW).status == "failed"
    past = compute_failed_workflow_run_update(policy, 1, NOW, error, NOW)
    assert past.error == {"message": "Workflow run deadline exceeded"}
    soon = compute_failed_workflow_run_update(
        policy, 1, NOW + timedelta(milliseconds=500), error, NOW
    )
    assert (soon.status, soon.error, soon.finished_at) == ("failed", error, NOW)
    unlimited = RetryPolicy(maximum_attempts=0).resolve(DEFAULT_WORKFLOW_RETRY_POLICY)
    assert compute_failed_workflow_run_update(unlimited, 500, None, error, NOW).status == "pending"
