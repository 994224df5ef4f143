"""F4: ambiguous commits: the write landed, but its acknowledgement was lost.

A backend decorator (the fault-injection pattern of Temporal's persistence
layer) lets each engine write through to the real backend and then, by a
seeded coin, raises ``BackendUnavailableError`` as if the connection dropped
after COMMIT. The engine cannot tell whether the write landed: it must hand
the run back and, on the next pass, find the write in the history instead of
writing it twice. A ledger outside the engine (a list the step bodies append
to) counts how often each step body really ran.

Checked on every backend: every run completes with the right output; no
step has two completed attempts or an output that differs from the first;
step bodies re-executed only where the lost acknowledgement left no
completed attempt behind.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

from openworkflow import OpenWorkflow, Step, workflow
from openworkflow.errors import BackendUnavailableError
from tests.faults.figures import Figure, report
from tests.support.proxy import ProxyBackend
from tests.worker.helpers import list_steps, running_worker, wait_for_status

RUNS = 30
STEPS = 5
SEED = 20261124
WRITES = (
    "create_completed_step_attempt",
    "create_step_attempt",
    "complete_step_attempt",
    "complete_workflow_run",
)


class LostAcknowledgements(ProxyBackend):
    """Delegates to a backend; after some writes commit, raises as if the ack was lost."""

    def __init__(self, inner: Any, rate: float, seed: int) -> None:
        super().__init__(inner)
        self._rate = rate
        self._random = random.Random(seed)
        self.injected: Counter[str] = Counter()
        self.recovered_after: list[float] = []

    def intercept(self, name: str, target: Any) -> Any:
        if name not in WRITES:
            return target

        async def committed_then_lost(*args: Any, **kwargs: Any) -> Any:
            result = await target(*args, **kwargs)
            if self._random.random() < self._rate:
                self.injected[name] += 1
                raise BackendUnavailableError(f"injected: acknowledgement of {name} lost")
            return result

        return committed_then_lost


async def test_lost_acknowledgements_write_nothing_twice(backend: Any, backend_kind: str) -> None:
    """F4: Acknowledgements lost after the commit: the retried writes write nothing twice."""
    ledger: Counter[tuple[int, int]] = Counter()

    def body(n: int, index: int) -> int:
        ledger[(n, index)] += 1
        if index == STEPS - 1:
            time.sleep(0.06)  # a slow step: running attempt, then completion
        return n * 10 + index

    @workflow(name="ambiguous-commits")
    async def numbered(step: Step, input: int) -> list[int]:
        return [
            await step.run(f"s{index}", lambda index=index: body(input, index))
            for index in range(STEPS)
        ]

    faulty = LostAcknowledgements(backend, rate=0.15, seed=SEED)
    ow = OpenWorkflow(backend)
    started = time.monotonic()
    async with running_worker(faulty, [numbered], concurrency=8):
        handles = [await ow.run(numbered, n) for n in range(RUNS)]
        finished = [
            await wait_for_status(backend, h.id, "completed", "failed", timeout=60) for h in handles
        ]
    elapsed = time.monotonic() - started

    lost = sum(
        1
        for n, run in enumerate(finished)
        if run.status != "completed" or run.output != [n * 10 + i for i in range(STEPS)]
    )
    duplicated = 0
    for n, handle in enumerate(handles):
        completed = [s for s in await list_steps(backend, handle.id) if s.status == "completed"]
        names = Counter(s.step_name for s in completed)
        duplicated += sum(count - 1 for count in names.values() if count > 1)
        duplicated += sum(
            1 for s in completed if s.output != n * 10 + int(s.step_name.removeprefix("s"))
        )
    reexecuted = sum(count - 1 for count in ledger.values())
    faults = sum(faulty.injected.values())

    assert faults > 0, "the seed injected no fault: raise the rate"
    assert lost == 0 and duplicated == 0
    # A lost ack of a completed insert is found in the history; only a lost ack
    # of a running attempt's completion (or of the insert) can re-run a body.
    assert reexecuted <= faults
    report(
        Figure(
            fault_id="F4",
            title=f"lost acknowledgements after commit ({backend_kind})",
            runs=RUNS,
            faults=faults,
            lost=lost,
            duplicated=duplicated,
            reexecuted_steps=reexecuted,
            details=(
                f"{RUNS * STEPS} steps; injected by call: {dict(sorted(faulty.injected.items()))}; "
                f"seed {SEED}; all done in {elapsed:.1f} s"
            ),
        )
    )
