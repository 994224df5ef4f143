"""The soak's load: a steady stream of runs of every kind, their signals and their cancels.

Each run the soak starts is a :class:`PlannedRun`: its kind, its input and
what it must end as. A signal run gets its signal, and a cancel run its
cancel, from a task started with the run, after a random delay. The soak's
client retries a call that failed for a reason other than the engine's answer
(a dropped connection, a busy database); run creation is made safe to retry
by an idempotency key per run.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from benchmarks import soak_flows as flows
from openworkflow import OpenWorkflow, Workflow
from openworkflow.errors import InvalidRunStateError, WorkflowRunNotFoundError

T = TypeVar("T")

COMPLETED = ("completed",)


@dataclass(frozen=True)
class Kind:
    """One kind of run: its workflow, its share of the load, and how it must end."""

    name: str
    workflow: Workflow
    weight: int
    statuses: tuple[str, ...] = COMPLETED
    action: str | None = None  # "signal" or "cancel": what the soak does to the run later


KINDS = (
    Kind("plain", flows.plain, 4),
    Kind("sleep", flows.sleeper, 3),
    Kind("signal", flows.signalled, 2, action="signal"),
    Kind("parent", flows.parent, 2),
    Kind("retry", flows.retried, 2),
    Kind("fail-caught", flows.fail_caught, 1),
    Kind("fail", flows.fail_uncaught, 1, statuses=("failed",)),
    Kind("cancel", flows.cancelled, 1, statuses=("canceled",), action="cancel"),
    Kind("cancel-race", flows.cancel_race, 2, statuses=("completed", "canceled"), action="cancel"),
)
KIND_BY_NAME = {kind.name: kind for kind in KINDS}


@dataclass
class PlannedRun:
    """A run the soak started, and what happened to its signal or cancel."""

    id: str
    kind: str
    n: int
    input: dict[str, Any]
    signal_sent: bool = False
    cancel_accepted: bool = False
    action_error: str | None = None

    def expected_output(self) -> Any:
        """The output the run must have if it completed (None when any output will do)."""
        n = self.n
        outputs: dict[str, Callable[[], Any]] = {
            "plain": lambda: flows.expected_plain(n),
            "sleep": lambda: flows.expected_plain(n),
            "cancel-race": lambda: flows.expected_plain(n),
            "signal": lambda: flows.expected_signal(n, self.input["token"]),
            "parent": lambda: flows.expected_parent(n),
            "retry": lambda: flows.expected_retry(n),
            "fail-caught": lambda: flows.expected_fail_caught(n),
        }
        make = outputs.get(self.kind)
        return make() if make is not None else None

    def expected_statuses(self) -> tuple[str, ...]:
        """The statuses the run may end in (a race lost by the cancel leaves it completed)."""
        if self.kind == "cancel-race" and not self.cancel_accepted:
            return COMPLETED
        return KIND_BY_NAME[self.kind].statuses


@dataclass
class Load:
    """Starts runs at ``rate`` per second and does their signals and cancels."""

    client: OpenWorkflow
    rate: float
    rng: random.Random
    runs: dict[str, PlannedRun] = field(default_factory=dict)
    client_retries: int = 0
    signals: int = 0
    cancels: int = 0
    start_errors: list[str] = field(default_factory=list)
    _actions: set[asyncio.Task[None]] = field(default_factory=set)

    async def produce(self, stop: asyncio.Event) -> None:
        """Start runs until ``stop`` is set (at ``rate`` per second, each kind by its weight)."""
        weights = [kind.weight for kind in KINDS]
        n = 0
        while not stop.is_set():
            n += 1
            kind = self.rng.choices(KINDS, weights)[0]
            try:
                await self.start_run(kind, n)
            except Exception as error:  # retried already: the soak goes on, the check reports it
                self.start_errors.append(f"{kind.name} #{n}: {type(error).__name__}: {error}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.expovariate(self.rate))

    async def start_run(self, kind: Kind, n: int) -> PlannedRun:
        """Start one run of ``kind`` and, for a signal or cancel kind, its later action."""
        input = self._input(kind, n)
        handle = await self.retrying(
            lambda: self.client.run(kind.workflow, input, idempotency_key=f"soak-{n}")
        )
        planned = PlannedRun(handle.id, kind.name, n, input)
        self.runs[planned.id] = planned
        if kind.action is not None:
            task = asyncio.create_task(self._act(kind.action, planned))
            self._actions.add(task)
            task.add_done_callback(self._actions.discard)
        return planned

    def _input(self, kind: Kind, n: int) -> dict[str, Any]:
        input: dict[str, Any] = {"n": n}
        if kind.name == "sleep":
            input["sleep_ms"] = self.rng.randint(200, 3000)
        elif kind.name == "cancel-race":
            input["sleep_ms"] = self.rng.randint(0, 500)
        elif kind.name == "signal":
            input["token"] = f"token-{n}-{self.rng.getrandbits(32):08x}"
        return input

    async def _act(self, action: str, planned: PlannedRun) -> None:
        delay = {"signal": (0.2, 3.0), "cancel": (0.3, 5.0)}[action]
        if planned.kind == "cancel-race":
            delay = (0.0, 1.0)
        await asyncio.sleep(self.rng.uniform(*delay))
        try:
            if action == "signal":
                await self._signal(planned)
            else:
                await self._cancel(planned)
        except Exception as error:  # recorded: the check reports it
            planned.action_error = f"{action}: {type(error).__name__}: {error}"

    async def _signal(self, planned: PlannedRun) -> None:
        data = flows.signal_data(planned.input["token"])
        key = f"soak-signal-{planned.id}"  # a retried send must not deliver twice
        await self.retrying(
            lambda: self.client.signal(planned.id, flows.SIGNAL_NAME, data, idempotency_key=key)
        )
        planned.signal_sent = True
        self.signals += 1

    async def _cancel(self, planned: PlannedRun) -> None:
        try:
            await self.retrying(lambda: self.client.cancel(planned.id))
        except InvalidRunStateError:
            run = await self.retrying(lambda: self.client.get_run(planned.id))
            if run is None or run.status != "canceled":  # else a retry of a cancel that landed
                if planned.kind == "cancel-race":
                    return  # the run finished first: it must then have completed
                raise
        planned.cancel_accepted = True
        self.cancels += 1

    async def finish_actions(self) -> None:
        """Wait for every signal and cancel still to come."""
        while self._actions:
            await asyncio.gather(*list(self._actions))

    async def retrying(self, call: Callable[[], Awaitable[T]], attempts: int = 8) -> T:
        """``call()``, again after a growing pause when it fails for a non-engine reason."""
        for attempt in range(attempts):
            try:
                return await call()
            except (InvalidRunStateError, WorkflowRunNotFoundError):
                raise  # the engine's answer, not a fault to ride out
            except Exception:  # a dropped connection, a busy database
                if attempt == attempts - 1:
                    raise
                self.client_retries += 1
                await asyncio.sleep(min(3.0, 0.2 * 2**attempt))
        raise AssertionError("unreachable")
