"""Every test here is marked ``faults``; its figure is saved whatever the outcome.

The hooks below make the results folder honest: it is emptied when a run
that collects fault tests starts (so a test that now fails cannot keep an old
passing row), each figure is rewritten with how its test ended, and a fault
test that reported no figure gets a failed "no figure recorded" row.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.faults.figures import (
    Figure,
    reported,
    save,
    start_session,
    take_pending,
)
from tests.faults.private_cluster import private_cluster_fixture  # noqa: F401 - the fixture

_OUTCOME = pytest.StashKey[dict[str, str]]()
_missing: list[Figure] = []


def _is_fault_test(item: pytest.Item) -> bool:
    return "tests/faults/" in item.nodeid.replace("\\", "/")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    fault_tests = [item for item in items if _is_fault_test(item)]
    for item in fault_tests:
        item.add_marker(pytest.mark.faults)
    # Under pytest-xdist every worker collects the same tests: the controller
    # starts the session once (tests/faults/parallel.py), before it hands any test out.
    if fault_tests and not config.option.collectonly and not hasattr(config, "workerinput"):
        start_session([item.nodeid for item in fault_tests])


def pytest_runtest_setup(item: pytest.Item) -> None:
    # A figure left over from a test that crashed the hooks must not be stamped onto this one.
    take_pending()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    result = yield
    if not _is_fault_test(item):
        return result
    seen = item.stash.setdefault(_OUTCOME, {"outcome": "passed", "failure": ""})
    if result.failed and seen["outcome"] != "failed":
        seen["outcome"] = "failed"
        seen["failure"] = _first_line(result, call)
    elif result.skipped and seen["outcome"] == "passed":
        seen["outcome"] = "skipped"
        seen["failure"] = _first_line(result, call)
    if result.when == "teardown":
        _finish(item, seen["outcome"], seen["failure"])
    return result


def _first_line(result: pytest.TestReport, call: pytest.CallInfo[None]) -> str:
    """A short reason: the exception's first line, or the skip reason."""
    text = call.excinfo.exconly() if call.excinfo is not None else str(result.longrepr or "")
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first[:200]


def _finish(item: pytest.Item, outcome: str, failure: str) -> None:
    """Stamp the test's figures with its outcome, or save a row saying it reported none."""
    figures = take_pending()
    for figure in figures:
        figure.outcome = outcome
        figure.failure = failure if outcome != "passed" else ""
        save(figure)
    if not figures:
        # A fault test without a figure is a hole in the table: a failure unless skipped.
        status = "skipped" if outcome == "skipped" else "failed"
        reason = failure or "the test passed but reported no figure"
        missing = Figure(
            fault_id="F?",
            title="no figure recorded",
            runs=0,
            faults=0,
            test=item.nodeid,
            outcome=status,
            failure=reason,
        )
        save(missing)
        _missing.append(missing)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # In a parallel run this prints nothing: tests/faults/parallel.py prints what the workers saved.
    figures = reported() + _missing
    if figures:
        terminalreporter.section("fault suite figures")
        for figure in figures:
            terminalreporter.write_line(figure.line())
