"""``ow signal send``: deliver a signal to the runs waiting on it."""

from __future__ import annotations

import click

from openworkflow.cli import common, console, failure
from openworkflow.cli.options import data_options


@click.group()
@data_options
def signal() -> None:
    """Send signals to waiting runs."""


@signal.command()
@click.argument("name", metavar="SIGNAL")
@click.option("--data", metavar="JSON|@FILE", help="Payload as JSON, @file or @- (stdin).")
@click.option("--idempotency-key", metavar="K", help="A repeated key does not deliver again.")
@data_options
def send(name: str, data: str | None, idempotency_key: str | None) -> None:
    """Deliver SIGNAL to every run waiting on it and print their ids.

    Signals are not buffered: a run that starts waiting later does not see it,
    so when no run was waiting the signal is dropped and the exit code is 1.
    """
    payload = common.json_argument(data, "--data")
    _, settings = common.load()
    run_ids = common.run_async(
        common.with_client(
            settings,
            lambda client: client.send_signal(name, payload, idempotency_key=idempotency_key),
        )
    )
    if console.wants_json():
        console.print_json({"signal": name, "workflow_run_ids": run_ids})
    else:
        for run_id in run_ids:
            click.echo(run_id)
    if run_ids:
        if not console.wants_json():
            console.say(f"Signal {name!r} reached {len(run_ids)} run(s).", style="green")
        return
    console.say(
        f"No run was waiting for signal {name!r}; signals are not buffered, so it was dropped "
        "(a run that waits for it later will not see it). Send it again once a run waits "
        "for it (`ow runs list --status running` shows the candidates).",
        style="yellow",
    )
    raise click.exceptions.Exit(failure.EXIT_FAILED)
