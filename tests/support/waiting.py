"""Polling with a deadline: the one ``wait_until`` (coroutine) and ``block_until`` (thread).

Both poll a condition until it holds and fail with ``AssertionError("timed out
after Ns waiting for <message>")`` once ``timeout`` seconds have passed.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0
"""Seconds :func:`wait_until` waits unless told otherwise (far above what a passing test needs)."""


async def wait_until(
    condition: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.01,
    message: str = "the condition",
) -> T:
    """Poll ``condition`` (sync or async) until it returns a truthy value, and return it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


def block_until(
    condition: Callable[[], object],
    message: str,
    timeout: float = 20.0,
    *,
    interval: float = 0.05,
) -> None:
    """Poll the synchronous ``condition`` from this thread until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)
