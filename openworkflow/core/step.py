"""``Step``: what workflow code can do with its ``step`` parameter, and nothing more."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, NoReturn, Protocol

from openworkflow.core.duration import Duration
from openworkflow.core.flow_control import RateLimit
from openworkflow.core.retry import RetryPolicy
from openworkflow.core.workflow_definition import WorkflowRef


class Step(Protocol):
    """The durable operations of a workflow: annotate a workflow's ``step`` parameter with it.

    Every call gets a durable name when it is made (repeated names become
    ``name``, ``name:1``, ... in call order, so steps started together with
    ``asyncio.gather`` are named deterministically), runs once, and returns its
    stored result on every replay.
    """

    def run(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        retry_policy: RetryPolicy | None = None,
        timeout: Duration | None = None,
        rate_limit: RateLimit | None = None,
    ) -> Awaitable[Any]:
        """Run ``fn(*args)`` once and memoize its JSON result under ``name``.

        A sync ``fn`` runs in a worker thread; an async one (or one returning
        an awaitable) is awaited. Returns the JSON round-tripped result, the
        same on the first execution and on every replay; when ``fn`` has a
        return annotation (a pydantic model, a dataclass, a TypedDict,
        builtin types) the JSON is validated back into that type. A failure
        is retried by ``retry_policy`` before workflow code sees it; the final
        failure is memoized and raised again at this call on every replay.
        ``timeout`` bounds one attempt: past it an async body is cancelled, a
        sync body's late result is discarded, and the attempt fails with
        :class:`~openworkflow.StepTimeoutError`. Raise
        :class:`~openworkflow.RetryAfter` in ``fn`` to run it again after a
        delay without spending an attempt. Inside ``fn``,
        :func:`openworkflow.step_context` describes the attempt.

        ``rate_limit`` (a :class:`~openworkflow.RateLimit`) limits how often
        the body runs across all runs and workers: no sliding window of length
        ``per`` holds more than ``limit`` runs of it (retries included), per
        key. A callable ``key`` receives the workflow's validated input. Over
        the limit the run parks until the window has room; no attempt is
        written or spent. A memoized result never asks for room.
        """
        ...

    def sleep(self, name: str, duration: Duration) -> Awaitable[None]:
        """Durably sleep: park the run (freeing the worker slot) for ``duration``."""
        ...

    def run_workflow(
        self,
        workflow: WorkflowRef,
        input: Any = None,
        *,
        name: str | None = None,
        timeout: datetime | Duration | None = None,
    ) -> Awaitable[Any]:
        """Start a child run (once, however often this run replays) and wait for its output.

        The run parks while the child works and is woken by the child's end.
        ``timeout`` (default one year) is a duration or a datetime; when it
        passes the step raises :class:`ChildWorkflowTimeoutError` and the child
        keeps running. A failed or canceled child raises
        :class:`ChildWorkflowFailedError` / :class:`ChildWorkflowCanceledError`;
        these are not retried (the child has its own retry policy).
        """
        ...

    def start_workflow(
        self, workflow: WorkflowRef, input: Any = None, *, name: str | None = None
    ) -> Awaitable[str]:
        """Start a child run without waiting for it; return its id.

        The child is created once however often this run replays (the step's
        output is its id). A bad input raises here, as from ``ow.run``. The
        child runs on its own: its end does not wake this run, and this run
        may finish first.
        """
        ...

    def set_event(self, key: str, value: Any, *, name: str | None = None) -> Awaitable[None]:
        """Publish ``value`` under ``key`` for this run's callers (``handle.get_event``).

        A step (named ``event:<key>`` unless ``name`` is given): a replay does
        not write again. Setting the key again later, under another step,
        overwrites it; the latest set wins. ``value`` must be storable JSON.
        """
        ...

    def stream(self, key: str, value: Any) -> Awaitable[None]:
        """Append ``value`` to this run's stream ``key`` (read with ``handle.stream(key)``).

        Durable and ordered: readers get every item from the first, including
        those written before they connected. Not a step attempt (a stream may
        hold any number of items): the n-th call for ``key`` writes position n,
        so a replay never appends twice. Positions are taken in call order; an
        item whose call is never awaited is never written. ``value`` must be
        storable JSON.
        """
        ...

    async def continue_as_new(self, input: Any = None) -> NoReturn:
        """End this run by starting a fresh run of the same workflow and version with ``input``.

        This run completes (nothing after the call runs) and names its
        successor, which starts with an empty history: the way past the step
        limit for pollers and loops. ``handle.result()`` on any run of the
        chain follows it to the last run's result. A bad input raises here.
        """
        ...

    def send_signal(
        self, signal: str, data: Any = None, *, name: str | None = None
    ) -> Awaitable[list[str]]:
        """Deliver ``data`` to every run waiting on ``signal``, once; return their ids."""
        ...

    def wait_for_signal(
        self,
        signal: str,
        *,
        name: str | None = None,
        timeout: datetime | Duration | None = None,
        schema: Any = None,
    ) -> Awaitable[dict[str, Any] | None]:
        """Park until ``signal`` is delivered (``{"data": payload}``) or ``timeout`` (None).

        With ``schema`` (a pydantic model or any type pydantic accepts), the
        payload is validated and returned parsed; a mismatch fails the step
        for good with :class:`SignalValidationError`.
        """
        ...
