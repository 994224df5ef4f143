"""``ow run``, ``ow runs list|show|cancel|retry`` and ``ow signal send`` against a live worker."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from openworkflow import SyncOpenWorkflow
from tests.cli.helpers import Background, ow, write
from tests.support.waiting import block_until

FLOWS = """
from typing import Any

from openworkflow import NonRetryableError, Step, workflow


def explode() -> None:
    raise NonRetryableError("kaboom")


@workflow(name="echo")
async def echo(input: Any, step: Step) -> dict[str, Any]:
    return {"echo": await step.run("copy", lambda: input)}


@workflow(name="boom")
async def boom(step: Step) -> None:
    await step.run("explode", explode)


@workflow(name="approval")
async def approval(input: Any, step: Step) -> dict[str, Any]:
    answer = await step.wait_for_signal(f"approve:{input['key']}", name="decision", timeout="1h")
    return {"answer": None if answer is None else answer["data"]}


@workflow(name="nap")
async def nap(step: Step) -> None:
    await step.sleep("long-nap", "1h")
"""


class Project:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = f"sqlite:///{folder / 'ow.db'}"

    def ow(self, *args: str) -> tuple[int, str, str]:
        result = ow(self.folder, *args)
        return result.returncode, result.stdout, result.stderr

    def start(self, *args: str) -> str:
        code, out, err = self.ow("run", *args)
        assert code == 0, err
        return out.strip()

    def status(self, run_id: str) -> str:
        with SyncOpenWorkflow(self.url) as client:
            run = client.get_run(run_id)
            assert run is not None
            return run.status

    def steps(self, run_id: str) -> list[str]:
        with SyncOpenWorkflow(self.url) as client:
            return [step.step_name for step in client.list_steps(run_id).data]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    folder = tmp_path_factory.mktemp("cli-runs")
    write(
        folder / "openworkflow.config.py",
        """
        from openworkflow import define_config
        config = define_config(backend="sqlite:///ow.db", dirs=["./flows"],
                               worker={"concurrency": 8, "shutdown_timeout": "2s"})
        """,
    )
    write(folder / "flows" / "flows.py", FLOWS)
    worker = Background(folder, "worker", "start")
    worker.wait_for("Worker started")
    yield Project(folder)
    finished = worker.stop(signal.SIGTERM)
    assert finished.returncode == 0, finished.stderr
    assert "Worker stopped" in finished.stderr


@pytest.mark.slow
def test_run_wait_prints_the_output_or_fails(project: Project) -> None:
    code, out, err = project.ow("run", "echo", "--input", '{"a": [1, 2]}', "--wait")
    assert code == 0, err
    assert json.loads(out) == {"echo": {"a": [1, 2]}}

    code, out, err = project.ow("run", "boom", "--wait", "--json")
    assert code == 1
    failed = json.loads(out)
    assert failed["status"] == "failed"
    assert "kaboom" in failed["error"]["message"]
    assert "failed" in err and "kaboom" in err

    input_file = project.folder / "input.json"
    input_file.write_text('{"from": "file"}')
    code, out, err = project.ow("run", "echo", "--input", f"@{input_file}", "--wait", "--json")
    assert code == 0, err
    assert json.loads(out)["output"] == {"echo": {"from": "file"}}


@pytest.mark.slow
def test_run_wait_times_out_with_exit_1_and_the_run_goes_on(project: Project) -> None:
    code, _, err = project.ow("run", "nap", "--wait", "--timeout", "300ms")
    assert code == 1
    assert "Timed out" in err and "ow runs show" in err


@pytest.mark.slow
def test_signal_send_reaches_the_waiting_run(project: Project) -> None:
    key = uuid.uuid4().hex
    run_id = project.start("approval", "--input", json.dumps({"key": key}))
    block_until(lambda: "decision" in project.steps(run_id), "the run to wait for its signal")

    code, out, err = project.ow(
        "signal", "send", f"approve:{key}", "--data", '{"ok": true}', "--json"
    )
    assert code == 0, err
    assert json.loads(out) == {"signal": f"approve:{key}", "workflow_run_ids": [run_id]}
    block_until(lambda: project.status(run_id) == "completed", "the run to complete")

    code, out, err = project.ow("signal", "send", f"approve:{key}")
    assert code == 1 and out == ""
    assert f"No run was waiting for signal 'approve:{key}'" in err
    assert "not buffered" in err


@pytest.mark.slow
def test_runs_show_cancel_and_retry(project: Project) -> None:
    run_id = project.start("nap")
    block_until(lambda: "long-nap" in project.steps(run_id), "the run to sleep")

    code, out, err = project.ow("runs", "show", run_id)
    assert code == 0, err
    assert run_id in out and "nap" in out and "long-nap" in out and "sleep" in out

    code, out, err = project.ow("runs", "cancel", run_id)
    assert code == 0, err
    assert "canceled" in out
    assert project.status(run_id) == "canceled"

    code, out, err = project.ow("runs", "show", run_id, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["run"]["status"] == "canceled"
    assert [step["step_name"] for step in shown["steps"]] == ["long-nap"]

    code, out, err = project.ow("runs", "retry", run_id, "--json")
    assert code == 0, err
    assert json.loads(out)["status"] == "pending"

    code, _, err = project.ow("runs", "cancel", run_id)
    assert code == 0, err  # the retried run can be canceled again

    done = ow(project.folder, "run", "echo", "--wait", "--json")
    finished_id = json.loads(done.stdout)["id"]
    code, _, err = project.ow("runs", "cancel", finished_id)
    assert code == 1
    assert "Cannot cancel" in err and "completed" in err


@pytest.mark.slow
def test_runs_list_filters_and_pages(project: Project) -> None:
    for number in range(3):
        project.start("echo", "--input", str(number), "--idempotency-key", f"page-{number}")
    code, out, err = project.ow("runs", "list", "--workflow", "echo", "--limit", "2", "--json")
    assert code == 0, err
    first = json.loads(out)
    assert len(first["data"]) == 2 and first["next"]
    assert {run["workflow_name"] for run in first["data"]} == {"echo"}
    code, out, err = project.ow(
        "runs", "list", "--workflow", "echo", "--limit", "2", "--after", first["next"], "--json"
    )
    assert code == 0, err
    second = json.loads(out)
    assert not {run["id"] for run in second["data"]} & {run["id"] for run in first["data"]}

    code, out, err = project.ow("runs", "list", "--status", "failed")
    assert code == 0, err
    assert "ID" in out or "No runs found" in err

    code, out, err = project.ow("runs", "list", "--after", "not-a-cursor")
    assert code == 2
    assert "cursor" in err


def test_unknown_run_is_an_error_with_a_hint(project: Project) -> None:
    code, out, err = project.ow("runs", "show", "no-such-run", "--json")
    assert code == 1
    assert out == ""
    assert "no-such-run" in err and "Hint:" in err
