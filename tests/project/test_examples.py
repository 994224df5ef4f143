"""The README's example command and its example programs run end to end, in seconds."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.processes import ROOT


@pytest.mark.slow
def test_run_examples_prints_outputs(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "workflows.run_examples"],
        cwd=tmp_path,
        env={
            "PYTHONPATH": str(ROOT),
            "PATH": "/usr/bin:/bin",
            "OPENWORKFLOW_BACKEND_URL": f"sqlite:///{tmp_path}/examples.db",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert 'hello-world completed: {"greeting": "Hello, OpenWorkflow!"}' in completed.stdout
    assert "process-order completed:" in completed.stdout
    assert (
        'approve-expense completed: {"expense_id": "E-7", "status": "booked", "by": "ana"}'
        in completed.stdout
    )
    assert '"thumbnail": "thumb-owl.png"' in completed.stdout
    assert (
        'trip-booking completed: {"status": "compensated", "reason": "no cars available in '
        'Lisbon", "compensated": ["hotel", "flight"]}' in completed.stdout
    )
    assert "summarize-report progress 1/3: Revenue grew in every region ..." in completed.stdout
    assert "summarize-report progress 3/3: Next quarter we open the ..." in completed.stdout
    assert 'summarize-report completed: {"title": "Quarterly report", "pages": 3' in (
        completed.stdout
    )
    assert "completed=9" in completed.stdout
    assert (tmp_path / "examples.db").exists()


def _readme_programs() -> list[str]:
    """The README's Python blocks that are whole programs (they call ``asyncio.run``)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^ *```python\n(.*?)^ *```", text, re.MULTILINE | re.DOTALL)
    return [textwrap.dedent(block) for block in blocks if "asyncio.run(" in block]


@pytest.mark.slow
@pytest.mark.parametrize("program", _readme_programs())
def test_every_readme_program_finishes_in_seconds(tmp_path: Path, program: str) -> None:
    (tmp_path / "example.py").write_text(program, encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "{'sent': True}" in completed.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_examples_command_works_from_a_fresh_copy_and_installs_only_the_package(
    tmp_path: Path,
) -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    copy = tmp_path / "clone"
    for name in filter(None, tracked.split("\0")):
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OPENWORKFLOW_", "VIRTUAL_ENV", "PYTHON"))
    }
    completed = subprocess.run(
        ["bash", "scripts/examples"],
        cwd=copy,
        env=environment,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "hello-world completed" in completed.stdout
    assert (copy / ".venv" / "bin" / "ow").exists()
    for tool in ("pytest", "mypy", "ruff", "playwright", "mkdocs", "hadolint"):
        assert not (copy / ".venv" / "bin" / tool).exists(), f"{tool} was installed"
