"""``step.stream``: append to one of the run's streams, once across replays.

Streams are not step attempts (a stream of thousands of items must not use
up the run's step history). An item's identity is its position instead: the
n-th ``step.stream(key, ...)`` call of a pass writes position n of ``key``,
and a replay making the same calls finds positions 1..m stored and skips
them without a write. One read per key and pass (none on a run's first pass)
tells how far the stream got; appending a stored position is a no-op anyway,
so a crash between the write and anything after it never duplicates an item.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field

from openworkflow.core.json import JsonValue
from openworkflow.core.streams import AppendRunStreamParams
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.worker.context import PassContext
from openworkflow.worker.interrupts import engine_call


@dataclass(slots=True)
class _StreamState:
    """What this pass knows of one stream key."""

    calls: int = 0
    """``step.stream`` calls made for the key so far in this pass."""
    stored: int | None = None
    """Positions 1..stored were written by earlier passes (None: not read yet)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class StreamSteps:
    """The run's stream appends for one pass."""

    def __init__(self, context: PassContext, run: WorkflowRun) -> None:
        self._context = context
        self._run = run
        self._streams: dict[str, _StreamState] = {}
        # Claimed for the first time: no earlier pass can have stored anything.
        self._fresh = run.attempts <= 1

    def append(self, key: str, value: JsonValue) -> Awaitable[None]:
        """Write ``value`` at this call's position of stream ``key`` unless stored already.

        The position is taken when the call is made (in call order, like
        step names), not when it is awaited.
        """
        state = self._streams.setdefault(key, _StreamState(stored=0 if self._fresh else None))
        state.calls += 1
        return self._write(key, state, state.calls, value)

    async def _write(self, key: str, state: _StreamState, seq: int, value: JsonValue) -> None:
        backend = self._context.backend
        if state.stored is None:
            async with state.lock:  # concurrent first calls read once
                if state.stored is None:
                    extent = await engine_call(backend.get_run_stream_extent(self._run.id, key))
                    # A gap (an earlier pass wrote out of order) means: skip
                    # nothing, re-append every position (stored ones are no-ops).
                    state.stored = extent.last_seq if extent.count == extent.last_seq else 0
        if seq <= state.stored:
            return
        await engine_call(
            backend.append_run_stream(
                AppendRunStreamParams(
                    workflow_run_id=self._run.id,
                    worker_id=self._context.worker_id,
                    key=key,
                    seq=seq,
                    value=value,
                )
            )
        )
