"""Run the real ``ow`` as a subprocess, in a temporary project, with a clean environment."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from openworkflow.cli import templates
from tests.support.waiting import block_until

_SCRIPT = Path(sys.executable).with_name("ow")
# The installed script, as users run it; `python -m openworkflow` would put the
# project folder (which may hold a user `openworkflow/` package) first on sys.path.
OW = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "openworkflow"]


def clean_env(**extra: str) -> dict[str, str]:
    """Only PATH and HOME from this process, plus what the test sets."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    env.update(extra)
    return env


def ow(
    cwd: Path,
    *args: str,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``ow ARGS`` in ``cwd`` and capture its output."""
    return subprocess.run(
        [*OW, *args],
        cwd=cwd,
        env=env if env is not None else clean_env(),
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write(path: Path, text: str) -> Path:
    """Write dedented text, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def sqlite_project(folder: Path) -> Path:
    """What ``ow init --yes`` makes, written directly (faster than a subprocess)."""
    write(folder / "openworkflow.config.py", templates.config_file("sqlite"))
    write(folder / "openworkflow" / "hello_world.py", templates.HELLO_WORLD)
    return folder


@dataclass
class Finished:
    """How a background ``ow`` ended."""

    returncode: int
    stdout: str
    stderr: str


class Background:
    """``ow`` running in the background, its output collected as it comes."""

    def __init__(self, cwd: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [*OW, *args],
            cwd=cwd,
            env=env if env is not None else clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self._stdout)),
            threading.Thread(target=self._read, args=(self.process.stderr, self._stderr)),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str], into: list[str]) -> None:
        with stream:
            for line in stream:
                into.append(line)

    @property
    def stderr(self) -> str:
        """Everything written to stderr so far."""
        return "".join(self._stderr)

    def wait_for(self, text: str, timeout: float = 20) -> None:
        """Wait until ``text`` shows up on stderr (fails early if the process exits)."""

        def seen() -> bool:
            if text in self.stderr:
                return True
            if self.process.poll() is not None:
                raise AssertionError(f"ow exited ({self.process.returncode}):\n{self.stderr}")
            return False

        block_until(seen, repr(text), timeout)

    def stop(self, number: int = signal.SIGTERM, timeout: float = 30) -> Finished:
        """Send a signal and wait for the process to end."""
        if self.process.poll() is None:
            self.process.send_signal(number)
        try:
            returncode = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            returncode = self.process.wait()
        for reader in self._readers:
            reader.join(10)
        return Finished(returncode, "".join(self._stdout), self.stderr)


@contextmanager
def ow_dev(project: Path, *args: str) -> Iterator[Path]:
    """``ow dev ARGS`` running in ``project`` for the block; yields the log it writes.

    ``OPENWORKFLOW_*`` variables of this process are left out. At the end it is
    stopped with SIGINT, as a user's Ctrl-C, and must exit 0.
    """
    log = project / "dev.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPENWORKFLOW_")}
    with log.open("w") as sink:
        # -P: the project folder (which may hold a user openworkflow/) is not put on sys.path.
        process = subprocess.Popen(
            [sys.executable, "-P", "-m", "openworkflow", "dev", *args],
            cwd=project,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        yield log
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert code == 0, log.read_text()


def dashboard_url(log: Path) -> str:
    """The dashboard URL ``ow dev`` (or ``ow dashboard``) printed in its log."""
    found: list[str] = []

    def printed() -> bool:
        found[:] = re.findall(r"^http://127\.0\.0\.1:\d+$", log.read_text(), re.MULTILINE)
        return bool(found)

    block_until(printed, "the dashboard's URL", 30)
    return found[0]
