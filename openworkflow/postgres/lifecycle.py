"""Starting and ending the background tasks of a PostgreSQL backend's pools.

``psycopg_pool`` runs its connection attempts in worker tasks, and a worker
that is cancelled while it connects logs ``error connecting in '<pool>':``
(the empty message of the ``CancelledError``), schedules another attempt and
keeps running. Cancelling it once therefore does not end it: when the event
loop shuts down (``asyncio.run`` cancels every remaining task once, then
waits for them all) such a worker waits on its queue for ever and the
process never exits. So the backend remembers the tasks each pool starts,
closes the pool (which sends every worker its stop message) and then
cancels whatever is left until it is really gone.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
import psycopg_pool

logger = logging.getLogger("openworkflow.postgres")

Pool = psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]]

POOL_CLOSE_TIMEOUT_S = 2.0
"""How long closing a pool waits for its workers before cancelling them."""

_CANCEL_ROUNDS = 100
_CANCEL_WAIT_S = 0.05


async def open_pool(pool: Pool) -> list[asyncio.Task[Any]]:
    """Open ``pool`` without waiting for connections; return the tasks it started."""
    before = asyncio.all_tasks()
    await pool.open(wait=False)
    prefix = f"{pool.name}-"
    return [task for task in asyncio.all_tasks() - before if task.get_name().startswith(prefix)]


async def close_pool(pool: Pool, *, abandoning: bool) -> None:
    """Close ``pool``, waiting a little for its workers (then :func:`end_tasks` them).

    Args:
        pool: The pool to close.
        abandoning: The event loop is shutting down and has already cancelled
            the pool's tasks; ``pool.close()`` then fails on them, which is
            expected and not passed on.
    """
    try:
        await pool.close(timeout=POOL_CLOSE_TIMEOUT_S)
    except asyncio.CancelledError:
        if not abandoning:
            raise


async def end_tasks(tasks: list[asyncio.Task[Any]], *, grace_s: float = 0.0) -> None:
    """Give ``tasks`` ``grace_s`` seconds to end, then cancel them until they have."""
    pending = {task for task in tasks if not task.done()}
    if pending and grace_s > 0:
        _, pending = await asyncio.wait(pending, timeout=grace_s)
    for _ in range(_CANCEL_ROUNDS):
        if not pending:
            return
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=_CANCEL_WAIT_S)
    names = ", ".join(sorted(task.get_name() for task in pending))
    logger.warning("PostgreSQL backend tasks still running after close: %s", names)
