"""SQLite: creating runs, one at a time or many in one transaction.

``create_workflow_run`` queues its run on a group commit
(:mod:`openworkflow.group_commit`): the runs that callers of one backend
start while a write is in flight go to the database thread together and
commit in one transaction, each in a savepoint of its own (a failing run
fails alone). ``create_workflow_runs`` (``ow.run_many``) writes all its runs
in one transaction, or none. Each run is written as a single create would:
an item with an idempotency key first looks for the run of its key, which
may be one an earlier item of the same transaction inserted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import timedelta

from openworkflow.core import clock
from openworkflow.core import json as ow_json
from openworkflow.core.backend import RUN_IDEMPOTENCY_PERIOD_MS, CreateWorkflowRunParams
from openworkflow.core.ids import new_id
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import BackendClosedError
from openworkflow.group_commit import GroupCommit
from openworkflow.sqlite import queries as q
from openworkflow.sqlite.base import Params, SqliteBase, iso, iso_or_none
from openworkflow.sqlite.base import to_run as _to_run
from openworkflow.sqlite.connection import transaction, write_each
from openworkflow.sqlite.tag_queries import insert_run_tags

RUN_CREATES_PER_WRITE = 500
"""Most single creates one group-commit transaction takes."""


class SqliteRunBatches(SqliteBase):
    """Runs created one by one (grouped) or in batches."""

    _run_creates: GroupCommit[CreateWorkflowRunParams, WorkflowRun]

    def _start_run_creates(self) -> None:
        """Make the group commit that single creates share (called by the backend's init)."""
        self._run_creates = GroupCommit(
            self._write_run_creates, max_batch=RUN_CREATES_PER_WRITE, max_in_flight=1
        )

    async def create_workflow_run(self, params: CreateWorkflowRunParams) -> WorkflowRun:
        """Insert a pending run, or return the one with the same idempotency key (24 h)."""
        self._check_open()
        return await self._run_creates.submit(params)

    async def create_workflow_runs(
        self, params: Sequence[CreateWorkflowRunParams]
    ) -> list[WorkflowRun]:
        """Create the runs in one transaction, as ``create_workflow_run`` would in order."""
        self._check_open()
        if not params:
            return []
        pairs = [(item, self._insert_run_values(item)) for item in params]
        runs = await self._run(
            lambda c: transaction(c, lambda: [self._create_one(c, *pair) for pair in pairs])
        )
        self.notifier.notify_work_available()
        return runs

    async def _write_run_creates(
        self, items: Sequence[CreateWorkflowRunParams]
    ) -> list[WorkflowRun | BaseException]:
        """The group commit's write: one transaction, one savepoint per run.

        Each run's values are made inside its savepoint, so whatever one run
        raises fails that run alone.
        """
        outcomes = await self._run(
            lambda c: write_each(
                c, items, lambda c, item: self._create_one(c, item, self._insert_run_values(item))
            )
        )
        self.notifier.notify_work_available()
        return outcomes

    def _create_one(
        self, c: sqlite3.Connection, params: CreateWorkflowRunParams, values: Params
    ) -> WorkflowRun:
        """Inside a transaction: the run of this key (24 h), else a new run with its tags."""
        if params.idempotency_key is not None:
            existing = c.execute(q.SELECT_RUN_BY_IDEMPOTENCY_KEY, values).fetchone()
            if existing is not None:
                return _to_run(existing)  # the first run keeps its own tags
        run = _to_run(c.execute(q.INSERT_WORKFLOW_RUN, values).fetchone())
        if params.tags:
            # In the run's transaction: a run is never seen without its tags.
            insert_run_tags(c, self._namespace_id, values["id"], values["now"], params.tags)
        return run

    def _check_open(self) -> None:
        if self._stopped:
            raise BackendClosedError("the SQLite backend was stopped; create a new one")

    def _insert_run_values(self, params: CreateWorkflowRunParams) -> Params:
        """The values ``INSERT_WORKFLOW_RUN`` (and the key lookup) bind for ``params``."""
        now = clock.now()
        return {
            "ns": self._namespace_id,
            "id": new_id(),
            "workflow_name": params.workflow_name,
            "version": params.version,
            "idempotency_key": params.idempotency_key,
            "config": ow_json.dumps(params.config if params.config is not None else {}),
            "context": ow_json.dumps_or_none(params.context),
            "input": ow_json.dumps_or_none(params.input),
            "parent_ns": params.parent_step_attempt_namespace_id,
            "parent_id": params.parent_step_attempt_id,
            "available_at": iso(params.available_at) if params.available_at else iso(now),
            "deadline_at": iso_or_none(params.deadline_at),
            "priority": params.priority,
            "scheduled_at": iso_or_none(params.scheduled_at),
            "concurrency_key": params.concurrency_key,
            "concurrency_limit": params.concurrency_limit,
            "now": iso(now),
            "cutoff": iso(now - timedelta(milliseconds=RUN_IDEMPOTENCY_PERIOD_MS)),
        }
