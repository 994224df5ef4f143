"""The soak's consistency check: every run and step attempt in the database, read at the end.

:func:`read_database` reads every run of the soak's namespace and every step
attempt of each through the :class:`~openworkflow.core.backend.Backend` API
(PostgreSQL and SQLite alike); :func:`check` compares them with the runs the
soak started (:class:`~benchmarks.soak_load.PlannedRun`) and returns the
violations, each a category and a sentence:

- ``unfinished``: a run not terminal once the drain time is over;
- ``outcome``: a run in another status than its kind allows, or completed
  with another output;
- ``duplicated-step``: a step name of one run completed by two attempts;
- ``running-attempt``: an attempt still running on a finished run;
- ``child``: a child run without its parent's step, a parent step pointing
  at another run, two children for one parent step, an unknown extra run;
- ``signal``: a signal the soak could not send, or a wait answered twice;
- ``retry`` and ``doomed``: the flaky step without its failed attempts, the
  doomed step completed;
- ``action``: a signal or cancel the engine refused (the error is given).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from benchmarks import soak_flows as flows
from benchmarks.soak_load import PlannedRun
from openworkflow.core.backend import Backend, ListStepAttemptsParams, ListWorkflowRunsParams
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_run import WorkflowRun

TERMINAL = frozenset({"completed", "succeeded", "failed", "canceled"})
CHILD_STEPS = tuple(f"child-{index}" for index in range(flows.CHILDREN_PER_PARENT))


@dataclass
class Stored:
    """Every run of the namespace and the step attempts of each."""

    runs: dict[str, WorkflowRun] = field(default_factory=dict)
    attempts: dict[str, list[StepAttempt]] = field(default_factory=dict)

    def attempt_by_id(self) -> dict[str, StepAttempt]:
        """Every step attempt, by its id."""
        return {item.id: item for items in self.attempts.values() for item in items}


def status_of(run: WorkflowRun) -> str:
    """The run's status, with the legacy ``succeeded`` read as ``completed``."""
    return "completed" if run.status == "succeeded" else run.status


async def read_database(backend: Backend) -> Stored:
    """Every run of the backend's namespace and all its step attempts (all pages)."""
    stored = Stored()
    after: str | None = None
    while True:
        page = await backend.list_workflow_runs(ListWorkflowRunsParams(limit=200, after=after))
        stored.runs.update((run.id, run) for run in page.data)
        if page.next is None or not page.data:
            break
        after = page.next
    for run_id in stored.runs:
        stored.attempts[run_id] = await _attempts_of(backend, run_id)
    return stored


async def _attempts_of(backend: Backend, run_id: str) -> list[StepAttempt]:
    attempts: list[StepAttempt] = []
    after: str | None = None
    while True:
        page = await backend.list_step_attempts(
            ListStepAttemptsParams(workflow_run_id=run_id, limit=200, after=after)
        )
        attempts.extend(page.data)
        if page.next is None or not page.data:
            return attempts
        after = page.next


Violation = tuple[str, str]


def check(planned: Mapping[str, PlannedRun], stored: Stored) -> list[Violation]:
    """Every violation found (an empty list when the database is consistent)."""
    found: list[Violation] = []
    for run_id, plan in planned.items():
        found += _check_planned(plan, stored.runs.get(run_id), stored.attempts.get(run_id, []))
    for run_id, run in stored.runs.items():
        found += _check_attempts(run, stored.attempts.get(run_id, []))
    found += _check_children(planned, stored)
    return found


def _check_planned(
    plan: PlannedRun, run: WorkflowRun | None, attempts: list[StepAttempt]
) -> list[Violation]:
    where = f"run {plan.id} ({plan.kind} #{plan.n})"
    if run is None:
        return [("outcome", f"{where}: not in the database")]
    found: list[Violation] = []
    if plan.action_error is not None:
        found.append(("action", f"{where}: {plan.action_error}"))
    status = status_of(run)
    if status not in TERMINAL:
        return [*found, ("unfinished", f"{where}: still {status} after the drain")]
    if status not in plan.expected_statuses():
        found.append(("outcome", f"{where}: {status}, expected {plan.expected_statuses()}"))
    elif status == "completed" and not _output_matches(run, plan.expected_output()):
        found.append(("outcome", f"{where}: output {run.output!r}"))
    return found + _check_kind_steps(plan, where, status, attempts)


