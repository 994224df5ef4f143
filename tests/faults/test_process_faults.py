"""Process faults against real worker processes and the real PostgreSQL (F1, F5, F6, F19).

Each test starts worker subprocesses (``tests/faults/process_app.py``) on a
fresh schema, creates runs through the client, injects a fault with real
signals, and then checks the outcome twice: against the engine's rows, and
against the ledger, a table the step bodies append to before doing anything
(the oracle outside the engine). Each ends with one figure line:

- F1: three workers, one SIGKILLed at random about every second and restarted
  at once, while 90 runs of 20 steps execute with a 2 s lease. No run is
  lost, no step completes twice, re-executed step bodies stay within
  kills x concurrency, and a killed worker's runs resume elsewhere after the
  lease (recovery = kill -> the run's next step body starts in another process).
- F5: a worker SIGSTOPped mid-step past its 1 s lease while another reclaims
  and finishes its runs, then SIGCONTed: it notices every lost run (its
  heartbeat is refused, or it sees its lease ran out, or a step write is
  refused), its step bodies are cancelled, and none of its writes lands (no
  engine row of those runs changes after the SIGCONT; the outputs are the
  reclaimer's). Then a sync step sleeping 2x the lease (run in a thread: the
  heartbeat keeps the lease) and an async step that blocks the event loop 2x
  the lease (the heartbeat starves; whatever happens, one completion and a
  consistent output).
- F6: eight workers x eight slots race for 50 ready runs plus 5 runs whose
  lease expired, woken at the same instant; every run passes through three
  claims (two durable sleeps). Exactly one owner per claim: every step body
  runs once, every run is claimed exactly three times (four for the expired).
- F19: one poison run whose step SIGKILLs its own worker, among 30 normal
  runs, with three workers restarted whenever they die: the fleet survives,
  every death is the poison's, the others complete, and the poison run is
  failed with a distinct error (``StepCrashLoopError``) after a few crashes.
  A second scenario puts an innocent run beside the poison on a single
  worker: it completes (a step one crash short of the limit runs alone among
  such steps, so a bystander's count stops growing with the poison's).

Set ``OW_FAULT_SEED`` to replay F1's kill schedule; the seed is in its figure.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.faults.figures import Figure, report
from tests.faults.ledger import Expected, tally_rows, tally_scenario
from tests.faults.process_app import (
    LedgerRow,
    RunRow,
    Scenario,
    WorkerProcess,
    block_loop,
    block_thread,
    chain,
    duplicated_completions,
    expected_chain_output,
    poison,
    race,
    reexecutions,
    scenario,
    zombie,
)
from tests.fixtures.postgres import require_server_url
from tests.support.processes import assert_alive, stop_all
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
async def pg(tmp_path: Path) -> AsyncIterator[Scenario]:
    """A fresh schema with the engine's tables and the ledger, dropped afterwards."""
    async with scenario(require_server_url(), tmp_path) as opened:
        yield opened


def _seconds(samples: list[float]) -> str:
    if not samples:
        return "n/a"
    return f"p50 {statistics.median(samples):.2f} s / max {max(samples):.2f} s"


# -- F1: SIGKILL mid-step, repeatedly --------------------------------------------------------

F1_WORKERS = 3
F1_CONCURRENCY = 4
F1_LEASE = "2s"
F1_RUNS = 90
F1_STEPS = 20
F1_MAX_KILLS = 12
F1_KILL_EVERY = (0.8, 1.6)  # seconds, uniform


@dataclass(frozen=True)
class _Kill:
    at: float  # database clock, just before the signal
    pid: int


def _in_flight_recoveries(
    kill: _Kill, by_run: dict[str, list[LedgerRow]], runs: dict[str, RunRow]
) -> list[float]:
    """For each run the victim was executing, the time until its next step started elsewhere."""
    recoveries: list[float] = []
    for run_id, rows in by_run.items():
        before = [row for row in rows if row.at <= kill.at]
        finished_at = runs[run_id].finished_at
        if not before or before[-1].pid != kill.pid:
            continue
        if finished_at is not None and finished_at <= kill.at:
            continue
        after = [row for row in rows if row.at > kill.at and row.pid != kill.pid]
        if not after and runs[run_id].status == "completed":
            # Every step had run on the victim: its completion landed between the
            # clock read and the signal, so there was nothing left to resume.
            assert {row.step_name for row in before} == {f"s{i}" for i in range(F1_STEPS)}, (
                f"run {run_id} completed without running all its steps"
            )
            continue
        assert after, f"run {run_id} never resumed after the kill of {kill.pid}"
        recoveries.append(after[0].at - kill.at)
    return recoveries


