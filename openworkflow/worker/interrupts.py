"""The ways a pass is cut short inside workflow code, and which one decides a pass.

They are ``BaseException`` subclasses so that ``except Exception`` in workflow
code can neither swallow a durable wait nor an engine fault.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import TypeVar

from openworkflow.core.json import JsonValue
from openworkflow.errors import BackendError
from openworkflow.worker.step_history import Wait

T = TypeVar("T")


class Suspend(BaseException):
    """Park the run until ``wait.resume_at`` (a sleep, child or signal wait)."""

    def __init__(self, wait: Wait) -> None:
        super().__init__("workflow run suspended")
        self.wait = wait


class RateLimited(BaseException):
    """A step's rate limit has no room: park the run until ``retry_at``, spending nothing.

    Raised before the step's body runs, so no step attempt is written and the
    step's retry budget is untouched; the next pass asks for a token again.
    """

    def __init__(self, retry_at: datetime) -> None:
        super().__init__("step rate limited")
        self.retry_at = retry_at


class ContinueAsNew(BaseException):
    """The workflow continues as a fresh run of itself: this run completes, linked to it.

    ``input`` is the successor's stored input and ``concurrency`` its
    ``(concurrency_key, concurrency_limit)``, both computed when it was asked for.
    """

    def __init__(self, input: JsonValue, concurrency: tuple[str | None, int | None]) -> None:
        super().__init__("workflow run continues as new")
        self.input = input
        self.concurrency = concurrency


class StepRetry(BaseException):
    """A step failed and its policy tries it again: end the pass, reschedule the run.

    Workflow code never sees a failure its step will retry, so ``except`` only
    ever catches a step's final failure.
    """

    def __init__(self, error: JsonValue, available_at: datetime) -> None:
        super().__init__("step retry scheduled")
        self.error = error
        self.available_at = available_at


class StaleBranch(BaseException):
    """A parallel branch tried to write after its pass ended."""


class EngineFault(BaseException):
    """The engine's own read or write failed (database down, run moved on).

    The pass ends without a transition, and the run resumes from its last
    recorded step.
    """

    def __init__(self, error: BackendError) -> None:
        super().__init__(str(error))
        self.error = error


async def engine_call(call: Awaitable[T]) -> T:
    """Await an engine backend call, turning its failures into :class:`EngineFault`."""
    try:
        return await call
    except BackendError as error:
        raise EngineFault(error) from error


def deciding_error(error: BaseException) -> BaseException:
    """Pick what decides the outcome from a TaskGroup's exception group.

    An engine fault wins (nothing may be written); then a step failure or
    other error (the run must not sleep on a failure); among several parks
    (waits and rate-limited steps), the earliest wins.
    """
    if not isinstance(error, BaseExceptionGroup):
        return error
    leaves = _leaves(error)
    faults = [leaf for leaf in leaves if isinstance(leaf, EngineFault)]
    if faults:
        return faults[0]
    failures = [
        leaf for leaf in leaves if not isinstance(leaf, Suspend | RateLimited | StaleBranch)
    ]
    if failures:
        return failures[0]
    parks = [leaf for leaf in leaves if isinstance(leaf, Suspend | RateLimited)]
    if parks:
        return min(parks, key=_park_until)
    return leaves[0] if leaves else error


def _park_until(park: Suspend | RateLimited) -> datetime:
    return park.wait.resume_at if isinstance(park, Suspend) else park.retry_at


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for item in group.exceptions:
        if isinstance(item, BaseExceptionGroup):
            leaves.extend(_leaves(item))
        else:
            leaves.append(item)
    return leaves
