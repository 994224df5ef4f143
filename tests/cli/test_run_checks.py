"""``ow run`` in a project: unknown names, versions and bad input are refused before writing."""

from __future__ import annotations

import json
from pathlib import Path

from openworkflow import SyncOpenWorkflow
from tests.cli.helpers import Background, clean_env, ow, write
from tests.support.waiting import block_until

CONFIG = """
from openworkflow import define_config
config = define_config(backend="sqlite:///ow.db", dirs=["./flows"])
"""

FLOWS = """
from pydantic import BaseModel

from openworkflow import declare_workflow, workflow

BILLING = declare_workflow("charge-card", version="3")


class Order(BaseModel):
    sku: str
    quantity: int


@workflow(name="place-order")
async def place_order(input: Order) -> int:
    return input.quantity


@workflow(name="greet", version="v2")
async def greet() -> str:
    return "hello"
"""


def _project(folder: Path) -> Path:
    write(folder / "openworkflow.config.py", CONFIG)
    write(folder / "flows" / "flows.py", FLOWS)
    return folder


def test_an_unknown_workflow_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    project = _project(tmp_path)
    result = ow(project, "run", "no-such-workflow")
    assert result.returncode == 2, result.stderr
    assert 'no workflow "no-such-workflow" in this project' in result.stderr
    for known in ('"place-order"', '"greet" (version: v2)', '"charge-card" (version: 3)'):
        assert known in result.stderr, known
    assert "--force" in result.stderr
    assert result.stdout == ""
    assert not (project / "ow.db").exists()  # nothing was written

    unversioned = ow(project, "run", "greet")
    assert unversioned.returncode == 2
    assert "--version v2" in unversioned.stderr


def test_known_declared_and_forced_names_start_runs(tmp_path: Path) -> None:
    project = _project(tmp_path)
    started = {
        "greet": ow(project, "run", "greet", "--version", "v2"),
        "charge-card": ow(project, "run", "charge-card", "--version", "3"),
        "elsewhere": ow(project, "run", "elsewhere", "--force"),
    }
    for name, result in started.items():
        assert result.returncode == 0, (name, result.stderr)
    with SyncOpenWorkflow(f"sqlite:///{project / 'ow.db'}") as client:
        names = {run.workflow_name for run in client.list_runs().data}
    assert names == set(started)


def test_input_is_checked_against_the_schema_field_by_field(tmp_path: Path) -> None:
    project = _project(tmp_path)
    bad = ow(project, "run", "place-order", "--input", '{"quantity": "many"}')
    assert bad.returncode == 2, bad.stderr
    assert 'invalid --input for workflow "place-order"' in bad.stderr
    assert "- sku: Field required" in bad.stderr
    assert "- quantity: Input should be a valid integer" in bad.stderr and "'many'" in bad.stderr
    assert not (project / "ow.db").exists()

    good = ow(project, "run", "place-order", "--input", '{"sku": "A1", "quantity": 2}', "--json")
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["input"] == {"sku": "A1", "quantity": 2}


def test_without_a_config_an_unknown_name_is_started_as_before(tmp_path: Path) -> None:
    env = clean_env(OPENWORKFLOW_BACKEND_URL=f"sqlite:///{tmp_path / 'ow.db'}")
    result = ow(tmp_path, "run", "no-such-workflow", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_a_wait_that_times_out_says_where_the_run_stands(tmp_path: Path) -> None:
    project = _project(tmp_path)
    fresh = ow(project, "run", "greet", "--version", "v2", "--wait", "--timeout", "200ms")
    assert fresh.returncode == 1
    assert "Timed out after 200ms" in fresh.stderr and "it is pending" in fresh.stderr
    assert "is a worker running" in fresh.stderr

    # A run no worker of this project can execute: the worker's reason is shown.
    key = ["--force", "--idempotency-key", "k1"]
    run_id = ow(project, "run", "ghost", *key).stdout.strip()
    worker = Background(project, "worker", "start")
    try:
        worker.wait_for("Worker started")
        url = f"sqlite:///{project / 'ow.db'}"

        def rescheduled() -> bool:
            with SyncOpenWorkflow(url) as client:
                run = client.get_run(run_id)
                return run is not None and run.attempts >= 1

        block_until(rescheduled, "the worker to reschedule the unknown run")
    finally:
        finished = worker.stop()
    assert finished.stderr.count('Workflow "ghost" is not registered') == 1
    assert "This worker has:" in finished.stderr

    waited = ow(project, "run", "ghost", *key, "--wait", "--timeout", "200ms")
    assert waited.returncode == 1
    assert f"waiting for run {run_id}: it is pending after 1 attempt(s)" in waited.stderr
    assert 'Last error: Workflow "ghost" is not registered' in waited.stderr