async def test_workers_sigkilled_mid_step_lose_and_duplicate_nothing(pg: Scenario) -> None:
    """F1: Worker processes SIGKILLed mid-step, repeatedly: no run lost or completed twice."""
    seed = int(os.environ.get("OW_FAULT_SEED") or random.randrange(1_000_000))
    rng = random.Random(seed)

    def spawn() -> WorkerProcess:
        return pg.spawn(concurrency=F1_CONCURRENCY, lease=F1_LEASE, pool_size=F1_CONCURRENCY + 1)

    workers = [spawn() for _ in range(F1_WORKERS)]
    await pg.wait_ready(workers)
    inputs = [{"n": n, "steps": F1_STEPS} for n in range(F1_RUNS)]
    run_ids = await pg.start_runs(chain, inputs)
    started = time.monotonic()

    kills: list[_Kill] = []
    next_kill = time.monotonic() + rng.uniform(*F1_KILL_EVERY)
    while True:
        counts = await pg.db.status_counts()
        if counts.get("completed", 0) + counts.get("failed", 0) >= F1_RUNS:
            break
        assert time.monotonic() - started < 100, f"runs not finished: {counts}"
        assert_alive(workers)
        if len(kills) < F1_MAX_KILLS and time.monotonic() >= next_kill:
            ready = [index for index, worker in enumerate(workers) if worker.is_ready()]
            if ready:
                index = rng.choice(ready)
                victim = workers[index]
                kills.append(_Kill(await pg.db.now(), victim.pid))
                victim.kill()
                workers[index] = spawn()
            next_kill = time.monotonic() + rng.uniform(*F1_KILL_EVERY)
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    assert_alive(workers)
    await pg.wait_ready(workers)  # a replacement still starting would die of SIGTERM
    stop_all(workers)

    runs = await pg.db.runs()
    ledger = await pg.db.ledger()
    completed = await pg.db.completed_steps()
    assert sorted(runs) == sorted(run_ids)
    lost = [
        run.id
        for run in runs.values()
        if run.status != "completed"
        or run.output != expected_chain_output(run.input["n"], F1_STEPS)
    ]
    # Every completed step's output was produced by a body the ledger saw.
    executed = {(row.run_id, row.step_name, row.execution, row.pid) for row in ledger}
    unexplained = [
        (run_id, step_name)
        for run_id, step_name, output in completed
        if (run_id, step_name, output["execution"], output["pid"]) not in executed
    ]
    duplicated = duplicated_completions(completed) + len(unexplained)
    steps_run = {(row.run_id, row.step_name) for row in ledger}
    assert steps_run == {(run_id, f"s{i}") for run_id in run_ids for i in range(F1_STEPS)}
    reexecuted = sum(reexecutions(ledger).values())

    by_run: dict[str, list[LedgerRow]] = defaultdict(list)
    for row in ledger:
        by_run[row.run_id].append(row)
    recovery: list[float] = []
    in_flight = 0
    for kill in kills:
        samples = _in_flight_recoveries(kill, by_run, runs)
        in_flight += len(samples)
        recovery += samples

    assert lost == [] and duplicated == 0, (lost, duplicated, unexplained)
    assert len(kills) >= 3, "too few kills to say anything"
    assert reexecuted <= len(kills) * F1_CONCURRENCY, (reexecuted, len(kills))
    report(
        Figure(
            fault_id="F1",
            title="worker SIGKILL mid-step, repeatedly (PostgreSQL, 3 processes)",
            runs=F1_RUNS,
            faults=len(kills),
            lost=len(lost),
            duplicated=duplicated,
            reexecuted_steps=reexecuted,
            recovery_s=recovery,
            details=(
                f"{F1_RUNS * F1_STEPS} steps, {F1_WORKERS} workers x {F1_CONCURRENCY} slots, "
                f"lease {F1_LEASE}, {len(kills)} SIGKILLs hitting {in_flight} in-flight runs "
                f"(re-executions bound {len(kills) * F1_CONCURRENCY}), {elapsed:.1f} s, "
                f"seed {seed}"
            ),
        )
    )


