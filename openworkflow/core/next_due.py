"""When the next parked run comes due: the protocol a backend may offer to idle workers.

An idle worker sleeps until the earliest of a wake-up notification, a long
safety poll and the time the next run not yet due becomes claimable, so a
durable sleep or a retry backoff resumes on time without fast polling.
*Not yet due* covers pending and parked (sleeping or waiting) runs whose
``available_at`` is still ahead, and leases that expire later. Both built-in
backends answer from their ``(namespace_id, status, available_at)`` index,
reading one index entry per status.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class NextDueReader(Protocol):
    """A backend that can tell how long until its namespace's next run comes due."""

    async def next_due_in_s(self) -> float | None:
        """Seconds until the earliest ``available_at`` still ahead (None: nothing is ahead)."""
        ...
