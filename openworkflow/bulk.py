"""Bulk actions: cancel or retry every run matching a filter, or a list of run ids.

The runs are read in cursor pages (newest first, ``batch_size`` a page) and
each one is canceled or retried with the single-run operation
(:meth:`OpenWorkflow.cancel` / :meth:`OpenWorkflow.retry`), each its own
short transaction, so a large selection never holds a long lock and other
writers (workers, the dashboard) interleave freely. A run that no longer
allows the action when its turn comes (it finished, was retried, was pruned)
is counted as skipped, not as an error.

Example:
    ``plan = await plan_bulk(ow, "cancel", RunFilter(status="pending", workflow_name="w"))``
    ``print(plan.matched)  # ask first``
    ``result = await bulk_cancel(ow, plan.run_filter)``

A filter without a status selects the runs the action applies to: pending,
running and sleeping runs for cancel, failed and canceled runs for retry.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from openworkflow.client import OpenWorkflow
from openworkflow.core import clock
from openworkflow.core.backend import Backend
from openworkflow.core.cursor import encode_cursor
from openworkflow.core.duration import parse_duration, setting_duration
from openworkflow.core.workflow_run import WorkflowRun, WorkflowRunStatus
from openworkflow.errors import InvalidDurationError, InvalidRunStateError, WorkflowRunNotFoundError

BulkAction = Literal["cancel", "retry"]
"""What a bulk action does to each run."""

CANCELABLE_STATUSES: tuple[str, ...] = ("pending", "running", "sleeping")
"""Statuses a run can be canceled from (the default statuses of a bulk cancel)."""

RETRYABLE_STATUSES: tuple[str, ...] = ("failed", "canceled")
"""Statuses a run can be retried from (the default statuses of a bulk retry)."""

ALLOWED_STATUSES: dict[str, tuple[str, ...]] = {
    "cancel": CANCELABLE_STATUSES,
    "retry": RETRYABLE_STATUSES,
}

DEFAULT_BATCH_SIZE = 200
"""Runs read per page, and acted on between two reads."""

MAX_BATCH_SIZE = 1000
"""The largest page :func:`select_runs` asks for."""

KNOWN_STATUSES: tuple[str, ...] = tuple(
    status.value for status in WorkflowRunStatus if status is not WorkflowRunStatus.UNKNOWN
)

_ONE_MS = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFilter:
    """Which runs a bulk action selects; the conditions combine with AND.

    Attributes:
        status: One status, several (any of them), or None (the statuses the
            action applies to).
        workflow_name: Only runs of this workflow.
        tags: Only runs carrying every one of these key/value pairs.
        created_before: Only runs created strictly before this time.
        created_after: Only runs created at or after this time.
    """

    status: str | tuple[str, ...] | None = None
    workflow_name: str | None = None
    tags: Mapping[str, str] | None = None
    created_before: datetime | None = None
    created_after: datetime | None = None

    def statuses(self) -> tuple[str, ...]:
        """The statuses asked for, each once, in the given order (empty: any).

        Raises:
            ValueError: a status is not one a run can have.
        """
        given = (self.status,) if isinstance(self.status, str) else (self.status or ())
        for status in given:
            if status not in KNOWN_STATUSES:
                raise ValueError(
                    f"unknown status {status!r}: use one of {', '.join(KNOWN_STATUSES)}"
                )
        return tuple(dict.fromkeys(given))


@dataclass(frozen=True, slots=True)
class BulkPlan:
    """What a bulk action would act on, counted before asking for confirmation.

    Attributes:
        action: ``"cancel"`` or ``"retry"``.
        matched: How many runs match now.
        run_filter: The filter with its statuses made explicit and bounded to
            the runs counted (created no later than the newest of them), so
            runs started after the count are left alone when it is applied.
    """

    action: BulkAction
    matched: int
    run_filter: RunFilter


@dataclass(frozen=True, slots=True)
class BulkResult:
    """What a bulk action did.

    Attributes:
        matched: Runs selected.
        done: Runs canceled (or retried).
        skipped: Runs that no longer allowed the action (or no longer exist).
    """

    matched: int
    done: int
    skipped: int


@dataclass(frozen=True, slots=True)
class _Position:
    created_at: datetime
    id: str


def action_filter(action: BulkAction, run_filter: RunFilter) -> RunFilter:
    """``run_filter`` with the action's statuses when it names none."""
    if run_filter.statuses():
        return run_filter
    return replace(run_filter, status=ALLOWED_STATUSES[action])


