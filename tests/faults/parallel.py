"""The fault suite's results folder in a parallel (pytest-xdist) run.

A plugin of the root conftest, so the xdist controller loads it: the
controller does not collect, and the faults folder's own conftest is loaded
only where ``tests/faults`` is collected (in the workers). Every worker
collects the same tests; the controller empties the results folder and notes
the session once, when the first worker's collection arrives and before any
test is handed out, then prints the figures the workers saved.
"""

from __future__ import annotations

import pytest

from tests.faults.figures import load_results, start_session

_session_started = False


def _fault_test_ids(ids: list[str]) -> list[str]:
    return [test_id for test_id in ids if "tests/faults/" in test_id.replace("\\", "/")]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: object, ids: list[str]) -> None:
    """Start the fault session once, for the first worker that collected fault tests."""
    global _session_started
    fault_ids = _fault_test_ids(ids)
    if fault_ids and not _session_started:
        _session_started = True
        start_session(fault_ids)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures the workers saved (in a run without workers, the faults conftest prints)."""
    if not _session_started:
        return
    terminalreporter.section("fault suite figures")
    for figure in load_results():
        terminalreporter.write_line(figure.line())
