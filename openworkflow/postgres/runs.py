"""PostgreSQL: creating, reading, listing, counting, claiming and parking runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypedDict

from openworkflow.backend_common import (
    FAIR_KEYS_PER_CLAIM,
    FAIR_STEPS_PER_KEY,
    claim_one,
    fair_keys_per_route,
    next_fair_cursor,
    require,
)
from openworkflow.core import clock
from openworkflow.core.backend import (
    RUN_IDEMPOTENCY_PERIOD_MS,
    ClaimWorkflowRunParams,
    ClaimWorkflowRunsParams,
    CreateWorkflowRunParams,
    ExtendWorkflowRunLeaseParams,
    FindWorkflowRunsByIdPrefixParams,
    GetWorkflowRunParams,
    ListWorkflowRunsParams,
    SleepWorkflowRunParams,
    StepAttemptCounts,
    WorkflowRunCounts,
)
from openworkflow.core.cursor import Page
from openworkflow.core.id_prefix import check_prefix_limit, check_run_id_prefix, like_pattern
from openworkflow.core.ids import new_id
from openworkflow.core.retry import DEADLINE_EXCEEDED_MESSAGE
from openworkflow.core.rows import workflow_run_from_row
from openworkflow.core.step_attempt import fold_step_attempt_counts
from openworkflow.core.workflow_run import WorkflowRun, fold_status_counts
from openworkflow.postgres import counts
from openworkflow.postgres.base import (
    Connection,
    Row,
    identity,
    jsonb,
    load_time,
    lock_scope,
    to_run,
)
from openworkflow.postgres.run_batches import PostgresRunBatches

ROUTED_FRONT_BASE = 64
ROUTED_FRONT_PER_RUN = 4
"""How far a routed claim looks into the front of the queue before it looks
up each registered workflow's runs (see ``claim_queries``)."""

UPDATED_AT = 20
"""Position of ``updated_at`` in a ``workflow_runs`` row (``RETURNING *``)."""


