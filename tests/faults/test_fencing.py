"""F5, partitioned: a worker cut off from the database past its lease while its steps run.

The worker under test reaches the database through :class:`Partition`, a
backend proxy that models a network cut: while cut, every call hangs; a write
already sent is held and delivered when the cut heals, even if the pass that
sent it has been cancelled meanwhile (the statement was on the wire; a
group-committed insert is written by the batch, not by its caller). Two runs
are under way when the cut starts:

- ``queued``: its step body returns just after the cut, so the pass's step
  write is held; the lease then runs out and the pass is cancelled;
- ``long``: its step body keeps running past the lease and returns only after
  another pass has taken the run over.

A second worker takes both runs over once their leases have expired: either
another worker, or one claiming with the same worker ids (a restarted slot,
or the same worker after the cut, which the worker-id fence alone cannot tell
from the old pass). While the new passes are still running, the cut heals and
the held writes are delivered. Counted from the database: no write of the old
passes lands, each step completed once, each run completed with its output;
each step body's effect is counted by a ledger outside the engine.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

import pytest

from openworkflow import OpenWorkflow, Step, workflow
from openworkflow.core.backend import GetWorkflowRunParams
from openworkflow.core.workflow_run import WorkflowRun
from tests.faults.figures import Figure, report
from tests.faults.ledger import Expected, tally
from tests.support.proxy import ProxyBackend
from tests.worker.helpers import list_steps, make_worker, wait_for_status

LEASE_MS = 400
KINDS = ("queued", "long")
WRITES = frozenset(
    {
        "create_step_attempt",
        "create_completed_step_attempt",
        "complete_step_attempt",
        "fail_step_attempt",
        "set_step_attempt_child_workflow_run",
        "complete_workflow_run",
        "fail_workflow_run",
        "reschedule_workflow_run_after_failed_step_attempt",
        "sleep_workflow_run",
    }
)


class Partition(ProxyBackend):
    """The worker's side of a network cut: calls hang while cut; sent writes land on healing."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self._healed = asyncio.Event()
        self._healed.set()
        self.held: list[tuple[str, asyncio.Task[Any]]] = []

    def cut(self) -> None:
        self._healed.clear()

    def heal(self) -> None:
        self._healed.set()

    def intercept(self, name: str, target: Any) -> Any:
        if not asyncio.iscoroutinefunction(target):
            return target

        async def across_the_network(*args: Any, **kwargs: Any) -> Any:
            if self._healed.is_set():
                return await target(*args, **kwargs)
            if name not in WRITES:
                await self._healed.wait()  # a read or heartbeat: dropped if its caller gives up
                return await target(*args, **kwargs)
            delivery = asyncio.ensure_future(self._deliver(target, args, kwargs))
            self.held.append((name, delivery))
            return await asyncio.shield(delivery)

        return across_the_network

    async def _deliver(self, target: Any, args: Any, kwargs: Any) -> Any:
        await self._healed.wait()
        return await target(*args, **kwargs)

    async def settled(self) -> tuple[list[str], list[str]]:
        """After healing: the held writes that landed, and those refused."""
        landed: list[str] = []
        refused: list[str] = []
        for name, delivery in self.held:
            try:
                await delivery
            except Exception:
                refused.append(name)
            else:
                landed.append(name)
        return landed, refused


class Bodies:
    """The step bodies, and a ledger of how often each ran (outside the engine)."""

    def __init__(self) -> None:
        self.effects: Counter[tuple[str, str]] = Counter()
        self.first_a_running = {kind: threading.Event() for kind in KINDS}
        self.release_a = {kind: threading.Event() for kind in KINDS}
        self.release_b = threading.Event()
        self._lock = threading.Lock()

    def a(self, kind: str) -> str:
        with self._lock:
            self.effects[(kind, "a")] += 1
            first = self.effects[(kind, "a")] == 1
        if first:  # the old pass: hold until the test has cut the network
            self.first_a_running[kind].set()
            self.release_a[kind].wait(30)
        return f"{kind}-a"

    def b(self, kind: str) -> str:
        with self._lock:
            self.effects[(kind, "b")] += 1
        self.release_b.wait(30)  # keeps the new pass holding the run while the cut heals
        return f"{kind}-b"