# -- F5: a paused worker (zombie) past its lease -------------------------------------------------

F5_LEASE = "1s"
F5_CYCLES = 3
F5_RUNS_PER_CYCLE = 4
# How a zombie learns it lost a run, from its log: its heartbeat is refused by the
# database, it sees locally that its lease ran out (after the pause the heartbeat's
# time budget is gone), or one of its step writes is refused.
HEARTBEAT_REFUSED = re.compile(r"Lease of workflow run (\S+) was lost; cancelling")
LEASE_RAN_OUT = re.compile(r"Lease of workflow run (\S+) expired; cancelling")
WRITE_REFUSED = re.compile(r"run (\S+) moved on \((.*?)\); ending the pass")


async def _ledger_rows(pg: Scenario, run_ids: list[str], step: str, event: str) -> list[LedgerRow]:
    return [
        row
        for row in await pg.db.ledger()
        if row.run_id in run_ids and row.step_name == step and row.event == event
    ]


async def _changed_after(pg: Scenario, run_ids: list[str], instant: float) -> int:
    """Engine rows of ``run_ids`` (runs and step attempts) written after ``instant``."""
    rows = await pg.db.rows(
        "SELECT (SELECT count(*) FROM {runs} WHERE namespace_id = %(ns)s AND id = ANY(%(ids)s)"
        "   AND updated_at > to_timestamp(%(at)s))"
        " + (SELECT count(*) FROM {steps} WHERE namespace_id = %(ns)s"
        "   AND workflow_run_id = ANY(%(ids)s) AND updated_at > to_timestamp(%(at)s))",
        {"ns": pg.namespace, "ids": run_ids, "at": instant},
    )
    return int(rows[0][0])


