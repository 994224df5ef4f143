"""SQLite: creating, reading, listing, counting, claiming and parking runs."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from openworkflow.backend_common import (
    FAIR_KEYS_PER_CLAIM,
    claim_one,
    fair_keys_per_route,
    next_fair_cursor,
    require,
)
from openworkflow.core import clock
from openworkflow.core import json as ow_json
from openworkflow.core.backend import (
    ClaimWorkflowRunParams,
    ClaimWorkflowRunsParams,
    ExtendWorkflowRunLeaseParams,
    FindWorkflowRunsByIdPrefixParams,
    GetWorkflowRunParams,
    ListWorkflowRunsParams,
    SleepWorkflowRunParams,
    StepAttemptCounts,
    WorkflowKey,
    WorkflowRunCounts,
)
from openworkflow.core.cursor import Page
from openworkflow.core.id_prefix import check_prefix_limit, check_run_id_prefix, prefix_upper_bound
from openworkflow.core.retry import DEADLINE_EXCEEDED_MESSAGE
from openworkflow.core.step_attempt import fold_step_attempt_counts
from openworkflow.core.workflow_run import WorkflowRun, fold_status_counts
from openworkflow.sqlite import queries as q
from openworkflow.sqlite.admission import Due, admit, next_pending_keys
from openworkflow.sqlite.base import (
    Params,
    iso,
    to_claimed_run,
    wake_parent_of,
)
from openworkflow.sqlite.base import to_run as _to_run
from openworkflow.sqlite.connection import transaction
from openworkflow.sqlite.run_batches import SqliteRunBatches

ROUTED_FRONT_BASE = 64
"""How far a routed claim looks into the front of the queue (plus 4 per run
wanted) before it looks up each registered workflow's runs."""


