"""One figure line per fault test, saved so ``docs/reliability.md`` can be generated.

Every test in ``tests/faults`` ends by calling :func:`report` with what it
measured. The line has the same shape everywhere::

    F1 worker SIGKILL mid-step: 60 runs, 9 faults, 0 lost, 0 duplicated,
    14 re-executed steps, recovery p50 2.1 s / max 2.9 s

``lost`` counts runs submitted but never terminal (or terminal with a wrong
result); ``duplicated`` counts runs or step attempts completed twice or with
two different outputs; :mod:`tests.faults.ledger` counts both from the
database. Both must be 0, and the test asserts that after reporting, so a
failing test still leaves its figure.

The figure is printed in pytest's terminal summary and written as JSON under
``.faults-results/`` (one file per test). The hooks in ``conftest.py`` clear
that folder when a fault run starts, stamp each figure with its test's
``outcome`` (``passed``, ``failed`` or ``skipped``) once the test is over, and
write a failed "no figure recorded" row for a fault test that reported none;
``python -m tests.faults.report`` then writes the table in
``docs/reliability.md``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = Path(os.environ.get("OPENWORKFLOW_FAULT_RESULTS", ROOT / ".faults-results"))

SESSION_FILE = "_session.json"
KEEP_VARIABLE = "OPENWORKFLOW_FAULTS_KEEP_RESULTS"

_reported: list[Figure] = []
# Figures reported by the test now running; the conftest hooks stamp them with its outcome.
_pending: list[Figure] = []


@dataclass
class Figure:
    """What one fault test measured."""

    fault_id: str
    title: str
    runs: int
    faults: int
    lost: int = 0
    duplicated: int = 0
    reexecuted_steps: int = 0
    recovery_s: list[float] = field(default_factory=list)
    details: str = ""
    test: str = ""
    recorded_at: float = 0.0
    outcome: str = "passed"
    """``passed``, ``failed``, ``skipped`` or ``unfinished``: how its test ended."""
    failure: str = ""
    """The first line of the failure when ``outcome`` is ``failed``."""

    def line(self) -> str:
        """The one-line summary, e.g. ``"60 runs, 9 faults, 0 lost, ..."``."""
        parts = [
            f"{self.runs} runs",
            f"{self.faults} faults",
            f"{self.lost} lost",
            f"{self.duplicated} duplicated",
            f"{self.reexecuted_steps} re-executed steps",
            f"recovery {_recovery_text(self.recovery_s)}",
        ]
        text = f"{self.fault_id} {self.title}: " + ", ".join(parts)
        text = f"{text}; {self.details}" if self.details else text
        if self.outcome != "passed":
            text = f"{self.outcome.upper()} {text}" + (f" [{self.failure}]" if self.failure else "")
        return text


def _recovery_text(samples: Sequence[float]) -> str:
    if not samples:
        return "p50/max n/a"
    return f"p50 {_seconds(statistics.median(samples))} / max {_seconds(max(samples))}"


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def report(figure: Figure) -> Figure:
    """Print-and-save ``figure``; the terminal summary shows it after the run.

    Call it before asserting on the figure's counts: the file is written now
    (as ``unfinished``) and rewritten with the test's real outcome when it ends.
    """
    figure.test = figure.test or os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    figure.recorded_at = time.time()
    # Until the conftest hook has seen the test end, the row must not read as a pass.
    figure.outcome = "unfinished"
    _reported.append(figure)
    _pending.append(figure)
    save(figure)
    print(figure.line())
    return figure


def save(figure: Figure, directory: Path | None = None) -> Path:
    """Write ``figure`` as JSON, one file per test and figure title."""
    directory = directory or RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    key = f"{figure.test or figure.title}-{figure.title}"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)[-150:]
    path = directory / f"{figure.fault_id}-{name}.json"
    path.write_text(json.dumps(asdict(figure), indent=2) + "\n", encoding="utf-8")
    return path


def take_pending() -> list[Figure]:
    """The figures reported since the last call (by the test now ending)."""
    taken = list(_pending)
    _pending.clear()
    return taken


def start_session(test_ids: Sequence[str], directory: Path | None = None) -> None:
    """Empty the results folder and note the commit and the fault tests about to run.

    With ``OPENWORKFLOW_FAULTS_KEEP_RESULTS=1`` the folder is kept and this run
    is added to the noted one (to finish a run in two parts); the report then
    names both commits if they differ.
    """
    directory = directory or RESULTS_DIR
    previous = load_session(directory) if os.environ.get(KEEP_VARIABLE) == "1" else {}
    if not previous and directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    commit = git_commit()
    earlier = str(previous.get("commit", commit))
    listed = previous.get("tests")
    tests = [str(test) for test in listed] if isinstance(listed, list) else []
    session = {
        "commit": earlier if earlier == commit else f"{earlier} and {commit}",
        "started_at": previous.get("started_at", time.time()),
        "tests": list(dict.fromkeys([*tests, *test_ids])),
    }
    (directory / SESSION_FILE).write_text(json.dumps(session, indent=2) + "\n", encoding="utf-8")


def load_session(directory: Path | None = None) -> dict[str, object]:
    """What :func:`start_session` noted, or ``{}`` for results saved without it."""
    path = (directory or RESULTS_DIR) / SESSION_FILE
    if not path.exists():
        return {}
    loaded: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def git_commit() -> str:
    """``git rev-parse HEAD`` of the checkout, with ``+dirty`` when the tree has changes."""
    try:
        head = _git("rev-parse", "HEAD").strip()
        dirty = _git("status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def reported() -> list[Figure]:
    """Figures reported in this pytest session, in order."""
    return list(_reported)


def load_results(directory: Path | None = None) -> list[Figure]:
    """Every saved figure, ordered by fault id (F1, F2, ..., F24) then title."""
    directory = directory or RESULTS_DIR
    figures = [
        Figure(**json.loads(path.read_text(encoding="utf-8")))
        for path in sorted(directory.glob("*.json"))
        if path.name != SESSION_FILE
    ]
    return sorted(figures, key=lambda f: (_fault_number(f.fault_id), f.fault_id, f.title))


def _fault_number(fault_id: str) -> int:
    match = re.match(r"F(\d+)", fault_id)
    return int(match.group(1)) if match else 999
