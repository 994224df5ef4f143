"""``ow runs signal RUN_ID NAME [--data JSON]``: a signal kept for one run, with a live worker."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from openworkflow import SyncOpenWorkflow
from tests.cli.helpers import Background, ow, write

FLOWS = """
from typing import Any

from openworkflow import Step, workflow


@workflow(name="two-answers")
async def two_answers(step: Step) -> list[Any]:
    first = await step.wait_for_signal("answer", name="first", timeout="1h")
    second = await step.wait_for_signal("answer", name="second", timeout="1h")
    return [first, second]
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("cli-runs-signal")
    write(
        folder / "openworkflow.config.py",
        """
        from openworkflow import define_config
        config = define_config(backend="sqlite:///ow.db", dirs=["./flows"],
                               worker={"shutdown_timeout": "2s"})
        """,
    )
    write(folder / "flows" / "flows.py", FLOWS)
    worker = Background(folder, "worker", "start")
    worker.wait_for("Worker started")
    yield folder
    finished = worker.stop(signal.SIGTERM)
    assert finished.returncode == 0, finished.stderr


def _run(folder: Path) -> tuple[str, SyncOpenWorkflow]:
    started = ow(folder, "run", "two-answers")
    assert started.returncode == 0, started.stderr
    return started.stdout.strip(), SyncOpenWorkflow(f"sqlite:///{folder / 'ow.db'}")


@pytest.mark.slow
def test_runs_signal_is_kept_and_consumed_in_order(folder: Path) -> None:
    run_id, client = _run(folder)
    with client:
        # Both sent at once: the second is kept until the second wait takes it.
        sent = ow(folder, "runs", "signal", run_id, "answer", "--data", '{"n": 1}', "--json")
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout) == {"signal": "answer", "workflow_run_id": run_id}
        sent = ow(folder, "runs", "signal", run_id[:13], "answer", "--data", "2")
        assert sent.returncode == 0, sent.stderr
        assert f"sent to run {run_id}" in sent.stderr

        assert client.handle(run_id).result(timeout="20s") == [{"data": {"n": 1}}, {"data": 2}]

    late = ow(folder, "runs", "signal", run_id, "answer")
    assert late.returncode == 1
    assert run_id in late.stderr and "completed" in late.stderr


def test_runs_signal_refuses_bad_json_and_unknown_runs(folder: Path) -> None:
    bad = ow(folder, "runs", "signal", "some-run", "answer", "--data", "{nope")
    assert bad.returncode != 0
    assert "--data" in bad.stderr

    unknown = ow(folder, "runs", "signal", "no-such-run", "answer")
    assert unknown.returncode == 1
    assert "no-such-run" in unknown.stderr
