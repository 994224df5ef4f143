"""``ow dashboard``: refuses an unprotected public bind, serves, stops on SIGINT."""

from __future__ import annotations

import re
import signal
import sys
import urllib.request
from pathlib import Path

import pytest

import openworkflow.cli
from openworkflow.cli import failure
from openworkflow.cli.dashboard import auth_from_environment, check_bind
from openworkflow.dashboard.security import BasicCredentials
from tests.cli import helpers
from tests.cli.helpers import Background, clean_env, ow, sqlite_project, write

# Until `dashboard` is registered in openworkflow.cli, run the group with it added.
_SHIM = (
    "import openworkflow.cli as cli; "
    "cli._LAZY_COMMANDS.setdefault('dashboard', 'openworkflow.cli.dashboard:dashboard'); "
    "cli.main(prog_name='ow')"
)
OW_DASHBOARD = (
    helpers.OW
    if "dashboard" in openworkflow.cli._LAZY_COMMANDS
    else [sys.executable, "-P", "-c", _SHIM]
)


@pytest.fixture(autouse=True)
def _dashboard_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helpers, "OW", OW_DASHBOARD)


def test_refuses_a_public_bind_without_auth(tmp_path: Path) -> None:
    sqlite_project(tmp_path)
    result = ow(tmp_path, "dashboard", "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2, result.stderr
    assert "refusing to serve the dashboard on 0.0.0.0 without authentication" in result.stderr
    assert "Hint: set OPENWORKFLOW_DASHBOARD_AUTH=user:password" in result.stderr
    assert "--insecure" in result.stderr
    assert "Traceback" not in result.stderr


def test_refuses_a_malformed_auth_value_without_printing_it(tmp_path: Path) -> None:
    sqlite_project(tmp_path)
    env = clean_env(OPENWORKFLOW_DASHBOARD_AUTH="s3cr3t-without-user")
    result = ow(tmp_path, "dashboard", env=env)
    assert result.returncode == 2
    assert "OPENWORKFLOW_DASHBOARD_AUTH must be user:password" in result.stderr
    assert "s3cr3t" not in result.stderr + result.stdout


def test_bind_rules() -> None:
    credentials = BasicCredentials("admin", "secret")
    check_bind("127.0.0.1", None, insecure=False)
    check_bind("localhost", None, insecure=False)
    check_bind("0.0.0.0", credentials, insecure=False)
    check_bind("0.0.0.0", None, insecure=True)
    with pytest.raises(failure.CliError) as refused:
        check_bind("192.168.1.5", None, insecure=False)
    assert refused.value.exit_code == 2


def test_auth_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENWORKFLOW_DASHBOARD_AUTH", raising=False)
    assert auth_from_environment() is None
    monkeypatch.setenv("OPENWORKFLOW_DASHBOARD_AUTH", "ana:pa:ss")
    assert auth_from_environment() == BasicCredentials("ana", "pa:ss")


@pytest.mark.slow
def test_serves_pages_and_health_then_stops_on_sigint(tmp_path: Path) -> None:
    sqlite_project(tmp_path)
    write(tmp_path / "openworkflow" / "typo.py", "from openworkflow import workflw\n")
    assert ow(tmp_path, "migrate").returncode == 0  # the dashboard does not create the database
    server = Background(tmp_path, "dashboard", "--port", "0")
    try:
        server.wait_for("Dashboard running at", timeout=30)
        match = re.search(r"Dashboard running at (http://127\.0\.0\.1:\d+)", server.stderr)
        assert match, server.stderr
        url = match.group(1)
        with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
            assert response.status == 200
            assert response.read() == b"ok"
        with urllib.request.urlopen(url + "/", timeout=5) as response:
            page = response.read().decode()
        assert 'form id="create-run"' in page
        assert '<option value="hello-world">' in page  # discovered, for its schema
    finally:
        finished = server.stop(signal.SIGINT)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == url
    assert "Warning:" in finished.stderr and "typo.py:1: ImportError" in finished.stderr
    assert "no authentication" in finished.stderr
    assert "Shutting down dashboard" in finished.stderr
    assert finished.stderr.rstrip().endswith("Dashboard stopped")
    assert "Traceback" not in finished.stderr
