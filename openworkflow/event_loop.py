"""Running the engine's event loop: uvloop when it is installed, else asyncio's own.

uvloop (libuv) schedules callbacks and socket I/O with less Python overhead
than the default loop, which a worker running many workflows at once feels
in every step. Set ``OPENWORKFLOW_EVENT_LOOP=asyncio`` to keep asyncio's
loop anyway (e.g. to rule uvloop out while debugging).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

EVENT_LOOP_VARIABLE = "OPENWORKFLOW_EVENT_LOOP"


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, on uvloop when it is installed and not opted out of."""
    if os.environ.get(EVENT_LOOP_VARIABLE, "auto").strip().lower() != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has ended (None: nothing to do)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
