"""F10: changed workflow code on replay is detected and reported, with a figure.

A run records three steps and parks; the workflow's code is then changed (a
mutation) and the run is woken, so the replay meets the recorded history with
new code. Each mutation must be reported on the ``openworkflow.replay``
logger, and the unchanged code must report nothing. The scenarios are the
ones in ``tests/worker/test_replay_divergence.py``, counted here as a figure.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.faults.figures import Figure, report
from tests.faults.ledger import all_run_ids, tally
from tests.worker.test_replay_divergence import EXPECTED, _replay_with

MUTATIONS = ("reordered", "renamed", "removed", "added")


async def test_code_changes_under_a_running_workflow_are_reported(
    backend: Any, backend_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """F10: Workflow code changed between passes (reordered, renamed, removed, added steps) is
    reported on openworkflow.replay.
    """
    detected: list[str] = []
    for mutation in MUTATIONS:
        caplog.clear()
        messages = await _replay_with(backend, caplog, mutation)
        if any(EXPECTED[mutation] in message for message in messages):
            detected.append(mutation)
    caplog.clear()
    false_reports = await _replay_with(backend, caplog, "unchanged")
    # Every replayed run still ends completed, each step completed once.
    counted = await tally(backend, await all_run_ids(backend))
    report(
        Figure(
            fault_id="F10",
            title=f"workflow code changed under running runs ({backend_kind})",
            runs=counted.runs,
            faults=len(MUTATIONS),
            lost=counted.lost,
            duplicated=counted.duplicated,
            details=(
                f"mutations reported on openworkflow.replay {len(detected)}/{len(MUTATIONS)} "
                f"({', '.join(detected)}); unchanged code: {len(false_reports)} reports; "
                "the replay keeps going (steps matched by name, as upstream)"
            ),
        )
    )
    assert detected == list(MUTATIONS)
    assert false_reports == []
    assert counted.runs == len(MUTATIONS) + 1
    assert counted.lost == 0 and counted.duplicated == 0, counted
