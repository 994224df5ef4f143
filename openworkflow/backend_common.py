"""What the SQLite and PostgreSQL backends share that is not SQL.

Each backend writes its own statements; the rules around them are written
once here: checking the namespace a backend is bound to, the fence that turns
"no row" into a :class:`~openworkflow.errors.WriteConflictError`, page
planning for cursor-paginated lists, the one-run claim built on the batch
claim, and the "no row, read the run, decide the conflict" fallback of
cancel and retry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from openworkflow.core.backend import (
    ClaimWorkflowRunParams,
    ClaimWorkflowRunsParams,
    GetWorkflowRunParams,
)
from openworkflow.core.cursor import (
    DEFAULT_PAGE_SIZE,
    Cursor,
    Page,
    build_page,
    decode_list_cursor,
)
from openworkflow.core.json import check_name
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import WriteConflictError

T = TypeVar("T")
R = TypeVar("R", WorkflowRun, StepAttempt)
Order = Literal["ASC", "DESC"]


def check_namespace(namespace_id: object) -> str:
    """Return ``namespace_id`` if it is a usable namespace name, else raise.

    Raises:
        ValueError: not a non-empty string, or not a valid name.
    """
    if not isinstance(namespace_id, str) or not namespace_id:
        raise ValueError("namespace_id must be a non-empty string")
    check_name(namespace_id, "namespace_id")
    return namespace_id


def require(row: T | None, operation: str) -> T:
    """The row a fenced write returned; no row means the fence refused it.

    Raises:
        WriteConflictError: ``Failed to <operation>``.
    """
    if row is None:
        raise WriteConflictError(f"Failed to {operation}")
    return row


@dataclass(frozen=True, slots=True)
class PagePlan:
    """How to read one page: its size, the scan order and where the cursor starts.

    ``cursor_op`` is ``">"`` or ``"<"`` when the page starts after ``cursor``
    (``None`` for the first page). The rows of a ``before`` page are read in
    reverse order; :meth:`page` puts them back.
    """

    page_size: int
    order: Order
    cursor: Cursor | None
    cursor_op: str | None
    after: str | None
    before: str | None

    def page(self, records: Sequence[R]) -> Page[R]:
        """The page of ``records`` read with this plan (one more than the page size)."""
        return build_page(
            list(records),
            self.page_size,
            has_after=bool(self.after),
            has_before=bool(self.before),
        )


def plan_page(
    natural_order: Order, limit: int | None, after: str | None, before: str | None
) -> PagePlan:
    """Plan a cursor-paginated read in ``natural_order`` (``created_at``, ``id``).

    Raises:
        ValueError: ``limit`` is below 1, or a cursor is invalid.
    """
    page_size = DEFAULT_PAGE_SIZE if limit is None else limit
    if page_size < 1:
        raise ValueError(f"limit must be at least 1, got {page_size}")
    cursor = decode_list_cursor(after, before)
    order: Order = natural_order
    if before:
        order = "ASC" if natural_order == "DESC" else "DESC"
    cursor_op = None if cursor is None else (">" if order == "ASC" else "<")
    return PagePlan(page_size, order, cursor, cursor_op, after, before)


async def claim_one(
    claim_many: Callable[[ClaimWorkflowRunsParams], Awaitable[list[WorkflowRun]]],
    params: ClaimWorkflowRunParams,
) -> WorkflowRun | None:
    """The one-run claim: the batch claim for a single worker id."""
    claimed = await claim_many(
        ClaimWorkflowRunsParams(
            worker_ids=[params.worker_id], lease_duration_ms=params.lease_duration_ms
        )
    )
    return claimed[0] if claimed else None


async def decide_conflict(
    get_run: Callable[[GetWorkflowRunParams], Awaitable[WorkflowRun | None]],
    workflow_run_id: str,
    resolve: Callable[[str, WorkflowRun | None], WorkflowRun],
) -> WorkflowRun:
    """No row was changed: read the run and let ``resolve`` decide (return it or raise)."""
    existing = await get_run(GetWorkflowRunParams(workflow_run_id=workflow_run_id))
    return resolve(workflow_run_id, existing)


FAIR_KEYS_PER_CLAIM = 32
"""How many concurrency keys a claim's fair walk visits when the front of the
queue is full keys (a hot key's backlog would hide every other key)."""


FAIR_STEPS_PER_KEY = 8
"""How many keys a fair walk may visit (full ones passed over) per key with room it wants."""


def fair_keys_per_route(routes: int) -> int:
    """How many keys of each registered workflow a routed claim's fair walk visits."""
    return max(2, FAIR_KEYS_PER_CLAIM // max(1, routes))


def next_fair_cursor(
    cursor: tuple[str, str], claimed: list[WorkflowRun], wanted: int
) -> tuple[str, str]:
    """Where the next claim's fair walk over concurrency keys starts.

    After the last key this claim took a run of, so keys take turns; back at
    the start when the claim fell short without taking any (the walk reached
    the end, or found no key with room after the cursor).
    """
    keys = [
        (run.workflow_name, run.concurrency_key or "") for run in claimed if run.concurrency_key
    ]
    if keys:
        return max([cursor, *keys])
    return ("", "") if len(claimed) < wanted else cursor
