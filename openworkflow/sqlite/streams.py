"""SQLite: streams of one run (``step.stream`` / ``handle.stream``).

An append is one fenced insert; when it wrote nothing, a second read in the
same transaction tells a stored position (a replay) from a lost run.
"""

from __future__ import annotations

import sqlite3

from openworkflow.core import clock
from openworkflow.core import json as ow_json
from openworkflow.core.streams import (
    AppendRunStreamParams,
    ReadRunStreamParams,
    RunStreamExtent,
    RunStreamItem,
)
from openworkflow.errors import WriteConflictError
from openworkflow.sqlite import stream_queries as sq
from openworkflow.sqlite.base import iso
from openworkflow.sqlite.events import SqliteEvents


class SqliteStreams(SqliteEvents):
    """Run streams: a fenced append by the owning worker, reads by any caller."""

    async def append_run_stream(self, params: AppendRunStreamParams) -> bool:
        """Fenced: store the item at ``seq``; False when that position was already stored."""
        values = self._owned(
            params.workflow_run_id,
            params.worker_id,
            key=params.key,
            seq=params.seq,
            value=ow_json.dumps_or_none(params.value),
        )

        def append(c: sqlite3.Connection) -> tuple[bool, bool]:
            values["now"] = iso(clock.now())
            if c.execute(sq.APPEND_RUN_STREAM, values).rowcount:
                return True, True
            return bool(c.execute(sq.RUN_OWNED_EXISTS, values).fetchone()[0]), False

        owned, appended = await self._run(append)
        if not owned:
            raise WriteConflictError("Failed to append to run stream")
        if appended:
            self.notifier.notify_run_changed(params.workflow_run_id)
        return appended

    async def read_run_stream(self, params: ReadRunStreamParams) -> list[RunStreamItem]:
        """Up to ``limit`` items with ``seq > after_seq``, lowest first."""
        values = {
            "ns": self._namespace_id,
            "run_id": params.workflow_run_id,
            "key": params.key,
            "after_seq": params.after_seq,
            "limit": params.limit,
        }

        def read(c: sqlite3.Connection) -> list[RunStreamItem]:
            return [
                RunStreamItem(
                    seq=row[0], value=ow_json.loads(row[1]), created_at=clock.from_iso(row[2])
                )
                for row in c.execute(sq.READ_RUN_STREAM, values)
            ]

        return await self._run(read)

    async def get_run_stream_extent(self, workflow_run_id: str, key: str) -> RunStreamExtent:
        """How many items of the stream are stored, and its highest position."""
        extents = await self._stream_extents(workflow_run_id, key)
        return extents[0] if extents else RunStreamExtent(key=key, count=0, last_seq=0)

    async def list_run_streams(self, workflow_run_id: str) -> list[RunStreamExtent]:
        """Every stream the run wrote, by key."""
        return await self._stream_extents(workflow_run_id, None)

    async def _stream_extents(self, workflow_run_id: str, key: str | None) -> list[RunStreamExtent]:
        values = {"ns": self._namespace_id, "run_id": workflow_run_id, "key": key}

        def extents(c: sqlite3.Connection) -> list[RunStreamExtent]:
            return [
                RunStreamExtent(
                    key=row[0], count=row[1], last_seq=row[2], updated_at=clock.from_iso(row[3])
                )
                for row in c.execute(sq.RUN_STREAM_EXTENTS, values)
            ]

        return await self._run(extents)
