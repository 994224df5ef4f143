"""``ow worker start --metrics-port``: the worker's metrics served over HTTP while it runs.

Checked: port 0 picks a free port and the URL is printed; a scrape shows the
runs claimed and completed by workflow after a run; SIGTERM stops the worker
cleanly and closes the port; the port can come from the environment
(``OPENWORKFLOW_WORKER_METRICS_PORT``) or the config (``worker={"metrics_port": ...}``),
the flag winning; a port that cannot be bound is a usage error.
"""

from __future__ import annotations

import re
import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from openworkflow.cli import templates
from tests.cli.helpers import Background, clean_env, ow, sqlite_project, write
from tests.support.waiting import block_until

URL = re.compile(r"Worker metrics at (http://\S+/metrics)")


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        return str(response.read().decode())


def sample(text: str, line_start: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def metrics_url(worker: Background) -> str:
    worker.wait_for("Worker metrics at")
    found = URL.search(worker.stderr)
    assert found is not None, worker.stderr
    return found.group(1)


@pytest.mark.slow
def test_metrics_port_serves_the_worker_registry_until_stopped(tmp_path: Path) -> None:
    sqlite_project(tmp_path)
    worker = Background(tmp_path, "worker", "start", "--metrics-port", "0")
    try:
        worker.wait_for("Worker started")
        url = metrics_url(worker)
        assert url.startswith("http://127.0.0.1:") and not url.startswith("http://127.0.0.1:0/")
        before = scrape(url)
        assert "openworkflow_worker_slots 10.0" in before  # the template's concurrency
        assert "openworkflow_worker_claim_duration_seconds_count" in before
        waited = ow(tmp_path, "run", "hello-world", "--wait", "--timeout", "30s")
        assert waited.returncode == 0, waited.stderr

        def counted() -> bool:
            text = scrape(url)
            claimed = 'openworkflow_worker_runs_claimed_total{workflow="hello-world"}'
            completed = 'openworkflow_worker_runs_completed_total{workflow="hello-world"}'
            # Two passes: the template's workflow sleeps for a second in between.
            return sample(text, claimed) == 2.0 and sample(text, completed) == 1.0

        block_until(counted, "the run to be counted", 20)
        text = scrape(url)
        assert 'openworkflow_worker_runs_parked_total{workflow="hello-world"} 1.0' in text
        assert 'openworkflow_worker_step_duration_seconds_count{workflow="hello-world"}' in text
        assert "run_id" not in text  # no per-run labels
    finally:
        finished = worker.stop(signal.SIGTERM)
    assert finished.returncode == 0, finished.stderr
    assert finished.stderr.rstrip().endswith("Worker stopped")
    assert "Traceback" not in finished.stderr
    with pytest.raises(urllib.error.URLError):
        scrape(url)  # the port was closed with the worker


@pytest.mark.slow
def test_metrics_port_from_the_environment_or_config(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        write(
            tmp_path / "openworkflow.config.py",
            f"""
            from openworkflow import define_config
            config = define_config(backend="sqlite:///ow.db", worker={{"metrics_port": {port}}})
            """,
        )
        write(tmp_path / "openworkflow" / "hello_world.py", templates.HELLO_WORLD)
        # The environment wins over the config (whose port is taken).
        env = clean_env(OPENWORKFLOW_WORKER_METRICS_PORT="0")
        worker = Background(tmp_path, "worker", "start", env=env)
        try:
            assert "openworkflow_worker_slots" in scrape(metrics_url(worker))
        finally:
            finished = worker.stop(signal.SIGTERM)
        assert finished.returncode == 0, finished.stderr

        # The config alone: its port is taken, so the worker refuses to start.
        refused = ow(tmp_path, "worker", "start")
    assert refused.returncode == 2, refused.stderr
    assert f"cannot serve worker metrics on 127.0.0.1:{port}" in refused.stderr


def test_metrics_port_already_taken_is_a_usage_error(tmp_path: Path) -> None:
    sqlite_project(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = ow(tmp_path, "worker", "start", "--metrics-port", str(port))
    assert result.returncode == 2, result.stderr
    assert f"cannot serve worker metrics on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_metrics_port_must_be_a_port(tmp_path: Path) -> None:
    sqlite_project(tmp_path)
    result = ow(tmp_path, "worker", "start", "--metrics-port", "70000")
    assert result.returncode == 2
    assert "--metrics-port" in result.stderr
