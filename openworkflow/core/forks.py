"""Forks (``ow.fork(run_id, from_step=NAME)``): which steps a fork keeps, and the protocol.

A fork is a new run of the same workflow and version, with the source run's
input (or a new one), whose history holds copies of the source's step
attempts made before the first attempt of step ``NAME``: on its first pass
those steps replay from the copies, and ``NAME`` and everything after it run
again (after a fix, "rerun from here"). The link is this port's own table
``run_forks``; a TypeScript worker sees an ordinary run with a history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from openworkflow.core.json import JsonValue
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.errors import ForkStepNotFoundError

_SHOWN_STEPS = 10


def attempts_to_copy(
    run_id: str, attempts: Sequence[StepAttempt], from_step: str
) -> list[StepAttempt]:
    """The source attempts a fork from ``from_step`` keeps, oldest first.

    Every attempt created before the first attempt of ``from_step`` that is
    not still running (completed ones, and failed ones: retries counted and
    final failures memoized alike, so the fork's replay takes the same
    branches). Attempts are ordered by ``(created_at, id)``.

    Raises:
        ForkStepNotFoundError: the run has no attempt of ``from_step``.
    """
    ordered = sorted(attempts, key=lambda attempt: (attempt.created_at, attempt.id))
    first = next((a for a in ordered if a.step_name == from_step), None)
    if first is None:
        names = list(dict.fromkeys(attempt.step_name for attempt in ordered))
        raise ForkStepNotFoundError(run_id, from_step, names[:_SHOWN_STEPS])
    kept = []
    for attempt in ordered:
        if attempt is first:
            break
        if attempt.status != "running":
            kept.append(attempt)
    return kept


@dataclass(frozen=True, slots=True, kw_only=True)
class ForkWorkflowRunParams:
    """Input of :meth:`ForkStore.fork_workflow_run`."""

    source_run_id: str
    from_step: str
    copied_attempt_ids: Sequence[str]
    """The source attempts to copy (see :func:`attempts_to_copy`)."""
    input: JsonValue = None
    replace_input: bool = False
    """Start the fork with ``input`` instead of the source run's input."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFork:
    """A row of ``run_forks``: run ``workflow_run_id`` was forked from ``forked_from_id``."""

    workflow_run_id: str
    forked_from_id: str
    from_step: str
    created_at: datetime


class ForkStore(Protocol):
    """Forking a run from one of its steps (part of every backend)."""

    async def fork_workflow_run(self, params: ForkWorkflowRunParams) -> str:
        """Create the fork, its copied attempts and its link in one transaction; its id.

        The fork is pending and due now, with 0 attempts, no idempotency key,
        deadline or parent; its workflow, version, priority and concurrency
        columns are the source's.

        Raises:
            WorkflowRunNotFoundError: the source run does not exist.
        """
        ...

    async def get_run_fork(self, workflow_run_id: str) -> RunFork | None:
        """The run's fork link, when it is a fork."""
        ...

    async def list_run_forks(self, forked_from_id: str) -> list[RunFork]:
        """The forks made of a run, oldest first."""
        ...
