"""Forks (``ow.fork(run_id, from_step=NAME)``): the backend params and protocol."""

from __future__ import annotations

from typing import Protocol


class ForkStore(Protocol):
    """Forking a run from one of its steps (part of every backend)."""
