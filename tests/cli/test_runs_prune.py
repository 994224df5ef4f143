"""``ow runs prune --older-than D [--status S] [--workflow W] [--dry-run] [--json]``.

Invoked in-process through the real ``ow`` group (click's ``CliRunner``), with
``prune`` added to ``ow runs`` for the test when ``openworkflow/cli/runs.py``
does not register it yet.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from openworkflow.cli import main
from openworkflow.cli.prune import prune_runs
from openworkflow.cli.runs import runs
from openworkflow.sqlite import SqliteBackend
from tests.backend.helpers import create_pending_run, in_one_year
from tests.backend.test_retention import finished_run
from tests.cli.helpers import write


@pytest.fixture(autouse=True)
def clean_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OPENWORKFLOW_* setting left by another test (a .env loaded earlier) applies here."""
    for name in list(os.environ):
        if name.startswith("OPENWORKFLOW_") and not name.startswith("OPENWORKFLOW_TEST_"):
            monkeypatch.delenv(name)


@pytest.fixture
def registered() -> Iterator[None]:
    """``ow runs prune``, registered for the test unless ``runs.py`` already does."""
    if "prune" in runs.commands:
        yield
        return
    runs.add_command(prune_runs)
    try:
        yield
    finally:
        runs.commands.pop("prune", None)


async def _fill(database: Path) -> None:
    backend = SqliteBackend(str(database))
    try:
        for status in ("completed", "completed", "failed", "canceled"):
            await finished_run(backend, status, workflow_name="billing")
        await finished_run(backend, "completed", workflow_name="emails")
        await create_pending_run(backend, workflow_name="billing", available_at=in_one_year())
    finally:
        await backend.stop()


async def _counts(database: Path) -> dict[str, int]:
    backend = SqliteBackend(str(database))
    try:
        counts = await backend.count_workflow_runs()
    finally:
        await backend.stop()
    return {
        "completed": counts.completed,
        "failed": counts.failed,
        "canceled": counts.canceled,
        "pending": counts.pending,
    }


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    """A SQLite project with 5 finished runs (4 of "billing") and a pending one."""
    database = tmp_path / "ow.db"
    config = write(
        tmp_path / "openworkflow.config.py",
        f"""
        from openworkflow import define_config
        config = define_config(backend="sqlite:///{database}")
        """,
    )
    asyncio.run(_fill(database))
    time.sleep(0.05)  # every run is older than the 10 ms the tests prune at
    return config, database


def _ow(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *args], catch_exceptions=False)


@pytest.mark.usefixtures("registered")
def test_dry_run_counts_and_deletes_nothing(project: tuple[Path, Path]) -> None:
    config, database = project
    result = _ow(config, "runs", "prune", "--older-than", "10ms", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {
        "count": 5,
        "dry_run": True,
        "older_than": "10ms",
        "statuses": ["completed", "failed", "canceled"],
        "workflow": None,
    }
    assert asyncio.run(_counts(database)) == {
        "completed": 3,
        "failed": 1,
        "canceled": 1,
        "pending": 1,
    }

    human = _ow(config, "runs", "prune", "--older-than", "10ms", "--dry-run")
    assert human.stdout.strip() == "Would prune 5 finished runs (dry run: nothing deleted)."


@pytest.mark.usefixtures("registered")
def test_prunes_by_status_then_workflow_then_the_rest(project: tuple[Path, Path]) -> None:
    config, database = project
    young = _ow(config, "runs", "prune", "--older-than", "1h")
    assert young.exit_code == 0, young.stderr
    assert young.stdout.strip() == "Pruned 0 finished runs."

    failed = _ow(config, "runs", "prune", "--older-than", "10ms", "--status", "failed")
    assert failed.stdout.strip() == "Pruned 1 finished run."
    both = _ow(config, "runs", "prune", "--older-than=10ms", "--status=failed", "--status=canceled")
    assert both.stdout.strip() == "Pruned 1 finished run."

    emails = _ow(config, "--json", "runs", "prune", "--older-than", "10ms", "--workflow", "emails")
    assert json.loads(emails.stdout)["count"] == 1
    assert asyncio.run(_counts(database)) == {
        "completed": 2,
        "failed": 0,
        "canceled": 0,
        "pending": 1,
    }

    rest = _ow(config, "runs", "prune", "--older-than", "10ms")
    assert rest.stdout.strip() == "Pruned 2 finished runs."
    assert asyncio.run(_counts(database))["pending"] == 1


@pytest.mark.usefixtures("registered")
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--older-than", "soon"], "invalid --older-than 'soon'"),
        (["--older-than", "0s"], "must be positive"),
        (["--older-than", "1d", "--status", "running"], "'running' is not one of"),
        ([], "Missing option '--older-than'"),
    ],
)
def test_bad_arguments_are_usage_errors(
    project: tuple[Path, Path], args: list[str], expected: str
) -> None:
    config, database = project
    result = _ow(config, "runs", "prune", *args)
    assert result.exit_code == 2
    assert expected in result.stderr
    assert asyncio.run(_counts(database))["completed"] == 3


@pytest.mark.usefixtures("registered")
def test_no_database_yet_prunes_nothing(tmp_path: Path) -> None:
    database = tmp_path / "missing.db"
    config = write(
        tmp_path / "openworkflow.config.py",
        f"""
        from openworkflow import define_config
        config = define_config(backend="sqlite:///{database}")
        """,
    )
    result = _ow(config, "runs", "prune", "--older-than", "1d", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["count"] == 0
    assert "no database yet" in result.stderr.lower()
    assert not database.exists()
