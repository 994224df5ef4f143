"""``ow worker start``: runs the project's workflows and stops gracefully on SIGTERM."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from openworkflow import SyncOpenWorkflow
from tests.cli.helpers import Background, ow, sqlite_project, write
from tests.support.waiting import block_until


@pytest.mark.slow
def test_run_then_worker_then_list_shows_it_completed(tmp_path: Path) -> None:
    # The project folder is called `openworkflow/`, like the package: it must not shadow it.
    sqlite_project(tmp_path)
    write(tmp_path / "openworkflow" / "__init__.py", "PROJECT_PACKAGE = True\n")
    started = ow(tmp_path, "run", "hello-world")
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()

    worker = Background(tmp_path, "worker", "start", "--concurrency", "2")
    try:
        worker.wait_for("Worker started")
        assert "Loaded 1 workflow(s): hello-world" in worker.stderr
        waited = ow(
            tmp_path,
            "run",
            "hello-world",
            "--input",
            '{"name": "Ada"}',
            "--wait",
            "--timeout",
            "30s",
        )
        assert waited.returncode == 0, waited.stderr
        assert json.loads(waited.stdout) == {"greeting": "Hello, Ada!"}

        listed = ow(tmp_path, "runs", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        page = json.loads(listed.stdout)
        by_id = {run["id"]: run for run in page["data"]}
        assert by_id[run_id]["status"] == "completed"
        assert by_id[run_id]["output"] == {"greeting": "Hello, world!"}
        assert page["next"] is None
    finally:
        finished = worker.stop(signal.SIGTERM)
    assert finished.returncode == 0, finished.stderr
    assert "Shutting down worker" in finished.stderr
    assert finished.stderr.rstrip().endswith("Worker stopped")
    assert "Traceback" not in finished.stderr


def test_worker_refuses_to_start_without_workflows(tmp_path: Path) -> None:
    write(
        tmp_path / "openworkflow.config.py",
        """
        from openworkflow import define_config
        config = define_config(backend="sqlite:///ow.db", dirs=["./flows"])
        """,
    )
    (tmp_path / "flows").mkdir()
    result = ow(tmp_path, "worker", "start")
    assert result.returncode == 2
    assert f"No workflows found in {tmp_path / 'flows'}" in result.stderr
    assert "Hint:" in result.stderr


def test_worker_refuses_to_start_with_a_broken_file(tmp_path: Path) -> None:
    sqlite_project(tmp_path)
    write(tmp_path / "openworkflow" / "typo.py", "from openworkflow import workflw\n")
    result = ow(tmp_path, "worker", "start")
    assert result.returncode == 2
    assert f"{tmp_path / 'openworkflow' / 'typo.py'}:1: ImportError" in result.stderr
    assert "Traceback" not in result.stderr


LONG_STEP = """
import asyncio

from openworkflow import Step, workflow


async def work() -> str:
    await asyncio.sleep(60)
    return "done"


@workflow(name="long")
async def long(step: Step) -> str:
    return await step.run("work", work)
"""


@pytest.mark.slow
def test_a_second_signal_stops_at_once_and_hands_the_run_back(tmp_path: Path) -> None:
    write(
        tmp_path / "openworkflow.config.py",
        """
        from openworkflow import define_config
        config = define_config(backend="sqlite:///ow.db", dirs=["./flows"],
                               worker={"shutdown_timeout": "60s"})
        """,
    )
    write(tmp_path / "flows" / "long.py", LONG_STEP)
    run_id = ow(tmp_path, "run", "long").stdout.strip()
    worker = Background(tmp_path, "worker", "start")
    try:
        worker.wait_for("Worker started")
        with SyncOpenWorkflow(f"sqlite:///{tmp_path / 'ow.db'}") as client:
            block_until(lambda: bool(client.list_steps(run_id).data), "the step to start")
            worker.process.send_signal(signal.SIGTERM)
            worker.wait_for("Shutting down worker")
            time.sleep(0.3)
            assert worker.process.poll() is None  # graceful: waits for the step
            started = time.monotonic()
            finished = worker.stop(signal.SIGTERM)
            assert time.monotonic() - started < 10
            run = client.get_run(run_id)
    finally:
        finished = worker.stop(signal.SIGKILL)
    assert finished.returncode == 0, finished.stderr
    assert "Worker stopped" in finished.stderr
    assert run is not None and run.status not in ("failed", "completed")
