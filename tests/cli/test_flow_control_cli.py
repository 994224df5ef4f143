"""``ow workflows list|pause|resume``, ``ow worker start --workflow``, priorities from the CLI."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from openworkflow import SyncOpenWorkflow
from tests.cli.helpers import Background, ow, write

FLOWS = """
from openworkflow import Step, workflow


@workflow(name="resize-image")
async def resize_image(step: Step, input: int) -> int:
    return await step.run("resize", lambda: input * 2)


@workflow(name="send-invoice", priority=2)
async def send_invoice(step: Step, input: int) -> int:
    return await step.run("send", lambda: input + 1)
"""


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


def _run_status(project: Path, run_id: str) -> tuple[str, int]:
    with SyncOpenWorkflow(f"sqlite:///{project / 'ow.db'}") as client:
        run = client.get_run(run_id)
        assert run is not None
        return run.status, run.priority


def test_pause_list_and_resume(project: Path) -> None:
    paused = ow(project, "workflows", "pause", "resize-image")
    assert paused.returncode == 0, paused.stderr
    assert "paused" in paused.stderr and "ow workflows resume resize-image" in paused.stderr

    listed = ow(project, "workflows", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    states = {item["name"]: item["paused_at"] for item in json.loads(listed.stdout)}
    assert set(states) == {"resize-image", "send-invoice"}
    assert states["resize-image"] is not None and states["send-invoice"] is None
    table = ow(project, "workflows", "list")
    assert "paused since" in table.stdout and "active" in table.stdout

    assert "resumed" in ow(project, "workflows", "resume", "resize-image").stderr
    again = ow(project, "workflows", "resume", "resize-image", "--json")
    assert json.loads(again.stdout) == {"name": "resize-image", "was_paused": False}


def test_run_priority_and_runs_priority(project: Path) -> None:
    started = ow(project, "run", "resize-image", "--input", "1", "--priority", "7")
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    assert _run_status(project, run_id) == ("pending", 7)
    second = ow(project, "run", "send-invoice", "--input", "1")
    assert second.returncode == 0, second.stderr
    default = second.stdout.strip()
    assert _run_status(project, default) == ("pending", 2)  # the workflow's own priority

    changed = ow(project, "runs", "priority", run_id[:-4], "-3")  # a prefix works too
    assert changed.returncode == 0, changed.stderr
    assert "priority -3" in changed.stdout
    assert _run_status(project, run_id) == ("pending", -3)

    refused = ow(project, "run", "resize-image", "--input", "1", "--priority", "high")
    assert refused.returncode == 2 and "high" in refused.stderr


@pytest.mark.slow
def test_worker_start_with_workflow_runs_only_that_workflow(project: Path) -> None:
    wrong = ow(project, "worker", "start", "--workflow", "resize")
    assert wrong.returncode == 2
    assert "--workflow resize: no such workflow" in wrong.stderr
    assert "resize-image" in wrong.stderr

    image = ow(project, "run", "resize-image", "--input", "4").stdout.strip()
    invoice = ow(project, "run", "send-invoice", "--input", "4").stdout.strip()
    worker = Background(project, "worker", "start", "--workflow", "resize-image")
    try:
        worker.wait_for("Worker started")
        assert "Loaded 1 workflow(s): resize-image" in worker.stderr
        done = ow(project, "run", "resize-image", "--input", "5", "--wait")
        assert done.returncode == 0 and json.loads(done.stdout) == 10
        assert _run_status(project, image)[0] == "completed"
        status, _ = _run_status(project, invoice)
        assert status == "pending"  # never claimed by a worker that does not run it
    finally:
        finished = worker.stop(signal.SIGTERM)
    assert finished.returncode == 0, finished.stderr