async def _until(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition.__name__}")
        await asyncio.sleep(0.02)


async def _lease_expired(backend: Any, run_id: str) -> bool:
    run: WorkflowRun | None = await backend.get_workflow_run(
        GetWorkflowRunParams(workflow_run_id=run_id)
    )
    assert run is not None and run.available_at is not None
    return run.available_at.timestamp() < time.time() - 0.05


async def _step_b_running(backend: Any, run_id: str) -> bool:
    return any(s.step_name == "b" for s in await list_steps(backend, run_id))


@pytest.mark.parametrize("takeover", ["another worker", "the same worker id"])
async def test_writes_of_a_partitioned_pass_never_land_after_its_lease(
    backend: Any, backend_kind: str, takeover: str
) -> None:
    """F5: Cut off past its lease: no write of the old pass lands, whoever took over."""
    bodies = Bodies()

    @workflow(name=f"fencing-{takeover.replace(' ', '-')}")
    async def fenced(step: Step, input: str) -> list[str]:
        a = await step.run("a", lambda: bodies.a(input))
        b = await step.run("b", lambda: bodies.b(input))
        return [a, b]

    ow = OpenWorkflow(backend)
    partition = Partition(backend)
    old = make_worker(partition, [fenced], concurrency=2, lease_duration=f"{LEASE_MS}ms")
    new = make_worker(backend, [fenced], concurrency=2, lease_duration=f"{LEASE_MS}ms")
    if takeover == "the same worker id":
        # The worker's slot ids are its fence: the takeover claims with the same ones.
        for new_slot, old_slot in zip(new._slots, old._slots, strict=True):
            new_slot.worker_id = old_slot.worker_id
    landed: list[str] = []
    refused: list[str] = []
    await old.start()
    try:
        runs = {kind: await ow.run(fenced, kind) for kind in KINDS}
        for kind in KINDS:
            await asyncio.to_thread(bodies.first_a_running[kind].wait, 20)
        partition.cut()
        bodies.release_a["queued"].set()  # returns into the cut: its write is held
        for kind in KINDS:
            await _until(lambda kind=kind: _lease_expired(backend, runs[kind].id))
        await new.start()
        for kind in KINDS:
            await _until(lambda kind=kind: _step_b_running(backend, runs[kind].id))
        partition.heal()  # the held writes land now, unless fenced
        landed, refused = await partition.settled()
        bodies.release_a["long"].set()  # the zombie body returns after the takeover
        bodies.release_b.set()
        for handle in runs.values():
            await wait_for_status(backend, handle.id, "completed", "failed", timeout=30)
    finally:
        for event in (*bodies.release_a.values(), bodies.release_b):
            event.set()
        await new.stop()
        await old.stop()

    expected = {h.id: Expected("completed", [f"{k}-a", f"{k}-b"]) for k, h in runs.items()}
    counted = await tally(backend, expected)
    completed_a = [
        s
        for handle in runs.values()
        for s in await list_steps(backend, handle.id)
        if s.step_name == "a" and s.status == "completed"
    ]
    ran = dict(sorted((f"{kind}.{step}", n) for (kind, step), n in bodies.effects.items()))
    report(
        Figure(
            fault_id="F5",
            title=f"partitioned past its lease, {takeover} took over ({backend_kind})",
            runs=len(runs),
            faults=len(landed) + len(refused),
            lost=counted.lost,
            duplicated=counted.duplicated + len(landed),
            reexecuted_steps=sum(count - 1 for count in bodies.effects.values()),
            details=(
                f"lease {LEASE_MS} ms; writes held by the cut: {len(landed) + len(refused)}, "
                f"landed after the lease {len(landed)} {sorted(landed)}, "
                f"refused {len(refused)} {sorted(refused)}; step bodies run: {ran}"
            ),
        )
    )
    assert landed == [], f"writes of the old pass landed after its lease: {landed}"
    assert refused, "no write was held by the cut: the scenario did not happen"
    assert counted.lost == 0 and counted.duplicated == 0
    assert len(completed_a) == len(runs)
    # Step a ran in both passes (the old one's result was never written); b once.
    assert all(bodies.effects[(kind, "a")] == 2 for kind in KINDS)
    assert all(bodies.effects[(kind, "b")] == 1 for kind in KINDS)
