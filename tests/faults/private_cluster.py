"""A throwaway PostgreSQL cluster per test, for fault tests that restart or stop the server.

Restarting the shared cluster (port 5432) disturbs every other test using it
and rules out running the suite in parallel, so a test that strikes the
server gets a cluster of its own, as the ``cluster`` fixture (registered for
every fault test by ``tests/faults/conftest.py``):

    async def test_something(cluster: PrivateCluster) -> None:
        backend = PostgresBackend(cluster.url, ...)
        cluster.restart("immediate")

:func:`private_cluster` creates a cluster of the installed PostgreSQL version
with Debian's ``pg_createcluster`` on a free port (trust auth on 127.0.0.1,
fsync and full-page writes off, small shared buffers: it has to survive a
server crash, not a machine crash), starts it, yields a
:class:`PrivateCluster` (its URL, and ``restart(mode)`` / ``stop(mode)`` /
``start()``) and drops it when the block ends, whatever happened in it.
A cluster's name carries the id of the process that made it
(``owf_fault_<pid>_<hex>``), so clusters left behind by a run that was killed
are dropped when the next one starts (:func:`drop_leftover_clusters`), while
those of live parallel workers (pytest-xdist) are left alone.

Without the tools (or the right to use them: root or the ``postgres`` user)
the test is skipped locally and fails under ``CI``.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

NAME_PREFIX = "owf_fault"
_NAME = re.compile(rf"^{NAME_PREFIX}_(\d+)_[0-9a-f]+$")
TOOLS = ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster", "pg_lsclusters", "pg_isready")
HOST = "127.0.0.1"
CONFIG_ROOT = Path("/etc/postgresql")
CREATE_ATTEMPTS = 4
"""Tries with another port when the chosen one was taken meanwhile (a parallel worker)."""
COMMAND_TIMEOUT_S = 60

# Speed where it costs no durability the tests rely on: fsync and full-page
# writes only matter when the machine goes down (the page cache survives a
# server crash, ``-m immediate``). synchronous_commit stays on: off, a crash
# loses the last commits the clients were told succeeded (the ledger of the
# F3 storm lost rows that way), which no engine could survive.
SETTINGS = """\
listen_addresses = '127.0.0.1'
fsync = off
full_page_writes = off
shared_buffers = 16MB
max_connections = 100
"""


class ClusterUnavailableError(Exception):
    """A private cluster cannot be created here (the reason is the message)."""


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=COMMAND_TIMEOUT_S
    )


def _checked(command: list[str]) -> str:
    """Run ``command``; its stdout, or :class:`AssertionError` with its output if it failed."""
    result = _run(command)
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited with {result.returncode}: {result.stdout}{result.stderr}"
        )
    return result.stdout


@dataclass(frozen=True)
class PrivateCluster:
    """One throwaway cluster: where it listens and how to strike it."""

    version: str
    name: str
    port: int
    created_in_s: float
    """How long creating and starting it took."""

    @property
    def url(self) -> str:
        """The ``postgres`` database as the ``postgres`` user (trust auth, no password)."""
        return f"postgresql://postgres@{HOST}:{self.port}/postgres"

    def ctl(self, *action: str) -> None:
        """Run ``pg_ctlcluster VERSION NAME ACTION...``.

        Raises:
            AssertionError: it failed or ran out of time; the message says what
                the server was doing (its processes and the end of its log).
        """
        command = ["pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, *action]
        try:
            _checked(command)
        except (AssertionError, subprocess.TimeoutExpired) as error:
            raise AssertionError(self._diagnosis(" ".join(action), error)) from error

    def restart(self, mode: str = "fast") -> None:
        """Restart (``smart``, ``fast`` or ``immediate``: a crash) and wait until it answers.

        A stop and a start, as ``pg_ctlcluster restart`` does, so that a
        failure says which half it was. (A stop that ran past its deadline in
        CI was the server waiting for half-open connection attempts, see
        ``openworkflow/postgres/attempt.py``.)
        """
        self.stop(mode)
        self.start()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate``: a crash, recovered at the next start)."""
        self.ctl("stop", "-m", mode)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self.ctl("start")
        self.wait_ready()

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` of the server's log (Debian's per-cluster log file)."""
        path = Path(f"/var/log/postgresql/postgresql-{self.version}-{self.name}.log")
        try:
            return "\n".join(
                path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
            )
        except OSError as error:
            return f"(no log: {error})"

    def _diagnosis(self, action: str, error: Exception) -> str:
        if isinstance(error, subprocess.TimeoutExpired):
            output = b"".join(
                part for part in (error.stdout, error.stderr) if isinstance(part, bytes)
            )
            what = (
                f"ran past {error.timeout:.0f} s; its output: {output.decode(errors='replace')!r}"
            )
        else:
            what = f"failed: {error}"
        try:
            answers = str(self.is_ready())
        except subprocess.TimeoutExpired:
            answers = "unknown (pg_isready ran out of time)"
        return (
            f"pg_ctlcluster {action} of cluster {self.name} (port {self.port}) {what}; "
            f"server answers now: {answers}; its processes:\n{self.processes()}\n"
            f"server log:\n{self.log_tail()}"
        )

    def processes(self) -> str:
        """The server's processes as ``ps`` lists them (state, what each waits in)."""
        listing = _run(["ps", "-eo", "pid,ppid,stat,etimes,wchan:24,args"]).stdout.splitlines()
        return "\n".join(line for line in listing[1:] if self.name in line) or "(none)"

    def started_at(self) -> float:
        """When the server last started (epoch seconds): the end of a restart's outage.

        ``pg_ctlcluster`` returns a second or two after the server accepts
        connections; recovery figures count from the strike to this instant's
        first progress, not to when the command returned.
        """
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as connection:
            row = connection.execute(
                "SELECT extract(epoch FROM pg_postmaster_start_time())::float8"
            ).fetchone()
        assert row is not None
        return float(row[0])

    def is_ready(self) -> bool:
        """Whether the server accepts connections (``pg_isready``)."""
        result = subprocess.run(
            ["pg_isready", "-q", "-h", HOST, "-p", str(self.port)], check=False, timeout=30
        )
        return result.returncode == 0

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the server accepts connections."""
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"private cluster on port {self.port} not ready after {timeout:.0f} s; "
                    f"server log:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def ensure_running(self) -> None:
        """Whatever happened, leave the server running and accepting connections."""
        if not self.is_ready():
            _run(["pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, "start"])
        self.wait_ready()

    def drop(self) -> None:
        """Stop the server (immediately: nothing in it is kept) and delete the cluster."""
        _drop(self.version, self.name)


def _drop(version: str, name: str) -> None:
    _run(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "stop", "-m", "immediate"])
    _run(["pg_dropcluster", version, name])
    # pg_dropcluster leaves the configuration folder behind when it holds a
    # file it did not write (our conf.d settings).
    shutil.rmtree(CONFIG_ROOT / version / name, ignore_errors=True)


def installed_version() -> str:
    """The newest PostgreSQL server version installed (Debian layout)."""
    found = sorted(
        (path.parent.parent.name for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")),
        key=lambda version: [int(part) for part in re.findall(r"\d+", version)],
    )
    if not found:
        raise ClusterUnavailableError("no PostgreSQL server under /usr/lib/postgresql")
    return found[-1]


def _clusters() -> list[tuple[str, str, int]]:
    """(version, name, port) of every cluster ``pg_lsclusters`` knows."""
    listing = _run(["pg_lsclusters", "--no-header"]).stdout
    found = []
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2].isdigit():
            found.append((fields[0], fields[1], int(fields[2])))
    return found


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def drop_leftover_clusters() -> list[str]:
    """Drop private clusters whose creating process is gone; their names.

    Also the configuration folders of clusters dropped half-way (which
    ``pg_lsclusters`` no longer lists).
    """
    found = {(version, name) for version, name, _ in _clusters()}
    found |= {(path.parent.name, path.name) for path in CONFIG_ROOT.glob(f"*/{NAME_PREFIX}_*")}
    dropped = []
    for version, name in sorted(found):
        match = _NAME.match(name)
        if match and int(match.group(1)) != os.getpid() and not _process_alive(int(match.group(1))):
            _drop(version, name)
            dropped.append(f"{version}/{name}")
    return dropped


def _free_port(taken: set[int]) -> int:
    """A port nothing listens on now and no cluster is configured for."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((HOST, 0))
            port = int(probe.getsockname()[1])
        if port not in taken:
            return port


def _why_not_here() -> str | None:
    """Why clusters cannot be created on this machine, or None."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found (Debian's postgresql-common)"
    if os.geteuid() != 0 and getpass.getuser() != "postgres":
        return "pg_createcluster needs root or the postgres user"
    return None


def _create_on(version: str, name: str, port: int) -> None:
    """Create and start cluster ``name`` on ``port``; raise AssertionError if either fails."""
    _checked(
        [
            "pg_createcluster",
            version,
            name,
            "--port",
            str(port),
            "--start-conf",
            "manual",
            "--",
            "--auth=trust",
            "--no-sync",
        ]
    )
    conf_d = CONFIG_ROOT / version / name / "conf.d"
    conf_d.mkdir(parents=True, exist_ok=True)
    (conf_d / "owf_fault_test.conf").write_text(SETTINGS, encoding="utf-8")
    _checked(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "start"])


def create_cluster() -> PrivateCluster:
    """Create and start a private cluster; the caller drops it.

    Raises:
        ClusterUnavailableError: the tools are missing, or creating it failed every time.
    """
    reason = _why_not_here()
    if reason is not None:
        raise ClusterUnavailableError(reason)
    drop_leftover_clusters()
    version = installed_version()
    began = time.monotonic()
    errors = []
    for _ in range(CREATE_ATTEMPTS):
        name = f"{NAME_PREFIX}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        port = _free_port({port for _, _, port in _clusters()})
        try:
            _create_on(version, name, port)
            cluster = PrivateCluster(version, name, port, time.monotonic() - began)
            cluster.wait_ready()
        except (AssertionError, OSError, subprocess.TimeoutExpired) as error:
            # Most likely another process took the port between the probe and the start.
            errors.append(str(error).strip()[-600:])
            _drop(version, name)
            continue
        return cluster
    raise ClusterUnavailableError(
        f"creating a cluster failed {CREATE_ATTEMPTS} times; last: {errors[-1]}"
    )


def require_cluster() -> PrivateCluster:
    """A new private cluster; skips the test locally, fails it under ``CI``, without one."""
    try:
        return create_cluster()
    except ClusterUnavailableError as error:
        message = f"no private PostgreSQL cluster for this fault test: {error}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run the database fault tests)")
        pytest.skip(message)


@contextlib.contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    """A private cluster for the block, dropped when it ends (also on failure)."""
    cluster = require_cluster()
    try:
        yield cluster
    finally:
        cluster.drop()


@pytest.fixture(name="cluster")
def private_cluster_fixture() -> Iterator[PrivateCluster]:
    """A throwaway cluster for one test: restarting it disturbs nobody else."""
    with private_cluster() as cluster:
        yield cluster


def fetch_rows(url: str, query: sql.Composed | str, params: Any = ()) -> list[Any]:
    """Every row ``query`` returns, on a connection of its own (autocommit)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as connection:
        return connection.execute(query, params).fetchall()
