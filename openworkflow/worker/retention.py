"""A worker's pruner: deletes finished runs past their retention, a few batches a minute.

A worker given a retention policy (``retention={"completed": "7d", ...}``)
prunes in the background: every :data:`PRUNE_INTERVAL_S` it deletes up to
:data:`BATCHES_PER_PASS` batches of :data:`WORKER_PRUNE_BATCH` runs, pausing
between batches so claims and completions keep the database. (Measured with
1M runs, ``benchmarks/scale.py``: on SQLite, batches of 500 without pauses
hold the single write lock ~115 ms each and cut a concurrent workload by 65-85 %;
batches of 100 with 100 ms pauses cost it nothing measurable.)
Workers sharing a database take turns batch by batch (the backend's
advisory lock on PostgreSQL, the single writer on SQLite). A pass that
fails (the database is away) is logged and tried again at the next one.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping

from openworkflow.core.backend import Backend
from openworkflow.core.duration import Duration
from openworkflow.core.retention import parse_retention
from openworkflow.errors import OpenWorkflowError
from openworkflow.event_loop import cancel_and_wait
from openworkflow.retention import prune_runs

logger = logging.getLogger("openworkflow.worker")

PRUNE_INTERVAL_S = 60.0
"""Time between two passes (jittered by +-10 % so workers drift apart)."""

WORKER_PRUNE_BATCH = 100
"""Runs per batch of a worker's pruner (``ow runs prune`` by hand uses bigger ones)."""

BATCHES_PER_PASS = 100
"""Most batches one pass deletes (10,000 runs a minute); a backlog takes several passes."""

BATCH_PAUSE_S = 0.1
"""Pause between two batches of one pass."""

RetentionPolicy = Mapping[str, Duration | None]
"""Age per finished status: ``{"completed": "7d", "failed": "30d", "canceled": "7d"}``."""


class RetentionPruner:
    """Prunes a backend's finished runs by a retention policy, in the background.

    Args:
        backend: The backend (namespace) to prune.
        policy: Age per status; None or an empty policy prunes nothing.
        interval: Seconds between passes (the first pass runs at start).
        batch_size: Runs per batch.
        batches_per_pass: Most batches per pass.
        pause: Seconds between batches.

    Raises:
        ValueError: the policy names an unknown status or an invalid age.
    """

    def __init__(
        self,
        backend: Backend,
        policy: RetentionPolicy | None,
        *,
        interval: float = PRUNE_INTERVAL_S,
        batch_size: int = WORKER_PRUNE_BATCH,
        batches_per_pass: int = BATCHES_PER_PASS,
        pause: float = BATCH_PAUSE_S,
    ) -> None:
        self.backend = backend
        self.policy: dict[str, Duration | None] = dict(policy or {})
        # Checked now, so a bad policy fails when the worker is built, not later.
        self._active = bool(parse_retention(self.policy))
        self.interval = interval
        self.batch_size = batch_size
        self.batches_per_pass = batches_per_pass
        self.pause = pause
        #: Runs deleted since start (for logs and tests).
        self.deleted = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start pruning in the background (nothing without a policy; idempotent)."""
        if self._active and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="openworkflow-retention")

    async def stop(self) -> None:
        """Stop pruning; a batch under way is rolled back (it is retried next time)."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def prune_once(self) -> int:
        """One pass: up to ``batches_per_pass`` batches; the number of runs deleted."""
        deleted = await prune_runs(
            self.backend,
            self.policy,
            batch_size=self.batch_size,
            max_batches=self.batches_per_pass,
            pause=self.pause,
        )
        self.deleted += deleted
        if deleted:
            logger.info("Retention: pruned %d finished run(s)", deleted)
        return deleted

    async def _loop(self) -> None:
        while True:
            try:
                await self.prune_once()
            except OpenWorkflowError as error:
                logger.warning("Retention: pruning failed, retrying later: %s", error)
            except Exception:
                # A bug must not end pruning for the worker's lifetime, nor the worker.
                logger.exception("Retention: pruning failed unexpectedly; retrying later")
            await asyncio.sleep(self.interval * random.uniform(0.9, 1.1))
