"""PostgreSQL: streams of one run (``step.stream`` / ``handle.stream``).

An append is one statement: an insert fenced by an ``EXISTS`` on the owned
run, which also sends the NOTIFY that wakes readers in other processes.
"""

from __future__ import annotations

from openworkflow.core.streams import (
    AppendRunStreamParams,
    ReadRunStreamParams,
    RunStreamExtent,
    RunStreamItem,
)
from openworkflow.errors import WriteConflictError
from openworkflow.postgres.base import jsonb
from openworkflow.postgres.events import PostgresEvents
from openworkflow.postgres.stream_queries import StreamQueries, stream_queries


class PostgresStreams(PostgresEvents):
    """Run streams: a fenced append by the owning worker, reads by any caller."""

    @property
    def _stq(self) -> StreamQueries:
        return stream_queries(self._db.schema)

    async def append_run_stream(self, params: AppendRunStreamParams) -> bool:
        """Fenced: store the item at ``seq``; False when that position was already stored."""
        row = await self._fetchone(
            self._stq.append_run_stream,
            self._owned(
                params.workflow_run_id,
                params.worker_id,
                key=params.key,
                seq=params.seq,
                value=jsonb(params.value),
            ),
        )
        if row is None or not row[0]:
            raise WriteConflictError("Failed to append to run stream")
        return bool(row[1])

    async def read_run_stream(self, params: ReadRunStreamParams) -> list[RunStreamItem]:
        """Up to ``limit`` items with ``seq > after_seq``, lowest first."""
        rows = await self._read_all(
            self._stq.read_run_stream,
            self._params(
                run_id=params.workflow_run_id,
                key=params.key,
                after_seq=params.after_seq,
                limit=params.limit,
            ),
        )
        return [RunStreamItem(seq=row[0], value=row[1], created_at=row[2]) for row in rows]

    async def get_run_stream_extent(self, workflow_run_id: str, key: str) -> RunStreamExtent:
        """How many items of the stream are stored, and its highest position."""
        extents = await self._stream_extents(workflow_run_id, key)
        return extents[0] if extents else RunStreamExtent(key=key, count=0, last_seq=0)

    async def list_run_streams(self, workflow_run_id: str) -> list[RunStreamExtent]:
        """Every stream the run wrote, by key."""
        return await self._stream_extents(workflow_run_id, None)

    async def _stream_extents(self, workflow_run_id: str, key: str | None) -> list[RunStreamExtent]:
        rows = await self._read_all(
            self._stq.run_stream_extents, self._params(run_id=workflow_run_id, key=key)
        )
        return [
            RunStreamExtent(key=row[0], count=row[1], last_seq=row[2], updated_at=row[3])
            for row in rows
        ]
