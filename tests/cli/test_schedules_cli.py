"""``ow schedules list|pause|resume|trigger``, against schedules a real worker stored."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from openworkflow import SyncOpenWorkflow
from tests.cli.helpers import Background, ow, write
from tests.support.waiting import block_until

FLOWS = """
from openworkflow import Schedule, workflow


@workflow(
    name="nightly-report",
    schedules=[Schedule("0 3 * * *", timezone="Europe/Paris", input={"scope": "all"})],
)
async def nightly_report(input: dict) -> dict:
    return input


@workflow(name="cleanup", schedule="*/10 * * * *")
async def cleanup() -> None:
    return None
"""

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(
        tmp_path / "openworkflow.config.py",
        """
        from openworkflow import define_config
        config = define_config(backend="sqlite:///ow.db", dirs=["./flows"],
                               worker={"shutdown_timeout": "2s"})
        """,
    )
    write(tmp_path / "flows" / "flows.py", FLOWS)
    return tmp_path


def _listed(project: Path) -> dict[str, Any]:
    listed = ow(project, "schedules", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return {item["name"]: item for item in json.loads(listed.stdout)}


def _store_schedules(project: Path) -> None:
    """Start a worker until it has stored the project's schedules, then stop it."""
    worker = Background(project, "worker", "start", "--workflow", "nightly-report")
    try:
        worker.wait_for("Worker started")
        block_until(
            lambda: (project / "ow.db").exists() and _listed(project)["nightly-report"]["stored"],
            message="the worker to store its schedule",
        )
    finally:
        finished = worker.stop(signal.SIGTERM)
    assert finished.returncode == 0, finished.stderr


def test_list_pause_resume_and_trigger(project: Path) -> None:
    _store_schedules(project)
    schedules = _listed(project)
    nightly = schedules["nightly-report"]
    assert (nightly["workflow"], nightly["cron"], nightly["timezone"]) == (
        "nightly-report",
        "0 3 * * *",
        "Europe/Paris",
    )
    assert nightly["next_tick"] is not None and nightly["paused_at"] is None
    assert nightly["last_tick"] is None
    # Declared in the project, but its workflow's worker never ran: not stored yet.
    assert schedules["cleanup"]["stored"] is False
    table = ow(project, "schedules", "list")
    assert "nightly-report" in table.stdout and "active" in table.stdout
    assert "not stored yet" in table.stdout

    paused = ow(project, "schedules", "pause", "nightly-report")
    assert paused.returncode == 0, paused.stderr
    assert "ow schedules resume nightly-report" in paused.stderr
    assert _listed(project)["nightly-report"]["paused_at"] is not None
    assert "paused since" in ow(project, "schedules", "list").stdout

    resumed = ow(project, "schedules", "resume", "nightly-report", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["paused_at"] is None

    triggered = ow(project, "schedules", "trigger", "nightly-report")
    assert triggered.returncode == 0, triggered.stderr
    run_id = triggered.stdout.strip()
    with SyncOpenWorkflow(f"sqlite:///{project / 'ow.db'}") as client:
        run = client.get_run(run_id)
        # The same operations from code.
        assert [item.name for item in client.list_schedules().schedules] == ["nightly-report"]
        paused = client.pause_schedule("nightly-report")
        assert paused is not None and paused.paused_at is not None
        assert client.resume_schedule("nightly-report") is not None
        again = client.trigger_schedule("nightly-report")
        assert again is not None and again.id != run_id
        assert client.trigger_schedule("no-such") is None
    assert run is not None
    assert (run.workflow_name, run.input, run.scheduled_at) == (
        "nightly-report",
        {"scope": "all"},
        None,
    )


def test_unknown_schedules_fail_with_a_hint(project: Path) -> None:
    _store_schedules(project)
    for command in ("pause", "resume", "trigger"):
        result = ow(project, "schedules", command, "no-such")
        assert result.returncode == 1, result.stderr
        assert "no stored schedule named 'no-such'" in result.stderr
        assert "ow worker start" in result.stderr
