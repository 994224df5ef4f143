"""Fixtures shared by the worker tests."""

from __future__ import annotations

import pytest

from openworkflow.worker import idle

SAFETY_POLL_S = 60.0
"""The poll backoff and safety poll where a test stretches them: far past every wait."""


@pytest.fixture
def slow_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """No poll ends an idle wait before a minute: only a wake-up or a due time can."""
    monkeypatch.setattr(idle, "SAFETY_POLL_S", SAFETY_POLL_S)
    monkeypatch.setattr(idle, "poll_backoff_ms", lambda _polls, cap_ms=0.0: SAFETY_POLL_S * 1000)
