"""Replay checks: noticing when a replay no longer matches the steps a run recorded.

Steps are memoized by name, so changed workflow code never fails a run; what
the checks notice is reported on the ``openworkflow.replay`` logger (each
distinct divergence once per pass) and kept for tests.

Replay tests (:mod:`openworkflow.testing.replay`) run the same checks in a
strict mode (:class:`StrictReplayMonitor`): every recorded step counts, the
step's kind and child workflow are compared too, and the first divergence
ends the pass with :class:`ReplayDiverged` instead of being logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from openworkflow.core.step_attempt import StepAttempt, StepKind
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.worker.step_history import StepHistory

replay_logger = logging.getLogger("openworkflow.replay")

ADDED = "added"
"""A step with no history runs while recorded steps remain (or after a finished run's last)."""
REORDERED = "reordered"
"""A recorded step is replayed after a step recorded later than it."""
REMOVED = "removed"
"""The workflow ends without reaching recorded steps."""
KIND_CHANGED = "kind_changed"
"""A step's name was recorded for another kind of step (a sleep now called as a function)."""
CHILD_CHANGED = "child_changed"
"""A child-workflow step now starts another workflow than the one recorded."""


@dataclass(frozen=True, slots=True)
class Divergence:
    """One way a replay left the recorded history: its kind, the step, what happened."""

    kind: str
    step_name: str
    message: str


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

    With ``strict`` (replay tests), every recorded step counts, not only the
    completed ones: a running wait or a failed step the replay never reaches
    is "removed" too, and a step is compared by its completed attempt, else
    its latest one.
    """

    def __init__(self, history: StepHistory, *, strict: bool = False) -> None:
        self._history = history
        self._latest: dict[object, StepAttempt] = {}  # per chain (task)
        # The attempt each recorded step is compared by.
        self._recorded = _recorded_attempts(history) if strict else dict(history.cache)
        # Recorded steps (completed ones unless strict) this pass has not called yet.
        self._ahead = dict(self._recorded)

    def resolved(self, step_name: str, *, concurrent: bool, chain: object = None) -> str | None:
        """Note a step call made in ``chain``; return a message if it was reordered."""
        divergence = self.reordering(step_name, concurrent=concurrent, chain=chain)
        return None if divergence is None else divergence.message

    def reordering(
        self, step_name: str, *, concurrent: bool, chain: object = None
    ) -> Divergence | None:
        """Note a step call made in ``chain``; the divergence if it was reordered."""
        self._ahead.pop(step_name, None)
        recorded = self._recorded.get(step_name)
        if recorded is None:
            return None
        latest = self._latest.get(chain)
        if latest is None or recorded.created_at > latest.created_at:
            self._latest[chain] = recorded
        if concurrent or latest is None or latest.created_at <= recorded.created_at:
            return None
        return Divergence(
            REORDERED,
            step_name,
            f"step {step_name!r} was recorded before step {latest.step_name!r} but is now "
            "replayed after it: the steps were reordered since this run started (each still "
            "returns its own recorded output, matched by name)",
        )

    def starting_new(self, step_name: str) -> str | None:
        """Note a step about to run for the first time; return a message if it was added."""
        divergence = self.adding(step_name)
        return None if divergence is None else divergence.message

    def adding(self, step_name: str) -> Divergence | None:
        """Note a step about to record a new attempt; the divergence if it was added."""
        history = self._history
        if step_name in history.failed_counts or step_name in history.running:
            return None  # a retry, or a step interrupted earlier
        if step_name in self._recorded:
            return None  # strict: a failed step's retry (a deferral counts no failure)
        if not self._ahead:
            return None
        ahead = self.unreached()
        return Divergence(
            ADDED,
            step_name,
            f"step {step_name!r} has no history but runs before recorded steps "
            f"{names_of(ahead)}: a step was added or renamed since this run started",
        )

    def mismatch(
        self, step_name: str, kind: str, child_workflow_name: str | None, recorded_child: str | None
    ) -> Divergence | None:
        """The divergence if ``step_name`` was recorded as another kind of step or child."""
        recorded = self._recorded.get(step_name)
        if recorded is None:
            return None
        if recorded.kind != kind:
            return Divergence(
                KIND_CHANGED,
                step_name,
                f"step {step_name!r} was recorded as a {recorded.kind!r} step but is now "
                f"called as a {kind!r} step",
            )
        if (
            kind == StepKind.WORKFLOW
            and child_workflow_name is not None
            and recorded_child is not None
            and recorded_child != child_workflow_name
        ):
            return Divergence(
                CHILD_CHANGED,
                step_name,
                f"step {step_name!r} was recorded starting child workflow {recorded_child!r} "
                f"but now starts {child_workflow_name!r}",
            )
        return None

    def is_recorded(self, step_name: str) -> bool:
        """Whether the history has an attempt of ``step_name`` (a completed one unless strict)."""
        return step_name in self._recorded

    def unreached(self) -> list[str]:
        """Recorded steps this replay has not called, oldest first."""
        return [a.step_name for a in sorted(self._ahead.values(), key=lambda a: a.created_at)]


def _recorded_attempts(history: StepHistory) -> dict[str, StepAttempt]:
    """Each recorded step's completed attempt, else its latest (running or failed) one."""
    recorded = dict(history.running)
    for name, attempt in history.failed.items():
        if name not in recorded or attempt.created_at > recorded[name].created_at:
            recorded[name] = attempt
    recorded.update(history.cache)
    return recorded


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


class ReplayDiverged(BaseException):
    """A strict replay left the recorded history: the pass ends here.

    A ``BaseException``, so ``except Exception`` in workflow code cannot
    swallow it.
    """

    def __init__(self, divergence: Divergence) -> None:
        super().__init__(divergence.message)
        self.divergence = divergence


class ReplayEnded(BaseException):
    """A strict replay reached the end of the recorded history: the pass ends quietly.

    Raised where the engine would write (a new step attempt, a wait that
    resolves), so no step body runs past the history.
    """


class StrictReplayMonitor(ReplayMonitor):
    """The checks of a replay test: the first divergence ends the pass, nothing runs past it.

    Every recorded step counts (completed, failed or still running), a step
    is compared with its recorded kind and, for a child workflow, the name of
    the child recorded in ``child_workflow_names`` (by step name), and any
    step that would record a new attempt ends the pass: with
    :class:`ReplayDiverged` when recorded steps remain un-reached (or the
    recorded run ``finished`` without that step), else with
    :class:`ReplayEnded` (the history ends there).
    """

    def __init__(
        self,
        history: StepHistory,
        run: WorkflowRun,
        *,
        finished: bool = False,
        child_workflow_names: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(history, run)
        self._check = ReplayCheck(history, strict=True)
        self._finished = finished
        self._children = dict(child_workflow_names or {})
        self._status = run.status
        #: The first divergence found, however the pass then ended.
        self.first: Divergence | None = None
        self._stopped = False

    def stop(self) -> None:
        """The pass is over: branches still running find nothing more."""
        self._stopped = True

    def step_called(self, step_name: str, *, concurrent: bool, chain: object) -> None:
        """A step call got its durable name: end the pass if it was reordered."""
        self._diverge(self._check.reordering(step_name, concurrent=concurrent, chain=chain))

    def step_kind(self, step_name: str, kind: str, child_workflow_name: str | None) -> None:
        """The named call is a ``kind`` step (of child ``child_workflow_name``): compare it."""
        recorded_child = self._children.get(step_name)
        self._diverge(self._check.mismatch(step_name, kind, child_workflow_name, recorded_child))

    def step_starting(self, step_name: str) -> None:
        """A step would record a new attempt: the history ends here, or the code diverged."""
        self._diverge(self._check.adding(step_name))
        if self._finished and not self._check.is_recorded(step_name):
            self._diverge(
                Divergence(
                    ADDED,
                    step_name,
                    f"step {step_name!r} has no history but runs after the recorded steps of "
                    f"a run that {self._status} without it: a step was added since it ran",
                )
            )
        raise ReplayEnded(f"the recorded history ends before step {step_name!r}")

    def completion(self) -> Divergence | None:
        """The workflow ended: the divergence if recorded steps were never reached."""
        unreached = self._check.unreached()
        if not unreached or self.first is not None:
            return self.first
        self.first = Divergence(
            REMOVED,
            unreached[0],
            f"the workflow ended without reaching recorded steps {names_of(unreached)}: "
            "steps were removed, renamed or skipped since this run started",
        )
        return self.first

    def run_completed(self) -> None:
        """The workflow returned: end with :class:`ReplayDiverged` if steps were not reached."""
        divergence = self.completion()
        if divergence is not None:
            raise ReplayDiverged(divergence)

    def _diverge(self, divergence: Divergence | None) -> None:
        if divergence is None or self._stopped:
            return
        if self.first is None:
            self.first = divergence
        raise ReplayDiverged(divergence)
