"""PostgreSQL: creating many runs in one round trip and one commit.

Both ``ow.run_many`` (:meth:`PostgresRunBatches.create_workflow_runs`) and
concurrent single creates use it: ``create_workflow_run`` queues its run on
a group commit (:mod:`openworkflow.group_commit`), so the runs that callers
of one backend start while a write is in flight go out together, as one
statement per :data:`~openworkflow.core.run_batch.RUN_BATCH_CHUNK` runs.
A single create used to cost a pooled connection, a round trip and a commit
(a WAL flush) of its own; under load those commits dominated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from openworkflow.core.backend import RUN_IDEMPOTENCY_PERIOD_MS, CreateWorkflowRunParams
from openworkflow.core.ids import new_id
from openworkflow.core.run_batch import chunks, representatives, spread
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.group_commit import GroupCommit
from openworkflow.postgres.base import (
    Connection,
    PostgresBase,
    is_item_error,
    jsonb,
    lock_scope,
    to_run,
)

RUN_CREATES_PER_WRITE = 500
"""Most single creates one group-commit write takes (two writes may be in flight)."""


class PostgresRunBatches(PostgresBase):
    """Runs created in batches, and the group commit of single creates."""

    _run_creates: GroupCommit[CreateWorkflowRunParams, WorkflowRun]

    def _start_run_creates(self) -> None:
        """Make the group commit that single creates share (called by the backend's init)."""
        self._run_creates = GroupCommit(
            self._write_run_creates, split_on=is_item_error, max_batch=RUN_CREATES_PER_WRITE
        )

    async def create_workflow_runs(
        self, params: Sequence[CreateWorkflowRunParams]
    ) -> list[WorkflowRun]:
        """Create the runs in one transaction, as ``create_workflow_run`` would in order."""
        self._check_open()
        if not params:
            return []
        async with self._connection() as connection:
            return await self._create_runs(connection, params)

    async def _write_run_creates(
        self, items: Sequence[CreateWorkflowRunParams]
    ) -> list[WorkflowRun | BaseException]:
        """The group commit's write; if it fails, the group commit retries each item alone."""
        async with self._connection() as connection:
            return list(await self._create_runs(connection, items))

    async def _create_runs(
        self, connection: Connection, params: Sequence[CreateWorkflowRunParams]
    ) -> list[WorkflowRun]:
        """Lock the idempotency scopes, then insert chunk by chunk: one pipeline, one commit."""
        chosen = representatives(params)
        written = [params[index] for index, first in enumerate(chosen) if index == first]
        ids = [new_id() for _ in written]
        scopes = [
            lock_scope(
                namespaceId=self._namespace_id,
                workflowName=item.workflow_name,
                idempotencyKey=item.idempotency_key,
            )
            for item in written
            if item.idempotency_key is not None
        ]
        pieces = list(zip(chunks(written), chunks(ids), strict=True))
        # BEGIN, the locks, the inserts and COMMIT go out together: one round trip.
        async with connection.pipeline(), connection.transaction():
            if scopes:
                await connection.execute(self._q.lock_idempotency_scopes, {"scopes": scopes})
            cursors = [
                await connection.execute(self._q.insert_workflow_runs, self._chunk_values(*piece))
                for piece in pieces
            ]
        runs: list[WorkflowRun] = []
        for (_, chunk_ids), cursor in zip(pieces, cursors, strict=True):
            runs.extend(_runs_in_order(chunk_ids, await cursor.fetchall()))
        return spread(chosen, runs)

    def _chunk_values(
        self, items: Sequence[CreateWorkflowRunParams], ids: Sequence[str]
    ) -> dict[str, Any]:
        """The arrays :data:`~.create_queries.INSERT_WORKFLOW_RUNS` binds for one chunk."""
        tag_run_ids: list[str] = []
        tag_keys: list[str] = []
        tag_values: list[str] = []
        for run_id, item in zip(ids, items, strict=True):
            for key, value in (item.tags or {}).items():
                tag_run_ids.append(run_id)
                tag_keys.append(key)
                tag_values.append(value)
        return self._params(
            ids=list(ids),
            workflow_names=[item.workflow_name for item in items],
            versions=[item.version for item in items],
            idempotency_keys=[item.idempotency_key for item in items],
            configs=[jsonb(item.config if item.config is not None else {}) for item in items],
            contexts=[jsonb(item.context) for item in items],
            inputs=[jsonb(item.input) for item in items],
            parent_nss=[item.parent_step_attempt_namespace_id for item in items],
            parent_ids=[item.parent_step_attempt_id for item in items],
            available_ats=[item.available_at for item in items],
            deadline_ats=[item.deadline_at for item in items],
            priorities=[item.priority for item in items],
            scheduled_ats=[item.scheduled_at for item in items],
            concurrency_keys=[item.concurrency_key for item in items],
            concurrency_limits=[item.concurrency_limit for item in items],
            tag_run_ids=tag_run_ids,
            tag_keys=tag_keys,
            tag_values=tag_values,
            period_ms=RUN_IDEMPOTENCY_PERIOD_MS,
        )


def _runs_in_order(ids: Sequence[str], rows: Sequence[Any]) -> list[WorkflowRun]:
    """One run per item of a chunk: its new run, or the existing run of its key.

    A new run's row carries NULL in its second-to-last column; an existing
    run's row carries the 1-based position of the item that found it.
    """
    created: dict[str, WorkflowRun] = {}
    found: dict[int, WorkflowRun] = {}
    for row in rows:
        run = to_run(row)
        if row[-2] is None:
            created[run.id] = run
        else:
            found[int(row[-2])] = run
    return [found.get(position) or created[run_id] for position, run_id in enumerate(ids, 1)]
