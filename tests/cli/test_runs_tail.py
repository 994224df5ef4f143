"""``ow runs tail RUN_ID KEY``: a run's stream printed as it grows, one JSON line per item."""

from __future__ import annotations

import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tests.cli.helpers import OW, Background, clean_env, ow, write
from tests.fixtures.postgres import require_server_url
from tests.support.waiting import block_until

# Written before the run waits for "go", then after it: each with its expected line.
BEFORE = [
    ("plain text", '"plain text"'),
    ({"n": 1, "ü": "é"}, '{"n": 1, "ü": "é"}'),
    ([1, None, True], "[1, null, true]"),
    ('say "hi"\nbye', '"say \\"hi\\"\\nbye"'),
]
AFTER = [(3, "3"), (None, "null"), ("", '""')]
LINES = [line for _, line in BEFORE + AFTER]
BIG_ITEMS = 300  # of 4 KB each: far more than a pipe's buffer holds

FLOWS = f"""
from typing import Any

from openworkflow import Step, workflow


@workflow(name="ticker")
async def ticker(step: Step) -> str:
    for item in {[item for item, _ in BEFORE]!r}:
        await step.stream("ticks", item)
    await step.wait_for_signal("go", timeout="1h")
    for item in {[item for item, _ in AFTER]!r}:
        await step.stream("ticks", item)
    return "done"


@workflow(name="big")
async def big(step: Step) -> int:
    for n in range({BIG_ITEMS}):
        await step.stream("blob", {{"n": n, "pad": "x" * 4000}})
    return {BIG_ITEMS}
"""


class Tail(Background):
    """``ow runs tail`` in the background, its stdout readable as it comes."""

    @property
    def stdout(self) -> str:
        """Everything written to stdout so far."""
        return "".join(self._stdout)

    def wait_for_lines(self, count: int) -> list[str]:
        """Wait until ``count`` lines were printed; return the lines so far."""
        block_until(lambda: self.stdout.count("\n") >= count, f"{count} lines", 30)
        return self.stdout.splitlines()


class Project:
    """A project folder on one backend, and ``ow`` run in it."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env

    def ow(self, *args: str) -> subprocess.CompletedProcess[str]:
        return ow(self.folder, *args, env=self.env)

    def start(self, workflow: str) -> str:
        started = self.ow("run", workflow)
        assert started.returncode == 0, started.stderr
        return started.stdout.strip()

    def tail(self, run_id: str, key: str, **extra_env: str) -> Tail:
        tail = Tail(self.folder, "runs", "tail", run_id, key, env={**self.env, **extra_env})
        tail.wait_for("Following stream")  # the run was found: the tail now waits for items
        return tail

    @contextmanager
    def worker(self) -> Iterator[None]:
        worker = Background(self.folder, "worker", "start", env=self.env)
        worker.wait_for("Worker started")
        try:
            yield
        finally:
            finished = worker.stop(signal.SIGTERM)
            assert finished.returncode == 0, finished.stderr


def _sqlite(folder: Path) -> Iterator[Project]:
    _config(folder, 'backend="sqlite:///ow.db", ')
    yield Project(folder, clean_env())


def _postgres(folder: Path) -> Iterator[Project]:
    url = require_server_url()
    schema = f"ow_tail_{uuid.uuid4().hex[:10]}"
    _config(folder, "")  # the backend comes from the environment
    try:
        yield Project(folder, clean_env(OPENWORKFLOW_BACKEND_URL=url, OPENWORKFLOW_SCHEMA=schema))
    finally:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _config(folder: Path, backend: str) -> None:
    write(
        folder / "openworkflow.config.py",
        f"""
        from openworkflow import define_config
        config = define_config({backend}dirs=["./flows"], worker={{"shutdown_timeout": "2s"}})
        """,
    )
    write(folder / "flows" / "flows.py", FLOWS)


@pytest.fixture(params=["sqlite", "postgres"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    yield from (_sqlite if request.param == "sqlite" else _postgres)(tmp_path)


@pytest.fixture
def sqlite_project(tmp_path: Path) -> Iterator[Project]:
    yield from _sqlite(tmp_path)


@pytest.mark.slow
def test_tail_follows_the_stream_until_the_run_completes(project: Project) -> None:
    run_id = project.start("ticker")
    # Started before any worker: the run is pending, the tail must wait for it.
    tail = project.tail(run_id[:13], "ticks")
    try:
        with project.worker():
            assert tail.wait_for_lines(len(BEFORE)) == LINES[: len(BEFORE)]
            assert tail.process.poll() is None  # the run waits for "go": so does the tail

            signaled = project.ow("runs", "signal", run_id, "go")
            assert signaled.returncode == 0, signaled.stderr
            block_until(lambda: tail.process.poll() is not None, "the tail to exit", 30)
    finally:
        finished = tail.stop(signal.SIGKILL)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.splitlines() == LINES  # every item once, in order
    assert f"Run {run_id} completed" in finished.stderr

    # After the run: everything at once, then exit.
    again = project.ow("runs", "tail", run_id, "ticks", "--json")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == LINES


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["auto", "asyncio"])
def test_ctrl_c_while_waiting_exits_130_quietly(sqlite_project: Project, loop: str) -> None:
    run_id = sqlite_project.start("ticker")  # no worker: nothing will come
    tail = sqlite_project.tail(run_id, "ticks", OPENWORKFLOW_EVENT_LOOP=loop)
    finished = tail.stop(signal.SIGINT)
    assert finished.returncode == 130, finished.stderr
    assert finished.stdout == ""
    assert "Traceback" not in finished.stderr
    assert "Aborted" not in finished.stderr


@pytest.mark.slow
def test_a_closed_pipe_ends_the_tail_quietly(sqlite_project: Project) -> None:
    with sqlite_project.worker():
        run_id = sqlite_project.start("big")
        with subprocess.Popen(
            [*OW, "runs", "tail", run_id, "blob"],
            cwd=sqlite_project.folder,
            env=sqlite_project.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as process:
            assert process.stdout is not None and process.stderr is not None
            first = process.stdout.readline()
            process.stdout.close()  # as `| head -1` does; the tail still has much to write
            stderr = process.stderr.read()
            code = process.wait(30)
    assert first.startswith('{"n": 0, "pad": "xxx')
    assert code == 0, stderr
    for noise in ("Traceback", "BrokenPipe", "Exception ignored", "Error"):
        assert noise not in stderr


def test_unknown_runs_get_the_error_of_the_other_commands(sqlite_project: Project) -> None:
    # No database yet, then a database without that run: the wording of `ow runs signal`.
    for _ in range(2):
        tail = sqlite_project.ow("runs", "tail", "no-such-run", "ticks")
        signal_ = sqlite_project.ow("runs", "signal", "no-such-run", "go")
        assert tail.returncode == 1
        assert "no-such-run" in tail.stderr and "does not exist" in tail.stderr
        assert tail.stderr == signal_.stderr
        assert "Traceback" not in tail.stderr
        sqlite_project.start("ticker")


@pytest.mark.parametrize("key", ["", "k" * 1000])
def test_a_bad_key_is_a_usage_error(sqlite_project: Project, key: str) -> None:
    bad = sqlite_project.ow("runs", "tail", "some-run", key)
    assert bad.returncode == 2
    assert "invalid stream key" in bad.stderr and "Hint:" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_help_states_the_output_format(sqlite_project: Project) -> None:
    shown = sqlite_project.ow("runs", "tail", "--help")
    assert shown.returncode == 0
    assert "JSON" in shown.stdout and "quoted" in shown.stdout
    listed = sqlite_project.ow("runs", "--help")
    assert "tail" in listed.stdout
