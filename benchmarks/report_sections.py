"""The sections of ``python -m benchmarks.report``: each runs one benchmark and keeps its output.

A section returns a JSON-able dict: the raw figures of every repetition, and
``markdown``, the table or text the page shows (computed here from those
figures, or printed by the benchmark command itself).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

BACKENDS = ("postgres", "sqlite")
PEER = "openworkflow-ts"


@dataclass(frozen=True)
class Context:
    """What every section is given."""

    reps: int
    postgres_url: str
    quick: bool = False


def spread(values: Sequence[float], digits: int = 0) -> str:
    """``median (min-max)`` of repetitions, as the page shows every repeated figure."""
    if not values:
        return "n/a"
    fmt = f"{{:,.{digits}f}}"
    middle = fmt.format(statistics.median(values))
    if len(values) == 1:
        return f"{middle} (1 run)"
    return f"{middle} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def run_module(module: str, *args: str, timeout: float = 3600) -> str:
    """Run ``python -m benchmarks.<module> ARGS`` and return what it printed."""
    command = [sys.executable, "-m", f"benchmarks.{module}", *args]
    print("   $ " + " ".join(command[1:]), file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[2:])} exited {done.returncode}: {done.stderr[-1500:]}"
        )
    return done.stdout


def run_json(module: str, *args: str, timeout: float = 3600) -> Any:
    """Run a benchmark module with ``--json`` and parse its last line."""
    lines = run_module(module, *args, "--json", timeout=timeout).strip().splitlines()
    if not lines:
        raise RuntimeError(f"benchmarks.{module} printed nothing")
    return json.loads(lines[-1])


# -- throughput against the original --------------------------------------------------------


def _rate(figures: dict[str, Any]) -> float:
    return float(figures["runs"]) / float(figures["process_s"])


def _enqueue_rate(figures: dict[str, Any]) -> float:
    return float(figures["runs"]) / float(figures["enqueue_s"])


def _cpu_ms(figures: dict[str, Any]) -> float:
    cpu = float(figures["cpu_user_s"]) + float(figures["cpu_sys_s"])
    return 1000 * cpu / float(figures["runs"])


def throughput(context: Context) -> dict[str, Any]:
    """The original's benchmark, our two step styles and the original, order alternated."""
    from benchmarks.__main__ import run_ours, run_peer
    from benchmarks.peer.openworkflow_ts import prepare

    peer = prepare()
    sizes = [200] if context.quick else [1000, 5000]
    cases = [(style, runs) for runs in sizes for style in ("async", "sync")]
    ours: dict[str, list[dict[str, Any]]] = {}
    theirs: dict[str, list[dict[str, Any]]] = {}
    for rep in range(context.reps):
        for backend in BACKENDS:
            for runs in sizes:

                def run_peer_case(backend: str = backend, runs: int = runs) -> None:
                    key = f"{backend}/{runs}"
                    figures = run_peer(peer, backend, runs, 100, context.postgres_url)
                    theirs.setdefault(key, []).append(dict(figures))

                steps: list[Callable[[], None]] = []
                for style, size in cases:
                    if size != runs:
                        continue

                    def run_our_case(
                        backend: str = backend, style: str = style, runs: int = runs
                    ) -> None:
                        key = f"{backend}/{style}/{runs}"
                        figures = run_ours(
                            backend, runs, 100, context.postgres_url, step_style=style
                        )
                        ours.setdefault(key, []).append(figures)

                    steps.append(run_our_case)
                # Even repetitions run ours first, odd ones the original first.
                order = [*steps, run_peer_case] if rep % 2 == 0 else [run_peer_case, *steps]
                for step in order:
                    step()
    return {
        "peer": f"npm openworkflow on {peer.node}",
        "ours": ours,
        "theirs": theirs,
        "markdown": _throughput_markdown(ours, theirs, cases),
        "summary": _throughput_summary(ours, theirs, cases),
    }


def _throughput_markdown(
    ours: dict[str, list[dict[str, Any]]],
    theirs: dict[str, list[dict[str, Any]]],
    cases: list[tuple[str, int]],
) -> str:
    header = [
        "backend",
        "runs",
        "step bodies",
        "workflows/s",
        "the original's",
        "ratio",
        "enqueue/s",
        "the original's",
        "worker CPU ms/run",
        "the original's",
        "peak RSS MB",
        "the original's",
    ]
    rows = []
    for backend in BACKENDS:
        for style, runs in cases:
            mine = ours.get(f"{backend}/{style}/{runs}", [])
            peer = theirs.get(f"{backend}/{runs}", [])
            if not mine:
                continue
            ratios = [_rate(a) / _rate(b) for a, b in zip(mine, peer, strict=False)]
            rows.append(
                [
                    backend,
                    f"{runs:,}",
                    "`def`" if style == "sync" else "`async def`",
                    spread([_rate(f) for f in mine]),
                    spread([_rate(f) for f in peer]),
                    spread(ratios, 2) + "x" if ratios else "n/a",
                    spread([_enqueue_rate(f) for f in mine]),
                    spread([_enqueue_rate(f) for f in peer]),
                    spread([_cpu_ms(f) for f in mine], 2),
                    spread([_cpu_ms(f) for f in peer], 2),
                    spread([float(f["peak_rss_mb"]) for f in mine]),
                    spread([float(f["peak_rss_mb"]) for f in peer]),
                ]
            )
    return table(header, rows)


