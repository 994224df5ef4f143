"""``ow doctor``: healthy, no config, broken files, duplicates, an unreachable database."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.helpers import clean_env, ow, sqlite_project, write

BROKEN = """
from openworkflow import workflow

VALUE = 1
raise RuntimeError("cannot start")
"""


def test_doctor_on_a_healthy_project(tmp_path: Path) -> None:
    sqlite_project(tmp_path)
    assert ow(tmp_path, "migrate").returncode == 0  # doctor itself never creates the database
    result = ow(tmp_path, "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(tmp_path / "openworkflow.config.py") in result.stdout
    assert "hello-world (version: -)" in result.stdout
    assert "connected, schema version" in result.stdout
    assert "looks good" in result.stdout

    report = json.loads(ow(tmp_path, "doctor", "--json").stdout)
    assert report["ok"] is True
    assert report["backend"]["kind"] == "sqlite"
    assert report["backend"]["reachable"] is True
    assert report["backend"]["migration_version"] >= 0
    assert report["workflows"] == [
        {
            "name": "hello-world",
            "version": None,
            "source": f"{tmp_path / 'openworkflow' / 'hello_world.py'}:18",
        }
    ]


def test_doctor_without_a_config_suggests_init(tmp_path: Path) -> None:
    result = ow(tmp_path, "doctor")
    assert result.returncode == 2
    assert "No config file found" in result.stdout
    assert "ow init" in result.stdout
    # Diagnosing must not create the default database in a random folder.
    assert not (tmp_path / "openworkflow").exists()


def test_doctor_shows_the_broken_file_and_line_and_the_other_workflows(tmp_path: Path) -> None:
    sqlite_project(tmp_path)
    write(tmp_path / "openworkflow" / "broken.py", BROKEN)
    result = ow(tmp_path, "doctor")
    assert result.returncode == 2, result.stdout
    assert f"{tmp_path / 'openworkflow' / 'broken.py'}:4" in result.stdout
    assert "RuntimeError: cannot start" in result.stdout
    assert "hello-world (version: -)" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_doctor_lists_both_places_of_a_duplicate(tmp_path: Path) -> None:
    sqlite_project(tmp_path)
    original = tmp_path / "openworkflow" / "hello_world.py"
    copy = tmp_path / "openworkflow" / "sub" / "again.py"
    write(copy, original.read_text())
    result = ow(tmp_path, "doctor", "--json")
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report["ok"] is False
    [duplicate] = report["duplicates"]
    assert duplicate["name"] == "hello-world"
    assert {duplicate["first"], duplicate["second"]} == {f"{original}:18", f"{copy}:18"}


def test_doctor_masks_the_password_of_an_unreachable_database(tmp_path: Path) -> None:
    sqlite_project(tmp_path)
    env = clean_env(OPENWORKFLOW_BACKEND_URL="postgresql://u:s3cr3t@127.0.0.1:1/db")
    result = ow(tmp_path, "doctor", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "postgresql://u:***@127.0.0.1:1/db" in result.stdout
    assert "OPENWORKFLOW_BACKEND_URL" in result.stdout  # where the backend came from
    assert "unreachable" in result.stdout
    for command in (["doctor", "--json"], ["runs", "list", "--debug"], ["migrate"]):
        again = ow(tmp_path, *command, env=env)
        assert again.returncode == 1, command
        assert "s3cr3t" not in again.stdout + again.stderr, command
    assert "s3cr3t" not in result.stdout + result.stderr


def test_doctor_flags_missing_dirs_and_no_workflows(tmp_path: Path) -> None:
    write(
        tmp_path / "openworkflow.config.py",
        """
        from openworkflow import define_config
        config = define_config(backend="sqlite:///ow.db", dirs=["./flows", "./nowhere"])
        """,
    )
    (tmp_path / "flows").mkdir()
    result = ow(tmp_path, "doctor")
    assert result.returncode == 2
    assert f"{tmp_path / 'nowhere'}  (missing)" in result.stdout
    assert "No workflows found" in result.stdout
