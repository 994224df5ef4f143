"""``ow dev`` as a user runs it: a subprocess in a temporary project, edited while it runs."""

from __future__ import annotations

import socket
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from openworkflow import SyncOpenWorkflow
from tests.cli.helpers import dashboard_url, ow_dev
from tests.support.waiting import block_until

GREET = """
from openworkflow import Step, workflow

@workflow(name="greet")
async def greet(step: Step) -> str:
    return await step.run("say", lambda: "{text}")
"""


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")


def _project(tmp_path: Path) -> Path:
    _write(
        tmp_path / "openworkflow.config.py",
        """
        from openworkflow import define_config
        # The database sits inside the watched folder: its writes must not reload.
        config = define_config(backend="sqlite:///flows/dev.db", dirs=["./flows"],
                               worker={"concurrency": 2})
        """,
    )
    _write(tmp_path / "flows" / "greet.py", GREET.format(text="v1"))
    return tmp_path


def _greet(client: SyncOpenWorkflow) -> str:
    return str(client.run("greet").result(timeout="20s"))


def _restarts(log: Path) -> int:
    return log.read_text(encoding="utf-8", errors="replace").count("restarting the worker")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode("utf-8"))


@pytest.mark.slow
def test_ow_dev_serves_the_dashboard_reloads_on_edit_and_survives_errors(
    tmp_path: Path,
) -> None:
    project = _project(tmp_path)
    with (
        ow_dev(project, "--port", "0") as log,
        SyncOpenWorkflow(f"sqlite:///{project / 'flows' / 'dev.db'}") as client,
    ):
        assert _greet(client) == "v1"
        dashboard = dashboard_url(log)
        assert _get(f"{dashboard}/healthz") == "ok"
        assert "greet" in _get(f"{dashboard}/?workflow=greet")
        for _ in range(5):  # database writes (db, -wal, -shm in the watched folder)
            _greet(client)
        time.sleep(0.5)
        assert _restarts(log) == 0, log.read_text()

        saved = time.perf_counter()
        _write(project / "flows" / "greet.py", GREET.format(text="v2"))
        block_until(lambda: _greet(client) == "v2", "the edited code to run", 30)
        reload_ms = (time.perf_counter() - saved) * 1000
        print(f"save -> new code ran: {reload_ms:.0f} ms")
        assert "greet.py" in log.read_text()
        assert _get(f"{dashboard}/healthz") == "ok"  # untouched by the reload

        _write(project / "flows" / "broken.py", "def oops(:\n")
        block_until(lambda: "broken.py" in log.read_text(), "the broken file report", 20)
        block_until(lambda: "exited with code" in log.read_text(), "the failed worker", 20)
        (project / "flows" / "broken.py").unlink()
        _write(project / "flows" / "greet.py", GREET.format(text="v3"))
        block_until(lambda: _greet(client) == "v3", "recovery after the broken file", 30)
    assert "[ow dev] stopped" in log.read_text()
    assert "dashboard exited" not in log.read_text()


@pytest.mark.slow
def test_ow_dev_keeps_the_worker_when_the_dashboard_port_is_taken(tmp_path: Path) -> None:
    project = _project(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with ow_dev(project, "--port", str(port)) as log:
            block_until(lambda: "dashboard exited with code 1" in log.read_text(), "the report", 30)
            assert f"cannot listen on 127.0.0.1:{port}" in log.read_text()
            with SyncOpenWorkflow(f"sqlite:///{project / 'flows' / 'dev.db'}") as client:
                assert _greet(client) == "v1"
