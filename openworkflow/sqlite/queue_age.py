"""SQLite: the oldest due pending run's age, and the time until the next run comes due.

See :mod:`openworkflow.core.queue_age` and :mod:`openworkflow.core.next_due`.
"""

from __future__ import annotations

from datetime import timedelta

from openworkflow.core import clock
from openworkflow.sqlite.base import SqliteBase, iso

# One entry of the (namespace_id, status, available_at) index: times are ISO
# strings that sort like the times they name.
_OLDEST_DUE_PENDING = """
SELECT MIN("available_at") FROM "workflow_runs"
WHERE "namespace_id" = :ns AND "status" = 'pending' AND "available_at" <= :now"""

# One index entry per status a claim takes (MIN over an IN list would scan);
# ``since`` is the claim this read follows (see core.next_due).
_NEXT_DUE = """
SELECT MIN("at") FROM (
  SELECT MIN("available_at") AS "at" FROM "workflow_runs"
  WHERE "namespace_id" = :ns AND "status" = 'pending' AND "available_at" > :since
  UNION ALL
  SELECT MIN("available_at") FROM "workflow_runs"
  WHERE "namespace_id" = :ns AND "status" = 'running' AND "available_at" > :since
  UNION ALL
  SELECT MIN("available_at") FROM "workflow_runs"
  WHERE "namespace_id" = :ns AND "status" = 'sleeping' AND "available_at" > :since)"""


class SqliteQueueAge(SqliteBase):
    """The age of the oldest due pending run, for worker metrics; the next due time, for idling."""

    async def oldest_due_pending_age_s(self) -> float | None:
        """Seconds since the oldest due pending run became due (None: no run is due)."""
        now = clock.now()
        values = {"ns": self._namespace_id, "now": iso(now)}
        row = await self._run(lambda c: c.execute(_OLDEST_DUE_PENDING, values).fetchone())
        if row is None or row[0] is None:
            return None
        return max(0.0, (now - clock.from_iso(row[0])).total_seconds())

    async def next_due_in_s(self, looked_back_s: float) -> float | None:
        """Seconds until the earliest ``available_at`` later than ``looked_back_s`` seconds ago.

        See :class:`openworkflow.core.next_due.NextDueReader` (negative: due already).
        """
        now = clock.now()
        since = now - timedelta(seconds=max(0.0, looked_back_s))
        values = {"ns": self._namespace_id, "since": iso(since)}
        row = await self._run(lambda c: c.execute(_NEXT_DUE, values).fetchone())
        if row is None or row[0] is None:
            return None
        return (clock.from_iso(row[0]) - now).total_seconds()
