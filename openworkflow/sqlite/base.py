"""What every part of the SQLite backend uses: its state, row mapping and shared writes.

Timestamps come from the application clock and are stored as ISO strings
with milliseconds, which sort like the times they name.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from openworkflow.backend_common import Order, plan_page
from openworkflow.core import clock
from openworkflow.core import json as ow_json
from openworkflow.core.closing import closed_step_attempt_error
from openworkflow.core.cursor import Page
from openworkflow.core.rows import step_attempt_from_row, workflow_run_from_row
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import BackendClosedError
from openworkflow.notifications import ChangeNotifier
from openworkflow.sqlite import queries as q
from openworkflow.sqlite.connection import Database

T = TypeVar("T")
R = TypeVar("R", WorkflowRun, StepAttempt)
Params = dict[str, Any]

iso = clock.to_iso
iso_or_none = clock.to_iso_or_none


class SqliteBase:
    """The state every part shares: the namespace, the database and the plumbing."""

    _namespace_id: str
    _db: Database
    _stopped: bool

    @property
    def notifier(self) -> ChangeNotifier:
        """In-process wake-ups for workers and result waiters sharing this database."""
        return self._db.notifier

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._stopped:
            raise BackendClosedError("the SQLite backend was stopped; create a new one")
        return await self._db.run(fn)

    def _notify_finished(self, run: WorkflowRun) -> None:
        self.notifier.notify_runs_finished((run.id,))
        if run.parent_step_attempt_id is not None:
            self.notifier.notify_work_available()  # the parent may have been woken

    def _owned(self, workflow_run_id: str, worker_id: str, **values: Any) -> Params:
        """The names a fence binds (namespace, run, worker), with ``values``."""
        return {
            "ns": self._namespace_id,
            "run_id": workflow_run_id,
            "worker_id": worker_id,
            **values,
        }

    async def _list_page(
        self,
        table: str,
        natural_order: Order,
        where: str,
        values: Params,
        limit: int | None,
        after: str | None,
        before: str | None,
        to_record: Callable[[sqlite3.Row], R],
    ) -> Page[R]:
        plan = plan_page(natural_order, limit, after, before)
        params = {**values, "limit": plan.page_size + 1}
        if plan.cursor is not None:
            params.update(cursor_created_at=iso(plan.cursor.created_at), cursor_id=plan.cursor.id)
        sql = q.list_page_query(table, where, plan.order, plan.cursor_op)
        rows = await self._run(lambda c: c.execute(sql, params).fetchall())
        return plan.page([to_record(row) for row in rows])


def close_open_step_attempts(
    c: sqlite3.Connection, namespace_id: str, runs: Sequence[WorkflowRun], now: str
) -> None:
    """Fail the running attempts of the finished ``runs`` (all of one status), in one statement."""
    c.execute(
        q.CLOSE_OPEN_STEP_ATTEMPTS,
        {
            "error": ow_json.dumps(closed_step_attempt_error(runs[0].status)),
            "now": now,
            "ns": namespace_id,
            "run_ids": ow_json.dumps([run.id for run in runs]),
        },
    )


def wake_parent(c: sqlite3.Connection, child: WorkflowRun, now: str) -> None:
    """Make the parked parent waiting on this finished child run available now."""
    if child.parent_step_attempt_namespace_id is None or child.parent_step_attempt_id is None:
        return
    wake_parent_of(
        c,
        child.parent_step_attempt_namespace_id,
        child.parent_step_attempt_id,
        child.namespace_id,
        child.id,
        now,
    )


def wake_parent_of(
    c: sqlite3.Connection,
    parent_ns: str,
    parent_step_attempt_id: str,
    child_ns: str,
    child_id: str,
    now: str,
) -> None:
    """Make the parked parent waiting on exactly this child available now."""
    c.execute(
        q.WAKE_PARENT,
        {
            "now": now,
            "parent_ns": parent_ns,
            "parent_step_id": parent_step_attempt_id,
            "child_ns": child_ns,
            "child_id": child_id,
        },
    )


def to_run(row: sqlite3.Row | Sequence[Any]) -> WorkflowRun:
    """The run a ``workflow_runs`` row holds."""
    return workflow_run_from_row(row, ow_json.loads, clock.from_iso)


def to_claimed_run(row: sqlite3.Row | Sequence[Any], lease_expired: bool) -> WorkflowRun:
    """The run a claim returned: its row ends with whether it has step attempts."""
    # In the same write transaction, so nothing can be missing.
    return workflow_run_from_row(
        row,
        ow_json.loads,
        clock.from_iso,
        has_step_attempts=bool(row[-1]),
        lease_expired=lease_expired,
    )


def to_step(row: sqlite3.Row | Sequence[Any]) -> StepAttempt:
    """The step attempt a ``step_attempts`` row holds."""
    return step_attempt_from_row(row, ow_json.loads, clock.from_iso)
