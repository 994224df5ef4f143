"""Tags of runs (``ow.run(..., tags={"customer": "c-1"})``): the backend params and protocol."""

from __future__ import annotations

from typing import Protocol


class TagStore(Protocol):
    """Storage of run tags, part of every :class:`~openworkflow.core.backend.Backend`."""
