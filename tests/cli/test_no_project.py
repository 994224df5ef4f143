"""Outside a project nothing is created, and read-only commands never create a database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.helpers import clean_env, ow, write

PROJECT_COMMANDS = [
    ("runs", "list"),
    ("runs", "show", "0000"),
    ("run", "hello-world"),
    ("signal", "send", "go"),
    ("migrate",),
    ("worker", "start"),
    ("dashboard", "--port", "0"),
]

CONFIG = """
from openworkflow import define_config
config = define_config(backend="sqlite:///data/ow.db", dirs=["./flows"])
"""

FLOW = """
from openworkflow import workflow


@workflow(name="hello")
async def hello() -> str:
    return "hi"
"""


@pytest.mark.parametrize("args", PROJECT_COMMANDS, ids=" ".join)
def test_a_command_outside_a_project_says_so_and_creates_nothing(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    result = ow(tmp_path, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "openworkflow.config.py" in result.stderr
    assert str(tmp_path.resolve()) in result.stderr  # where it looked
    for fix in ("ow init", "--config", "OPENWORKFLOW_BACKEND_URL"):
        assert fix in result.stderr, fix
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_database_from_the_environment_is_read_without_being_created(tmp_path: Path) -> None:
    env = clean_env(OPENWORKFLOW_BACKEND_URL="sqlite:///store/ow.db")
    listed = ow(tmp_path, "runs", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert f"No database yet at {tmp_path.resolve() / 'store' / 'ow.db'}" in listed.stderr
    assert "No runs found" in listed.stderr
    as_json = ow(tmp_path, "runs", "list", "--json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {"data": [], "next": None, "prev": None}
    assert list(tmp_path.iterdir()) == []

    # Without a config, a name the project cannot check is started as before.
    started = ow(tmp_path, "run", "anything", env=env)
    assert started.returncode == 0, started.stderr
    assert (tmp_path / "store" / "ow.db").exists()


def test_read_only_commands_in_a_fresh_project_create_no_database(tmp_path: Path) -> None:
    write(tmp_path / "openworkflow.config.py", CONFIG)
    write(tmp_path / "flows" / "hello.py", FLOW)
    database = tmp_path / "data" / "ow.db"
    missing = f"no database yet at {database}"

    listed = ow(tmp_path, "runs", "list")
    assert listed.returncode == 0, listed.stderr
    assert missing.capitalize() in listed.stderr and "No runs found" in listed.stderr

    for args in (("runs", "show", "0000"), ("runs", "cancel", "0000"), ("runs", "retry", "0000")):
        result = ow(tmp_path, *args)
        assert result.returncode == 1, (args, result.stderr)
        assert "Workflow run 0000 does not exist" in result.stderr and missing in result.stderr

    doctor = ow(tmp_path, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert missing in doctor.stdout and "looks good" in doctor.stdout
    report = json.loads(ow(tmp_path, "doctor", "--json").stdout)
    assert report["backend"]["exists"] is False and report["backend"]["reachable"] is None

    printed = ow(tmp_path, "migrate", "--print")
    assert printed.returncode == 0 and "CREATE TABLE" in printed.stdout

    assert not (tmp_path / "data").exists()

    # A command that writes creates it; then the readers see what it wrote.
    run_id = ow(tmp_path, "run", "hello").stdout.strip()
    assert database.exists()
    shown = ow(tmp_path, "runs", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["run"]["status"] == "pending"


def test_a_signal_nobody_waits_for_exits_1_and_still_prints_json(tmp_path: Path) -> None:
    write(tmp_path / "openworkflow.config.py", CONFIG)
    assert ow(tmp_path, "migrate").returncode == 0

    plain = ow(tmp_path, "signal", "send", "approve:42", "--data", '{"ok": true}')
    assert plain.returncode == 1
    assert plain.stdout == ""
    assert "No run was waiting for signal 'approve:42'" in plain.stderr
    assert "not buffered" in plain.stderr

    as_json = ow(tmp_path, "signal", "send", "approve:42", "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == {"signal": "approve:42", "workflow_run_ids": []}
    assert "No run was waiting" in as_json.stderr
