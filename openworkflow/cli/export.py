"""``ow runs export ID [--output FILE]``: a run and its step attempts as a JSON history.

The history (format in :mod:`openworkflow.testing.history`) is what
:func:`openworkflow.testing.replay` replays today's workflow code against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from openworkflow.cli import common, console, failure
from openworkflow.cli.options import data_options
from openworkflow.client import OpenWorkflow
from openworkflow.redaction import scrub_known
from openworkflow.testing.history import dump_run_history, export_run_history


@click.command(name="export")
@click.argument("run_id", metavar="ID")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the history to FILE (default: print it on stdout).",
)
@data_options
def export_run(run_id: str, output: Path | None) -> None:
    """Export a run and every step attempt as a JSON history, for replay tests.

    `openworkflow.testing.replay(workflow, FILE)` then checks that today's
    code still replays the run. ID may be the start of a run id, as long as
    only one run starts with it.
    """
    _, settings = common.load()

    async def export(client: OpenWorkflow) -> dict[str, Any]:
        run = await client.find_run(run_id)
        return await export_run_history(client.backend, run.id)

    document = common.on_existing_run(settings, run_id, export)
    text = dump_run_history(document)
    if output is None:
        click.echo(scrub_known(text), nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as error:
        raise failure.CliError(f"cannot write {output}: {error.strerror}") from None
    run = document["run"]
    count = len(document["step_attempts"])
    if console.wants_json():
        console.print_json(
            {"workflow_run_id": run["id"], "output": str(output), "step_attempts": count}
        )
    else:
        console.say(
            f"Exported run {run['id']} ({run['workflow_name']}), {count} step attempts, "
            f"to {output}.",
            style="green",
        )