async def test_a_paused_worker_is_fenced_off_and_its_step_bodies_cancelled(pg: Scenario) -> None:
    """F5: A worker SIGSTOPped past its lease is fenced off once resumed: its writes are refused and
    its step bodies cancelled.
    """
    zombie_worker = pg.spawn(concurrency=F5_RUNS_PER_CYCLE, lease=F5_LEASE)
    reclaimer = pg.spawn(concurrency=F5_RUNS_PER_CYCLE, lease=F5_LEASE)
    await pg.wait_ready([zombie_worker, reclaimer])
    all_ids: list[str] = []
    recovery: list[float] = []
    cancel_delays: list[float] = []
    accepted = 0
    for cycle in range(F5_CYCLES):
        # The reclaimer is paused while the runs are created, so the zombie takes them all.
        reclaimer.signal(signal.SIGSTOP)
        inputs = [
            {"n": cycle * 100 + i, "first_ms": 30_000, "later_ms": 100}
            for i in range(F5_RUNS_PER_CYCLE)
        ]
        run_ids = await pg.start_runs(zombie, inputs)
        all_ids += run_ids

        async def all_started(run_ids: list[str] = run_ids) -> bool:
            return len(await _ledger_rows(pg, run_ids, "b", "start")) == len(run_ids)

        await wait_until(
            all_started,
            timeout=30,
            message="the zombie-to-be to start step b of every run",
            interval=0.05,
        )
        assert {row.pid for row in await _ledger_rows(pg, run_ids, "b", "start")} == {
            zombie_worker.pid
        }
        paused_at = await pg.db.now()
        zombie_worker.signal(signal.SIGSTOP)
        reclaimer.signal(signal.SIGCONT)

        async def all_completed(run_ids: list[str] = run_ids) -> bool:
            return (await pg.db.status_counts(run_ids)).get("completed", 0) == len(run_ids)

        await wait_until(
            all_completed,
            timeout=30,
            message="the reclaimer to finish the paused worker's runs",
            interval=0.05,
        )
        resumed_at = await pg.db.now()
        zombie_worker.signal(signal.SIGCONT)

        async def all_cancelled(run_ids: list[str] = run_ids) -> bool:
            return len(await _ledger_rows(pg, run_ids, "b", "cancelled")) == len(run_ids)

        await wait_until(
            all_cancelled,
            timeout=30,
            message="the zombie's step bodies to be cancelled",
            interval=0.05,
        )
        await asyncio.sleep(0.5)  # room for any late write the zombie might still try
        accepted += await _changed_after(pg, run_ids, resumed_at)
        starts = await _ledger_rows(pg, run_ids, "b", "start")
        recovery += [
            row.at - paused_at for row in starts if row.pid == reclaimer.pid and row.execution == 2
        ]
        cancelled = await _ledger_rows(pg, run_ids, "b", "cancelled")
        cancel_delays += [row.at - resumed_at for row in cancelled]
        assert {row.pid for row in cancelled} == {zombie_worker.pid}

    assert_alive([zombie_worker, reclaimer])
    stop_all([zombie_worker, reclaimer])
    runs = await pg.db.runs()
    completed = await pg.db.completed_steps()
    ledger = [row for row in await pg.db.ledger() if row.run_id in all_ids]
    log = zombie_worker.log()
    heartbeats_refused = {match.group(1) for match in HEARTBEAT_REFUSED.finditer(log)}
    ran_out = {match.group(1) for match in LEASE_RAN_OUT.finditer(log)}
    writes_refused = [match.group(1) for match in WRITE_REFUSED.finditer(log)]
    noticed = heartbeats_refused | ran_out | set(writes_refused)
    reclaimers_outputs = [
        run_id
        for run_id in all_ids
        if runs[run_id].status == "completed"
        and runs[run_id].output["b_pid"] == reclaimer.pid
        and runs[run_id].output["a_pid"] == zombie_worker.pid
        and runs[run_id].attempts == 2
    ]
    zombie_ends = [row for row in ledger if row.event == "end" and row.pid == zombie_worker.pid]
    duplicated = duplicated_completions([c for c in completed if c[0] in all_ids])

    total = F5_CYCLES * F5_RUNS_PER_CYCLE
    assert noticed == set(all_ids), "the zombie must notice every run it lost"
    assert zombie_ends == [], "a zombie's step body ran to its end"
    assert accepted == 0, f"{accepted} engine rows changed after the zombie resumed"
    assert len(reclaimers_outputs) == total, "outputs must be the reclaimer's"
    assert duplicated == 0
    report(
        Figure(
            fault_id="F5",
            title="SIGSTOP past the lease, reclaimed, then SIGCONT (PostgreSQL)",
            runs=total,
            faults=F5_CYCLES,
            lost=total - len(reclaimers_outputs),
            duplicated=duplicated,
            reexecuted_steps=sum(reexecutions(ledger).values()),
            recovery_s=recovery,
            details=(
                f"{F5_CYCLES} pauses of a worker holding {F5_RUNS_PER_CYCLE} runs, lease "
                f"{F5_LEASE}: the zombie noticed {len(noticed)}/{total} (heartbeat refused "
                f"{len(heartbeats_refused)}, lease ran out locally {len(ran_out)}, step write "
                f"refused {len(writes_refused)}), zombie writes accepted {accepted}, "
                f"step bodies cancelled {len(cancel_delays)}/{total} "
                f"({_seconds(cancel_delays)} after SIGCONT), final outputs = reclaimer's "
                f"{len(reclaimers_outputs)}/{total}"
            ),
        )
    )


F5_BLOCK_LEASE = "2s"
F5_BLOCK_MS = 4_000  # twice the lease


