"""Group commit: the writes of many concurrent executions share one commit.

A worker running 100 workflows at once would otherwise pay one commit (and,
on PostgreSQL, one round trip and one pooled connection; on SQLite, one hop
to the database thread) per step. Here a write is queued; while a batch is
in flight the queue fills, and the next batch takes everything queued: one
statement on PostgreSQL, one transaction on SQLite. Nothing waits on a
timer: an idle worker's single write goes out at once, and a busy worker's
writes coalesce on their own. Each caller resumes only after the batch
holding its item committed, so a step's result is still durable before the
workflow moves on; each item keeps its own fence (a refused item fails
alone).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

WriteBatch = Callable[[Sequence[Item]], Awaitable[Sequence[Result | BaseException]]]


class GroupCommit(Generic[Item, Result]):
    """Queue items and write them in batches with ``write_batch``.

    ``write_batch(items)`` returns one outcome per item, in order: the result,
    or an exception raised to that item's caller. If it raises an error that
    ``split_on`` accepts, each item of a batch of several is written again
    alone (a failed batch wrote nothing), so only a bad item fails; any other
    error goes to every caller of the batch.

    Args:
        write_batch: Writes the items with one commit.
        split_on: Which errors of a whole batch are worth retrying item by item.
        max_batch: Most items per statement.
        max_in_flight: Most statements in flight at once.
    """

    def __init__(
        self,
        write_batch: WriteBatch[Item, Result],
        *,
        split_on: Callable[[Exception], bool] | None = None,
        max_batch: int = 200,
        max_in_flight: int = 2,
    ) -> None:
        self._write_batch = write_batch
        self._split_on = split_on
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._queue: list[tuple[Item, asyncio.Future[Result]]] = []
        self._in_flight = 0
        self._flushers: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Result:
        """Queue ``item`` and return its outcome once its batch has committed."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._start_flusher()
        return await future

    def _start_flusher(self) -> None:
        if self._in_flight < self._max_in_flight:
            # The flusher starts on the next loop turn, so every execution that
            # is ready in this turn adds its write to the same batch.
            self._in_flight += 1
            flusher = asyncio.create_task(self._flush())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                # A caller cancelled before its write was sent never gets it written.
                live = [(item, future) for item, future in batch if not future.done()]
                if live:
                    await self._write(live)
        finally:
            self._in_flight -= 1
            if self._queue and not asyncio.get_running_loop().is_closed():
                self._start_flusher()  # items queued while this flusher was ending

    async def _write(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            outcomes = await self._outcomes([item for item, _ in batch])
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
        except Exception as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
        except BaseException:
            # The flusher itself was cancelled (the loop is closing): so are its callers.
            for _, future in batch:
                future.cancel()
            raise

    async def _outcomes(self, items: Sequence[Item]) -> Sequence[Result | BaseException]:
        try:
            return await self._write_batch(items)
        except Exception as error:
            if len(items) < 2 or self._split_on is None or not self._split_on(error):
                raise
        outcomes: list[Result | BaseException] = []
        for item in items:
            try:
                outcomes.extend(await self._write_batch([item]))
            except Exception as error:
                outcomes.append(error)
        return outcomes
