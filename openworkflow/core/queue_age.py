"""How long the oldest due run has waited: the protocol a backend may offer for worker metrics.

A run is *due* when it is ``pending`` and its ``available_at`` has come; its
wait is measured from ``available_at`` (when it became claimable, not when
it was created, so a retried or woken run counts from its retry or wake-up).
Both built-in backends answer from their ``(namespace_id, status,
available_at)`` index, reading one index entry, so a worker may ask every few
seconds whatever the size of the table. Runs of paused workflows count too:
they wait.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class OldestDuePendingReader(Protocol):
    """A backend that can tell the age of its namespace's oldest due pending run."""

    async def oldest_due_pending_age_s(self) -> float | None:
        """Seconds since the oldest due pending run became due (None: no run is due)."""
        ...
