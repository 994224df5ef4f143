"""The wheel, installed alone in a fresh virtualenv outside the repository, runs.

One wheel is built from a clean copy of the checkout (the files git tracks or
would track) and installed, without the ``dev`` extra, into one virtualenv per
test session. The tests then prove that the run-time dependencies are enough:
every ``openworkflow`` module imports, and ``ow init``, ``ow doctor``, a worker
running one run and the dashboard answering HTTP all work in that virtualenv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import ROOT

# The first test also builds the wheel and installs its dependencies (from the network
# when pip's cache is cold): more than the suite's 120 s default may be needed.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# Development tools that must never come with `pip install` of the package.
DEV_TOOLS = ("pytest", "mypy", "ruff", "playwright", "hypothesis", "mkdocs", "httpx")


@dataclass(frozen=True)
class InstalledVenv:
    """A virtualenv holding the wheel and its run-time dependencies only."""

    root: Path
    python: Path
    ow: Path
    env: dict[str, str]
    distribution: str


def _clean_environment() -> dict[str, str]:
    """This process's environment without anything pointing at the repository or its venv."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OPENWORKFLOW_", "VIRTUAL_ENV", "PYTHON"))
    }


def _clean_copy(destination: Path) -> Path:
    """Copy the files git tracks (or would track) into ``destination``: a clean checkout."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def _run(
    command: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert completed.returncode == 0, (
        f"{command} exited {completed.returncode}\n{completed.stdout}\n{completed.stderr}"
    )
    return completed


@pytest.fixture(scope="session")
def installed_venv(tmp_path_factory: pytest.TempPathFactory) -> InstalledVenv:
    """Build the wheel from a clean copy and install it, without extras, into a new venv."""
    base = tmp_path_factory.mktemp("packaging")
    env = _clean_environment()
    checkout = _clean_copy(base / "checkout")
    wheels = base / "wheels"
    # pip builds the wheel in an isolated environment from the declared build backend.
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), "."],
        env=env,
        cwd=checkout,
    )
    (wheel,) = wheels.glob("*.whl")
    root = base / "venv"
    _run([sys.executable, "-m", "venv", str(root)], env=env, cwd=base)
    python = root / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], env=env, cwd=base)
    venv_env = {**env, "VIRTUAL_ENV": str(root), "PATH": f"{root / 'bin'}:{env.get('PATH', '')}"}
    name = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["name"]
    return InstalledVenv(root, python, root / "bin" / "ow", venv_env, name)


def _venv_python(venv: InstalledVenv, code: str, cwd: Path) -> str:
    return _run([str(venv.python), "-c", code], env=venv.env, cwd=cwd).stdout


def test_the_wheel_installs_only_run_time_dependencies(
    installed_venv: InstalledVenv, tmp_path: Path
) -> None:
    report = json.loads(
        _venv_python(
            installed_venv,
            "import importlib.metadata as m, json, openworkflow\n"
            f"d = m.distribution({installed_venv.distribution!r})\n"
            "print(json.dumps({'requires': d.requires or [], 'file': openworkflow.__file__,\n"
            "  'installed': sorted(x.metadata['Name'].lower() for x in m.distributions())}))",
            tmp_path,
        )
    )
    # The package comes from the venv, not from the checkout.
    assert report["file"].startswith(str(installed_venv.root)), report["file"]
    unconditional = [r for r in report["requires"] if "extra ==" not in r]
    for tool in DEV_TOOLS:
        assert not any(re.match(rf"{tool}\b", r, re.IGNORECASE) for r in unconditional), tool
        assert tool not in report["installed"], f"{tool} was installed without the dev extra"
        assert not (installed_venv.root / "bin" / tool).exists(), f"{tool} was installed"


def _optional_imports(requires: list[str]) -> set[str]:
    """Top-level import names of the non-dev extras' dependencies (``opentelemetry-api`` ->
    ``opentelemetry``): a module may need those only when their extra is installed."""
    names: set[str] = set()
    for requirement in requires:
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", requirement)
        if extra and extra.group(1) != "dev":
            names.add(re.split(r"[^A-Za-z0-9_]", requirement.strip())[0].split("-")[0].lower())
    return names


# Walks the installed package and imports each module, in the venv; prints JSON.
_IMPORT_ALL = """
import importlib, importlib.metadata as m, json, pkgutil, sys, traceback
import openworkflow
found, failed = [], {}
for info in pkgutil.walk_packages(openworkflow.__path__, "openworkflow."):
    found.append(info.name)
    try:
        importlib.import_module(info.name)
    except BaseException as error:
        missing = getattr(error, "name", None) if isinstance(error, ImportError) else None
        failed[info.name] = [type(error).__name__, missing, traceback.format_exc()]
