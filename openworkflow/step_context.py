"""What a step body may ask about the attempt running it: :func:`step_context`.

The worker sets a :class:`StepContext` for each attempt of a ``step.run``
body, async or sync (a sync body runs in a worker thread with a copy of the
context), so library code called from a step can log the run id, tell a
retry from a first attempt, respect the attempt's deadline, or stop early
once the run was canceled.
"""

from __future__ import annotations

import contextvars
import threading
from dataclasses import dataclass, field
from datetime import datetime

from openworkflow.errors import NotInStepError


@dataclass(frozen=True, slots=True, kw_only=True)
class StepContext:
    """The attempt a step body is running in.

    Attributes:
        run_id: The workflow run's id.
        workflow_name: The workflow's name.
        step_name: The step's durable name (``"fetch:2"`` for a repeated name).
        attempt: 1 for the first attempt, 2 for the first retry, and so on
            (a ``RetryAfter`` deferral does not count).
        deadline: When this attempt's ``timeout`` runs out, or None without one.
    """

    run_id: str
    workflow_name: str
    step_name: str
    attempt: int
    deadline: datetime | None
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def cancel_requested(self) -> bool:
        """True once the run was canceled; a sync body can poll it to stop early.

        Async bodies are cancelled (``asyncio.CancelledError``) instead; they
        may read it too.
        """
        return self.cancel_event.is_set()


_current: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar(
    "openworkflow_step_context", default=None
)


def step_context() -> StepContext:
    """The :class:`StepContext` of the step body calling it.

    Raises:
        NotInStepError: when called outside a body run by ``step.run`` (in
            workflow code itself, or in a thread the body started without
            copying its context).
    """
    current = _current.get()
    if current is None:
        raise NotInStepError(
            "step_context() is only available inside a step body run by step.run(); "
            "in workflow code use the run argument (RunInfo) instead"
        )
    return current


def enter_step_context(context: StepContext) -> contextvars.Token[StepContext | None]:
    """Make ``context`` current for this task or thread (the worker's side)."""
    return _current.set(context)
