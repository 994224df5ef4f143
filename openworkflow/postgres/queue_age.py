"""PostgreSQL: the oldest due pending run's age, and the time until the next run comes due.

See :mod:`openworkflow.core.queue_age` and :mod:`openworkflow.core.next_due`.
"""

from __future__ import annotations

from functools import cache

from openworkflow.postgres.base import PostgresBase
from openworkflow.postgres.schema import render

# One entry of the (namespace_id, status, available_at) index; the database's
# clock on both sides, as the claim uses it.
_OLDEST_DUE_PENDING_AGE = """
SELECT EXTRACT(EPOCH FROM (NOW() - MIN("available_at")))
FROM {schema}."workflow_runs"
WHERE "namespace_id" = %(ns)s AND "status" = 'pending' AND "available_at" <= NOW()"""

# One index entry per status a claim takes (a MIN over an IN list would read a
# range per status and sort). Parked runs are 'running' without a worker here
# ('sleeping' is the original's spelling); a leased run's available_at is its
# lease's end. The look-back starts at the claim this read follows, measured on
# the database's clock, so a run that came due since that claim is reported.
_NEXT_DUE_IN = """
SELECT EXTRACT(EPOCH FROM (LEAST(
  (SELECT MIN("available_at") FROM {schema}."workflow_runs"
   WHERE "namespace_id" = %(ns)s AND "status" = 'pending' AND "available_at" > %(since)s),
  (SELECT MIN("available_at") FROM {schema}."workflow_runs"
   WHERE "namespace_id" = %(ns)s AND "status" = 'running' AND "available_at" > %(since)s),
  (SELECT MIN("available_at") FROM {schema}."workflow_runs"
   WHERE "namespace_id" = %(ns)s AND "status" = 'sleeping' AND "available_at" > %(since)s)
) - NOW()))"""

_SINCE = "NOW() - %(looked_back_ms)s * INTERVAL '1 millisecond'"


@cache
def _query(schema: str) -> bytes:
    return render(_OLDEST_DUE_PENDING_AGE, schema).encode()


@cache
def _next_due_query(schema: str) -> bytes:
    return render(_NEXT_DUE_IN.replace("%(since)s", _SINCE), schema).encode()


class PostgresQueueAge(PostgresBase):
    """The age of the oldest due pending run, for worker metrics; the next due time, for idling."""

    async def oldest_due_pending_age_s(self) -> float | None:
        """Seconds since the oldest due pending run became due (None: no run is due)."""
        row = await self._read_one(_query(self._db.schema), self._params())
        if row is None or row[0] is None:
            return None
        return max(0.0, float(row[0]))

    async def next_due_in_s(self, looked_back_s: float) -> float | None:
        """Seconds until the earliest ``available_at`` later than ``looked_back_s`` seconds ago.

        See :class:`openworkflow.core.next_due.NextDueReader` (negative: due already).
        """
        values = self._params(looked_back_ms=max(0.0, looked_back_s) * 1000)
        row = await self._read_one(_next_due_query(self._db.schema), values)
        if row is None or row[0] is None:
            return None
        return float(row[0])