class SqliteRuns(SqliteRunBatches):
    """The run reads and the run writes that do not finish a run."""

    #: Where the next claim's fair walk over concurrency keys starts.
    _fair_cursor: tuple[str, str] = ("", "")

    async def get_workflow_run(self, params: GetWorkflowRunParams) -> WorkflowRun | None:
        """Return the run, or None."""
        values = {"ns": self._namespace_id, "run_id": params.workflow_run_id}
        row = await self._run(lambda c: c.execute(q.SELECT_WORKFLOW_RUN, values).fetchone())
        return None if row is None else _to_run(row)

    async def list_workflow_runs(self, params: ListWorkflowRunsParams) -> Page[WorkflowRun]:
        """List runs newest first with cursor pagination and optional filters."""
        where = '"namespace_id" = :ns'
        values: Params = {"ns": self._namespace_id}
        if params.status:
            where += ' AND "status" = :status'
            values["status"] = params.status
        if params.workflow_name:
            where += ' AND "workflow_name" = :workflow_name'
            values["workflow_name"] = params.workflow_name
        return await self._list_page(
            "workflow_runs",
            "DESC",
            where,
            values,
            params.limit,
            params.after,
            params.before,
            _to_run,
        )

    async def find_workflow_runs_by_id_prefix(
        self, params: FindWorkflowRunsByIdPrefixParams
    ) -> list[WorkflowRun]:
        """Up to ``limit`` runs whose id starts with ``prefix``, in id order (a key range)."""
        prefix = check_run_id_prefix(params.prefix)
        values = {
            "ns": self._namespace_id,
            "low": prefix,
            "high": prefix_upper_bound(prefix),
            "limit": check_prefix_limit(params.limit),
        }
        rows = await self._run(
            lambda c: c.execute(q.SELECT_WORKFLOW_RUNS_BY_ID_RANGE, values).fetchall()
        )
        return [_to_run(row) for row in rows]

    async def count_workflow_runs(self) -> WorkflowRunCounts:
        """Count runs per status in this namespace."""
        values = {"ns": self._namespace_id}
        rows = await self._run(lambda c: c.execute(q.COUNT_WORKFLOW_RUNS, values).fetchall())
        return WorkflowRunCounts(**fold_status_counts((row[0], row[1]) for row in rows))

    async def count_step_attempts(self) -> StepAttemptCounts:
        """Count step attempts per status in this namespace."""
        values = {"ns": self._namespace_id}
        rows = await self._run(lambda c: c.execute(q.COUNT_STEP_ATTEMPTS, values).fetchall())
        return StepAttemptCounts(**fold_step_attempt_counts((row[0], row[1]) for row in rows))

    async def claim_workflow_run(self, params: ClaimWorkflowRunParams) -> WorkflowRun | None:
        """Expire deadlines, then claim the next available run under the write lock."""
        return await claim_one(self.claim_workflow_runs, params)

    async def claim_workflow_runs(self, params: ClaimWorkflowRunsParams) -> list[WorkflowRun]:
        """Expire deadlines, then claim up to one run per worker id, in one transaction.

        With ``params.workflows``, only runs of those (name, version) pairs;
        never runs of a paused workflow; pending runs highest priority first.
        """
        worker_ids = list(params.worker_ids)
        if not worker_ids or (params.workflows is not None and not params.workflows):
            return []  # a worker that registered nothing runs nothing
        routes = None
        if params.workflows is not None:
            routes = ow_json.dumps([[name, version] for name, version in params.workflows])

        def claim(c: sqlite3.Connection) -> tuple[list[WorkflowRun], list[str]]:
            values = {
                **self._claim_values(params.lease_duration_ms),
                "routes": routes,
                "enforce": int(params.enforce_concurrency),
            }
            turn = _ClaimTurn(params.workflows, params.enforce_concurrency, self._fair_cursor)
            return transaction(c, lambda: _claim(c, values, worker_ids, turn))

        claimed, expired = await self._run(claim)
        self._fair_cursor = next_fair_cursor(self._fair_cursor, claimed, len(worker_ids))
        if expired:
            self.notifier.notify_runs_finished(expired)
            self.notifier.notify_work_available()  # a parent may have been woken
        return claimed

    def _claim_values(self, lease_ms: int) -> Params:
        now_dt = clock.now()
        return {
            "ns": self._namespace_id,
            "now": iso(now_dt),
            "lease_until": iso(now_dt + timedelta(milliseconds=lease_ms)),
            "enforce": 1,
            "keyed": None,
        }

    async def extend_workflow_run_lease(self, params: ExtendWorkflowRunLeaseParams) -> WorkflowRun:
        """Fenced: move the lease of an owned running run to now + lease."""
        now_dt = clock.now()
        values = self._owned(
            params.workflow_run_id,
            params.worker_id,
            lease_until=iso(now_dt + timedelta(milliseconds=params.lease_duration_ms)),
            now=iso(now_dt),
        )
        row = await self._run(lambda c: c.execute(q.EXTEND_LEASE, values).fetchone())
        return _to_run(require(row, "extend lease for workflow run"))

    async def sleep_workflow_run(self, params: SleepWorkflowRunParams) -> WorkflowRun:
        """Fenced: park the run until ``available_at`` (or now if a wait is already answered)."""
        values = self._owned(
            params.workflow_run_id,
            params.worker_id,
            resume_at=iso(params.available_at),
            claim_attempt=params.claim_attempt,
            now=iso(clock.now()),
        )
        abandoned = [
            {**values, "step_id": step_id} for step_id in params.abandoned_step_attempt_ids
        ]

        def park(c: sqlite3.Connection) -> sqlite3.Row | None:
            def body() -> sqlite3.Row | None:
                c.executemany(q.DELETE_ABANDONED_STEP_ATTEMPT, abandoned)
                row: sqlite3.Row | None = c.execute(q.SLEEP_WORKFLOW_RUN, values).fetchone()
                return row

            return transaction(c, body) if abandoned else body()

        row = await self._run(park)
        run = _to_run(require(row, "sleep workflow run"))
        if run.available_at is not None and run.available_at <= clock.now():
            self.notifier.notify_work_available()
        else:  # other workers of this process re-read the next due time
            self.notifier.notify_due_later()
        return run


@dataclass(frozen=True, slots=True)
class _ClaimTurn:
    """What one claim needs besides its values: routes, limits, the fair walk's cursor."""

    workflows: Sequence[WorkflowKey] | None
    enforce: bool
    fair_cursor: tuple[str, str]


def _claim(
    c: sqlite3.Connection, values: Params, worker_ids: list[str], turn: _ClaimTurn
) -> tuple[list[WorkflowRun], list[str]]:
    """In the claim's transaction: fail runs past their deadline, then claim one per worker."""
    expired = _expire_deadlines(c, values)
    wanted = len(worker_ids)
    # (run id, whether a worker still held it: its lease expired)
    due: list[Due] = []
    if turn.enforce:  # limited runs that already started go first
        due += _started_to_claim(c, values, wanted, keyed=1)
    due += [(run_id, False) for run_id in _pending_to_claim(c, values, turn.workflows, wanted)]
    if turn.enforce and len(due) < wanted:
        due += _fair_heads(c, values, turn, {run_id for run_id, _ in due})
    if len(due) < wanted:
        keyed = 0 if turn.enforce else None
        due += _started_to_claim(c, values, wanted - len(due), keyed=keyed)
    if turn.enforce:
        due = admit(c, values["ns"], due, wanted)
    return lease(c, values, due[:wanted], worker_ids), expired


