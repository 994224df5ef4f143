"""The README's example command runs the example workflows end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


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
    assert "completed=7" in completed.stdout
    assert (tmp_path / "examples.db").exists()
