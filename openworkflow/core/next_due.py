"""When the next run comes due: what an idle worker waits for, and how a backend tells it.

An idle worker sleeps until the earliest of a wake-up notification, a long
safety poll and the moment a run it knows of becomes claimable. It knows the
due time of every run its own passes park (a durable sleep's wake-up, a
retry's backoff, a wait's timeout) from the write that parked it, so its own
timers never hang on a read racing a write; for runs parked by others it asks
the backend (:class:`NextDueReader`) after an empty claim. :class:`DueTimes`
holds those instants.

*Due* means ``available_at`` has come: a pending run to start, a parked run
to resume, an expired lease to recover. A read looks back to the claim it
follows: a run that came due between that claim's snapshot and the read is
reported (as due now), not skipped as "already due", so nothing falls between
the two.
"""

from __future__ import annotations

import heapq
from datetime import datetime
from typing import Protocol, runtime_checkable


@runtime_checkable
class NextDueReader(Protocol):
    """A backend that can tell how long until its namespace's next run comes due."""

    async def next_due_in_s(self, looked_back_s: float) -> float | None:
        """Seconds until the earliest ``available_at`` later than ``looked_back_s`` seconds ago.

        Negative or zero: such a run is due already (it came due within the
        look-back). None: no run is due later than that moment. Times are
        the database's, as its claims read them.
        """
        ...


MAX_KNOWN = 10_000
"""Most instants held: a worker parking a million month-long sleeps must not hold them all."""


class DueTimes:
    """Instants at which known runs come due, earliest first.

    An instant with a run id belongs to a run this worker parked; one without
    comes from a backend read (a run parked by someone else, or a lease
    expiring). A run claimed meanwhile is :meth:`forget`-ed: its instant is
    skipped when reached. Past ``limit`` instants, the later half is dropped
    and replaced by one unnamed instant at the last kept one: reaching it,
    the worker asks the backend again, which knows the rest.
    """

    def __init__(self, limit: int = MAX_KNOWN) -> None:
        self._limit = max(2, limit)
        self._heap: list[tuple[datetime, int, str | None]] = []
        self._runs: dict[str, datetime] = {}  # the live instant of each known run
        self._added = 0  # ties broken by insertion order (run ids may be None)

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, at: datetime, run_id: str | None = None) -> None:
        """Expect a run (``run_id``, or an unnamed one) to come due at ``at``."""
        if run_id is not None:
            self._runs[run_id] = at
        self._added += 1
        heapq.heappush(self._heap, (at, self._added, run_id))
        if len(self._heap) > self._limit:
            self._keep_earliest(self._limit // 2)

    def _keep_earliest(self, count: int) -> None:
        """Keep the ``count`` earliest instants and an unnamed one at the last of them."""
        kept = heapq.nsmallest(count, self._heap)
        self._runs = {
            run_id: at
            for at, _, run_id in kept
            if run_id is not None and self._runs.get(run_id) == at
        }
        self._added += 1
        kept.append((kept[-1][0], self._added, None))
        heapq.heapify(kept)
        self._heap = kept

    def forget(self, run_id: str) -> None:
        """The run was claimed: its instant no longer needs a wake-up."""
        self._runs.pop(run_id, None)

    def earliest(self) -> datetime | None:
        """The earliest live instant (None: nothing known)."""
        self._skip_dead()
        return self._heap[0][0] if self._heap else None

    def pop_through(self, moment: datetime) -> list[str | None]:
        """Remove the live instants at or before ``moment``; their run ids (None: unnamed)."""
        passed: list[str | None] = []
        while True:
            self._skip_dead()
            if not self._heap or self._heap[0][0] > moment:
                return passed
            _, _, run_id = heapq.heappop(self._heap)
            if run_id is not None:
                del self._runs[run_id]
            passed.append(run_id)

    def _skip_dead(self) -> None:
        """Drop instants of runs forgotten or expected again at another time."""
        heap = self._heap
        while heap:
            at, _, run_id = heap[0]
            if run_id is None or self._runs.get(run_id) == at:
                return
            heapq.heappop(heap)