class PostgresRuns(PostgresRunBatches):
    """The run reads and the run writes that do not finish a run."""

    #: Where the next claim's fair walk over concurrency keys starts (this
    #: process's turn; see :func:`next_fair_cursor`).
    _fair_cursor: tuple[str, str] = ("", "")

    async def create_workflow_run(self, params: CreateWorkflowRunParams) -> WorkflowRun:
        """Insert a pending run, or return the one with the same idempotency key (24 h).

        Queued on the group commit of creates (``run_batches``): the runs that
        concurrent callers start share one statement and one commit, and the
        caller resumes once its run is committed. One failing run fails alone.
        """
        self._check_open()
        return await self._run_creates.submit(params)

    def _create_run_values(self, params: CreateWorkflowRunParams) -> dict[str, Any]:
        """The values :attr:`Queries.insert_workflow_run` binds for ``params``."""
        values = self._params(
            run_id=new_id(),
            workflow_name=params.workflow_name,
            version=params.version,
            idempotency_key=params.idempotency_key,
            config=jsonb(params.config if params.config is not None else {}),
            context=jsonb(params.context),
            input=jsonb(params.input),
            parent_ns=params.parent_step_attempt_namespace_id,
            parent_id=params.parent_step_attempt_id,
            available_at=params.available_at,
            deadline_at=params.deadline_at,
            priority=params.priority,
            scheduled_at=params.scheduled_at,
            concurrency_key=params.concurrency_key,
            concurrency_limit=params.concurrency_limit,
            period_ms=RUN_IDEMPOTENCY_PERIOD_MS,
        )
        if params.idempotency_key is not None:
            values["scope"] = lock_scope(
                namespaceId=self._namespace_id,
                workflowName=params.workflow_name,
                idempotencyKey=params.idempotency_key,
            )
        return values

    async def _insert_keyed_run(self, connection: Connection, values: dict[str, Any]) -> Row | None:
        """Inside a transaction: the run with this key (24 h), else a new one, under a lock."""
        await connection.execute(self._q.lock_idempotency_scope, values)
        row = await self._one(connection, self._q.select_run_by_idempotency_key, values)
        if row is not None:
            return row
        return await self._one(connection, self._q.insert_workflow_run, values)

    async def get_workflow_run(self, params: GetWorkflowRunParams) -> WorkflowRun | None:
        """Return the run, or None."""
        row = await self._read_one(
            self._q.select_workflow_run, self._params(run_id=params.workflow_run_id)
        )
        return None if row is None else to_run(row)

    async def list_workflow_runs(self, params: ListWorkflowRunsParams) -> Page[WorkflowRun]:
        """List runs newest first with cursor pagination and optional filters."""
        conditions = ['"namespace_id" = %(ns)s']
        values = self._params(status=params.status, workflow_name=params.workflow_name)
        if params.status:
            conditions.append('"status" = %(status)s')
        if params.workflow_name:
            conditions.append('"workflow_name" = %(workflow_name)s')
        return await self._list_page(
            "workflow_runs", "DESC", conditions, values, params.limit, params.after, params.before
        )

    async def find_workflow_runs_by_id_prefix(
        self, params: FindWorkflowRunsByIdPrefixParams
    ) -> list[WorkflowRun]:
        """Up to ``limit`` runs whose id starts with ``prefix``, in id order (``LIKE 'p%'``)."""
        prefix = check_run_id_prefix(params.prefix)
        values = self._params(pattern=like_pattern(prefix), limit=check_prefix_limit(params.limit))
        rows = await self._read_all(self._q.select_workflow_runs_by_id_prefix, values)
        return [to_run(row) for row in rows]

    async def count_workflow_runs(self) -> WorkflowRunCounts:
        """Runs per status: exact up to a cap per status, estimated beyond (see ``counts``)."""
        schema = self._db.schema
        values = self._params(cap=counts.EXACT_COUNT_CAP)
        rows = await self._read_all(counts.rendered(counts.CAPPED_RUN_COUNTS, schema), values)
        found = [(str(row[0]), int(row[1])) for row in rows]
        for index, (status, count) in enumerate(found):
            if count >= counts.EXACT_COUNT_CAP:
                found[index] = (status, await self._estimate("workflow_runs", status))
        return WorkflowRunCounts(**fold_status_counts(found))

    async def count_step_attempts(self) -> StepAttemptCounts:
        """Step attempts per status: exact on a small table, else see ``counts``."""
        schema = self._db.schema
        values = self._params(step_table=f'"{schema}"."step_attempts"', cap=counts.EXACT_COUNT_CAP)
        size = await self._read_one(counts.rendered(counts.STEP_TABLE_ROWS, schema), values)
        if size is None or float(size[0]) < counts.EXACT_STEP_TABLE_ROWS:
            rows = await self._read_all(counts.rendered(counts.EXACT_STEP_COUNTS, schema), values)
            found = [(str(row[0]), int(row[1])) for row in rows]
        else:
            running = await self._read_one(
                counts.rendered(counts.CAPPED_RUNNING_STEPS, schema), values
            )
            found = [("running", int(running[0]) if running else 0)]
            if found[0][1] >= counts.EXACT_COUNT_CAP:
                found = [("running", await self._estimate("step_attempts", "running"))]
            for status in counts.STEP_ESTIMATED_STATUSES:
                found.append((status, await self._estimate("step_attempts", status)))
        return StepAttemptCounts(**fold_step_attempt_counts(found))

    async def _estimate(self, table: str, status: str) -> int:
        """The planner's row estimate for a status, never below the exact cap for runs."""
        query = counts.estimate_query(self._db.schema, table, self._namespace_id, status)
        rows = await self._read_all(query, {})
        estimate = counts.planned_rows(rows[0][0])
        return max(estimate, counts.EXACT_COUNT_CAP) if table == "workflow_runs" else estimate

    async def claim_workflow_run(self, params: ClaimWorkflowRunParams) -> WorkflowRun | None:
        """Expire deadlines and lease the next available run, in one statement."""
        return await claim_one(self.claim_workflow_runs, params)

    async def claim_workflow_runs(self, params: ClaimWorkflowRunsParams) -> list[WorkflowRun]:
        """Expire deadlines and lease up to one run per worker id, in one statement.

        With ``params.workflows``, only runs of those (name, version) pairs;
        never runs of a paused workflow; pending runs highest priority first.
        """
        statement = self.claim_statement(params)
        if statement is None:
            return []
        rows, sent_at = await self._send_claim(*statement)
        claimed = claimed_runs(rows, sent_at)
        self._fair_cursor = next_fair_cursor(self._fair_cursor, claimed, len(params.worker_ids))
        return claimed

    async def _send_claim(self, query: bytes, values: dict[str, Any]) -> tuple[list[Row], datetime]:
        """Run a claim on a session of the claim pool; its rows, and when it went out.

        Those sessions run it on its cached generic plan (see
        :meth:`Database.claim_pool`). The send time is the engine's own clock,
        read after any wait for the connection (the database clock's bound).
        """
        async with self._connection(kind="claim") as connection:
            sent_at = clock.precise_uncorrected_now()
            cursor = await connection.execute(query, values, prepare=True)
            return await cursor.fetchall(), sent_at

    def claim_statement(
        self, params: ClaimWorkflowRunsParams
    ) -> tuple[bytes, dict[str, Any]] | None:
        """The claim statement for ``params`` and its values; None when it would claim nothing.

        Separate so that tests can run the very statement inside transactions
        they hold open (the interleaving tests).
        """
        worker_ids = list(params.worker_ids)
        if not worker_ids or (params.workflows is not None and not params.workflows):
            return None  # a worker that registered nothing runs nothing
        values = self._claim_params(worker_ids, params.lease_duration_ms)
        values["front_limit"] = ROUTED_FRONT_BASE + ROUTED_FRONT_PER_RUN * len(worker_ids)
        limited = params.enforce_concurrency
        query = self._q.claim_workflow_runs if limited else self._q.claim_unlimited_workflow_runs
        if params.workflows is not None:
            query = (
                self._q.claim_routed_workflow_runs
                if limited
                else self._q.claim_unlimited_routed_workflow_runs
            )
            values["route_names"] = [name for name, _ in params.workflows]
            values["route_versions"] = [version for _, version in params.workflows]
            values["fair_keys"] = fair_keys_per_route(len(params.workflows))
            values["fair_steps"] = FAIR_STEPS_PER_KEY * values["fair_keys"]
        return query, values

    def _claim_params(self, worker_ids: list[str], lease_ms: int) -> dict[str, Any]:
        after_workflow, after_key = self._fair_cursor
        return self._params(
            worker_ids=worker_ids,
            claim_limit=len(worker_ids),
            lease_ms=lease_ms,
            deadline_error=jsonb({"message": DEADLINE_EXCEEDED_MESSAGE}),
            fair_after_workflow=after_workflow,
            fair_after_key=after_key,
            fair_keys=FAIR_KEYS_PER_CLAIM,
            fair_steps=FAIR_STEPS_PER_KEY * FAIR_KEYS_PER_CLAIM,
        )

    async def extend_workflow_run_lease(self, params: ExtendWorkflowRunLeaseParams) -> WorkflowRun:
        """Fenced: move the lease of an owned running run to now + lease."""
        values = self._owned(
            params.workflow_run_id, params.worker_id, lease_ms=params.lease_duration_ms
        )
        async with self._connection(kind="lease") as connection:
            sent_at = clock.precise_uncorrected_now()
            row = await self._one(connection, self._q.extend_lease, values)
        renewed = require(row, "extend lease for workflow run")
        return workflow_run_from_row(
            renewed,
            identity,
            load_time,
            **database_clock_readings(renewed, sent_at),
        )

    async def sleep_workflow_run(self, params: SleepWorkflowRunParams) -> WorkflowRun:
        """Fenced: park the run until ``available_at`` (or now if a wait is already answered)."""
        values = self._owned(
            params.workflow_run_id,
            params.worker_id,
            available_at=params.available_at,
            claim_attempt=params.claim_attempt,
            step_ids=list(params.abandoned_step_attempt_ids),
        )
        async with self._connection() as connection:
            if params.abandoned_step_attempt_ids:
                await connection.execute(self._q.delete_abandoned_step_attempts, values)
            parked = require(
                await self._one(connection, self._q.sleep_workflow_run, values),
                "sleep workflow run",
            )
            # A separate statement, so it sees answers committed while we parked.
            reconciled = await self._one(connection, self._q.reconcile_parked_run, values)
        return to_run(reconciled or parked)


