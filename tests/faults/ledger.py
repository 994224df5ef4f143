"""Count lost and duplicated outcomes from the database, for the fault suite's figures.

A figure's ``lost`` and ``duplicated`` must come from what the backend
stored, never from constants. :func:`tally` reads the given runs and their
step attempts through the :class:`~openworkflow.core.backend.Backend` API (so
it works on PostgreSQL and SQLite alike) and compares them with what each run
should have ended as:

- **lost**: a run that is missing, not in its expected terminal status, or
  (when an output is expected) terminal with another output;
- **duplicated**: a step completed by more than one attempt of one run (two
  completions, and possibly two different outputs, for one step).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from openworkflow.core.backend import (
    Backend,
    GetWorkflowRunParams,
    ListStepAttemptsParams,
    ListWorkflowRunsParams,
)

if TYPE_CHECKING:
    from tests.faults.process_app import Database

ANY_OUTPUT: Any = object()
"""Expected output that accepts whatever the run returned."""


@dataclass(frozen=True)
class Expected:
    """How a run should have ended: its status (or one of several) and its output.

    The output is not compared when it is :data:`ANY_OUTPUT`.
    """

    status: str | tuple[str, ...] = "completed"
    output: Any = ANY_OUTPUT


@dataclass
class Tally:
    """What :func:`tally` found; ``lost`` and ``duplicated`` go into the figure."""

    runs: int = 0
    lost_runs: list[str] = field(default_factory=list)
    duplicated_steps: list[tuple[str, str]] = field(default_factory=list)
    completed_attempts: int = 0

    @property
    def lost(self) -> int:
        """How many runs did not end as expected."""
        return len(self.lost_runs)

    @property
    def duplicated(self) -> int:
        """How many extra completions steps got (a step completed twice counts 1)."""
        return len(self.duplicated_steps)


async def tally(
    backend: Backend,
    expected: Mapping[str, Expected] | Iterable[str],
) -> Tally:
    """Compare the stored runs and step attempts with ``expected`` (or "completed" for ids)."""
    wanted = _wanted(expected)
    stored: dict[str, tuple[str, Any]] = {}
    completed: list[tuple[str, str]] = []
    for run_id in wanted:
        run = await backend.get_workflow_run(GetWorkflowRunParams(workflow_run_id=run_id))
        if run is not None:
            stored[run_id] = (run.status, run.output)
        completed += [(run_id, name) for name in await completed_step_names(backend, run_id)]
    return tally_rows(stored, completed, wanted)


def tally_rows(
    stored: Mapping[str, tuple[str, Any]],
    completed: Iterable[tuple[str, str]],
    expected: Mapping[str, Expected] | Iterable[str],
) -> Tally:
    """:func:`tally` over rows already read: ``stored`` maps run id to (status, output),
    ``completed`` lists ``(run_id, step_name)`` of every completed step attempt.
    """
    wanted = _wanted(expected)
    result = Tally(runs=len(wanted))
    for run_id, want in wanted.items():
        row = stored.get(run_id)
        if row is None or not _ended_as(row[0], row[1], want):
            result.lost_runs.append(run_id)
    counts = Counter(key for key in completed if key[0] in wanted)
    result.completed_attempts = sum(counts.values())
    for key, count in counts.items():
        result.duplicated_steps.extend([key] * (count - 1))
    return result


async def tally_scenario(db: Database, expected: Mapping[str, Expected] | Iterable[str]) -> Tally:
    """:func:`tally` through a process scenario's ``Database`` (``tests.faults.process_app``)."""
    runs = await db.runs()
    stored = {run_id: (row.status, row.output) for run_id, row in runs.items()}
    completed = [(run_id, step_name) for run_id, step_name, _ in await db.completed_steps()]
    return tally_rows(stored, completed, expected)


def _wanted(expected: Mapping[str, Expected] | Iterable[str]) -> dict[str, Expected]:
    if isinstance(expected, Mapping):
        return dict(expected)
    return {run_id: Expected() for run_id in expected}


def _ended_as(status: str, output: Any, want: Expected) -> bool:
    # Legacy rows say "succeeded" for "completed".
    normal = "completed" if status == "succeeded" else status
    allowed = (want.status,) if isinstance(want.status, str) else want.status
    if normal not in allowed:
        return False
    return want.output is ANY_OUTPUT or output == want.output


async def completed_step_names(backend: Backend, run_id: str) -> list[str]:
    """The step name of every completed attempt of ``run_id`` (all pages)."""
    names: list[str] = []
    after: str | None = None
    while True:
        page = await backend.list_step_attempts(
            ListStepAttemptsParams(workflow_run_id=run_id, limit=100, after=after)
        )
        names.extend(attempt.step_name for attempt in page.data if attempt.is_completed)
        if page.next is None or not page.data:
            return names
        after = page.next


async def all_run_ids(backend: Backend, workflow_name: str | None = None) -> list[str]:
    """The id of every run of the backend's namespace (all pages), optionally of one workflow."""
    ids: list[str] = []
    after: str | None = None
    while True:
        page = await backend.list_workflow_runs(
            ListWorkflowRunsParams(limit=100, after=after, workflow_name=workflow_name)
        )
        ids.extend(run.id for run in page.data)
        if page.next is None or not page.data:
            return ids
        after = page.next
