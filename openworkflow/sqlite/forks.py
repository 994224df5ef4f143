"""SQLite: forking a run from one of its steps (one ``BEGIN IMMEDIATE`` transaction)."""

from __future__ import annotations

import sqlite3
from typing import Any

from openworkflow.core import clock
from openworkflow.core import json as ow_json
from openworkflow.core.forks import ForkWorkflowRunParams, RunFork
from openworkflow.core.ids import new_id
from openworkflow.errors import WorkflowRunNotFoundError
from openworkflow.sqlite import fork_queries as fq
from openworkflow.sqlite.base import iso
from openworkflow.sqlite.connection import transaction
from openworkflow.sqlite.retention import SqliteRetention


class SqliteForks(SqliteRetention):
    """Forks: the run, its copied attempts and its link, written together."""

    async def fork_workflow_run(self, params: ForkWorkflowRunParams) -> str:
        """Create the fork, its copied attempts and its link in one transaction; its id."""
        values: dict[str, Any] = {
            "ns": self._namespace_id,
            "source_id": params.source_run_id,
            "run_id": new_id(),
            "replace_input": params.replace_input,
            "input": ow_json.dumps_or_none(params.input),
            "from_step": params.from_step,
        }

        def fork(c: sqlite3.Connection) -> bool:
            values["now"] = iso(clock.now())

            def write() -> bool:
                if not c.execute(fq.INSERT_FORK, values).rowcount:
                    return False
                for old_id in params.copied_attempt_ids:
                    c.execute(
                        fq.COPY_STEP_ATTEMPT, {**values, "old_id": old_id, "new_id": new_id()}
                    )
                c.execute(fq.INSERT_RUN_FORK, values)
                return True

            return transaction(c, write)

        if not await self._run(fork):
            raise WorkflowRunNotFoundError(params.source_run_id)
        self.notifier.notify_work_available()
        return str(values["run_id"])

    async def get_run_fork(self, workflow_run_id: str) -> RunFork | None:
        """The run's fork link, when it is a fork."""
        rows = await self._fork_rows(fq.GET_RUN_FORK, workflow_run_id)
        return rows[0] if rows else None

    async def list_run_forks(self, forked_from_id: str) -> list[RunFork]:
        """The forks made of a run, oldest first."""
        return await self._fork_rows(fq.LIST_RUN_FORKS, forked_from_id)

    async def _fork_rows(self, query: str, run_id: str) -> list[RunFork]:
        values = {"ns": self._namespace_id, "run_id": run_id}

        def read(c: sqlite3.Connection) -> list[RunFork]:
            return [
                RunFork(
                    workflow_run_id=row[0],
                    forked_from_id=row[1],
                    from_step=row[2],
                    created_at=clock.from_iso(row[3]),
                )
                for row in c.execute(query, values)
            ]

        return await self._run(read)
