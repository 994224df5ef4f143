"""Retry policies, the backoff formula and the decision taken when a run fails."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from openworkflow.core.duration import Duration, parse_duration_ms
from openworkflow.core.json import JsonValue

DEADLINE_EXCEEDED_MESSAGE = "Workflow run deadline exceeded"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often and how soon a failed step or workflow is tried again.

    Omitted fields take the defaults of where the policy is used: steps retry
    up to 10 attempts, workflows do not retry (1 attempt). The delay before
    attempt ``n + 1`` is ``min(initial_interval * backoff_coefficient ** (n - 1),
    maximum_interval)``. ``maximum_attempts=0`` means unlimited.

    Example:
        ``RetryPolicy(initial_interval="2s", maximum_attempts=5)``
    """

    initial_interval: Duration | None = None
    backoff_coefficient: float | None = None
    maximum_interval: Duration | None = None
    maximum_attempts: int | None = None

    def __post_init__(self) -> None:
        for field_name in ("initial_interval", "maximum_interval"):
            value = getattr(self, field_name)
            if value is not None and parse_duration_ms(value) < 0:
                raise ValueError(f"RetryPolicy.{field_name} must not be negative, got {value!r}")
        coefficient = self.backoff_coefficient
        if coefficient is not None and not (math.isfinite(coefficient) and coefficient > 0):
            raise ValueError(
                f"RetryPolicy.backoff_coefficient must be a positive number, got {coefficient!r}"
            )
        attempts = self.maximum_attempts
        if attempts is not None and (
            isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0
        ):
            raise ValueError(
                "RetryPolicy.maximum_attempts must be a whole number >= 0 (0 = unlimited), "
                f"got {attempts!r}"
            )

    def resolve(self, defaults: ResolvedRetryPolicy) -> ResolvedRetryPolicy:
        """Fill omitted fields from ``defaults``."""
        return ResolvedRetryPolicy(
            initial_interval_ms=defaults.initial_interval_ms
            if self.initial_interval is None
            else parse_duration_ms(self.initial_interval),
            backoff_coefficient=defaults.backoff_coefficient
            if self.backoff_coefficient is None
            else float(self.backoff_coefficient),
            maximum_interval_ms=defaults.maximum_interval_ms
            if self.maximum_interval is None
            else parse_duration_ms(self.maximum_interval),
            maximum_attempts=defaults.maximum_attempts
            if self.maximum_attempts is None
            else self.maximum_attempts,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedRetryPolicy:
    """A retry policy with every field known, in milliseconds."""

    initial_interval_ms: float
    backoff_coefficient: float
    maximum_interval_ms: float
    maximum_attempts: int

    def delay_ms(self, attempt: int) -> float:
        """Backoff before the attempt after ``attempt`` failed attempts."""
        exponential = self.initial_interval_ms * self.backoff_coefficient ** max(0, attempt - 1)
        return min(exponential, self.maximum_interval_ms)


DEFAULT_STEP_RETRY_POLICY = ResolvedRetryPolicy(
    initial_interval_ms=1000,
    backoff_coefficient=2,
    maximum_interval_ms=100_000,
    maximum_attempts=10,
)
DEFAULT_WORKFLOW_RETRY_POLICY = ResolvedRetryPolicy(
    initial_interval_ms=1000, backoff_coefficient=2, maximum_interval_ms=100_000, maximum_attempts=1
)
"""Workflow-level retries are off unless the workflow asks for them (one attempt)."""

MISSING_DEFINITION_RETRY_POLICY = ResolvedRetryPolicy(
    initial_interval_ms=5000, backoff_coefficient=2, maximum_interval_ms=300_000, maximum_attempts=0
)
"""A run no worker here can execute is a deployment matter: retry forever, 5 s up to 5 min."""


@dataclass(frozen=True, slots=True)
class FailedRunUpdate:
    """What a failure does to a run: back to pending later, or failed for good."""

    status: str
    available_at: datetime | None
    finished_at: datetime | None
    error: JsonValue


def compute_failed_workflow_run_update(
    policy: ResolvedRetryPolicy,
    attempts: int,
    deadline_at: datetime | None,
    error: JsonValue,
    now: datetime,
) -> FailedRunUpdate:
    """Apply the retry decision of the original, in its order.

    1. past the deadline: failed with "Workflow run deadline exceeded";
    2. attempts used up (``maximum_attempts > 0``): failed with ``error``;
    3. the next attempt would start at or after the deadline: failed;
    4. otherwise pending again after the backoff delay.
    """
    if deadline_at is not None and now >= deadline_at:
        return FailedRunUpdate("failed", None, now, {"message": DEADLINE_EXCEEDED_MESSAGE})
    if policy.maximum_attempts > 0 and attempts >= policy.maximum_attempts:
        return FailedRunUpdate("failed", None, now, error)
    retry_at = now + timedelta(milliseconds=policy.delay_ms(attempts))
    if deadline_at is not None and retry_at >= deadline_at:
        return FailedRunUpdate("failed", None, now, error)
    return FailedRunUpdate("pending", retry_at, None, error)
