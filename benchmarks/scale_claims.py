"""Big tables (issue 22 item 5): the claim and the throughput workload with and without 1M runs.

Used by ``benchmarks.scale``: before the finished runs are generated it runs the
throughput workload (``benchmarks.cases throughput``, ``--compare-runs`` runs
of 4 no-op steps, in a namespace of its own) on the empty tables and, on
PostgreSQL, ``EXPLAIN ANALYZE`` of the claim in the scale namespace; after the
generation it does both again. The claim statements are the backend's own
(captured by ``benchmarks.claim_plan.StatementRecorder``), each run in a
transaction rolled back, on a connection with the backend's session settings
and no server-side prepared statements (a custom plan, as the first executions
get).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from typing import Any

import psycopg

from benchmarks.claim_plan import StatementRecorder, routed, worker_ids
from benchmarks.claim_plan_keys import SESSION_OPTIONS, ServerCost, explain
from openworkflow.postgres import PostgresBackend

CLAIM_SLOTS = (1, 10)


class _ScaleRecorder(StatementRecorder):
    """The claim statements a worker of the scale namespace would send."""

    def __init__(self, url: str, schema: str, namespace: str) -> None:
        PostgresBackend.__init__(self, url, namespace, schema, run_migrations=False, listen=False)
        self.recorded = []


async def throughput(
    backend: str, url: str, schema: str, runs: int, step_style: str = "sync"
) -> dict[str, Any]:
    """One throughput case in its own process and namespace of the same tables."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.cases",
        "throughput",
        f"--backend={backend}",
        f"--url={url}",
        f"--namespace=bench-{uuid.uuid4()}",
        f"--schema={schema}",
        f"--runs={runs}",
        f"--step-style={step_style}",
    ]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"throughput case failed:\n{err.decode()[-4000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def claim_costs(url: str, schema: str, namespace: str, runs: int) -> list[str]:
    """Median (min-max) EXPLAIN ANALYZE execution time of the claim, per slot count."""
    recorder = _ScaleRecorder(url, schema, namespace)
    lines = []
    cases = [
        ("any workflow", routed(None)),
        ("routed to workflow-0", routed([("workflow-0", None)])),
    ]
    with psycopg.connect(url, prepare_threshold=None, options=SESSION_OPTIONS) as connection:
        for slots in CLAIM_SLOTS:
            for label, claim in cases:
                statement = await recorder.statement(claim(recorder, worker_ids(slots)))
                cost = ServerCost.of(explain(connection, statement.query, statement.params, runs))
                lines.append(
                    f"  claim of {slots:>2} slot(s), {label:<20} execution {cost.execution} ms,"
                    f" planning {cost.planning} ms, {cost.blocks} buffers, leased {cost.leased},"
                    f" seq scan of runs: {'yes' if cost.seq_scanned else 'no'}"
                )
    await recorder.stop()
    return lines


def rate(figures: dict[str, Any]) -> float:
    """Workflows per second of a throughput case."""
    return int(figures["runs"]) / float(figures["process_s"])


def compare_lines(empty: list[dict[str, Any]], big: list[dict[str, Any]], runs: int) -> list[str]:
    """The throughput workload on the empty tables and beside the finished runs."""
    empty_rates = sorted(rate(case) for case in empty)
    big_rates = sorted(rate(case) for case in big)
    empty_median = empty_rates[len(empty_rates) // 2]
    big_median = big_rates[len(big_rates) // 2]
    return [
        f"throughput workload ({runs} runs x 4 steps), median (range) of {len(empty)}:",
        f"  empty tables:          {empty_median:,.0f} workflows/s"
        f" ({empty_rates[0]:,.0f}-{empty_rates[-1]:,.0f})",
        f"  with the finished runs: {big_median:,.0f} workflows/s"
        f" ({big_rates[0]:,.0f}-{big_rates[-1]:,.0f}),"
        f" {100 * (big_median / empty_median - 1):+.1f} % (goal: within 20 %)",
    ]


async def repeated_throughput(
    args: argparse.Namespace, url: str, schema: str
) -> list[dict[str, Any]]:
    """``--compare-repeat`` throughput cases, one after another."""
    return [
        await throughput(args.backend, url, schema, args.compare_runs)
        for _ in range(args.compare_repeat)
    ]