def _output_matches(run: WorkflowRun, want: Any) -> bool:
    # None: the kind's output is not checked (its runs are not expected to complete).
    return want is None or run.output == want


def _check_kind_steps(
    plan: PlannedRun, where: str, status: str, attempts: list[StepAttempt]
) -> list[Violation]:
    by_name: dict[str, list[StepAttempt]] = defaultdict(list)
    for attempt in attempts:
        by_name[attempt.step_name].append(attempt)
    found: list[Violation] = []
    if plan.kind == "signal":
        if not plan.signal_sent:
            found.append(("signal", f"{where}: the soak never got its signal sent"))
        answered = [item for item in by_name[flows.SIGNAL_NAME] if item.is_completed]
        if status == "completed" and len(answered) != 1:
            found.append(("signal", f"{where}: the signal wait completed {len(answered)} times"))
    if plan.kind == "retry" and status == "completed":
        failed = [item for item in by_name["flaky"] if item.status == "failed"]
        if len(failed) < flows.FLAKY_FAILURES:
            found.append(("retry", f"{where}: {len(failed)} failed attempts of the flaky step"))
    doomed = by_name["doomed"] if plan.kind in ("fail", "fail-caught") else []
    if any(item.is_completed for item in doomed):
        found.append(("doomed", f"{where}: the doomed step completed"))
    return found


def _check_attempts(run: WorkflowRun, attempts: list[StepAttempt]) -> list[Violation]:
    found: list[Violation] = []
    completions = Counter(item.step_name for item in attempts if item.is_completed)
    for step_name, count in completions.items():
        if count > 1:
            found.append(
                ("duplicated-step", f"run {run.id}: step {step_name!r} completed {count}x")
            )
    if status_of(run) in TERMINAL:
        for item in attempts:
            if item.status == "running":
                found.append(
                    ("running-attempt", f"run {run.id} ({status_of(run)}): {item.step_name!r}")
                )
    return found


def _check_children(planned: Mapping[str, PlannedRun], stored: Stored) -> list[Violation]:
    found: list[Violation] = []
    attempts = stored.attempt_by_id()
    children: dict[tuple[str, str], list[WorkflowRun]] = defaultdict(list)
    for run in stored.runs.values():
        if run.id in planned:
            if run.parent_step_attempt_id is not None:
                found.append(("child", f"run {run.id}: started by the soak, yet has a parent"))
            continue
        parent_step = attempts.get(run.parent_step_attempt_id or "")
        if run.workflow_name != flows.child.name or parent_step is None:
            found.append(("child", f"run {run.id} ({run.workflow_name}): no parent step"))
            continue
        if parent_step.child_workflow_run_id != run.id:
            found.append(("child", f"run {run.id}: its parent step names another child"))
        children[(parent_step.workflow_run_id, parent_step.step_name)].append(run)
    for key, runs in children.items():
        if len(runs) > 1:
            found.append(("child", f"run {key[0]}: {len(runs)} children for step {key[1]!r}"))
    for plan in planned.values():
        parent = stored.runs.get(plan.id)
        if plan.kind != "parent" or parent is None or status_of(parent) != "completed":
            continue
        for step_name in CHILD_STEPS:
            kids = children.get((plan.id, step_name), [])
            if not kids or any(status_of(kid) != "completed" for kid in kids):
                found.append(("child", f"run {plan.id}: step {step_name!r} has no completed child"))
    return found


def runs_by_kind(planned: Mapping[str, PlannedRun], stored: Stored) -> dict[str, dict[str, int]]:
    """How many runs of each kind ended in each status (children counted as ``child``)."""
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for run_id, run in stored.runs.items():
        plan = planned.get(run_id)
        table[plan.kind if plan is not None else "child"][status_of(run)] += 1
    return {kind: dict(sorted(counts.items())) for kind, counts in sorted(table.items())}
