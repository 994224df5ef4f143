"""Races around child workflows and signals: wake-ups that land while a run is not parked.

A run waiting on a child or a signal is owned by a worker until it parks;
an answer that arrives in between (a child finishing, a signal delivered)
cannot wake an owned run, so parking must reconcile it. These tests force
those orderings with a thin backend proxy that runs a hook at the exact
moment of interest (before the park, after the child is created, after the
signal is sent) and check what is stored, on every backend.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any

import pytest

from openworkflow import (
    OpenWorkflow,
    RunInfo,
    Step,
    SyncOpenWorkflow,
    WorkflowCanceledError,
    WorkflowFailedError,
    workflow,
)
from openworkflow.core import clock as app_clock
from openworkflow.core.backend import (
    CompleteStepAttemptParams,
    CompleteWorkflowRunParams,
    CreateStepAttemptParams,
    CreateWorkflowRunParams,
    GetSignalDeliveryParams,
    ListWorkflowRunsParams,
    SendSignalParams,
    SendSignalResult,
    SetStepAttemptChildWorkflowRunParams,
    SleepWorkflowRunParams,
)
from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import ChildWorkflowFailedError
from tests.fixtures.backends import backend_url
from tests.support.proxy import ProxyBackend
from tests.support.waiting import wait_until
from tests.worker.helpers import (
    attempts_named,
    get_run,
    idle_worker,
    list_steps,
    make_worker,
    now,
    running_worker,
    steps_by_name,
    tick_and_settle,
    wait_for_parked,
    wait_for_status,
)

ONE_YEAR_ISH = timedelta(days=300)
"""Anything parked further out than this is parked on a default (one year) wait timeout."""


# -- a backend proxy that injects a race at one exact point ------------------------


Hook = Callable[[], Awaitable[None]]


class BeforePark(ProxyBackend):
    """Runs a hook right before a run's first park (the pass is over, the run still owned)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.hooks: dict[str, Hook] = {}
        self.parked: dict[str, list[WorkflowRun]] = {}

    async def sleep_workflow_run(self, params: SleepWorkflowRunParams) -> WorkflowRun:
        hook = self.hooks.pop(params.workflow_run_id, None)
        if hook is not None:
            await hook()
        parked = await self.inner.sleep_workflow_run(params)
        self.parked.setdefault(params.workflow_run_id, []).append(parked)
        return parked


