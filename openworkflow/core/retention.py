"""Retention: pruning finished runs past their age; the backend params and protocol."""

from __future__ import annotations

from typing import Protocol


class RetentionStore(Protocol):
    """Pruning of finished runs, part of every :class:`~openworkflow.core.backend.Backend`."""
