"""Measure every benchmark and regenerate ``docs/performance.md`` from their output.

    .venv/bin/python -m benchmarks.report [--reps 3] [--sections throughput,timers,...]
        [--postgres-url URL] [--out docs/performance.md] [--render-only] [--allow-dirty]

No figure in the page is typed by hand: each section runs a benchmark command
(in its own processes) and the page shows what the command printed, or
figures computed from it. Comparisons with the TypeScript original run both
engines in the same repetition, the order of the two alternated from one
repetition to the next, and show the median and the range (min-max) of the
repetitions. The raw results are kept in ``.benchmarks/report.json``;
``--render-only`` rewrites the page from them (after a template edit).

The page names the commit it was measured at; a working tree with
uncommitted changes to the engine or the benchmarks is refused (the figures
would describe no commit) unless ``--allow-dirty``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.report_sections import SECTIONS, Context

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / ".benchmarks" / "report.json"
TEMPLATE = Path(__file__).resolve().parent / "performance_template.md"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def _dirty_paths() -> list[str]:
    """Uncommitted changes that would make the figures describe no commit."""
    command = ["git", "status", "--porcelain", "--", "openworkflow", "benchmarks", "pyproject.toml"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    # Each line is "XY path": the status columns may start with a space (no strip).
    return [line[3:] for line in done.stdout.splitlines() if line.strip()]


def _tool_version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "not installed"
    return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else "?"


def machine(postgres_url: str) -> dict[str, Any]:
    """What the figures were measured on."""
    server = "?"
    try:
        import psycopg

        with psycopg.connect(postgres_url, autocommit=True) as connection:
            row = connection.execute("SHOW server_version").fetchone()
            server = str(row[0]) if row else "?"
    except Exception as error:  # the page says so rather than failing the whole run
        server = f"unreachable ({type(error).__name__})"
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "postgres": server,
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "system": f"{platform.system()} {platform.release()}",
    }


def measure(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """Run the chosen sections; a section that fails is recorded as failed, not dropped."""
    context = Context(reps=args.reps, postgres_url=args.postgres_url, quick=args.quick)
    results: dict[str, Any] = {
        "commit": _git("rev-parse", "--short=12", "HEAD"),
        "commit_date": _git("show", "-s", "--format=%cI", "HEAD"),
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "dirty": _dirty_paths(),
        "reps": args.reps,
        "quick": args.quick,
        "machine": machine(args.postgres_url),
        "sections": {},
    }
    for name in names:
        run: Callable[[Context], dict[str, Any]] = SECTIONS[name]
        print(f"== {name}", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            section = run(context)
            section["ok"] = True
        except Exception as error:
            section = {"ok": False, "error": f"{type(error).__name__}: {error}"[-2000:]}
            print(f"   {name} failed: {section['error']}", file=sys.stderr)
        section["seconds"] = round(time.monotonic() - started, 1)
        results["sections"][name] = section
        _save(results)  # a long run interrupted later keeps what it measured
    return results


def _save(results: dict[str, Any]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def render(results: dict[str, Any], out: Path) -> None:
    """Write the page from the template and the results."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # Markdown, not HTML
    )
    text = environment.get_template(TEMPLATE.name).render(results=results, **results)
    out.write_text(text)
    print(f"wrote {out}", file=sys.stderr)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__)
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each comparison")
    parser.add_argument(
        "--sections",
        default="all",
        help=f"comma-separated, of: {', '.join(SECTIONS)} (default: all)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("OPENWORKFLOW_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--render-only", action="store_true", help="reuse the saved results")
    parser.add_argument("--allow-dirty", action="store_true")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller sizes, to check the command (writes .benchmarks/performance.quick.md)",
    )
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    return args


def _section_names(spec: str) -> list[str]:
    if spec == "all":
        return list(SECTIONS)
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown:
        raise SystemExit(
            f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}"
        )
    return names


def main(argv: list[str] | None = None) -> None:
    """Measure (unless ``--render-only``), then write the page."""
    args = parse_args(argv)
    if args.render_only:
        if not RESULTS.exists():
            raise SystemExit(f"no saved results at {RESULTS}: run without --render-only first")
        results = json.loads(RESULTS.read_text())
    else:
        dirty = _dirty_paths()
        if dirty and not args.allow_dirty:
            raise SystemExit(
                "uncommitted changes in " + ", ".join(dirty[:5]) + ": commit them first, so "
                "the figures describe a commit (or pass --allow-dirty for a look)"
            )
        names = _section_names(args.sections)
        previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else None
        results = measure(args, names)
        if previous is not None and previous.get("commit") == results["commit"]:
            # Sections measured earlier at the same commit are kept (a partial rerun).
            for name, section in previous.get("sections", {}).items():
                results["sections"].setdefault(name, section)
            _save(results)
    missing = [name for name in SECTIONS if name not in results["sections"]]
    if args.quick or results.get("quick"):
        # A quick run checks the command, not the engine: never the real page.
        render(results, RESULTS.parent / "performance.quick.md")
        return
    if missing:
        print(f"sections not measured at this commit: {', '.join(missing)}", file=sys.stderr)
    render(results, args.out)


if __name__ == "__main__":
    main()
