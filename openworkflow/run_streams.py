"""The client side of run streams: ``async for item in handle.stream(key)``.

A run appends with ``step.stream(key, value)``; a reader gets every item from
the first (also those written before it connected), in order, each once, and
the iteration ends when the run has finished and every item was read. A new
item wakes a waiting reader at once when the writer shares its backend object,
within milliseconds across processes (PostgreSQL NOTIFY, the SQLite watcher),
and otherwise by polling (50 ms growing to 1 s, back to 50 ms after an item).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from openworkflow.core.backend import Backend, GetWorkflowRunParams
from openworkflow.core.json import JsonValue, is_storable_text
from openworkflow.core.streams import ReadRunStreamParams, RunStreamItem
from openworkflow.errors import WorkflowRunNotFoundError
from openworkflow.notifications import POLL_MAX_S, POLL_START_S, notifier_of


async def read_stream(backend: Backend, run_id: str, key: str) -> AsyncIterator[JsonValue]:
    """Every item of run ``run_id``'s stream ``key``, from the first, until the run ends.

    ``key`` must have been checked (:func:`~openworkflow.core.streams.check_stream_key`).

    Raises:
        WorkflowRunNotFoundError: the run does not exist.
    """
    if not is_storable_text(run_id):
        raise WorkflowRunNotFoundError(run_id)  # no stored id has a NUL: do not ask the database
    notifier = notifier_of(backend)
    last_seq = 0
    finished = False  # the run was seen finished: what is stored now is all there will be
    interval = POLL_START_S
    while True:
        waiter = None if notifier is None else notifier.watch_run(run_id)
        try:
            items = await backend.read_run_stream(
                ReadRunStreamParams(workflow_run_id=run_id, key=key, after_seq=last_seq)
            )
            ready = items if finished else _in_order(items, last_seq)
            if not ready:
                if finished:
                    return
                # Read the run after the stream: an item written before it
                # finished is then sure to be seen by the read that follows.
                finished = await _has_finished(backend, run_id)
                if not finished:
                    await _pause(waiter, interval)
                    interval = min(interval * 1.5, POLL_MAX_S)
                continue
        finally:
            if notifier is not None and waiter is not None:
                notifier.unwatch_run(run_id, waiter)
        interval = POLL_START_S
        for item in ready:
            last_seq = item.seq
            yield item.value


def _in_order(items: Sequence[RunStreamItem], last_seq: int) -> list[RunStreamItem]:
    """The items that follow ``last_seq`` without a gap.

    While the run goes on, a missing position is still being written (calls
    awaited out of order): wait for it rather than skip it. Once the run has
    finished, a gap is final (a call never awaited) and is skipped.
    """
    ready: list[RunStreamItem] = []
    for item in items:
        if item.seq != last_seq + 1:
            break
        ready.append(item)
        last_seq = item.seq
    return ready


async def _has_finished(backend: Backend, run_id: str) -> bool:
    run = await backend.get_workflow_run(GetWorkflowRunParams(workflow_run_id=run_id))
    if run is None:
        raise WorkflowRunNotFoundError(run_id)
    return run.is_terminal


async def _pause(waiter: asyncio.Future[None] | None, interval: float) -> None:
    if waiter is None:
        await asyncio.sleep(interval)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(waiter), interval)