requires = m.distribution(sys.argv[1]).requires or []
plugins = [e.value for e in m.entry_points(group="pytest11") if e.value.startswith("openworkflow")]
print(json.dumps({"found": found, "failed": failed, "requires": requires, "plugins": plugins}))
"""


def test_every_module_imports_with_the_run_time_dependencies(
    installed_venv: InstalledVenv, tmp_path: Path
) -> None:
    completed = _run(
        [str(installed_venv.python), "-c", _IMPORT_ALL, installed_venv.distribution],
        env=installed_venv.env,
        cwd=tmp_path,
    )
    report = json.loads(completed.stdout)
    assert "openworkflow.cli" in report["found"]
    assert "openworkflow.dashboard.app" in report["found"]
    optional = _optional_imports(report["requires"])
    problems = []
    for module, (kind, missing, trace) in report["failed"].items():
        top = (missing or "").split(".")[0].lower()
        # pytest loads its plugins itself: the plugin may import pytest.
        if kind == "ModuleNotFoundError" and module in report["plugins"] and top == "pytest":
            continue
        if kind == "ModuleNotFoundError" and top in optional:
            continue
        problems.append(f"{module}: {trace}")
    assert not problems, "\n".join(problems)


@pytest.fixture
def project(installed_venv: InstalledVenv, tmp_path: Path) -> Path:
    """A project made by the installed ``ow init`` in a folder outside the repository."""
    directory = tmp_path / "project"
    directory.mkdir()
    completed = _run(
        [str(installed_venv.ow), "init", "--yes", "--backend", "sqlite"],
        env=installed_venv.env,
        cwd=directory,
    )
    assert (directory / "openworkflow.config.py").exists(), completed.stdout
    assert (directory / "openworkflow" / "hello_world.py").exists()
    return directory


@pytest.fixture
def background(installed_venv: InstalledVenv) -> Iterator[list[subprocess.Popen[str]]]:
    """Processes started by a test: stopped (SIGTERM, then SIGKILL) when it ends."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_init_doctor_a_worker_and_a_run_work_in_the_fresh_venv(
    installed_venv: InstalledVenv,
    project: Path,
    background: list[subprocess.Popen[str]],
) -> None:
    version = _run([str(installed_venv.ow), "--version"], env=installed_venv.env, cwd=project)
    assert version.stdout.startswith("ow "), version.stdout
    doctor = _run([str(installed_venv.ow), "doctor"], env=installed_venv.env, cwd=project)
    assert "hello-world" in doctor.stdout
    with (project / "worker.log").open("w") as log:  # the worker keeps its own copy
        worker = subprocess.Popen(
            [str(installed_venv.ow), "worker", "start"],
            cwd=project,
            env=installed_venv.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    background.append(worker)
    run = subprocess.run(
        [str(installed_venv.ow), "run", "hello-world", "--input", '{"name": "Ada"}', "--wait"],
        cwd=project,
        env=installed_venv.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    worker_output = (project / "worker.log").read_text(encoding="utf-8")
    assert run.returncode == 0, run.stdout + run.stderr + worker_output
    assert "Hello, Ada!" in run.stdout
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, (project / "worker.log").read_text(encoding="utf-8")


def _dashboard_url(log: Path, process: subprocess.Popen[str], timeout: float) -> str:
    """The URL the dashboard prints on its first line, waited for with a deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"^(http://127\.0\.0\.1:\d+)$", log.read_text(), re.MULTILINE)
        if found:
            return found.group(1)
        assert process.poll() is None, log.read_text()
        time.sleep(0.1)
    raise AssertionError(f"the dashboard printed no URL: {log.read_text()}")


def test_the_dashboard_answers_in_the_fresh_venv(
    installed_venv: InstalledVenv,
    project: Path,
    background: list[subprocess.Popen[str]],
) -> None:
    log = project / "dashboard.log"
    with log.open("w") as output:  # the dashboard keeps its own copy
        dashboard = subprocess.Popen(
            [str(installed_venv.ow), "dashboard", "--port", "0"],
            cwd=project,
            env=installed_venv.env,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
    background.append(dashboard)
    url = _dashboard_url(log, dashboard, timeout=60)
    # Straight to 127.0.0.1, whatever proxy the environment names.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{url}/", timeout=30) as response:
        page = response.read().decode()
    assert response.status == 200
    assert "hello-world" in page or "OpenWorkflow" in page, page[:500]
    with opener.open(f"{url}/metrics", timeout=30) as response:
        assert "openworkflow_workflow_runs" in response.read().decode()