def _throughput_summary(
    ours: dict[str, list[dict[str, Any]]],
    theirs: dict[str, list[dict[str, Any]]],
    cases: list[tuple[str, int]],
) -> list[str]:
    """Sentences computed from the figures (so no claim outlives the data)."""
    lines = []
    shares: list[float] = []
    for backend in BACKENDS:
        for style, runs in cases:
            mine = ours.get(f"{backend}/{style}/{runs}", [])
            peer = theirs.get(f"{backend}/{runs}", [])
            pairs = list(zip(mine, peer, strict=False))
            if not pairs:
                continue
            ratio = statistics.median(_rate(a) / _rate(b) for a, b in pairs)
            enqueue = statistics.median(_enqueue_rate(a) / _enqueue_rate(b) for a, b in pairs)
            shares += [float(a["peak_rss_mb"]) / float(b["peak_rss_mb"]) for a, b in pairs]
            lines.append(
                f"{backend}, {runs:,} runs, {style} step bodies: {ratio:.2f}x the original's "
                f"workflows/s and {enqueue:.2f}x its enqueue rate (medians of the "
                "per-repetition ratios)."
            )
    if shares:
        lines.append(
            f"Peak RSS is {100 * min(shares):.0f}-{100 * max(shares):.0f} % of the original's "
            f"across these cases and repetitions."
        )
    for backend in BACKENDS:
        small = ours.get(f"{backend}/async/1000", [])
        large = ours.get(f"{backend}/async/5000", [])
        if small and large:
            growth = statistics.median(float(f["process_s"]) for f in large) / statistics.median(
                float(f["process_s"]) for f in small
            )
            lines.append(
                f"{backend}: 5,000 runs took {growth:.2f}x the time of 1,000 (linear: 5.00x)."
            )
    return lines


def pickup(context: Context) -> dict[str, Any]:
    """Run created to first step started, against an idle worker in another process."""
    from benchmarks.__main__ import run_pickup

    count = 50 if context.quick else 200
    by_backend: dict[str, list[dict[str, float]]] = {}
    for _ in range(context.reps):
        for backend in BACKENDS:
            by_backend.setdefault(backend, []).append(
                run_pickup(backend, count, context.postgres_url)
            )
    rows = []
    for backend, reps in by_backend.items():
        rows.append(
            [backend]
            + [spread([rep[key] for rep in reps], 1) for key in ("pickup_p50", "pickup_p99")]
            + [spread([rep[key] for rep in reps], 1) for key in ("result_p50", "result_p99")]
        )
    header = ["backend", "pickup p50 ms", "pickup p99 ms", "result() p50 ms", "result() p99 ms"]
    return {"runs_per_rep": count, "reps": by_backend, "markdown": table(header, rows)}


# -- the other benchmarks, as they print themselves -------------------------------------------


def fan_out(context: Context) -> dict[str, Any]:
    """One parent with 10,000 children (one repetition per backend unless --reps says more)."""
    children = "500" if context.quick else "10000"
    reps = "1"  # 10,000 children take minutes on PostgreSQL: one repetition, said in the table
    rows, raw = [], {}
    for backend in BACKENDS:
        figures = run_json(
            "fan_out",
            f"--backend={backend}",
            f"--children={children}",
            f"--reps={reps}",
            f"--postgres-url={context.postgres_url}",
        )
        raw[backend] = figures
        walls = [float(rep["wall_s"]) for rep in figures["reps"]]
        rows.append([backend, f"{int(children):,}", spread(walls, 1), str(len(walls))])
    header = ["backend", "children", "wall s", "repetitions"]
    return {"raw": raw, "markdown": table(header, rows)}


def printed(module: str, *args: str, quick_args: Sequence[str] = ()) -> Callable[[Context], Any]:
    """A section that shows what a benchmark command printed (it formats its own figures)."""

    def section(context: Context) -> dict[str, Any]:
        extra = [*quick_args] if context.quick else []
        filled = [arg.format(reps=context.reps, url=context.postgres_url) for arg in args]
        text = run_module(module, *filled, *extra).strip()
        command = f"python -m benchmarks.{module} " + " ".join(filled + extra)
        if not text.startswith("|"):  # plain text output: shown as printed
            text = f"```text\n$ {command}\n{text}\n```"
        return {"command": command, "markdown": text}

    return section


SECTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "throughput": throughput,
    "pickup": pickup,
    "enqueue": printed(
        "enqueue", "--reps={reps}", "--postgres-url={url}", quick_args=["--runs=200"]
    ),
    "timers": printed(
        "timers", "--reps={reps}", "--postgres-url={url}", quick_args=["--sleeps=20"]
    ),
    "idle": printed("idle", "--reps={reps}", "--postgres-url={url}", quick_args=["--seconds=5"]),
    "workers": printed(
        "workers", "--reps={reps}", "--postgres-url={url}", quick_args=["--runs=300"]
    ),
    "big_tables": printed(
        "scale",
        "--backend=postgres",
        "--runs=1000000",
        "--big-table-only",
        "--compare-runs=1000",
        "--compare-repeat={reps}",
        "--postgres-url={url}",
        quick_args=["--runs=20000"],
    ),
    "fan_out": fan_out,
    "streams": printed(
        "stream_latency",
        "--runs={reps}",
        "--postgres-url={url}",
        quick_args=["--items=50"],
    ),
    "claims": printed(
        "claim_plan", "--runs=9", "--postgres-url={url}", quick_args=["--pending=5000"]
    ),
}
