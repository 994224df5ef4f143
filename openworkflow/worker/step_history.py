"""A run's step attempts as seen by one execution pass: memo cache, names, waits, limit."""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import datetime

from openworkflow.core.step_attempt import StepAttempt, StepAttemptStatus, StepKind
from openworkflow.core.waits import WAIT_KINDS, WaitContext, wait_resume_at
from openworkflow.core.workflow_definition import DEFAULT_MAX_STEP_ATTEMPTS
from openworkflow.errors import StepLimitExceededError
from openworkflow.worker.failures import is_deferral

#: The default step limit (a workflow's ``max_step_attempts`` overrides it).
WORKFLOW_STEP_LIMIT = DEFAULT_MAX_STEP_ATTEMPTS


@dataclass(frozen=True, slots=True)
class Wait:
    """A running wait (sleep, child workflow, signal) and when it resumes."""

    attempt: StepAttempt
    resume_at: datetime


class StepHistory:
    """Memoized step attempts of one run, and the naming state of the current pass."""

    def __init__(self, attempts: list[StepAttempt], step_limit: int = WORKFLOW_STEP_LIMIT) -> None:
        self.step_limit = max(1, step_limit)
        self.step_count = len(attempts)
        self.cache: dict[str, StepAttempt] = {}
        self.failed_counts: dict[str, int] = {}
        self.failed: dict[str, StepAttempt] = {}
        self.running: dict[str, StepAttempt] = {}
        # Function steps' attempts left running by earlier passes (their
        # worker crashed, hung or lost its lease): the crash-loop count.
        self.unfinished_counts: dict[str, int] = {}
        self._resolved: set[str] = set()
        self._next_index: dict[str, int] = {}
        # Running waits by resume time; an entry is stale once its attempt left
        # ``running`` or was replaced. Every park asks for the earliest wait, so
        # a fan-out of N children must not scan N waits N times (quadratic).
        self._waits: list[tuple[datetime, int, StepAttempt]] = []
        self._wait_seq = 0
        for attempt in attempts:
            if attempt.is_completed:
                self.cache[attempt.step_name] = attempt
            elif attempt.status == StepAttemptStatus.FAILED:
                if not is_deferral(attempt):
                    self.failed_counts[attempt.step_name] = (
                        self.failed_counts.get(attempt.step_name, 0) + 1
                    )
                self.failed[attempt.step_name] = attempt
            else:
                self.running[attempt.step_name] = attempt
                self._push_wait(attempt)
                if attempt.kind == StepKind.FUNCTION:
                    self.unfinished_counts[attempt.step_name] = (
                        self.unfinished_counts.get(attempt.step_name, 0) + 1
                    )

    def resolve_step_name(self, base: str) -> str:
        """Return the durable name for a step: ``base``, then ``base:1``, ``base:2``...

        Indices skip names already used in this pass, including literal ones,
        exactly as the original does, so histories stay compatible.
        """
        if base not in self._resolved:
            self._resolved.add(base)
            return base
        index = self._next_index.get(base, 1)
        while f"{base}:{index}" in self._resolved:
            index += 1
        self._next_index[base] = index + 1
        name = f"{base}:{index}"
        self._resolved.add(name)
        return name

    def find_cached(self, step_name: str) -> StepAttempt | None:
        """The completed attempt of this step, if any."""
        return self.cache.get(step_name)

    def unfinished_attempt_count(self, step_name: str) -> int:
        """How many attempts of this function step earlier passes left running."""
        return self.unfinished_counts.get(step_name, 0)

    def failed_attempt_count(self, step_name: str) -> int:
        """How many attempts of this step failed so far."""
        return self.failed_counts.get(step_name, 0)

    def _push_wait(self, attempt: StepAttempt) -> None:
        resume_at = wait_resume_at(attempt)
        if resume_at is not None:
            self._wait_seq += 1
            heapq.heappush(self._waits, (resume_at, self._wait_seq, attempt))

    def earliest_running_wait(self) -> Wait | None:
        """The running wait that resumes first (the first recorded among equals)."""
        waits = self._waits
        while waits:
            resume_at, _, attempt = waits[0]
            if self.running.get(attempt.step_name) is attempt:
                return Wait(attempt, resume_at)
            heapq.heappop(waits)  # finished or replaced since it was pushed
        return None

    def only_sleeps_running(self) -> bool:
        """Whether every running wait is a sleep (no child or signal could have answered)."""
        return all(
            attempt.kind == StepKind.SLEEP
            for attempt in self.running.values()
            if attempt.kind in WAIT_KINDS
        )

    def earliest_wait_including(self, wait: Wait) -> Wait:
        """The earlier of ``wait`` and every other running wait."""
        earliest = self.earliest_running_wait()
        if earliest is not None and earliest.resume_at < wait.resume_at:
            return earliest
        return wait

    def ensure_can_record_new_attempt(self) -> None:
        """Raise :class:`StepLimitExceededError` when the run has no attempts left."""
        if self.step_count >= self.step_limit:
            raise StepLimitExceededError(self.step_limit, self.step_count)

    def record_new_attempt(self, attempt: StepAttempt) -> None:
        """Note an attempt just created."""
        self.running[attempt.step_name] = attempt
        self._push_wait(attempt)
        self.step_count += 1

    def record_update(self, attempt: StepAttempt) -> None:
        """Replace a running attempt with its newer row (e.g. after linking a child)."""
        self.running[attempt.step_name] = attempt
        self._push_wait(attempt)

    def running_signal_wait(self, signal: str, *, excluding: str) -> str | None:
        """The name of another running step waiting on ``signal``, if any."""
        for name, attempt in self.running.items():
            context = WaitContext.of(attempt)
            if (
                context is not None
                and context.kind == StepKind.SIGNAL_WAIT
                and context.signal == signal
                and name != excluding
            ):
                return name
        return None

    def record_completion(self, attempt: StepAttempt) -> None:
        """Note an attempt just completed."""
        self.running.pop(attempt.step_name, None)
        self.cache[attempt.step_name] = attempt

    def record_failure(self, attempt: StepAttempt) -> int:
        """Note an attempt just failed; return the step's failure count."""
        self.running.pop(attempt.step_name, None)
        count = self.failed_counts.get(attempt.step_name, 0)
        if not is_deferral(attempt):  # a RetryAfter spends no attempt
            count += 1
            self.failed_counts[attempt.step_name] = count
        self.failed[attempt.step_name] = attempt
        return count
