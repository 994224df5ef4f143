"""PostgreSQL: forking a run from one of its steps (one statement)."""

from __future__ import annotations

from typing import Any

from openworkflow.core.forks import ForkWorkflowRunParams, RunFork
from openworkflow.core.ids import new_id
from openworkflow.errors import WorkflowRunNotFoundError
from openworkflow.postgres.base import jsonb
from openworkflow.postgres.fork_queries import ForkQueries, fork_queries
from openworkflow.postgres.retention import PostgresRetention


class PostgresForks(PostgresRetention):
    """Forks: the run, its copied attempts and its link, written together."""

    @property
    def _fq(self) -> ForkQueries:
        return fork_queries(self._db.schema)

    async def fork_workflow_run(self, params: ForkWorkflowRunParams) -> str:
        """Create the fork, its copied attempts and its link in one transaction; its id."""
        old_ids = list(params.copied_attempt_ids)
        row = await self._fetchone(
            self._fq.fork_workflow_run,
            self._params(
                source_id=params.source_run_id,
                run_id=new_id(),
                replace_input=params.replace_input,
                input=jsonb(params.input),
                old_ids=old_ids,
                new_ids=[new_id() for _ in old_ids],
                from_step=params.from_step,
            ),
        )
        if row is None:
            raise WorkflowRunNotFoundError(params.source_run_id)
        return str(row[0])

    async def get_run_fork(self, workflow_run_id: str) -> RunFork | None:
        """The run's fork link, when it is a fork."""
        row = await self._read_one(self._fq.get_run_fork, self._params(run_id=workflow_run_id))
        return None if row is None else _fork(row)

    async def list_run_forks(self, forked_from_id: str) -> list[RunFork]:
        """The forks made of a run, oldest first."""
        rows = await self._read_all(self._fq.list_run_forks, self._params(run_id=forked_from_id))
        return [_fork(row) for row in rows]


def _fork(row: Any) -> RunFork:
    return RunFork(
        workflow_run_id=row[0], forked_from_id=row[1], from_step=row[2], created_at=row[3]
    )