class CountCompletions(ProxyBackend):
    """Counts complete_workflow_run calls per run."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.completions: dict[str, int] = {}

    async def complete_workflow_run(self, params: CompleteWorkflowRunParams) -> WorkflowRun:
        completed = await self.inner.complete_workflow_run(params)
        run_id = params.workflow_run_id
        self.completions[run_id] = self.completions.get(run_id, 0) + 1
        return completed


class ChildDeadline(ProxyBackend):
    """Gives every child run the engine creates a deadline ``after`` from its creation."""

    def __init__(self, inner: Any, after: timedelta) -> None:
        super().__init__(inner)
        self.after = after

    async def create_workflow_run(self, params: CreateWorkflowRunParams) -> WorkflowRun:
        if params.parent_step_attempt_id is not None:
            params = dataclasses.replace(params, deadline_at=now() + self.after)
        return await self.inner.create_workflow_run(params)


class Stall(ProxyBackend):
    """Hangs the first matching call of one run at a chosen point, like a crash mid-pass.

    ``point`` is ``"<method>:before"`` (hang before the call reaches the
    database) or ``"<method>:after"`` (the write is done, its answer never
    comes back). The hung call only ends when the worker cancels the pass.
    """

    def __init__(self, inner: Any, point: str) -> None:
        super().__init__(inner)
        self.method, self.when = point.split(":")
        self.run_id: str | None = None
        self.stalled = asyncio.Event()

    async def _maybe_stall(
        self, method: str, run_id: str | None, call: Coroutine[Any, Any, Any]
    ) -> Any:
        matches = method == self.method and run_id == self.run_id and not self.stalled.is_set()
        if not matches:
            return await call
        if self.when == "before":
            call.close()  # the call never reaches the database
        else:
            await call
        self.stalled.set()
        await asyncio.Event().wait()  # until the pass is cancelled
        raise AssertionError("unreachable")

    async def create_workflow_run(self, params: CreateWorkflowRunParams) -> WorkflowRun:
        parent_run = await self._parent_run_id(params)
        return await self._maybe_stall(
            "create_workflow_run", parent_run, self.inner.create_workflow_run(params)
        )

    async def set_step_attempt_child_workflow_run(
        self, params: SetStepAttemptChildWorkflowRunParams
    ) -> StepAttempt:
        return await self._maybe_stall(
            "set_step_attempt_child_workflow_run",
            params.workflow_run_id,
            self.inner.set_step_attempt_child_workflow_run(params),
        )

    async def complete_step_attempt(self, params: CompleteStepAttemptParams) -> StepAttempt:
        return await self._maybe_stall(
            "complete_step_attempt",
            params.workflow_run_id,
            self.inner.complete_step_attempt(params),
        )

    async def send_signal(self, params: SendSignalParams) -> SendSignalResult:
        key = params.idempotency_key or ""
        sender = key.split(":")[1] if key.startswith("__signal:") else None
        return await self._maybe_stall("send_signal", sender, self.inner.send_signal(params))

    async def _parent_run_id(self, params: CreateWorkflowRunParams) -> str | None:
        if params.parent_step_attempt_id is None or self.run_id is None:
            return None
        steps = await list_steps(self.inner, self.run_id)
        return self.run_id if any(s.id == params.parent_step_attempt_id for s in steps) else None


# -- small helpers -------------------------------------------------------------------


async def runs_of(backend: Any, workflow_name: str) -> list[WorkflowRun]:
    """Every run of one workflow in the namespace (all pages)."""
    runs: list[WorkflowRun] = []
    after: str | None = None
    while True:
        page = await backend.list_workflow_runs(
            ListWorkflowRunsParams(workflow_name=workflow_name, limit=100, after=after)
        )
        runs.extend(page.data)
        if page.next is None:
            return runs
        after = page.next


async def the_only_run_of(backend: Any, workflow_name: str) -> WorkflowRun:
    """Wait until the workflow has a run, and check it has exactly one."""
    runs = await wait_until(
        lambda: runs_of(backend, workflow_name), message=f"a run of {workflow_name}"
    )
    assert len(runs) == 1, f"expected one run of {workflow_name}, found {len(runs)}"
    return runs[0]


async def running_step(backend: Any, run_id: str, name: str) -> StepAttempt:
    """Wait until the run has a running attempt of this step; return it."""

    async def find() -> StepAttempt | None:
        for attempt in await list_steps(backend, run_id):
            if attempt.step_name == name and attempt.status == "running":
                return attempt
        return None

    return await wait_until(find, message=f"a running {name!r} step in run {run_id}")


async def drive(
    worker: Any,
    condition: Callable[[], Awaitable[Any]],
    message: str,
    *,
    show: tuple[Any, str] | None = None,
) -> Any:
    """Tick an idle worker (letting each round of passes end) until ``condition()`` holds.

    ``show`` is ``(backend, run_id)``: on a timeout, that run and its steps are
    put in the failure message.
    """

    async def step() -> Any:
        await tick_and_settle(worker)
        return await condition()

    try:
        return await wait_until(step, message=message)
    except AssertionError as error:
        if show is None:
            raise
        backend, run_id = show
        run = await get_run(backend, run_id)
        steps = [
            (s.step_name, s.kind, s.status, s.context, s.output)
            for s in await list_steps(backend, run_id)
        ]
        raise AssertionError(
            f"{error}; now={now()} run: status={run.status} worker={run.worker_id} "
            f"available_at={run.available_at} attempts={run.attempts} error={run.error} "
            f"steps={steps}"
        ) from None


def parked_on(backend: Any, run_id: str) -> Callable[[], Awaitable[WorkflowRun | None]]:
    """A condition: the run is parked until some time in the future."""

    async def check() -> WorkflowRun | None:
        run = await get_run(backend, run_id)
        parked = run.status == "running" and run.worker_id is None
        future = run.available_at is not None and run.available_at > now()
        return run if parked and future else None

    return check


def status_is(backend: Any, run_id: str, *statuses: str) -> Callable[[], Awaitable[Any]]:
    """A condition: the run reached one of ``statuses``."""

    async def check() -> WorkflowRun | None:
        run = await get_run(backend, run_id)
        return run if run.status in statuses else None

    return check


def context_time(attempt: StepAttempt, key: str) -> Any:
    assert isinstance(attempt.context, dict), attempt.context
    return app_clock.from_iso(attempt.context[key])


# -- 1. a child that finishes before its parent parks --------------------------------


async def test_child_finishing_before_the_parent_parks_is_reconciled_on_park(
    backend: Any,
) -> None:
    parent_parking = asyncio.Event()

    @workflow
    async def quick_child(input: int) -> dict:
        # Finish only once the parent is about to park: finishing earlier (the
        # worker runs both at once) would let the parent see it done and not park.
        await parent_parking.wait()
        return {"doubled": input * 2}

    @workflow
    async def patient_parent(step: Step, input: int) -> dict:
        return {"child": await step.run_workflow(quick_child, input)}

    ow = OpenWorkflow(backend)
    proxy = BeforePark(backend)
    handle = await ow.run(patient_parent, 21)

    async def let_the_child_finish_first() -> None:
        # The parent's pass saw a pending child and is about to park; the child's
        # completion now finds its parent owned, so it cannot wake it.
        parent_parking.set()
        child = await the_only_run_of(backend, "quick-child")
        await wait_for_status(backend, child.id, "completed")

    proxy.hooks[handle.id] = let_the_child_finish_first
    async with running_worker(proxy, [patient_parent, quick_child], concurrency=2):
        assert await handle.result(timeout="10s") == {"child": {"doubled": 42}}

    # The park found the finished child and made the parent available at once,
    # instead of parking it until its one-year timeout.
    [parked] = proxy.parked[handle.id]
    assert parked.worker_id is None
    assert parked.available_at is not None
    assert parked.available_at <= now()
    parent = await get_run(backend, handle.id)
    assert parent.attempts == 2, "one pass parked, the next one completed"
    [link] = await list_steps(backend, handle.id)
    child = await the_only_run_of(backend, "quick-child")
    assert (link.step_name, link.kind, link.status) == ("quick-child", "workflow", "completed")
    assert link.child_workflow_run_id == child.id
    assert link.output == {"doubled": 42}
    assert child.parent_step_attempt_id == link.id


async def test_stepless_children_racing_their_parents_never_strand_them(backend: Any) -> None:
    """The natural race: with free slots, a stepless child often ends before its parent parks."""

    @workflow
    async def instant_child(input: int) -> int:
        return input + 1

    @workflow
    async def racing_parent(step: Step, input: int) -> int:
        return int(await step.run_workflow(instant_child, input))

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [racing_parent, instant_child], concurrency=4):
        handles = [await ow.run(racing_parent, i) for i in range(8)]
        for i, handle in enumerate(handles):
            # Without reconciliation a stranded parent would sleep for a year.
            assert await handle.result(timeout="10s") == i + 1
    assert len(await runs_of(backend, "instant-child")) == 8


# -- 2. a signal sent just before the waiting run parks ------------------------------


@pytest.mark.parametrize("sender", ["client", "step"])
async def test_signal_delivered_just_before_the_park_is_not_missed(
    backend: Any, sender: str
) -> None:
    @workflow
    async def gatekeeper(step: Step) -> Any:
        return await step.wait_for_signal("open-gate")

    @workflow
    async def gate_opener(step: Step) -> list[str]:
        return await step.send_signal("open-gate", {"by": "a step"})

    ow = OpenWorkflow(backend)
    proxy = BeforePark(backend)
    waiter = await ow.run(gatekeeper)
    delivered: list[list[str]] = []

    async def signal_now() -> None:
        # The wait attempt exists and found no delivery; the run is still owned.
        if sender == "client":
            delivered.append(await ow.send_signal("open-gate", {"by": "the client"}))
        else:
            opener = await ow.run(gate_opener)
            delivered.append(await opener.result(timeout="10s"))

    proxy.hooks[waiter.id] = signal_now
    async with running_worker(proxy, [gatekeeper, gate_opener], concurrency=2):
        expected = {"by": "the client" if sender == "client" else "a step"}
        assert await waiter.result(timeout="10s") == {"data": expected}

    assert delivered == [[waiter.id]]
    [parked] = proxy.parked[waiter.id]
    assert parked.available_at is not None and parked.available_at <= now()
    assert (await get_run(backend, waiter.id)).attempts == 2
    [wait] = await list_steps(backend, waiter.id)
    assert (wait.step_name, wait.kind, wait.status) == ("open-gate", "signal-wait", "completed")
    assert wait.output == {"data": expected}


async def test_signal_sent_from_a_parallel_step_body_reaches_the_sibling_wait(
    backend: Any,
) -> None:
    @workflow
    async def self_signaller(step: Step, run: RunInfo) -> dict:
        async def send_once_the_wait_exists() -> list[str]:
            await running_step(backend, run.id, "ping")
            return await OpenWorkflow(backend).send_signal("ping", {"n": 7})

        got, sent = await asyncio.gather(
            step.wait_for_signal("ping"), step.run("send", send_once_the_wait_exists)
        )
        return {"got": got, "sent": sent}

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [self_signaller]):
        handles = [await ow.run(self_signaller) for _ in range(3)]
        for handle in handles:
            # The send lands before the wait is checked, or between the check and the
            # park: either way the run completes with the data.
            assert await handle.result(timeout="10s") == {
                "got": {"data": {"n": 7}},
                "sent": [handle.id],
            }
            steps = steps_by_name(await list_steps(backend, handle.id))
            assert {name: step.status for name, step in steps.items()} == {
                "ping": "completed",
                "send": "completed",
            }


async def test_signal_sent_by_another_task_right_after_the_wait_is_created(
    backend: Any,
) -> None:
    ow = OpenWorkflow(backend)
    sends: list[asyncio.Task[list[str]]] = []

    class SignalOnWaitCreation(ProxyBackend):
        async def create_step_attempt(self, params: CreateStepAttemptParams) -> StepAttempt:
            attempt = await self.inner.create_step_attempt(params)
            if params.kind == "signal-wait":
                # Races with the wait's delivery check and with the park.
                sends.append(asyncio.create_task(ow.send_signal("nudge", params.workflow_run_id)))
            return attempt

    @workflow
    async def nudged(step: Step, run: RunInfo) -> Any:
        got = await step.wait_for_signal("nudge")
        return {"mine": got == {"data": run.id}}

    proxy = SignalOnWaitCreation(backend)
    async with running_worker(proxy, [nudged]):
        for _ in range(5):
            handle = await ow.run(nudged)
            assert await handle.result(timeout="10s") == {"mine": True}
            assert await sends[-1] == [handle.id]
    assert len(sends) == 5


# -- 3. cancel during a wait ---------------------------------------------------------


async def test_canceling_a_run_parked_on_a_signal_is_final(backend: Any) -> None:
    @workflow
    async def awaiting_approval(step: Step) -> Any:
        return await step.wait_for_signal("approval")

    ow = OpenWorkflow(backend)
    async with idle_worker(backend, [awaiting_approval]) as worker:
        handle = await ow.run(awaiting_approval)
        await tick_and_settle(worker, expected=1)
        await wait_for_parked(backend, handle.id)
        [wait] = await list_steps(backend, handle.id)
        assert (wait.kind, wait.status) == ("signal-wait", "running")

        canceled = await ow.cancel(handle.id)
        assert canceled.status == "canceled"
        assert (canceled.worker_id, canceled.available_at) == (None, None)
        [closed] = await list_steps(backend, handle.id)  # the cancel closed the wait
        assert (closed.id, closed.status) == (wait.id, "failed")

        # Nobody waits any more: the signal is not delivered, the run is not woken.
        assert await ow.send_signal("approval", {"ok": True}) == []
        assert (
            await backend.get_signal_delivery(GetSignalDeliveryParams(step_attempt_id=wait.id))
            is None
        )
        assert await worker.tick() == 0
        assert await ow.send_signal("approval", {"ok": True}, idempotency_key="k") == []

    assert await get_run(backend, handle.id) == canceled, "nothing was written after the cancel"
    assert await list_steps(backend, handle.id) == [closed]


async def test_canceling_a_parent_parked_on_a_child_leaves_the_child_running(
    backend: Any,
) -> None:
    @workflow
    async def long_child(step: Step) -> str:
        await step.wait_for_signal("release-child")
        return "child finished"

    @workflow
    async def doomed_parent(step: Step) -> Any:
        return await step.run_workflow(long_child)

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [doomed_parent, long_child], concurrency=2):
        parent = await ow.run(doomed_parent)
        child = await the_only_run_of(backend, "long-child")
        link = await running_step(backend, parent.id, "long-child")
        await wait_for_parked(backend, parent.id)
        await running_step(backend, child.id, "release-child")
        await wait_for_parked(backend, child.id)

        canceled = await ow.cancel(parent.id)
        assert canceled.status == "canceled"
        steps_at_cancel = await list_steps(backend, parent.id)
        assert (await get_run(backend, child.id)).status == "running"

        # The child goes on and completes on its own...
        assert await ow.send_signal("release-child") == [child.id]
        assert await ow.handle(child.id).result(timeout="10s") == "child finished"

    # ...and its completion does not touch the canceled parent.
    assert await get_run(backend, parent.id) == canceled
    steps = await list_steps(backend, parent.id)
    assert steps == steps_at_cancel
    # The cancel closed the parent's wait for the child.
    assert [(s.step_name, s.status) for s in steps] == [("long-child", "failed")]
    assert steps[0].id == link.id
    assert steps[0].child_workflow_run_id == child.id
    with pytest.raises(WorkflowCanceledError):
        await parent.result(timeout="1s")


async def test_cancel_landing_between_the_wait_and_the_park_wins(backend: Any) -> None:
    @workflow
    async def waits_forever(step: Step) -> Any:
        return await step.wait_for_signal("never-comes")

    ow = OpenWorkflow(backend)
    proxy = BeforePark(backend)
    handle = await ow.run(waits_forever)
    canceled: list[WorkflowRun] = []

    async def cancel_first() -> None:
        canceled.append(await ow.cancel(handle.id))

    proxy.hooks[handle.id] = cancel_first
    async with idle_worker(proxy, [waits_forever]) as worker:
        await tick_and_settle(worker, expected=1)
        assert await worker.tick() == 0

    # The park was refused (the run is no longer owned) and quietly dropped.
    assert handle.id not in proxy.parked
    assert await get_run(backend, handle.id) == canceled[0]
    assert canceled[0].status == "canceled"
    assert await ow.send_signal("never-comes", 1) == []


# -- 4. parallel waits -----------------------------------------------------------------


def link_before_park(backend: Any, proxy: BeforePark, run_id: str, step_name: str) -> None:
    """Make the run's first park wait until its child step is linked to the child run.

    In a gather, the first branch to park ends the pass while a sibling may still
    be creating or linking its child; this makes the linked case deterministic.
    """

    async def linked() -> None:
        async def check() -> bool:
            attempt = await running_step(backend, run_id, step_name)
            return attempt.child_workflow_run_id is not None

        await wait_until(check, message=f"step {step_name!r} to be linked to its child")

    proxy.hooks[run_id] = linked


async def test_parallel_waits_park_until_the_earliest_and_finish(backend: Any, clock: Any) -> None:
    @workflow
    async def held_child(step: Step) -> str:
        await step.wait_for_signal("release-held-child")
        return "child done"

    @workflow
    async def three_waits(step: Step) -> list[Any]:
        return list(
            await asyncio.gather(
                step.sleep("long", "2h"),
                step.wait_for_signal("never-sent", timeout="1h"),
                step.run_workflow(held_child),
            )
        )

    ow = OpenWorkflow(backend)
    proxy = BeforePark(backend)
    async with idle_worker(proxy, [three_waits, held_child], concurrency=2) as worker:
        handle = await ow.run(three_waits)
        link_before_park(backend, proxy, handle.id, "held-child")
        await tick_and_settle(worker, expected=1)
        child = await the_only_run_of(backend, "held-child")
        await drive(worker, parked_on(backend, child.id), "the child to park")

        steps = steps_by_name(await list_steps(backend, handle.id))
        assert {n: (s.kind, s.status) for n, s in steps.items()} == {
            "long": ("sleep", "running"),
            "never-sent": ("signal-wait", "running"),
            "held-child": ("workflow", "running"),
        }
        assert steps["held-child"].child_workflow_run_id == child.id
        long_at = context_time(steps["long"], "resumeAt")
        signal_timeout_at = context_time(steps["never-sent"], "timeoutAt")
        assert signal_timeout_at < long_at
        parent = await get_run(backend, handle.id)
        assert (parent.status, parent.worker_id) == ("running", None)
        assert parent.available_at == signal_timeout_at, "parked until the earliest wait"

        # The child finishes early and wakes the parent; a sleep is still pending, so
        # the parent must park again until the earliest remaining wait.
        assert await ow.send_signal("release-held-child") == [child.id]
        await drive(worker, status_is(backend, child.id, "completed"), "the child to finish")
        parent = await drive(
            worker,
            parked_on(backend, handle.id),
            "the woken parent to park again",
            show=(backend, handle.id),
        )
        assert parent.available_at == signal_timeout_at

        # The signal wait times out: it yields None, the child its output, and the
        # two-hour sleep keeps its original resume time.
        clock.advance(timedelta(hours=1, seconds=1))
        parent = await drive(
            worker,
            parked_on(backend, handle.id),
            "the parent to park on the sleep",
            show=(backend, handle.id),
        )
        assert len(attempts_named(await list_steps(backend, handle.id), "long")) == 1
        assert parent.available_at == long_at

        clock.advance(timedelta(hours=1))
        await drive(
            worker,
            status_is(backend, handle.id, "completed"),
            "the parent to finish",
            show=(backend, handle.id),
        )

    assert await handle.result(timeout="1s") == [None, None, "child done"]
    steps = steps_by_name(await list_steps(backend, handle.id))
    assert {n: s.status for n, s in steps.items()} == {
        "long": "completed",
        "never-sent": "completed",
        "held-child": "completed",
    }
    assert steps["never-sent"].output is None
    assert steps["held-child"].child_workflow_run_id == child.id


async def test_a_pending_parallel_sleep_is_not_restarted_when_a_sibling_wait_ends_first(
    backend: Any, clock: Any
) -> None:
    @workflow
    async def sleep_and_wait(step: Step) -> list[Any]:
        return list(
            await asyncio.gather(
                step.sleep("long", "2h"),
                step.wait_for_signal("never-sent", timeout="1h"),
            )
        )

    ow = OpenWorkflow(backend)
    async with idle_worker(backend, [sleep_and_wait]) as worker:
        handle = await ow.run(sleep_and_wait)
        await tick_and_settle(worker, expected=1)
        steps = steps_by_name(await list_steps(backend, handle.id))
        long_at = context_time(steps["long"], "resumeAt")
        signal_timeout_at = context_time(steps["never-sent"], "timeoutAt")
        assert (await get_run(backend, handle.id)).available_at == signal_timeout_at

        # The signal wait times out first; the sleep must still end at its original
        # time, one hour later, not two hours after this pass.
        clock.advance(timedelta(hours=1, seconds=1))
        parent = await drive(worker, parked_on(backend, handle.id), "the run to park again")
        longs = attempts_named(await list_steps(backend, handle.id), "long")
        assert len(longs) == 1, (
            "the running sleep was created again with a new resume time: "
            f"{[(s.status, s.context) for s in longs]}"
        )
        assert parent.available_at == long_at

        clock.advance(timedelta(hours=1))
        await drive(worker, status_is(backend, handle.id, "completed"), "the run to finish")

    assert await handle.result(timeout="1s") == [None, None]


async def test_a_child_answered_while_a_parallel_sleep_is_pending_does_not_spin(
    backend: Any, clock: Any
) -> None:
    """A parent woken by its child while a sleep is still pending must park, not spin.

    Each pass must either record the child's answer or leave the run parked
    until a wait is due; claiming and re-parking it again and again (each park
    reconciling the answered child into "available now") is a busy loop that
    lasts until the sleep ends.
    """

    @workflow
    async def held_child(step: Step) -> str:
        await step.wait_for_signal("release-held-child")
        return "child done"

    @workflow
    async def child_and_nap(step: Step) -> list[Any]:
        return list(await asyncio.gather(step.run_workflow(held_child), step.sleep("nap", "1h")))

    ow = OpenWorkflow(backend)
    proxy = BeforePark(backend)
    async with idle_worker(proxy, [child_and_nap, held_child], concurrency=2) as worker:
        handle = await ow.run(child_and_nap)
        link_before_park(backend, proxy, handle.id, "held-child")
        await tick_and_settle(worker, expected=1)
        child = await the_only_run_of(backend, "held-child")
        await drive(worker, parked_on(backend, child.id), "the child to park")
        parked = await get_run(backend, handle.id)
        assert parked.available_at is not None and parked.available_at > now()

        assert await ow.send_signal("release-held-child") == [child.id]
        await drive(worker, status_is(backend, child.id, "completed"), "the child to finish")
        await drive(
            worker,
            parked_on(backend, handle.id),
            "the woken parent to park until a wait is due",
            show=(backend, handle.id),
        )
        assert (await get_run(backend, handle.id)).attempts <= parked.attempts + 2

        clock.advance(timedelta(hours=3))
        await drive(worker, status_is(backend, handle.id, "completed"), "the parent to finish")

    assert await handle.result(timeout="1s") == ["child done", None]


async def test_parallel_waits_with_a_short_signal_timeout_complete_in_real_time(
    backend: Any,
) -> None:
    """Three waits without a moved clock: park at the earliest, then finish."""

    @workflow
    async def quick_child(input: str) -> str:
        return input.upper()

    @workflow
    async def mixed_waits(step: Step) -> list[Any]:
        return list(
            await asyncio.gather(
                step.sleep("nap", "600ms"),
                step.wait_for_signal("short", timeout="200ms"),
                step.run_workflow(quick_child, "done"),
            )
        )

    ow = OpenWorkflow(backend)
    proxy = BeforePark(backend)
    async with running_worker(proxy, [mixed_waits, quick_child], concurrency=2):
        handle = await ow.run(mixed_waits)
        assert await handle.result(timeout="10s") == [None, None, "DONE"]

    steps = await list_steps(backend, handle.id)
    first_park = proxy.parked[handle.id][0]
    short = attempts_named(steps, "short")
    assert [s.status for s in short] == ["completed"]
    assert short[0].output is None
    # The first park waits for the short signal timeout at the latest (earlier if the
    # child had already finished), never for the one-year child timeout or the nap.
    assert first_park.available_at is not None
    assert first_park.available_at <= context_time(short[0], "timeoutAt")
    [link] = attempts_named(steps, "quick-child")
    assert (link.status, link.output) == ("completed", "DONE")
    naps = attempts_named(steps, "nap")
    assert len(naps) == 1, (
        "the running nap was created again by a later pass: "
        f"{[(s.status, s.context) for s in naps]}"
    )


# -- 5. fan-out: 300 parallel children -------------------------------------------------


async def test_three_hundred_parallel_children_are_each_created_once(backend: Any) -> None:
    count = 300

    @workflow
    async def fan_child(input: int) -> int:
        return input * input

    @workflow
    async def fan_parent(step: Step) -> list[int]:
        return list(
            await asyncio.gather(
                *(step.run_workflow(fan_child, i, name=f"child-{i}") for i in range(count))
            )
        )

    ow = OpenWorkflow(backend)
    proxy = CountCompletions(backend)
    async with running_worker(proxy, [fan_parent, fan_child], concurrency=20):
        handle = await ow.run(fan_parent)
        output = await handle.result(timeout="60s")

    assert output == [i * i for i in range(count)]
    parent = await get_run(backend, handle.id)
    assert parent.status == "completed"
    assert proxy.completions[handle.id] == 1, "the parent is completed exactly once"
    assert 2 <= parent.attempts < count

    steps = await list_steps(backend, handle.id)
    assert len(steps) == count, "one attempt per child step, no respawned attempts"
    by_name = steps_by_name(steps)
    assert set(by_name) == {f"child-{i}" for i in range(count)}
    assert all(s.kind == "workflow" and s.status == "completed" for s in steps)

    children = await runs_of(backend, "fan-child")
    assert len(children) == count, "every child created exactly once"
    assert all(child.status == "completed" for child in children)
    by_id = {child.id: child for child in children}
    for i in range(count):
        link = by_name[f"child-{i}"]
        child = by_id[link.child_workflow_run_id or ""]
        assert (child.parent_step_attempt_id, child.input, link.output) == (link.id, i, i * i)
        assert child.idempotency_key == f"__workflow:{link.namespace_id}:{link.id}"
        assert proxy.completions[child.id] == 1


# -- 6. a child failed by its deadline -------------------------------------------------


@pytest.mark.parametrize("caught", [True, False])
async def test_child_failed_by_its_deadline_wakes_and_fails_the_parent_step(
    backend: Any, clock: Any, caught: bool
) -> None:
    @workflow
    async def dozing_child(step: Step) -> str:
        await step.sleep("nap", "1d")
        return "rested"

    @workflow
    async def deadline_parent(step: Step) -> dict:
        try:
            await step.run_workflow(dozing_child)
        except ChildWorkflowFailedError as error:
            if not caught:
                raise
            return {
                "type": type(error).__name__,
                "message": str(error),
                "child": error.workflow_run_id,
                "step": error.step_name,
                "child_error": error.child_error,
            }
        return {"type": None}

    ow = OpenWorkflow(backend)
    # The step API sets no deadline on children; the proxy gives the child the
    # engine creates one, an hour out (the engine itself is not changed).
    proxy = ChildDeadline(backend, timedelta(hours=1))
    async with idle_worker(proxy, [deadline_parent, dozing_child], concurrency=2) as worker:
        handle = await ow.run(deadline_parent)
        await tick_and_settle(worker, expected=1)
        child = await the_only_run_of(backend, "dozing-child")
        await drive(worker, parked_on(backend, child.id), "the child to doze off")
        assert child.deadline_at is not None
        parent = await get_run(backend, handle.id)
        assert parent.available_at is not None
        assert parent.available_at > now() + ONE_YEAR_ISH, "parked on the one-year timeout"

        # The deadline passes; the next claim's sweep fails the child and must
        # wake its parent, which otherwise sleeps for a year.
        clock.advance(timedelta(hours=1, seconds=1))
        await drive(
            worker,
            status_is(backend, handle.id, "completed", "failed"),
            "the parent to notice the child's failure",
        )

    failed_child = await get_run(backend, child.id)
    assert failed_child.status == "failed"
    assert failed_child.error == {"message": "Workflow run deadline exceeded"}
    [link] = await list_steps(backend, handle.id)
    assert (link.kind, link.status) == ("workflow", "failed")
    assert link.child_workflow_run_id == child.id
    assert link.error["name"] == "ChildWorkflowFailedError"
    assert "deadline" in link.error["message"]
    if caught:
        result = await handle.result(timeout="1s")
        assert result["type"] == "ChildWorkflowFailedError"
        assert "deadline" in result["message"]
        assert (result["child"], result["step"]) == (child.id, "dozing-child")
        assert result["child_error"] == {"message": "Workflow run deadline exceeded"}
    else:
        with pytest.raises(WorkflowFailedError) as raised:
            await handle.result(timeout="1s")
        assert raised.value.error["name"] == "ChildWorkflowFailedError"
        assert "deadline" in raised.value.error["message"]


# -- 7. the blocking client signals a running async worker ---------------------------


async def test_sync_client_send_signal_from_a_thread_reaches_waiting_runs(
    backend: Any, backend_kind: str
) -> None:
    if backend_kind == "sqlite_memory":
        pytest.skip(
            "a ':memory:' SQLite database lives in one connection, so a second client "
            "(the blocking one, with its own event loop) cannot open it"
        )
    url = backend_url(backend_kind, backend)
    assert url is not None
    namespace_id = backend.namespace_id

    @workflow
    async def approval(step: Step) -> Any:
        return await step.wait_for_signal("approve", timeout="1h")

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [approval], concurrency=2):
        first = await ow.run(approval)
        second = await ow.run(approval)
        for handle in (first, second):
            await running_step(backend, handle.id, "approve")

        def blocking_sender() -> dict[str, list[str]]:
            with SyncOpenWorkflow(url, namespace_id=namespace_id) as client:
                return {
                    "sent": client.send_signal("approve", {"ok": True}, idempotency_key="k1"),
                    "again": client.send_signal("approve", {"ok": False}, idempotency_key="k1"),
                    "nobody": client.send_signal("nobody-waits", {"lost": True}),
                }

        seen = await asyncio.to_thread(blocking_sender)
        assert sorted(seen["sent"]) == sorted([first.id, second.id])
        assert sorted(seen["again"]) == sorted(seen["sent"]), "the key replays the first send"
        assert seen["nobody"] == []
        for handle in (first, second):
            assert await handle.result(timeout="10s") == {"data": {"ok": True}}


# -- 8. replay after an interrupted pass ---------------------------------------------


@pytest.mark.parametrize(
    "point",
    [
        "create_workflow_run:before",
        "create_workflow_run:after",
        "set_step_attempt_child_workflow_run:before",
        "set_step_attempt_child_workflow_run:after",
    ],
)
async def test_interrupted_parent_does_not_create_a_second_child(backend: Any, point: str) -> None:
    @workflow
    async def only_child(input: str) -> str:
        return f"child saw {input}"

    @workflow
    async def interrupted_parent(step: Step) -> dict:
        before = await step.run("before", lambda: "once")
        child = await step.run_workflow(only_child, "hello")
        return {"before": before, "child": child}

    ow = OpenWorkflow(backend)
    proxy = Stall(backend, point)
    handle = await ow.run(interrupted_parent)
    proxy.run_id = handle.id

    first = make_worker(
        proxy, [interrupted_parent, only_child], concurrency=2, shutdown_timeout="100ms"
    )
    await first.start()
    try:
        await wait_until(proxy.stalled.is_set, message="the pass to reach the stall point")
        if point != "create_workflow_run:before":
            child = await the_only_run_of(backend, "only-child")
            # The free slot finishes the child while its parent is stuck: the replay
            # must find this finished child again, not start a second one.
            await wait_for_status(backend, child.id, "completed")
    finally:
        await first.stop()  # cancels the hung pass and releases its lease

    released = await get_run(backend, handle.id)
    assert (released.status, released.worker_id) == ("running", None)
    assert released.available_at is not None and released.available_at <= now()

    async with running_worker(backend, [interrupted_parent, only_child], concurrency=2):
        assert await handle.result(timeout="10s") == {
            "before": "once",
            "child": "child saw hello",
        }

    children = await runs_of(backend, "only-child")
    assert len(children) == 1, f"the replay created another child ({len(children)} in all)"
    steps = steps_by_name(await list_steps(backend, handle.id))
    assert set(steps) == {"before", "only-child"}, "the replay resumed the same attempt"
    link = steps["only-child"]
    assert (link.status, link.child_workflow_run_id) == ("completed", children[0].id)
    assert children[0].parent_step_attempt_id == link.id


@pytest.mark.parametrize(
    "point", ["send_signal:before", "send_signal:after", "complete_step_attempt:after"]
)
async def test_interrupted_signal_send_delivers_once(backend: Any, point: str) -> None:
    @workflow
    async def listener(step: Step) -> Any:
        return await step.wait_for_signal("bell", timeout="1h")

    @workflow
    async def bell_ringer(step: Step) -> dict:
        rung = await step.send_signal("bell", {"ring": 1})
        return {"rung": rung}

    ow = OpenWorkflow(backend)
    proxy = Stall(backend, point)
    early = await ow.run(listener)
    async with running_worker(backend, [listener, bell_ringer]):
        await running_step(backend, early.id, "bell")
        await wait_for_parked(backend, early.id)

    ringer = await ow.run(bell_ringer)
    proxy.run_id = ringer.id
    first = make_worker(proxy, [listener, bell_ringer], concurrency=2, shutdown_timeout="100ms")
    await first.start()
    try:
        await wait_until(proxy.stalled.is_set, message="the send to reach the stall point")
        # A second listener starts waiting while the send is interrupted: a replay
        # that delivered again would reach it. (The free slot runs it.)
        late = await ow.run(listener)
        late_wait = await running_step(backend, late.id, "bell")
        await wait_for_parked(backend, late.id)
    finally:
        await first.stop()  # cancels the hung pass and releases its lease

    delivered_before_replay = point != "send_signal:before"
    async with running_worker(backend, [listener, bell_ringer], concurrency=2):
        result = await ringer.result(timeout="10s")
        assert await early.result(timeout="10s") == {"data": {"ring": 1}}
        if delivered_before_replay:
            assert result == {"rung": [early.id]}, "the replay returned the first send's runs"
            delivery = await backend.get_signal_delivery(
                GetSignalDeliveryParams(step_attempt_id=late_wait.id)
            )
            assert delivery is None, "the replayed send delivered a second time"
            assert await ow.send_signal("bell", {"ring": "by hand"}) == [late.id]
            assert await late.result(timeout="10s") == {"data": {"ring": "by hand"}}
        else:
            assert sorted(result["rung"]) == sorted([early.id, late.id])
            assert await late.result(timeout="10s") == {"data": {"ring": 1}}

    [send] = await list_steps(backend, ringer.id)
    assert (send.step_name, send.kind, send.status) == ("bell", "signal-send", "completed")
    assert send.output == {"workflowRunIds": result["rung"]}
    assert (await get_run(backend, ringer.id)).attempts == 2


async def test_sequential_waits_on_one_signal_in_one_run(backend: Any) -> None:
    """Waiting on the same signal again after the first wait completed is not a conflict."""

    @workflow
    async def two_rounds(step: Step) -> list[Any]:
        first = await step.wait_for_signal("round")
        second = await step.wait_for_signal("round")
        return [first, second]

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [two_rounds]):
        handle = await ow.run(two_rounds)
        await running_step(backend, handle.id, "round")
        assert await ow.send_signal("round", 1) == [handle.id]
        try:
            await running_step(backend, handle.id, "round:1")
        except AssertionError:
            run = await get_run(backend, handle.id)
            raise AssertionError(
                f"the second wait never started; the run is {run.status}: {run.error}"
            ) from None
        assert await ow.send_signal("round", 2) == [handle.id]
        assert await handle.result(timeout="10s") == [{"data": 1}, {"data": 2}]
