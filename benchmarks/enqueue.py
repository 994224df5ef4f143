"""Enqueue throughput: starting runs, against the TypeScript original in the same run.

    .venv/bin/python -m benchmarks.enqueue [--runs 1000] [--reps 3]
        [--backends postgres sqlite] [--postgres-url URL] [--no-peer] [--json]

Three cases per backend, each in a fresh namespace (PostgreSQL; its rows are
deleted afterwards) or a fresh database file (SQLite), timed from the first
call to the last run committed, in runs/s:

``ow.run x N``      N concurrent ``ow.run`` calls (``asyncio.gather``);
``ow.run_many``     one ``ow.run_many`` call of N runs;
``ts runWorkflow``  the original (npm ``openworkflow`` 0.10.1, see
                    :mod:`benchmarks.peer.openworkflow_ts`): N concurrent
                    ``runWorkflow`` calls (``Promise.all``), the enqueue phase
                    of its own benchmark (its runs, of one no-op step, are then
                    worked off untimed).

Each side connects (and migrates) before the clock starts. Every repetition
runs all cases; the order of the cases is reversed every other repetition,
so a drift of the (shared) machine does not favour one side. Reported: the
median and range over the repetitions, and our medians as a ratio of the
original's. ``--json`` prints one JSON object instead of the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks.__main__ import DEFAULT_POSTGRES_URL, SCHEMA, _target
from benchmarks.cases import bench, open_backend
from openworkflow import OpenWorkflow, event_loop

OURS_RUN = "ow.run"
OURS_RUN_MANY = "ow.run_many"
PEER = "ts_runWorkflow"
CASES = (OURS_RUN, OURS_RUN_MANY, PEER)
BACKENDS = ("postgres", "sqlite")


async def _enqueue(kind: str, url: str, namespace: str, runs: int, case: str) -> float:
    """Runs/s of one of our cases on a fresh backend (connected before timing)."""
    backend = open_backend(kind, url, namespace, SCHEMA)
    try:
        client = OpenWorkflow(backend)
        await client.counts()  # connect and migrate, as the original's connect() does
        started = time.perf_counter()
        if case == OURS_RUN_MANY:
            handles = await client.run_many(bench, range(runs))
        else:
            handles = await asyncio.gather(*(client.run(bench, index) for index in range(runs)))
        elapsed = time.perf_counter() - started
        if len({handle.id for handle in handles}) != runs:
            raise RuntimeError(f"{case} started {len(handles)} runs, expected {runs} distinct")
        return runs / elapsed
    finally:
        await backend.stop()


def _ours(kind: str, runs: int, case: str, postgres_url: str) -> float:
    with _target(kind, postgres_url) as (url, namespace):
        return event_loop.run(_enqueue(kind, url, namespace, runs, case))


def _theirs(peer: Any, kind: str, runs: int, postgres_url: str) -> float:
    from benchmarks.peer.openworkflow_ts import run_case

    figures = run_case(peer, backend=kind, runs=runs, steps=1, postgres_url=postgres_url)
    return runs / float(str(figures["enqueue_s"]))


def _prepare_peer(enabled: bool) -> tuple[Any, str | None]:
    """The installed original, or None and why not."""
    if not enabled:
        return None, "--no-peer"
    from benchmarks.peer.openworkflow_ts import PeerUnavailable, prepare

    try:
        return prepare(), None
    except PeerUnavailable as error:
        return None, str(error)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every case, ``args.reps`` times, alternating the order; figures in runs/s."""
    peer, why_no_peer = _prepare_peer(not args.no_peer)
    samples: dict[str, dict[str, list[float]]] = {kind: {} for kind in args.backends}
    for rep in range(args.reps):
        order = CASES if rep % 2 == 0 else CASES[::-1]
        for kind in args.backends:
            for case in order:
                rate = _one_case(peer, kind, case, args)
                if rate is not None:
                    samples[kind].setdefault(case, []).append(rate)
                    _log(f"rep {rep + 1}: {kind} {case}: {rate:,.0f} runs/s")
    return {
        "runs": args.runs,
        "reps": args.reps,
        "unit": "runs/s",
        "peer": None if peer is None else {"version": "0.10.1", "node": str(peer.node)},
        "peer_skipped": why_no_peer,
        "backends": {kind: _summary(by_case) for kind, by_case in samples.items()},
    }


def _one_case(peer: Any, kind: str, case: str, args: argparse.Namespace) -> float | None:
    if case != PEER:
        return _ours(kind, args.runs, case, args.postgres_url)
    if peer is None or (kind == "sqlite" and not peer.sqlite_supported):
        return None
    return _theirs(peer, kind, args.runs, args.postgres_url)


def _summary(by_case: dict[str, list[float]]) -> dict[str, Any]:
    """Median and range per case, and our medians over the original's."""
    cases = {
        case: {
            "median": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
            "samples": rates,
        }
        for case, rates in by_case.items()
    }
    theirs = cases.get(PEER)
    ratios = {}
    if theirs is not None:
        for case in (OURS_RUN, OURS_RUN_MANY):
            if case in cases:
                ratios[f"{case}/ts"] = cases[case]["median"] / theirs["median"]
    return {"cases": cases, "ratios": ratios}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def print_table(result: dict[str, Any], write: Callable[[str], None] = print) -> None:
    """The figures as a plain-text table."""
    write(f"enqueue of {result['runs']} runs, {result['reps']} repetition(s), runs/s")
    write(f"{'backend':<9} {'case':<15} {'median':>9} {'range':>19} {'vs ts':>7}")
    for kind, summary in result["backends"].items():
        for case, figures in summary["cases"].items():
            ratio = summary["ratios"].get(f"{case}/ts")
            spread = f"{figures['min']:,.0f}-{figures['max']:,.0f}"
            write(
                f"{kind:<9} {case:<15} {figures['median']:>9,.0f} {spread:>19} "
                f"{'' if ratio is None else f'{ratio:.2f}x':>7}"
            )
    if result["peer_skipped"]:
        write(f"(TypeScript original not run: {result['peer_skipped']})")


def main(argv: list[str] | None = None) -> None:
    """Parse the options, measure, and print the table (or ``--json``)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.enqueue",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=1000, help="runs per case (default 1000)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("OPENWORKFLOW_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="default: $OPENWORKFLOW_TEST_POSTGRES_URL, else " + DEFAULT_POSTGRES_URL,
    )
    parser.add_argument("--no-peer", action="store_true", help="skip the TypeScript original")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.reps < 1:
        parser.error("--runs and --reps must be positive")
    result = measure(args)
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        print_table(result)


if __name__ == "__main__":
    main()
