"""``ow runs cancel|retry`` with filters (issue 20 item 2), as subprocesses, on both backends."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from openworkflow import OpenWorkflow
from tests.cli.helpers import clean_env, ow, write
from tests.fixtures.postgres import require_server_url


class Project:
    """A project folder and the environment its ``ow`` commands run with."""

    def __init__(self, folder: Path, env: dict[str, str], url: str) -> None:
        self.folder = folder
        self.env = env
        self.url = url

    def ow(self, *args: str, input: str | None = None) -> Any:
        return ow(self.folder, *args, env=self.env, input=input)

    def start(self, workflow: str, *tags: str) -> str:
        args = [arg for tag in tags for arg in ("--tag", tag)]
        result = self.ow("run", workflow, "--json", *args)
        assert result.returncode == 0, result.stderr
        run_id: str = json.loads(result.stdout)["id"]
        return run_id

    def statuses(self, run_ids: list[str]) -> list[str]:
        async def read() -> list[str]:
            async with OpenWorkflow(self.url) as client:
                runs = [await client.get_run(run_id) for run_id in run_ids]
            return [run.status if run is not None else "missing" for run in runs]

        return asyncio.run(read())


FLOWS = """
from typing import Any

from openworkflow import Step, workflow


@workflow(name="echo")
async def echo(input: Any, step: Step) -> Any:
    return input


@workflow(name="other")
async def other(input: Any, step: Step) -> Any:
    return input
"""


def _config(folder: Path, backend: str) -> None:
    write(
        folder / "openworkflow.config.py",
        f"""
        from openworkflow import define_config
        config = define_config({backend}dirs=["./flows"])
        """,
    )
    write(folder / "flows" / "flows.py", FLOWS)


@pytest.fixture(params=["sqlite", "postgres"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    if request.param == "sqlite":
        _config(tmp_path, 'backend="sqlite:///ow.db", ')
        yield Project(tmp_path, clean_env(), f"sqlite:///{tmp_path / 'ow.db'}")
        return
    server = require_server_url()
    schema = f"ow_bulk_{uuid.uuid4().hex[:10]}"
    _config(tmp_path, "")  # the backend comes from the environment
    env = clean_env(OPENWORKFLOW_BACKEND_URL=server, OPENWORKFLOW_SCHEMA=schema)
    separator = "&" if "?" in server else "?"
    try:
        yield Project(tmp_path, env, f"{server}{separator}schema={schema}")
    finally:
        with psycopg.connect(server, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_cancel_with_filters_and_yes_prints_the_counts(project: Project) -> None:
    tagged = [project.start("echo", "customer=c-1") for _ in range(3)]
    untagged = project.start("echo")
    elsewhere = project.start("other", "customer=c-1")

    result = project.ow(
        "runs", "cancel", "--status", "pending", "--workflow", "echo", "--tag", "customer=c-1",
        "--yes", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"matched": 3, "canceled": 3, "skipped": 0}
    assert project.statuses([*tagged, untagged, elsewhere]) == [
        "canceled",
        "canceled",
        "canceled",
        "pending",
        "pending",
    ]

    # retry takes them back (failed or canceled only); the text output says how many
    retried = project.ow("runs", "retry", "--workflow", "echo", "--yes")
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.strip() == "Retried 3 runs."
    assert project.statuses(tagged) == ["pending"] * 3


def test_the_prompt_shows_the_count_and_no_cancels_nothing(project: Project) -> None:
    runs = [project.start("echo") for _ in range(2)]
    declined = project.ow("runs", "cancel", "--status", "pending", input="n\n")
    assert declined.returncode == 1
    assert "Cancel 2 runs (pending)?" in declined.stderr
    assert "Nothing was canceled" in declined.stderr
    assert project.statuses(runs) == ["pending", "pending"]

    accepted = project.ow("runs", "cancel", "--created-after", "1h", "--json", input="y\n")
    assert accepted.returncode == 0, accepted.stderr
    assert "Cancel 2 runs (pending or running or sleeping; created at or after" in (accepted.stderr)
    assert json.loads(accepted.stdout) == {"matched": 2, "canceled": 2, "skipped": 0}
    assert project.statuses(runs) == ["canceled", "canceled"]


def test_nothing_matching_says_so(project: Project) -> None:
    project.start("echo")
    result = project.ow("runs", "retry", "--workflow", "echo")  # pending: nothing to retry
    assert result.returncode == 0, result.stderr
    assert "No runs match these filters; nothing to retry." in result.stderr
    as_json = project.ow("runs", "cancel", "--created-before", "1h", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {"matched": 0, "canceled": 0, "skipped": 0}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["runs", "cancel"], "give a run ID, or filters"),
        (["runs", "retry", "--yes"], "give a run ID, or filters"),
        (["runs", "cancel", "0123", "--status", "pending"], "not both"),
        (["runs", "cancel", "--status", "completed"], "'completed' is not one of"),
        (["runs", "retry", "--status", "pending"], "'pending' is not one of"),
        (["runs", "cancel", "--created-before", "soon"], "--created-before"),
        (["runs", "retry", "--tag", "nokey"], "--tag"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    _config(tmp_path, 'backend="sqlite:///ow.db", ')
    result = ow(tmp_path, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_one_id_still_works(project: Project) -> None:
    run_id = project.start("echo")
    result = project.ow("runs", "cancel", run_id[:13], "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "canceled"
