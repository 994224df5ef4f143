"""The soak script (``benchmarks/soak.py``) still runs, and its check still finds violations.

The soak itself is not part of CI; this runs it for a few seconds on SQLite
with worker kills, so that the script cannot rot unnoticed, and feeds its
checker made-up rows with one fault each, so that a clean soak means something.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from benchmarks import soak_check, soak_flows
from benchmarks.soak_load import PlannedRun
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_run import WorkflowRun
from tests.support.processes import ROOT

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.slow
def test_a_short_soak_on_sqlite_with_kills_ends_without_violations(tmp_path: Path) -> None:
    options = ["--backend", "sqlite", "--minutes", "0.2", "--workers", "2", "--rate", "4"]
    options += ["--kill-interval", "2", "4", "--lease", "3s", "--drain-seconds", "60"]
    options += ["--seed", "7", "--folder", str(tmp_path), "--json"]
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.soak", *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert completed.stdout, completed.stderr[-4000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["violations"] == [], result["violations"][:10]
    assert completed.returncode == 0
    assert result["kills"] >= 1
    kinds = result["runs_by_kind"]
    assert {"plain", "sleep", "signal", "parent", "child", "retry"} <= set(kinds)
    assert all(set(kinds[kind]) == {"completed"} for kind in ("plain", "parent", "child"))


def _run(run_id: str, name: str, status: str, output: Any, parent_step: str | None = None) -> Any:
    return WorkflowRun(
        namespace_id="default",
        id=run_id,
        workflow_name=name,
        version=None,
        status=status,
        idempotency_key=None,
        config={},
        context=None,
        input=None,
        output=output,
        error=None,
        attempts=1,
        parent_step_attempt_namespace_id=None if parent_step is None else "default",
        parent_step_attempt_id=parent_step,
        worker_id=None,
        available_at=NOW,
        deadline_at=None,
        started_at=NOW,
        finished_at=NOW,
        created_at=NOW,
        updated_at=NOW,
    )


def _attempt(
    attempt_id: str,
    run_id: str,
    step_name: str,
    status: str = "completed",
    child: str | None = None,
) -> StepAttempt:
    return StepAttempt(
        namespace_id="default",
        id=attempt_id,
        workflow_run_id=run_id,
        step_name=step_name,
        kind="workflow" if child else "function",
        status=status,
        config={},
        context=None,
        output=None,
        error=None,
        child_workflow_run_namespace_id=None if child is None else "default",
        child_workflow_run_id=child,
        started_at=NOW,
        finished_at=NOW,
        created_at=NOW,
        updated_at=NOW,
    )


def _consistent() -> tuple[dict[str, PlannedRun], soak_check.Stored]:
    """One plain run and one parent with its three children, all as they should be."""
    planned = {
        "p1": PlannedRun("p1", "plain", 1, {"n": 1}),
        "r2": PlannedRun("r2", "parent", 2, {"n": 2}),
    }
    stored = soak_check.Stored()
    stored.runs["p1"] = _run("p1", "soak-plain", "completed", soak_flows.expected_plain(1))
    stored.attempts["p1"] = [_attempt("a1", "p1", "double"), _attempt("a2", "p1", "plus-one")]
    stored.runs["r2"] = _run("r2", "soak-parent", "completed", soak_flows.expected_parent(2))
    stored.attempts["r2"] = []
    for index, step_name in enumerate(soak_check.CHILD_STEPS):
        kid, step = f"c{index}", f"s{index}"
        stored.attempts["r2"].append(_attempt(step, "r2", step_name, child=kid))
        stored.runs[kid] = _run(kid, "soak-child", "completed", {"value": 60 + 3 * index}, step)
        stored.attempts[kid] = [_attempt(f"t{index}", kid, "triple")]
    return planned, stored


def _categories(planned: dict[str, PlannedRun], stored: soak_check.Stored) -> list[str]:
    return sorted(category for category, _ in soak_check.check(planned, stored))


def test_the_check_finds_nothing_in_consistent_rows() -> None:
    assert _categories(*_consistent()) == []


def test_the_check_finds_a_step_completed_twice_and_an_attempt_left_running() -> None:
    planned, stored = _consistent()
    stored.attempts["p1"].append(_attempt("a3", "p1", "double"))
    stored.attempts["p1"].append(_attempt("a4", "p1", "extra", status="running"))
    assert _categories(planned, stored) == ["duplicated-step", "running-attempt"]


def test_the_check_finds_wrong_outcomes_and_unfinished_runs() -> None:
    planned, stored = _consistent()
    stored.runs["p1"] = replace(stored.runs["p1"], output={"n": 1, "value": 4})
    planned["x3"] = PlannedRun("x3", "cancel", 3, {"n": 3})
    stored.runs["x3"] = _run("x3", "soak-cancel", "completed", {"n": 3})
    planned["s4"] = PlannedRun("s4", "sleep", 4, {"n": 4})
    stored.runs["s4"] = _run("s4", "soak-sleep", "running", None)
    assert _categories(planned, stored) == ["outcome", "outcome", "unfinished"]


def test_the_check_finds_a_second_child_for_one_parent_step_and_an_orphan() -> None:
    planned, stored = _consistent()
    stored.runs["c9"] = _run("c9", "soak-child", "completed", {"value": 60}, "s0")
    stored.runs["o1"] = _run("o1", "soak-child", "completed", {"value": 1}, "missing")
    assert _categories(planned, stored) == ["child", "child", "child"]


def test_the_check_finds_a_signal_never_sent_and_one_answered_twice() -> None:
    planned, stored = _consistent()
    token = "token-5"
    planned["g5"] = PlannedRun("g5", "signal", 5, {"n": 5, "token": token})
    stored.runs["g5"] = _run("g5", "soak-signal", "completed", soak_flows.expected_signal(5, token))
    stored.attempts["g5"] = [_attempt("w1", "g5", "go"), _attempt("w2", "g5", "go")]
    assert _categories(planned, stored) == ["duplicated-step", "signal", "signal"]
