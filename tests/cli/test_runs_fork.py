"""``ow runs fork ID --from-step NAME``: rerun a failed run from a step after a fix."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from openworkflow import SyncOpenWorkflow
from tests.cli.helpers import Background, ow, write

FLOWS = """
from pathlib import Path

from openworkflow import RetryPolicy, Step, workflow

HERE = Path(__file__).resolve().parent.parent


def record(what: str) -> str:
    with (HERE / "calls.txt").open("a") as calls:
        calls.write(what + "\\n")
    return what


def charge() -> str:
    record("charge")
    if not (HERE / "fixed").exists():
        raise RuntimeError("card rejected")
    return "charged"


@workflow(name="checkout")
async def checkout(step: Step) -> list[str]:
    reserved = await step.run("reserve", record, "reserve")
    charged = await step.run("charge", charge, retry_policy=RetryPolicy(maximum_attempts=1))
    return [reserved, charged]
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("cli-runs-fork")
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


def _calls(folder: Path) -> list[str]:
    return (folder / "calls.txt").read_text().split()


@pytest.mark.slow
def test_fork_reruns_a_failed_run_from_a_step(folder: Path) -> None:
    failed = ow(folder, "run", "checkout", "--wait")
    assert failed.returncode == 1 and "card rejected" in failed.stderr
    run_id = json.loads(ow(folder, "runs", "list", "--json").stdout)["data"][0]["id"]
    assert _calls(folder) == ["reserve", "charge"]
    (folder / "fixed").touch()

    unknown = ow(folder, "runs", "fork", run_id[:13], "--from-step", "refund")
    assert unknown.returncode == 1
    assert "has no step 'refund'" in unknown.stderr and "'reserve', 'charge'" in unknown.stderr
    assert "ow runs show ID" in unknown.stderr

    forked = ow(folder, "runs", "fork", run_id[:13], "--from-step", "charge", "--json")
    assert forked.returncode == 0, forked.stderr
    answer = json.loads(forked.stdout)
    assert (answer["forked_from_id"], answer["from_step"]) == (run_id, "charge")
    with SyncOpenWorkflow(f"sqlite:///{folder / 'ow.db'}") as client:
        assert client.handle(answer["workflow_run_id"]).result(timeout="20s") == [
            "reserve",
            "charged",
        ]
    assert _calls(folder) == ["reserve", "charge", "charge"]  # reserve was not run again
    shown = json.loads(ow(folder, "runs", "show", answer["workflow_run_id"], "--json").stdout)
    assert (shown["forked_from"]["forked_from_id"], shown["forked_from"]["from_step"]) == (
        run_id,
        "charge",
    )
    assert (
        f"{run_id} at step 'charge'" in ow(folder, "runs", "show", answer["workflow_run_id"]).stdout
    )

    said = ow(folder, "runs", "fork", run_id, "--from-step", "reserve")
    assert said.returncode == 0 and f"forked from run {run_id} at step 'reserve'" in said.stderr