async def test_a_blocking_sync_step_keeps_its_lease_and_a_blocked_loop_loses_it(
    pg: Scenario,
) -> None:
    """F5: A sync step blocking its thread keeps the lease; an async step blocking the loop loses it
    to another worker.
    """
    workers = [pg.spawn(concurrency=2, lease=F5_BLOCK_LEASE) for _ in range(2)]
    await pg.wait_ready(workers)
    pids = {worker.pid for worker in workers}

    # A sync step runs in a thread: the event loop stays free and the heartbeat renews.
    [thread_run] = await pg.start_runs(block_thread, [{"n": 1, "block_ms": F5_BLOCK_MS}])

    async def finished(run_id: str) -> bool:
        run = (await pg.db.runs())[run_id]
        return run.status in ("completed", "failed")

    await wait_until(
        lambda: finished(thread_run), timeout=60, message="the thread-blocking run", interval=0.05
    )
    # An async step that calls time.sleep blocks the loop, heartbeat included.
    [loop_run] = await pg.start_runs(block_loop, [{"n": 2, "block_ms": F5_BLOCK_MS}])
    await wait_until(
        lambda: finished(loop_run), timeout=60, message="the loop-blocking run", interval=0.05
    )
    await asyncio.sleep(0.5)  # room for the blocked worker's late writes
    assert_alive(workers)
    stop_all(workers)

    runs = await pg.db.runs()
    ledger = await pg.db.ledger()
    completed = await pg.db.completed_steps()
    duplicated = duplicated_completions(completed)

    thread_starts = [r for r in ledger if r.run_id == thread_run and r.step_name == "block"]
    thread = runs[thread_run]
    assert thread.status == "completed", thread
    assert [r.event for r in thread_starts] == ["start", "end"], "the sync step ran once"
    assert thread.attempts == 1, "the run was never reclaimed: the heartbeat kept its lease"
    assert thread.output["block"]["pid"] == thread.output["after_pid"] == thread_starts[0].pid

    loop = runs[loop_run]
    loop_rows = [r for r in ledger if r.run_id == loop_run and r.step_name == "block"]
    loop_starts = [r for r in loop_rows if r.event == "start"]
    [(_, _, block_output)] = [c for c in completed if c[0] == loop_run and c[1] == "block"]
    assert loop.status == "completed", loop
    assert block_output == loop.output["block"]
    assert (block_output["execution"], block_output["pid"]) in {
        (r.execution, r.pid) for r in loop_starts
    }
    reclaimed = len(loop_starts) > 1
    if reclaimed:
        # The blocked execution lost its lease: its late completion was refused (its
        # body did reach its end) and the last execution's output won. (Usually the
        # reclaimer's; a third execution, by the first worker, when the machine is so
        # loaded that the reclaimer lost its lease too.)
        starts = [(r.execution, r.pid) for r in loop_starts]
        assert (block_output["execution"], block_output["pid"]) == starts[-1], starts
        assert block_output["execution"] != loop_starts[0].execution, starts
        assert block_output["pid"] in pids
        assert loop.output["after_pid"] == block_output["pid"]
    assert duplicated == 0
    report(
        Figure(
            fault_id="F5",
            title="steps blocking 2x the lease: sync (thread) and async (event loop)",
            runs=2,
            faults=2,
            lost=sum(run.status != "completed" for run in (thread, loop)),
            duplicated=duplicated,
            reexecuted_steps=sum(reexecutions(ledger).values()),
            details=(
                f"lease {F5_BLOCK_LEASE}, block {F5_BLOCK_MS / 1000:.0f} s: sync step in a "
                f"thread kept its lease (claims 1, body ran once); async step blocking the loop "
                + (
                    f"lost its lease and was reclaimed (claims {loop.attempts}), late write "
                    "refused, output = reclaimer's"
                    if reclaimed
                    else f"kept its lease (claims {loop.attempts})"
                )
            ),
        )
    )


# -- F6: many workers racing for few runs ---------------------------------------------------------

F6_WORKERS = 8
F6_CONCURRENCY = 8
F6_READY_RUNS = 50
F6_EXPIRED_RUNS = 5


