"""The testing kit: run workflows in tests with time that skips ahead.

- :class:`WorkflowEnvironment`: an in-process backend (in-memory SQLite by
  default), client and worker on a clock the test moves; with time skipping,
  sleeps, retry backoffs, timeouts, deadlines and schedule ticks pass at once
  whenever every run is parked.
- :func:`replay` / :func:`replay_many`: does today's workflow code still
  replay runs recorded with ``ow runs export``? A divergence raises
  :class:`~openworkflow.errors.ReplayDivergenceError` naming the step.
"""

from __future__ import annotations

from openworkflow.testing.environment import WorkflowEnvironment
from openworkflow.testing.history import export_run_history, load_run_history
from openworkflow.testing.replay import replay, replay_many

__all__ = [
    "WorkflowEnvironment",
    "export_run_history",
    "load_run_history",
    "replay",
    "replay_many",
]
