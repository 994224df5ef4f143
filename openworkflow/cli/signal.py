"""``ow signal send``: deliver a signal to the runs waiting on it."""

from __future__ import annotations

import click

from openworkflow.cli import common
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

    Signals are not buffered: a run that starts waiting later does not see it.
    """
    payload = common.json_argument(data, "--data")
    _, settings = common.load()
    run_ids = common.run_async(
        common.with_client(
            settings,
            lambda client: client.send_signal(name, payload, idempotency_key=idempotency_key),
        )
    )
    if common.wants_json():
        common.print_json({"signal": name, "workflow_run_ids": run_ids})
        return
    for run_id in run_ids:
        click.echo(run_id)
    if run_ids:
        common.say(f"Signal {name!r} reached {len(run_ids)} run(s).", style="green")
    else:
        common.say(
            f"No run is waiting on signal {name!r}; nothing was delivered "
            "(signals are not buffered).",
            style="yellow",
        )
