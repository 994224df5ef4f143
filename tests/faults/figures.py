"""One figure line per fault test, saved so ``docs/reliability.md`` can be generated.

Every test in ``tests/faults`` ends by calling :func:`report` with what it
measured. The line has the same shape everywhere::

    F1 worker SIGKILL mid-step: 60 runs, 9 faults, 0 lost, 0 duplicated,
    14 re-executed steps, recovery p50 2.1 s / max 2.9 s

``lost`` counts runs submitted but never terminal (or terminal with a wrong
result); ``duplicated`` counts runs or step attempts completed twice or with
two different outputs. Both must be 0; the test asserts that itself, before
reporting. The figure is printed in pytest's terminal summary and written as
JSON under ``.faults-results/`` (one file per test), from which
``python -m tests.faults.report`` writes the table in ``docs/reliability.md``.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = Path(os.environ.get("OPENWORKFLOW_FAULT_RESULTS", ROOT / ".faults-results"))

_reported: list[Figure] = []


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
        return f"{text}; {self.details}" if self.details else text


def _recovery_text(samples: Sequence[float]) -> str:
    if not samples:
        return "p50/max n/a"
    return f"p50 {_seconds(statistics.median(samples))} / max {_seconds(max(samples))}"


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def report(figure: Figure) -> Figure:
    """Print-and-save ``figure``; the terminal summary shows it after the run."""
    figure.test = figure.test or os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    figure.recorded_at = time.time()
    _reported.append(figure)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", figure.test or figure.title)[-150:]
    path = RESULTS_DIR / f"{figure.fault_id}-{name}.json"
    path.write_text(json.dumps(asdict(figure), indent=2) + "\n", encoding="utf-8")
    print(figure.line())
    return figure


def reported() -> list[Figure]:
    """Figures reported in this pytest session, in order."""
    return list(_reported)


def load_results(directory: Path = RESULTS_DIR) -> list[Figure]:
    """Every saved figure, ordered by fault id (F1, F2, ..., F24) then title."""
    figures = [
        Figure(**json.loads(path.read_text(encoding="utf-8")))
        for path in sorted(directory.glob("*.json"))
    ]
    return sorted(figures, key=lambda f: (_fault_number(f.fault_id), f.fault_id, f.title))


def _fault_number(fault_id: str) -> int:
    match = re.match(r"F(\d+)", fault_id)
    return int(match.group(1)) if match else 999
