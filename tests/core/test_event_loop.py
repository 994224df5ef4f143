"""The engine's loop: uvloop when installed (it is a dependency on Linux), asyncio on request."""

from __future__ import annotations

import asyncio

import pytest

from openworkflow import event_loop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_uvloop_runs_the_engine_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    monkeypatch.delenv(event_loop.EVENT_LOOP_VARIABLE, raising=False)
    assert event_loop.run(_loop_module()).startswith("uvloop")


def test_asyncio_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(event_loop.EVENT_LOOP_VARIABLE, "asyncio")
    assert event_loop.run(_loop_module()).startswith("asyncio")
