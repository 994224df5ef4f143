"""PostgreSQL: the age of the oldest due pending run (see :mod:`openworkflow.core.queue_age`)."""

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


@cache
def _query(schema: str) -> bytes:
    return render(_OLDEST_DUE_PENDING_AGE, schema).encode()


class PostgresQueueAge(PostgresBase):
    """The age of the oldest due pending run, for worker metrics."""

    async def oldest_due_pending_age_s(self) -> float | None:
        """Seconds since the oldest due pending run became due (None: no run is due)."""
        row = await self._read_one(_query(self._db.schema), self._params())
        if row is None or row[0] is None:
            return None
        return max(0.0, float(row[0]))
