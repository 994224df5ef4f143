"""Compensation (sagas): undo the steps that succeeded when a later one fails for good.

::

    async with Saga(step) as saga:
        flight = await saga.run("flight", book_flight, trip, compensate=cancel_flight)
        hotel = await saga.run("hotel", book_hotel, trip, compensate=cancel_hotel)
        await saga.run("car", rent_car, trip)  # fails for good: undo the hotel, then the flight

Why this is correct under replay: a step's failure reaches workflow code only
once its retry policy is used up, and that final failure is memoized like a
result. Every later pass (after a sleep, a signal wait, a crash, a lease
takeover) raises the same exception at the same call without running the step
again. So the ``except`` branch that compensates is taken on the first pass and
on every replay alike, the same steps are registered for compensation in the
same order, and each compensation is itself a durable step (``compensate-<name>``):
it runs once, and a replay returns its stored result instead of undoing twice.
A compensation that fails is retried by its own policy like any step; its final
failure is memoized too, so :class:`CompensationError` is raised the same way on
every pass.

The engine ends a pass with ``BaseException`` subclasses (a durable sleep or
wait parking the run, a step retry being scheduled, cancellation). They are
not failures and never trigger compensation: only an :class:`Exception` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from openworkflow.core.duration import Duration
from openworkflow.core.json import check_name
from openworkflow.core.retry import RetryPolicy
from openworkflow.core.step import Step
from openworkflow.errors import CompensationError

COMPENSATION_PREFIX = "compensate-"
"""Compensation steps are named ``compensate-<name>``, ``<name>`` being the step they undo."""


@dataclass(slots=True)
class _Compensation:
    """One registered undo: run ``fn(*args)`` as the step ``compensate-<name>``."""

    name: str
    fn: Callable[..., Any] | None  # None while the step it undoes has not succeeded
    args: tuple[Any, ...] = ()
    retry_policy: RetryPolicy | None = None
    timeout: Duration | None = None


class Saga:
    """Registers compensations as steps succeed and runs them, newest first, when asked.

    Use it inside a workflow, with the workflow's ``step``. As a context
    manager, an :class:`Exception` leaving the block runs the compensations and
    is then re-raised unchanged (the run fails with it, as without the saga);
    catch it around the ``async with`` to complete the run instead. Without
    the context manager, call :meth:`compensate` in your own ``except`` block.

    ``compensation_retry_policy`` is the default policy of the compensation
    steps (a compensation should keep trying: it is the last word on the
    side effect). After the compensations ran, :attr:`compensated` lists the
    names of those that succeeded, in the order they ran.
    """

    def __init__(self, step: Step, *, compensation_retry_policy: RetryPolicy | None = None) -> None:
        self._step = step
        self._retry_policy = compensation_retry_policy
        self._pending: list[_Compensation] = []
        self.compensated: list[str] = []
        """Names of the compensations that succeeded, in the order they ran."""

    async def run(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        compensate: Callable[[Any], Any] | None = None,
        retry_policy: RetryPolicy | None = None,
        timeout: Duration | None = None,
    ) -> Any:
        """Run ``fn(*args)`` as the step ``name``; once it succeeded, register its undo.

        ``compensate(result)`` (called with the step's result) becomes the
        step ``compensate-<name>`` that :meth:`compensate` runs. A step that
        fails registers nothing: its failure is what gets compensated.
        ``retry_policy`` and ``timeout`` are the step's, as in
        :meth:`openworkflow.Step.run`.
        """
        entry: _Compensation | None = None
        if compensate is not None:
            check_name(COMPENSATION_PREFIX + name, "compensation step name")
            # The slot is taken when the call is made, not when it finishes:
            # steps run with asyncio.gather are undone in call order, the same
            # on every pass, whichever finished first.
            entry = _Compensation(name, None, retry_policy=self._retry_policy)
            self._pending.append(entry)
        result = await self._step.run(name, fn, *args, retry_policy=retry_policy, timeout=timeout)
        if entry is not None and compensate is not None:
            entry.fn, entry.args = compensate, (result,)
        return result

    def add_compensation(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        retry_policy: RetryPolicy | None = None,
        timeout: Duration | None = None,
    ) -> None:
        """Register ``fn(*args)`` to run as the step ``compensate-<name>`` on compensation.

        For an undo that does not follow from one step's result, e.g. one
        registered *before* a step whose failure may leave partial effects.
        ``retry_policy`` defaults to the saga's ``compensation_retry_policy``.
        """
        check_name(COMPENSATION_PREFIX + name, "compensation step name")
        policy = retry_policy if retry_policy is not None else self._retry_policy
        self._pending.append(_Compensation(name, fn, args, policy, timeout))

    async def compensate(self) -> list[str]:
        """Run the registered compensations newest first, each as a durable step, once.

        A compensation is retried by its policy; one that fails for good does
        not stop the others. Returns the names of those that succeeded (also
        in :attr:`compensated`); if any failed for good, raises
        :class:`CompensationError` after running the rest. The registrations
        are consumed: a second call runs nothing.
        """
        pending, self._pending = self._pending, []
        failed: list[str] = []
        errors: list[Exception] = []
        for entry in reversed(pending):
            if entry.fn is None:
                continue  # its step never succeeded: nothing to undo
            try:
                await self._step.run(
                    COMPENSATION_PREFIX + entry.name,
                    entry.fn,
                    *entry.args,
                    retry_policy=entry.retry_policy,
                    timeout=entry.timeout,
                )
            except Exception as error:  # a final failure; BaseException ends the pass
                failed.append(entry.name)
                errors.append(error)
            else:
                self.compensated.append(entry.name)
        if errors:
            raise CompensationError(failed, errors) from errors[0]
        return list(self.compensated)

    async def __aenter__(self) -> Saga:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        # Only a failure compensates. Parking on a sleep or wait, a scheduled
        # step retry and cancellation are BaseExceptions that end this pass
        # only: the next pass replays the block and carries on.
        if isinstance(exc, Exception):
            await self.compensate()
        return False  # re-raise the original, unchanged