async def select_runs(
    source: OpenWorkflow | Backend,
    run_filter: RunFilter,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> AsyncIterator[list[WorkflowRun]]:
    """Yield the runs matching ``run_filter`` in batches of up to ``batch_size``, newest first.

    Each batch is read (one cursor page per status asked for) when the
    previous one has been consumed, so each run is seen once, as it was when
    its batch was read, even if acting on a batch changes statuses.

    Raises:
        ValueError: a bad status, tag, or ``batch_size`` outside 1 to 1000.
        InvalidNameError: ``workflow_name`` cannot be stored.
    """
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be 1 to {MAX_BATCH_SIZE}, got {batch_size}")
    client = _client(source)
    statuses: Sequence[str | None] = run_filter.statuses() or (None,)
    before, after = run_filter.created_before, run_filter.created_after
    # Start just past created_before: the database skips the newer runs by index.
    cursor = None if before is None else encode_cursor(_Position(_ceil_ms(before), ""))
    while True:
        rows, more = await _next_rows(client, run_filter, statuses, cursor, batch_size)
        taken = rows[:batch_size]
        batch = [
            run
            for run in taken
            if (after is None or run.created_at >= after)
            and (before is None or run.created_at < before)
        ]
        if batch:
            yield batch
        if not taken or not (more or len(rows) > batch_size):
            return
        if after is not None and taken[-1].created_at < after:
            return  # only older runs than asked for from here on
        # One position for every status: a run whose status changed since it
        # was taken lies behind it, so it is never read again.
        cursor = encode_cursor(taken[-1])


async def _next_rows(
    client: OpenWorkflow,
    run_filter: RunFilter,
    statuses: Sequence[str | None],
    cursor: str | None,
    batch_size: int,
) -> tuple[list[WorkflowRun], bool]:
    """The next page of each status past ``cursor``, merged newest first; whether any has more."""
    rows: list[WorkflowRun] = []
    more = False
    for status in statuses:
        page = await client.list_runs(
            status=status,
            workflow_name=run_filter.workflow_name,
            tags=run_filter.tags or None,
            limit=batch_size,
            after=cursor,
        )
        rows.extend(page.data)
        more = more or page.next is not None
    rows.sort(key=lambda run: (run.created_at, run.id), reverse=True)  # the lists' order
    return rows, more


async def count_runs(
    source: OpenWorkflow | Backend, run_filter: RunFilter, *, batch_size: int = MAX_BATCH_SIZE
) -> int:
    """How many runs match ``run_filter`` (read page by page; no write)."""
    total = 0
    async for batch in select_runs(source, run_filter, batch_size=batch_size):
        total += len(batch)
    return total


async def plan_bulk(
    source: OpenWorkflow | Backend,
    action: BulkAction,
    run_filter: RunFilter,
    *,
    batch_size: int = MAX_BATCH_SIZE,
) -> BulkPlan:
    """Count the runs ``action`` would act on; apply the plan's filter to act on just those."""
    effective = action_filter(_checked_action(action), run_filter)
    matched = 0
    newest: datetime | None = None
    async for batch in select_runs(source, effective, batch_size=batch_size):
        matched += len(batch)
        top = max(run.created_at for run in batch)
        newest = top if newest is None else max(newest, top)
    if newest is not None:
        bound = newest + _ONE_MS  # created_before is exclusive; timestamps are whole ms
        if effective.created_before is None or bound < effective.created_before:
            effective = replace(effective, created_before=bound)
    return BulkPlan(action, matched, effective)


async def bulk_cancel(
    source: OpenWorkflow | Backend,
    run_filter: RunFilter,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> BulkResult:
    """Cancel every run matching ``run_filter`` (default: every pending, running or sleeping one).

    Each run is canceled in its own transaction, a batch at a time; runs that
    no longer allow it are counted as skipped.
    """
    return await _apply(source, "cancel", run_filter, batch_size)


async def bulk_retry(
    source: OpenWorkflow | Backend,
    run_filter: RunFilter,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> BulkResult:
    """Retry every run matching ``run_filter`` (default: every failed or canceled one).

    Each run goes back to pending in its own transaction (see
    :meth:`OpenWorkflow.retry`); runs no longer failed or canceled are skipped.
    """
    return await _apply(source, "retry", run_filter, batch_size)


async def act_on_runs(
    source: OpenWorkflow | Backend, action: BulkAction, run_ids: Iterable[str]
) -> BulkResult:
    """Cancel or retry the runs with these ids (each once); unknown ids are skipped."""
    client = _client(source)
    _checked_action(action)
    unique = list(dict.fromkeys(run_ids))
    done = 0
    for run_id in unique:
        run = await client.get_run(run_id)
        if run is not None and await _act(client, action, run):
            done += 1
    return BulkResult(len(unique), done, len(unique) - done)


def parse_moment(text: str, *, now: datetime | None = None) -> datetime:
    """A time given as ISO 8601 (UTC when it names no offset) or as an age ago (``"2h"``).

    A bare number is seconds ago, as in settings.

    Raises:
        InvalidDurationError: neither a time nor a duration.
    """
    stripped = text.strip()
    if re.match(r"^\d{4}-\d{2}-\d{2}", stripped):
        try:
            moment = datetime.fromisoformat(stripped.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidDurationError(
                f"invalid time {text!r}: use ISO 8601 (2026-01-31T09:00:00Z) or an age like 2h"
            ) from None
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    age = parse_duration(setting_duration(stripped))
    if age < timedelta():
        raise InvalidDurationError(f"invalid age {text!r}: must not be negative")
    return (now if now is not None else clock.now()) - age


async def _apply(
    source: OpenWorkflow | Backend, action: BulkAction, run_filter: RunFilter, batch_size: int
) -> BulkResult:
    client = _client(source)
    matched = done = 0
    selected = action_filter(_checked_action(action), run_filter)
    async for batch in select_runs(client, selected, batch_size=batch_size):
        for run in batch:
            matched += 1
            if await _act(client, action, run):
                done += 1
    return BulkResult(matched, done, matched - done)


async def _act(client: OpenWorkflow, action: BulkAction, run: WorkflowRun) -> bool:
    """Apply ``action`` to one run; False when the run does not allow it (any more)."""
    if run.status not in ALLOWED_STATUSES[action]:
        return False  # e.g. already canceled: nothing to do, so not counted as done
    try:
        if action == "cancel":
            await client.cancel(run.id)
        else:
            await client.retry(run.id)
    except (InvalidRunStateError, WorkflowRunNotFoundError):
        return False  # it finished, was retried or pruned since its page was read
    return True


def _ceil_ms(moment: datetime) -> datetime:
    # Stored times are whole milliseconds: those before ``moment`` are before this one too.
    start = clock.truncate_ms(moment)
    return start if start == moment else start + _ONE_MS


def _checked_action(action: str) -> BulkAction:
    if action == "cancel":
        return "cancel"
    if action == "retry":
        return "retry"
    raise ValueError(f"unknown bulk action {action!r}: use 'cancel' or 'retry'")


def _client(source: OpenWorkflow | Backend) -> OpenWorkflow:
    # A client made here shares the backend and never stops it.
    return source if isinstance(source, OpenWorkflow) else OpenWorkflow(source)


__all__ = [
    "CANCELABLE_STATUSES",
    "RETRYABLE_STATUSES",
    "BulkAction",
    "BulkPlan",
    "BulkResult",
    "RunFilter",
    "act_on_runs",
    "action_filter",
    "bulk_cancel",
    "bulk_retry",
    "count_runs",
    "parse_moment",
    "plan_bulk",
    "select_runs",
]
