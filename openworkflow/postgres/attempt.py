"""Connection attempts that close their socket the moment they fail.

A failed connection attempt can outlive its failure: psycopg (3.3) raises
errors whose tracebacks hold the frames that hold the attempt, and those
frames hold the errors again (``except OSError as ex: raise ... from ex``,
or the list of attempt errors ``connect`` keeps): reference cycles. The
attempt's socket then stays open, half way through the handshake, until the
garbage collector happens to run, which in a quiet worker can be minutes.

The server side of such a socket is a process waiting for the rest of the
handshake until ``authentication_timeout`` (60 s by default), and a
PostgreSQL shutdown waits for every one of them: while the server restarts,
workers retrying their pools leave such attempts behind ("connection socket
closed" when libpq swaps its socket under the event loop, or a timeout), and
a restart that takes a second took a minute (seen in the fault tests,
``pg_ctlcluster stop -m immediate``). Each also holds a connection slot.

:class:`EngineConnection` clears the frames of a failed attempt's error and
of the errors chained to it, which breaks the cycles, so the socket is closed
as the error leaves psycopg.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any, Self

import psycopg


class EngineConnection(psycopg.AsyncConnection[Any]):
    """psycopg's async connection; a failed attempt closes its socket at once."""

    @classmethod
    async def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:
        """Connect as psycopg does; on failure, free what the attempt held, then raise."""
        handled = sys.exception()  # the caller's, if it connects while handling one
        try:
            return await super().connect(conninfo, **kwargs)
        except BaseException as error:
            release_frames(error, stop_at=handled)
            raise


def release_frames(error: BaseException, *, stop_at: BaseException | None = None) -> None:
    """Clear the locals of the frames in ``error``'s tracebacks, its causes' included.

    The walk stops at ``stop_at`` (the exception the caller was handling, which
    is not the attempt's to clear). The tracebacks still print (file, line,
    function); only the objects the frames held are let go. A running frame
    (ours) is left alone; the others are finished frames of the attempt.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or current is stop_at or id(current) in seen:
            continue
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        pending += [current.__cause__, current.__context__]