async def test_many_workers_racing_for_few_runs_never_claim_one_twice(pg: Scenario) -> None:
    # Small pools: 8 processes share one server (max_connections 100) with other tests.
    """F6: Many worker processes racing for few runs: no run is claimed twice at once."""
    workers = [
        pg.spawn(concurrency=F6_CONCURRENCY, lease="30s", pool_size=2, ledger_pool_size=1)
        for _ in range(F6_WORKERS)
    ]
    await pg.wait_ready(workers, timeout=90)
    total = F6_READY_RUNS + F6_EXPIRED_RUNS
    # Created invisible (due in an hour), then made due in one statement and announced
    # with one notification, so every worker wakes and claims at the same instant.
    handles = await asyncio.gather(
        *(pg.client.run(race, {"n": n}, available_at="1h") for n in range(total))
    )
    run_ids = [handle.id for handle in handles]
    expired_ids = run_ids[:F6_EXPIRED_RUNS]
    await pg.db.rows(
        "UPDATE {runs} SET available_at = now() WHERE namespace_id = %s AND id = ANY(%s)",
        (pg.namespace, run_ids[F6_EXPIRED_RUNS:]),
    )
    await pg.db.rows(
        "UPDATE {runs} SET status = 'running', worker_id = 'ghost-' || id, attempts = 1,"
        " started_at = now() - interval '1 minute', available_at = now() - interval '1 second'"
        " WHERE namespace_id = %s AND id = ANY(%s)",
        (pg.namespace, expired_ids),
    )
    released_at = await pg.db.now()
    await pg.db.rows("SELECT pg_notify('openworkflow', %s)", (f"w:{pg.schema}",))

    async def all_done() -> bool:
        counts = await pg.db.status_counts()
        return counts.get("completed", 0) + counts.get("failed", 0) == total

    await wait_until(all_done, timeout=90, message="every run to finish", interval=0.1)
    finished_at = await pg.db.now()
    assert_alive(workers)
    stop_all(workers)

    runs = await pg.db.runs()
    ledger = await pg.db.ledger()
    completed = await pg.db.completed_steps()
    starts = Counter((row.run_id, row.step_name) for row in ledger if row.event == "start")
    double_claims = sum(count - 1 for count in starts.values() if count > 1)
    wrong_claim_counts = [
        run.id
        for run in runs.values()
        if run.attempts != (4 if run.id in expired_ids else 3)  # one per pass (+1: the ghost)
    ]
    lost = [
        run.id
        for run in runs.values()
        if run.status != "completed" or run.output["n"] != run.input["n"]
    ]
    first_start: dict[str, float] = {}
    for row in ledger:
        first_start.setdefault(row.run_id, row.at)
    latency = [first_start[run_id] - released_at for run_id in run_ids]
    claims = sum(run.attempts for run in runs.values()) - F6_EXPIRED_RUNS
    share = {row.pid for row in ledger}
    duplicated = duplicated_completions(completed)

    assert set(starts) == {(run_id, step) for run_id in run_ids for step in ("a", "b", "c")}
    assert lost == [] and duplicated == 0 and double_claims == 0, (lost, duplicated)
    assert wrong_claim_counts == [], wrong_claim_counts
    report(
        Figure(
            fault_id="F6",
            title="8 workers x 8 slots racing for 55 runs (PostgreSQL)",
            runs=total,
            faults=F6_EXPIRED_RUNS,
            lost=len(lost),
            duplicated=duplicated + double_claims,
            reexecuted_steps=sum(reexecutions(ledger).values()),
            recovery_s=[latency[i] for i in range(F6_EXPIRED_RUNS)],
            details=(
                f"{F6_WORKERS * F6_CONCURRENCY} slots, {F6_READY_RUNS} ready + "
                f"{F6_EXPIRED_RUNS} expired-lease runs released at once, 3 claims per run: "
                f"{claims} claims, double claims {double_claims}, first-claim latency "
                f"{_seconds(latency)}, {claims / (finished_at - released_at):.0f} claims/s, "
                f"{len(share)}/{F6_WORKERS} processes took work (recovery = expired leases)"
            ),
        )
    )


# -- F19: a poison run that kills its worker every time ------------------------------------------

F19_WORKERS = 3
F19_CONCURRENCY = 3
F19_LEASE = "1s"
F19_NORMAL_RUNS = 30
F19_STEPS = 8
F19_CRASHES_WITHOUT_QUARANTINE = 8  # the scenario stops here if the poison run is never failed
QUARANTINE_AFTER_AT_MOST = 5  # "a few" crash recoveries


@dataclass
class PoisonOutcome:
    """What the F19 scenario observed."""

    normal_ids: list[str]
    poison_id: str
    runs: dict[str, RunRow]
    ledger: list[LedgerRow]
    completed: list[tuple[str, str, Any]]
    deaths: int
    unexpected_exit_codes: list[int]
    elapsed: float

    @property
    def poison_starts(self) -> list[LedgerRow]:
        """The ledger rows of the poison step's executions (each one killed its worker)."""
        return [row for row in self.ledger if row.run_id == self.poison_id and row.event == "start"]


