"""Replay checks: noticing when a replay no longer matches the steps a run recorded.

Steps are memoized by name, so changed workflow code never fails a run; what
the checks notice is reported on the ``openworkflow.replay`` logger (each
distinct divergence once per pass) and kept for tests.
"""

from __future__ import annotations

import logging

from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.worker.step_history import StepHistory

replay_logger = logging.getLogger("openworkflow.replay")


class ReplayCheck:
    """Notices when a replay no longer matches the steps this run recorded.

    Steps are matched by name (as in the original), so changed workflow code
    does not fail a run; this reports the three ways it can go unnoticed:

    - reordered: a recorded step is replayed, one after another (not
      concurrently, and in the same task: parallel branches are compared
      only with themselves), after a step recorded later than it;
    - added or renamed: a step with no history runs while recorded steps
      are still ahead of the replay;
    - removed, renamed or skipped: the run completes without reaching
      recorded steps (see :meth:`unreached`).

    ``created_at`` has millisecond precision, so two steps recorded in the
    same millisecond are never reported as reordered.
    """

    def __init__(self, history: StepHistory) -> None:
        self._history = history
        self._latest: dict[object, StepAttempt] = {}  # per chain (task)
        # Steps recorded completed before this pass that it has not called yet.
        self._ahead = dict(history.cache)

    def resolved(self, step_name: str, *, concurrent: bool, chain: object = None) -> str | None:
        """Note a step call made in ``chain``; return a message if it was reordered."""
        self._ahead.pop(step_name, None)
        cached = self._history.cache.get(step_name)
        if cached is None:
            return None
        latest = self._latest.get(chain)
        if latest is None or cached.created_at > latest.created_at:
            self._latest[chain] = cached
        if concurrent or latest is None or latest.created_at <= cached.created_at:
            return None
        return (
            f"step {step_name!r} was recorded before step {latest.step_name!r} but is now "
            "replayed after it: the steps were reordered since this run started (each still "
            "returns its own recorded output, matched by name)"
        )

    def starting_new(self, step_name: str) -> str | None:
        """Note a step about to run for the first time; return a message if it was added."""
        history = self._history
        if step_name in history.failed_counts or step_name in history.running:
            return None  # a retry, or a step interrupted earlier
        if not self._ahead:
            return None
        ahead = self.unreached()
        return (
            f"step {step_name!r} has no history but runs before recorded steps "
            f"{names_of(ahead)}: a step was added or renamed since this run started"
        )

    def unreached(self) -> list[str]:
        """Recorded (completed) steps this replay has not called, oldest first."""
        return [a.step_name for a in sorted(self._ahead.values(), key=lambda a: a.created_at)]


def names_of(names: list[str], shown: int = 3) -> str:
    """``'a', 'b', 'c' and 2 more``: a short list of step names for messages."""
    listed = ", ".join(repr(name) for name in names[:shown])
    return listed + (f" and {len(names) - shown} more" if len(names) > shown else "")


class ReplayMonitor:
    """The replay checks of one pass, reported as they are found."""

    def __init__(self, history: StepHistory, run: WorkflowRun) -> None:
        self._check = ReplayCheck(history)
        self._run = run
        self.divergences: list[str] = []

    def step_called(self, step_name: str, *, concurrent: bool, chain: object) -> None:
        """A step call got its durable name: report it if it was reordered."""
        self._report(self._check.resolved(step_name, concurrent=concurrent, chain=chain))

    def step_starting(self, step_name: str) -> None:
        """A step is about to record its first attempt: report it if it was added."""
        self._report(self._check.starting_new(step_name))

    def run_completed(self) -> None:
        """The workflow returned: report recorded steps this replay never called."""
        unreached = self._check.unreached()
        if unreached:
            self._report(
                f"the run completed without reaching recorded steps {names_of(unreached)}: "
                "steps were removed, renamed or skipped since this run started"
            )

    def _report(self, divergence: str | None) -> None:
        if divergence is None or divergence in self.divergences:
            return
        self.divergences.append(divergence)
        replay_logger.warning(
            "Workflow run %s (%s): %s", self._run.id, self._run.workflow_name, divergence
        )
