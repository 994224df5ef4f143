"""A worker's pause after passes the database refused: no hot loop of re-claimed runs.

When the database refuses a pass's writes (a full disk, a lost connection),
the worker hands the run back as due now, so any worker can take it at once.
If the fault is the database's (every worker would meet it), the same worker
would claim the run straight back and re-run its step bodies in a tight loop
while writes keep failing. :class:`FaultBackoff` spaces this worker's claims
out after such passes: 100 ms doubling to :data:`MAX_DELAY_S`, reset by the
first pass that ends without a database fault.
"""

from __future__ import annotations

import asyncio
import random

INITIAL_DELAY_S = 0.1
MAX_DELAY_S = 1.0
"""Longest pause between claims while passes keep failing (a recovery is seen within it)."""


class FaultBackoff:
    """When the worker may claim again after passes ended by database faults."""

    def __init__(self) -> None:
        self._streak = 0  # passes in a row ended by a database fault
        self._resume_at = 0.0  # loop time before which the worker does not claim

    @property
    def streak(self) -> int:
        """Passes in a row that ended by a database fault (0: none)."""
        return self._streak

    def pass_faulted(self) -> None:
        """A pass ended because the database refused its writes: pause claims."""
        self._streak += 1
        doublings = min(self._streak - 1, 16)
        delay = min(INITIAL_DELAY_S * 2**doublings, MAX_DELAY_S) * random.uniform(0.75, 1.0)
        self._resume_at = max(self._resume_at, asyncio.get_running_loop().time() + delay)

    def pass_succeeded(self) -> None:
        """A pass ended without a database fault: claim freely again."""
        self._streak = 0
        self._resume_at = 0.0

    async def wait(self) -> None:
        """Return once the worker may claim (at once unless passes failed lately)."""
        delay = self._resume_at - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)