async def _poison_scenario(url: str, folder: Path) -> PoisonOutcome:
    async with scenario(url, folder) as pg:

        def spawn() -> WorkerProcess:
            return pg.spawn(concurrency=F19_CONCURRENCY, lease=F19_LEASE)

        workers = [spawn() for _ in range(F19_WORKERS)]
        await pg.wait_ready(workers)
        normal_ids = await pg.start_runs(
            chain,
            [{"n": n, "steps": F19_STEPS, "slow_ms": 60} for n in range(F19_NORMAL_RUNS)],
        )
        [poison_id] = await pg.start_runs(poison, [{}])
        started = time.monotonic()
        poison_status = "pending"
        while time.monotonic() - started < 90:
            for index, worker in enumerate(workers):
                if not worker.is_alive():  # a supervisor (systemd, Kubernetes) restarts it
                    workers[index] = spawn()
            deaths = sum(not worker.is_alive() for worker in pg.workers)
            counts = await pg.db.status_counts(normal_ids)
            poison_status = (await pg.db.runs())[poison_id].status
            normal_done = counts.get("completed", 0) + counts.get("failed", 0) == len(normal_ids)
            if normal_done and (
                poison_status in ("completed", "failed", "canceled")
                or deaths >= F19_CRASHES_WITHOUT_QUARANTINE
            ):
                break
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        if poison_status not in ("completed", "failed", "canceled"):
            await pg.client.cancel(poison_id)
        for index, worker in enumerate(workers):
            if not worker.is_alive():
                workers[index] = spawn()
        await pg.wait_ready(workers)  # a worker still starting would die of SIGTERM
        for worker in workers:
            worker.stop()
        exit_codes = [worker.process.returncode for worker in pg.workers]
        return PoisonOutcome(
            normal_ids=normal_ids,
            poison_id=poison_id,
            runs=await pg.db.runs(),
            ledger=await pg.db.ledger(),
            completed=await pg.db.completed_steps(),
            deaths=sum(code == -signal.SIGKILL for code in exit_codes),
            unexpected_exit_codes=[code for code in exit_codes if code not in (0, -signal.SIGKILL)],
            elapsed=elapsed,
        )


@pytest.fixture(scope="module")
def poison_outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PoisonOutcome]:
    """The F19 scenario, run once for the two tests below."""
    url = require_server_url()
    yield asyncio.run(_poison_scenario(url, tmp_path_factory.mktemp("f19")))


def test_a_poison_run_does_not_take_the_fleet_down(
    poison_outcome: PoisonOutcome,
) -> None:
    """F19: A run that crashes its worker every time: the other runs still complete."""
    outcome = poison_outcome
    poison_starts = outcome.poison_starts
    normal = [outcome.runs[run_id] for run_id in outcome.normal_ids]
    # A normal run in flight beside the poison at its crashes must not be failed by
    # the crash limit with it (test_a_run_sharing_the_poison_runs_only_worker_completes).
    collateral = [
        run.id
        for run in normal
        if run.status == "failed" and (run.error or {}).get("name") == "StepCrashLoopError"
    ]
    lost = [
        run.id
        for run in normal
        if run.status != "completed"
        or run.output != expected_chain_output(run.input["n"], F19_STEPS)
    ]
    normal_rows = [row for row in outcome.ledger if row.run_id != outcome.poison_id]
    reexecuted = sum(reexecutions(normal_rows).values())
    duplicated = duplicated_completions(outcome.completed)
    poison = outcome.runs[outcome.poison_id]

    assert not lost, [outcome.runs[i] for i in lost]
    assert not collateral
    assert duplicated == 0
    assert outcome.unexpected_exit_codes == [], "workers died of something else than the poison"
    # Every death is the poison's doing: each of its executions killed one worker.
    assert outcome.deaths == len(poison_starts) >= 1
    assert reexecuted <= outcome.deaths * (F19_CONCURRENCY - 1)
    quarantined = poison.status == "failed"
    report(
        Figure(
            fault_id="F19",
            title="poison run crashing its worker, among 30 (PostgreSQL, 3 restarted workers)",
            runs=F19_NORMAL_RUNS + 1,
            faults=outcome.deaths,
            lost=len(lost),
            duplicated=duplicated,
            reexecuted_steps=reexecuted,
            details=(
                f"worker deaths {outcome.deaths} (all from the poison's "
                f"{len(poison_starts)} executions), "
                f"{F19_NORMAL_RUNS - len(lost)}/{F19_NORMAL_RUNS} others completed"
                + (f" ({len(collateral)} failed by the crash limit beside it)" if lost else "")
                + f" in {outcome.elapsed:.1f} s; poison "
                + (
                    f"failed after {len(poison_starts)} crashes: {(poison.error or {}).get('name')}"
                    if quarantined
                    else f"never quarantined: still reclaimed after {len(poison_starts)} "
                    f"crashes (canceled by the test)"
                )
            ),
        )
    )


