"""Write ``docs/reliability.md``'s results table from the last fault-suite run.

Usage::

    OPENWORKFLOW_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \\
        .venv/bin/pytest tests/faults
    .venv/bin/python -m tests.faults.report

The table sits between two markers in ``docs/reliability.md``; the prose
around it is kept. It names the commit the run was made on (with ``+dirty``
when the tree had changes), marks every row whose test did not pass, and
lists the fault tests of that run that saved no row at all.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests.faults.figures import (
    ROOT,
    Figure,
    _recovery_text,
    git_commit,
    load_results,
    load_session,
)

DOC = ROOT / "docs" / "reliability.md"
BEGIN = "<!-- fault-suite-table:begin -->"
END = "<!-- fault-suite-table:end -->"


def _result(figure: Figure) -> str:
    if figure.outcome == "passed":
        return "passed"
    reason = f": {figure.failure}" if figure.failure else ""
    return f"**{figure.outcome.upper()}**{reason}"


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def table(figures: list[Figure], session: dict[str, object] | None = None) -> str:
    """The markdown table of ``figures``, headed by the commit, the date and the counts."""
    session = session or {}
    rows = [
        "| fault | test | result | runs | faults | lost | duplicated | re-executed steps "
        "| recovery | notes |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for f in figures:
        test = f.test.split("::")[-1] if f.test else ""
        rows.append(
            f"| {f.fault_id} | {_cell(f.title)}<br>`{_cell(test)}` | {_cell(_result(f))} "
            f"| {f.runs} | {f.faults} | {f.lost} | {f.duplicated} | {f.reexecuted_steps} "
            f"| {_recovery_text(f.recovery_s)} | {_cell(f.details)} |"
        )
    newest = max((f.recorded_at for f in figures), default=time.time())
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(newest))
    commit = str(session.get("commit") or f"{git_commit()} (at report time)")
    listed = session.get("tests")
    tests = [str(test) for test in listed] if isinstance(listed, list) else []
    with_row = {f.test for f in figures}
    without = [test for test in tests if test not in with_row]
    bad = [f for f in figures if f.outcome != "passed"]
    summary = [
        f"Last run: {stamp} on commit `{commit}`: {len(tests) or 'an unknown number of'} "
        f"fault tests, {len(figures)} rows, {len(bad)} not passed, "
        f"{sum(f.lost for f in figures)} lost, {sum(f.duplicated for f in figures)} duplicated."
    ]
    if without:
        summary.append(
            "Fault tests collected with no row (deselected, or the run was cut short): "
            + ", ".join(f"`{test}`" for test in without)
            + "."
        )
    return "\n\n".join(summary) + "\n\n" + "\n".join(rows)


def write(doc: Path = DOC) -> None:
    """Replace the table between the markers in ``doc`` (or append the markers)."""
    figures = load_results()
    if not figures:
        sys.exit("no saved figures: run `pytest tests/faults` first")
    block = f"{BEGIN}\n{table(figures, load_session())}\n{END}"
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
