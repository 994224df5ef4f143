"""Global options, exit codes, and configuration errors as the user sees them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from openworkflow import __version__
from tests.cli.helpers import clean_env, ow, sqlite_project, write


def test_version_help_and_completion(tmp_path: Path) -> None:
    for flag in ("--version", "-V"):
        result = ow(tmp_path, flag)
        assert result.returncode == 0
        assert result.stdout.strip() == f"ow {__version__}"
    help_text = ow(tmp_path, "--help").stdout
    for command in ("init", "doctor", "worker", "run", "runs", "signal", "migrate"):
        assert f"  {command} " in help_text
    assert "_OW_COMPLETE=bash_source ow" in help_text

    completion = ow(tmp_path, env=clean_env(_OW_COMPLETE="bash_source"))
    assert completion.returncode == 0
    assert "_ow_completion" in completion.stdout

    as_module = subprocess.run(
        [sys.executable, "-m", "openworkflow", "--version"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert as_module.stdout.strip() == f"ow {__version__}"


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert ow(tmp_path, "no-such-command").returncode == 2
    bad_json = ow(tmp_path, "run", "x", "--input", "{nope")
    assert bad_json.returncode == 2
    assert "not valid JSON" in bad_json.stderr
    assert ow(tmp_path, "runs", "list", "--status", "weird").returncode == 2


def test_a_bad_value_in_the_config_names_the_field_and_the_file(tmp_path: Path) -> None:
    config = write(
        tmp_path / "openworkflow.config.py",
        """
        from openworkflow import define_config
        config = define_config(backend="sqlite:///ow.db", worker={"concurrency": 0})
        """,
    )
    for command in (["doctor"], ["worker", "start"], ["runs", "list", "--json"]):
        result = ow(tmp_path, *command)
        assert result.returncode == 2, command
        assert "worker.concurrency" in result.stderr
        assert str(config) in result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout == ""


def test_bad_flags_and_environment_values_name_their_source(tmp_path: Path) -> None:
    sqlite_project(tmp_path)
    flag = ow(tmp_path, "worker", "start", "-c", "0")
    assert flag.returncode == 2
    assert "--concurrency" in flag.stderr

    env = clean_env(OPENWORKFLOW_WORKER_CONCURRENCY="many")
    variable = ow(tmp_path, "worker", "start", env=env)
    assert variable.returncode == 2
    assert "OPENWORKFLOW_WORKER_CONCURRENCY" in variable.stderr


def test_a_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    for args in (["runs", "list", "--config", "missing.py"], ["--config", "missing.py", "doctor"]):
        result = ow(tmp_path, *args)
        assert result.returncode == 2, args
        assert str(tmp_path / "missing.py") in result.stderr
        assert "Hint:" in result.stderr


def test_config_may_live_elsewhere_and_debug_shows_tracebacks(tmp_path: Path) -> None:
    project = sqlite_project(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = str(project / "openworkflow.config.py")
    result = ow(elsewhere, "--config", config, "run", "hello-world", "--json")
    assert result.returncode == 0, result.stderr
    assert (project / "openworkflow" / "backend.db").exists()

    broken = write(tmp_path / "broken.config.py", "config = 1 / 0\n")
    quiet = ow(elsewhere, "doctor", "--config", str(broken))
    assert quiet.returncode == 2
    assert "ZeroDivisionError" in quiet.stderr and "Traceback" not in quiet.stderr
    assert f"{broken}:1" in quiet.stderr
    loud = ow(elsewhere, "--debug", "doctor", "--config", str(broken))
    assert loud.returncode == 2
    assert "Traceback" in loud.stderr