def test_a_poison_run_is_quarantined_after_repeated_crashes(poison_outcome: PoisonOutcome) -> None:
    """F19: A run that crashes its worker every time fails with StepCrashLoopError after K
    recoveries.
    """
    outcome = poison_outcome
    poison = outcome.runs[outcome.poison_id]
    executions = outcome.poison_starts
    expected = {
        run_id: Expected(output=expected_chain_output(outcome.runs[run_id].input["n"], F19_STEPS))
        for run_id in outcome.normal_ids
    } | {outcome.poison_id: Expected("failed")}
    stored = {run_id: (run.status, run.output) for run_id, run in outcome.runs.items()}
    counted = tally_rows(stored, [(r, s) for r, s, _ in outcome.completed], expected)
    message = str((poison.error or {}).get("message", "")) + str((poison.error or {}).get("name"))
    report(
        Figure(
            fault_id="F19",
            title="poison run quarantined after K crash recoveries",
            runs=F19_NORMAL_RUNS + 1,
            faults=outcome.deaths,
            lost=counted.lost,
            duplicated=counted.duplicated,
            details=(
                f"{poison.status} after {len(executions)} crashes: "
                f"{(poison.error or {}).get('name')}: {message.split(' (')[0]}"
            ),
        )
    )
    assert counted.lost == 0 and counted.duplicated == 0, counted
    assert poison.status == "failed", (
        f"poison run is {poison.status} after {len(executions)} crashes of its worker"
    )
    assert len(executions) <= QUARANTINE_AFTER_AT_MOST
    assert re.search(r"crash|lease|recover|abandon|quarantin", message, re.IGNORECASE), message


async def test_a_run_sharing_the_poison_runs_only_worker_completes(pg: Scenario) -> None:
    # One worker process with two slots, restarted whenever it dies: the poison run and
    # an innocent run with a 2 s step are always claimed together, so every crash also
    # interrupts the innocent run's step. Only the poison should be failed.
    """F19: An innocent run on the poison run's only worker completes."""
    worker = pg.spawn(concurrency=2, lease="1s")
    await pg.wait_ready([worker])
    [innocent] = await pg.start_runs(chain, [{"n": 7, "steps": 2, "slow_ms": 2000}])
    [poison_id] = await pg.start_runs(poison, [{"delay_ms": 300}])
    started = time.monotonic()
    while time.monotonic() - started < 60:
        if not worker.is_alive():
            worker = pg.spawn(concurrency=2, lease="1s")
        runs = await pg.db.runs()
        if all(runs[i].status in ("completed", "failed") for i in (innocent, poison_id)):
            break
        if sum(not w.is_alive() for w in pg.workers) >= F19_CRASHES_WITHOUT_QUARANTINE:
            break
        await asyncio.sleep(0.05)
    runs = await pg.db.runs()
    deaths = sum(not w.is_alive() for w in pg.workers)
    if runs[poison_id].status not in ("completed", "failed"):
        await pg.client.cancel(poison_id)
    counted = await tally_scenario(
        pg.db,
        {innocent: Expected(output=expected_chain_output(7, 2)), poison_id: Expected("failed")},
    )
    report(
        Figure(
            fault_id="F19",
            title="innocent run sharing the poison run's only worker",
            runs=2,
            faults=deaths,
            lost=counted.lost,
            duplicated=counted.duplicated,
            details=(
                f"poison {runs[poison_id].status} after {deaths} crashes, "
                f"the innocent run {runs[innocent].status}"
            ),
        )
    )
    assert counted.duplicated == 0, counted
    assert runs[poison_id].status == "failed", runs[poison_id]
    assert runs[innocent].status == "completed", (
        f"the innocent run is {runs[innocent].status} after {deaths} crashes caused by the "
        f"poison run: {runs[innocent].error}"
    )
    assert runs[innocent].output == expected_chain_output(7, 2)
