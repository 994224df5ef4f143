"""A worker that keeps receiving runs it does not know warns once per (name, version)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from openworkflow import OpenWorkflow, workflow
from tests.worker.helpers import get_run, idle_worker, sweep_and_settle


@workflow(name="known-here")
async def known_here() -> str:
    return "ok"


def _unknown_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.WARNING and "is not registered" in record.getMessage()
    ]


async def test_unknown_workflows_are_warned_about_once_each_with_a_hint(
    backend: Any, clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="openworkflow")
    ow = OpenWorkflow(backend)
    ghosts = [await ow.run("ghost", None) for _ in range(3)]
    versioned = await ow.run("ghost", None, version="v9")
    async with idle_worker(backend, [known_here], concurrency=4) as worker:
        await sweep_and_settle(worker, expected=4)
        for _ in range(3):  # each reschedule of the same runs stays quiet
            clock.advance(timedelta(minutes=6))
            await sweep_and_settle(worker, expected=4)

    for handle in [*ghosts, versioned]:
        run = await get_run(backend, handle.id)
        assert (run.status, run.attempts) == ("pending", 4)
    warnings = _unknown_warnings(caplog)
    assert len(warnings) == 2, warnings
    plain = next(text for text in warnings if "(version: v9)" not in text)
    assert plain.startswith('Workflow "ghost" is not registered')
    assert 'This worker has: "known-here"' in plain
    assert "dirs" in plain and "--config" in plain
    assert any('"ghost" (version: v9)' in text for text in warnings)
    # The later reschedules are still visible with --debug.
    quiet = [
        r
        for r in caplog.records
        if r.levelno == logging.DEBUG and "is not registered" in r.getMessage()
    ]
    assert len(quiet) == 4 * 4 - 2
