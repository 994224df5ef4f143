"""SQLite: the age of the oldest due pending run (see :mod:`openworkflow.core.queue_age`)."""

from __future__ import annotations

from openworkflow.core import clock
from openworkflow.sqlite.base import SqliteBase, iso

# One entry of the (namespace_id, status, available_at) index: times are ISO
# strings that sort like the times they name.
_OLDEST_DUE_PENDING = """
SELECT MIN("available_at") FROM "workflow_runs"
WHERE "namespace_id" = :ns AND "status" = 'pending' AND "available_at" <= :now"""


class SqliteQueueAge(SqliteBase):
    """The age of the oldest due pending run, for worker metrics."""

    async def oldest_due_pending_age_s(self) -> float | None:
        """Seconds since the oldest due pending run became due (None: no run is due)."""
        now = clock.now()
        values = {"ns": self._namespace_id, "now": iso(now)}
        row = await self._run(lambda c: c.execute(_OLDEST_DUE_PENDING, values).fetchone())
        if row is None or row[0] is None:
            return None
        return max(0.0, (now - clock.from_iso(row[0])).total_seconds())
