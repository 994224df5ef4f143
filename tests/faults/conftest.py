"""Every test here is marked ``faults`` and its figure shows in the terminal summary."""

from __future__ import annotations

import pytest

from tests.faults.figures import reported


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in item.nodeid.replace("\\", "/"):
            item.add_marker(pytest.mark.faults)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    figures = reported()
    if figures:
        terminalreporter.section("fault suite figures")
        for figure in figures:
            terminalreporter.write_line(figure.line())