class ClockReadings(TypedDict):
    """A statement's readings of the database's clock (``WorkflowRun`` fields of the same names)."""

    stamped_at: datetime
    returned_at: datetime
    sent_at: datetime | None


def database_clock_readings(row: Row, sent_at: datetime | None) -> ClockReadings:
    """A claim's or renewal's readings of the database's clock, to the microsecond.

    ``stamped_at``: the ``updated_at`` it just wrote (``NOW()``, the
    statement's start); ``returned_at``: its last column (``clock_timestamp()``
    as the row was returned); ``sent_at``: the engine's clock as the statement
    went out, when known. See ``worker/db_clock.py``.
    """
    return {
        "stamped_at": row[UPDATED_AT].astimezone(UTC),
        "returned_at": row[-1].astimezone(UTC),
        "sent_at": sent_at,
    }


def claimed_runs(rows: list[Row], sent_at: datetime | None = None) -> list[WorkflowRun]:
    """The runs a claim statement leased, in claim order.

    After the run's columns: whether its lease had expired, whether it has
    step attempts (or NULL), the claim position (RETURNING order is
    unspecified), then the database's clock as the row was returned; all
    read from the end of the row.
    """
    return [
        workflow_run_from_row(
            row,
            identity,
            load_time,
            has_step_attempts=row[-3],
            lease_expired=row[-4],
            **database_clock_readings(row, sent_at),
        )
        for row in sorted(rows, key=lambda row: int(row[-2]))
    ]
