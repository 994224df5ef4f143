"""``ow runs tail ID KEY``: print a run's stream as it grows, one JSON item per line."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from openworkflow.cli import common, console, failure
from openworkflow.cli.options import data_options
from openworkflow.client import OpenWorkflow
from openworkflow.core.streams import check_stream_key
from openworkflow.errors import InvalidNameError
from openworkflow.redaction import scrub_known
from openworkflow.settings import EffectiveSettings

EXIT_INTERRUPTED = 130
"""128 + SIGINT: what a shell reports for a command stopped with Ctrl-C."""


@click.command(name="tail")
@click.argument("run_id", metavar="ID")
@click.argument("key", metavar="KEY")
@data_options
def tail(run_id: str, key: str) -> None:
    """Print stream KEY of a run as it grows, until the run finishes.

    Every item the workflow gave `step.stream(KEY, value)` is printed, from the
    first and in order, as compact JSON on a line of its own; a string is
    printed as JSON too (quoted), so stdout is JSON Lines with or without
    --json. Each line is flushed at once, so a pipe sees items as they come.

    Exit code 0 once the run has finished (whatever its outcome) and every
    item was printed, or when the reader of a pipe (`| head -3`) has gone;
    130 on Ctrl-C. ID may be the start of a run id, as long as only one run
    starts with it.
    """
    stream_key = _checked_key(key)
    try:
        _, settings = common.load()
        pipe_closed = _follow(settings, run_id, stream_key)
    except KeyboardInterrupt:
        # Ctrl-C is how a user stops following: no traceback, no "Aborted!".
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    if pipe_closed:
        _discard_stdout()


def _checked_key(key: str) -> str:
    try:
        return check_stream_key(key)
    except (TypeError, InvalidNameError) as error:
        raise failure.usage_error(
            f"invalid stream key {key!r}: {error}",
            hint="pass the key the workflow gives step.stream(KEY, value)",
        ) from None


def _follow(settings: EffectiveSettings, run_id: str, key: str) -> bool:
    """Print the stream until the run ends; True when stdout was closed first."""

    async def follow(client: OpenWorkflow) -> bool:
        run = await client.find_run(run_id)
        console.say(
            f"Following stream {key!r} of run {run.id} ({run.workflow_name}) "
            "until the run finishes.",
            style="dim",
        )
        count = 0
        try:
            async for item in client.handle(run.id).stream(key):
                _print_item(item)
                count += 1
        except BrokenPipeError:
            return True
        await _say_finished(client, run.id, key, count)
        return False

    return common.on_existing_run(settings, run_id, follow)


def _print_item(item: Any) -> None:
    # One line per item: a value holding a newline is escaped by json.dumps.
    line = scrub_known(json.dumps(item, ensure_ascii=False, default=str))
    sys.stdout.write(line + "\n")
    sys.stdout.flush()  # a pipe must see each item as it comes, not when a buffer fills


async def _say_finished(client: OpenWorkflow, run_id: str, key: str, count: int) -> None:
    """A closing note on stderr: the run's outcome, and the streams it has if KEY was empty."""
    run = await client.get_run(run_id)
    status = run.status if run is not None else "gone"
    console.say(f"Run {run_id} {status}; {count} item(s) of stream {key!r} printed.", style="dim")
    if count:
        return
    keys = [stream.key for stream in await client.backend.list_run_streams(run_id)]
    others = ", ".join(repr(name) for name in keys) if keys else "none"
    console.say(f"Streams this run wrote: {others}.", style="yellow")


def _discard_stdout() -> None:
    """Point stdout at /dev/null: the exit-time flush must not fail on the closed pipe again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
