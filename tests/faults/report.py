"""Write ``docs/reliability.md``'s results table from the last fault-suite run.

Usage::

    OPENWORKFLOW_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \\
        .venv/bin/pytest tests/faults
    .venv/bin/python -m tests.faults.report

The table sits between two markers in ``docs/reliability.md``; the prose
around it is kept.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests.faults.figures import ROOT, Figure, _recovery_text, load_results

DOC = ROOT / "docs" / "reliability.md"
BEGIN = "<!-- fault-suite-table:begin -->"
END = "<!-- fault-suite-table:end -->"


def table(figures: list[Figure]) -> str:
    """The markdown table of ``figures``."""
    rows = [
        "| fault | test | runs | faults | lost | duplicated | re-executed steps "
        "| recovery | notes |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for f in figures:
        test = f.test.split("::")[-1] if f.test else ""
        rows.append(
            f"| {f.fault_id} | {f.title}<br>`{test}` | {f.runs} | {f.faults} | {f.lost} "
            f"| {f.duplicated} | {f.reexecuted_steps} | {_recovery_text(f.recovery_s)} "
            f"| {f.details.replace('|', '/')} |"
        )
    newest = max((f.recorded_at for f in figures), default=time.time())
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(newest))
    return f"Last run: {stamp}, {len(figures)} figures.\n\n" + "\n".join(rows)


def write(doc: Path = DOC) -> None:
    """Replace the table between the markers in ``doc`` (or append the markers)."""
    figures = load_results()
    if not figures:
        sys.exit("no saved figures: run `pytest tests/faults` first")
    block = f"{BEGIN}\n{table(figures)}\n{END}"
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Reliability\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(text, encoding="utf-8")
    print(f"wrote {doc.relative_to(ROOT)} ({len(figures)} figures)")


if __name__ == "__main__":
    write()
