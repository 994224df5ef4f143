"""The testing kit: run workflows in tests with time that skips ahead.

- :class:`WorkflowEnvironment`: an in-process backend (in-memory SQLite by
  default), client and worker on a clock the test moves; with time skipping,
  sleeps, retry backoffs, timeouts, deadlines and schedule ticks pass at once
  whenever every run is parked.
"""

from __future__ import annotations

from openworkflow.testing.environment import WorkflowEnvironment

__all__ = ["WorkflowEnvironment"]
