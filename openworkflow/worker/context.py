"""What a worker lends every execution pass it starts."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass

from openworkflow.core.backend import Backend

DEFAULT_STEP_CRASH_LIMIT = 3
"""Unfinished attempts after which a step is failed instead of run again (poison)."""

DEFAULT_CONCURRENCY = 1
"""Runs a worker executes at once unless told otherwise (the original's default)."""

DEFAULT_LEASE_DURATION = "30s"
"""How long a claimed run stays a worker's without a renewal."""

DEFAULT_SHUTDOWN_TIMEOUT = "30s"
"""How long a graceful stop waits for running passes before handing them back."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PassContext:
    """The worker-wide parts of a pass: where it writes, who it is, and shared limits.

    Attributes:
        backend: where the run's state lives; every write is fenced on ``worker_id``.
        worker_id: the lease holder's id (one per worker slot).
        thread_pool: where sync step bodies run (None: the loop's default executor).
        step_crash_limit: unfinished attempts after which a step is failed for good.
        last_chance: held by a step one crash short of the limit, so such steps of
            one worker never run side by side (see ``function_steps``).
    """

    backend: Backend
    worker_id: str
    thread_pool: Executor | None = None
    step_crash_limit: int = DEFAULT_STEP_CRASH_LIMIT
    last_chance: asyncio.Lock | None = None