def _started_to_claim(
    c: sqlite3.Connection, values: Params, limit: int, keyed: int | None
) -> list[Due]:
    """Due runs that already started (expired leases, woken parked runs), in due order."""
    more = {**values, "limit": limit, "keyed": keyed}
    return [(row[0], bool(row[1])) for row in c.execute(q.SELECT_CLAIMABLE_RUNNING, more)]


def _fair_heads(
    c: sqlite3.Connection, values: Params, turn: _ClaimTurn, taken: set[Any]
) -> list[Due]:
    """The head runs of the next concurrency keys after the cursor that have room."""
    heads: list[Due] = []
    if turn.workflows is None:
        keys = next_pending_keys(c, values["ns"], turn.fair_cursor, FAIR_KEYS_PER_CLAIM)
    else:
        names = [name for name, _ in turn.workflows]
        count = fair_keys_per_route(len(turn.workflows))
        keys = next_pending_keys(c, values["ns"], turn.fair_cursor, count, names)
    for workflow_name, key in keys:
        key_values = {**values, "workflow_name": workflow_name, "concurrency_key": key}
        row = c.execute(q.SELECT_PENDING_HEAD_OF_KEY, key_values).fetchone()
        if row is not None and row[0] not in taken:
            heads.append((row[0], False))
    return heads


def _pending_to_claim(
    c: sqlite3.Connection, values: Params, workflows: Sequence[WorkflowKey] | None, wanted: int
) -> list[Any]:
    """The ids of the pending runs to claim, highest priority first, then in due order."""
    if workflows is None:
        return [
            row[0] for row in c.execute(q.SELECT_CLAIMABLE_PENDING, {**values, "limit": wanted})
        ]
    front = {**values, "limit": wanted, "front_limit": ROUTED_FRONT_BASE + 4 * wanted}
    picked = [row[0] for row in c.execute(q.SELECT_ROUTED_FRONT, front)]
    if len(picked) == wanted:
        return picked
    # The worker's workflows are rare at the front of the queue: merge the top
    # runs of each of them instead (all after the front in claim order).
    candidates: list[tuple[int, str, str, Any]] = []
    for name, version in workflows:
        route = {**values, "workflow_name": name, "version": version, "limit": wanted}
        for run_id, priority, available_at, created_at in c.execute(
            q.SELECT_PENDING_OF_ROUTE, route
        ):
            if run_id not in picked:
                candidates.append((-priority, available_at, created_at, run_id))
    candidates.sort()
    return picked + [candidate[3] for candidate in candidates[: wanted - len(picked)]]


def lease(
    c: sqlite3.Connection, values: Params, due: list[tuple[Any, bool]], worker_ids: list[str]
) -> list[WorkflowRun]:
    """Lease each due run (id, whether its lease expired) to the worker id at its position."""
    return [
        to_claimed_run(
            c.execute(
                q.CLAIM_WORKFLOW_RUN, {**values, "worker_id": worker_id, "run_id": run_id}
            ).fetchone(),
            lease_expired,
        )
        for (run_id, lease_expired), worker_id in zip(due, worker_ids, strict=False)
    ]


def _expire_deadlines(c: sqlite3.Connection, values: Params) -> list[str]:
    """Fail the runs past their deadline, close their attempts and wake their parents."""
    now = values["now"]
    error = ow_json.dumps({"message": DEADLINE_EXCEEDED_MESSAGE})
    expired_rows = c.execute(q.EXPIRE_DEADLINES, {**values, "error": error}).fetchall()
    expired = [row[0] for row in expired_rows]
    if expired:
        c.execute(
            q.CLOSE_OPEN_STEP_ATTEMPTS,
            {"error": error, "now": now, "ns": values["ns"], "run_ids": ow_json.dumps(expired)},
        )
    for row in expired_rows:
        # Unlike the original, a child failed by its deadline wakes its parent.
        if row[2] is not None and row[3] is not None:
            wake_parent_of(c, row[2], row[3], row[1], row[0], now)
    return expired
