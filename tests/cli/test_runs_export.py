"""``ow runs export ID [--output FILE]``: a run's history, printed or written, replayable.

The command is invoked in-process through the real ``ow`` group (click's
``CliRunner``), with ``export`` added to ``ow runs`` for the test when
``openworkflow/cli/runs.py`` does not register it yet.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from openworkflow import OpenWorkflow, Step, workflow
from openworkflow.cli import main
from openworkflow.cli.export import export_run
from openworkflow.cli.runs import runs
from openworkflow.errors import ReplayDivergenceError
from openworkflow.sqlite import SqliteBackend
from openworkflow.testing.replay import replay
from tests.cli.helpers import write
from tests.worker.helpers import running_worker, wait_for_status


@workflow(name="export-me")
async def export_me(input: dict[str, str], step: Step) -> str:
    hello = await step.run("hello", lambda: f"hello {input['name']}")
    await step.sleep("nap", "2ms")
    return str(await step.run("shout", lambda: hello.upper()))


@workflow(name="export-me")
async def export_me_renamed(input: dict[str, str], step: Step) -> str:
    hello = await step.run("greet", lambda: f"hello {input['name']}")
    return str(hello)


@pytest.fixture
def registered() -> Iterator[None]:
    """``ow runs export``, registered for the test unless ``runs.py`` already does."""
    if "export" in runs.commands:
        yield
        return
    runs.add_command(export_run)
    try:
        yield
    finally:
        runs.commands.pop("export", None)


async def _record(database: Path) -> str:
    backend = SqliteBackend(str(database))
    try:
        async with running_worker(backend, [export_me]):
            handle = await OpenWorkflow(backend).run(export_me, {"name": "Zoë"})
            run = await wait_for_status(backend, handle.id, "completed", "failed")
        assert run.status == "completed", run.error
        return handle.id
    finally:
        await backend.stop()


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, str]:
    """A project on a SQLite file holding one completed run; (config file, run id)."""
    config = write(
        tmp_path / "openworkflow.config.py",
        f"""
        from openworkflow import define_config
        config = define_config(backend="sqlite:///{tmp_path / "ow.db"}")
        """,
    )
    return config, asyncio.run(_record(tmp_path / "ow.db"))


def _ow(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *args], catch_exceptions=False)


@pytest.mark.usefixtures("registered")
def test_export_prints_a_history_that_replays(project: tuple[Path, str]) -> None:
    config, run_id = project
    result = _ow(config, "runs", "export", run_id[:13])  # an id prefix is enough
    assert result.exit_code == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    assert document["format"] == "openworkflow-run-history"
    assert document["run"]["id"] == run_id
    assert [a["step_name"] for a in document["step_attempts"]] == ["hello", "nap", "shout"]
    assert document["run"]["output"] == "HELLO ZOË"

    replay(export_me, document)
    with pytest.raises(ReplayDivergenceError) as raised:
        replay(export_me_renamed, document)
    assert (raised.value.kind, raised.value.step_name) == ("added", "greet")


@pytest.mark.usefixtures("registered")
def test_export_writes_the_file_given(project: tuple[Path, str], tmp_path: Path) -> None:
    config, run_id = project
    target = tmp_path / "histories" / "run.json"
    target.parent.mkdir()
    result = _ow(config, "runs", "export", run_id, "--output", str(target))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert f"Exported run {run_id} (export-me), 3 step attempts, to {target}" in result.stderr
    assert json.loads(target.read_text(encoding="utf-8"))["run"]["id"] == run_id
    replay(export_me, target)

    again = _ow(config, "--json", "runs", "export", run_id, "-o", str(target))
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout) == {
        "workflow_run_id": run_id,
        "output": str(target),
        "step_attempts": 3,
    }


@pytest.mark.usefixtures("registered")
def test_export_of_an_unknown_run_fails(project: tuple[Path, str], tmp_path: Path) -> None:
    config, _ = project
    result = _ow(config, "runs", "export", "no-such-run")
    assert result.exit_code == 1
    assert "no-such-run" in result.stderr
    assert result.stdout == ""

    unwritable = _ow(config, "runs", "export", project[1], "-o", str(tmp_path / "no" / "x.json"))
    assert unwritable.exit_code != 0
    assert not (tmp_path / "no").exists()
