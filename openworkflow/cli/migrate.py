"""``ow migrate``: create or upgrade the tables, or print the SQL that would."""

from __future__ import annotations

import click

from openworkflow.cli import common, console, database, failure
from openworkflow.cli.options import data_options
from openworkflow.settings import EffectiveSettings


@click.command()
@click.option(
    "--print", "print_sql", is_flag=True, help="Print the SQL for the backend; do not connect."
)
@click.option("--backend", "backend_url", metavar="URL", help="Database URL (overrides config).")
@click.option("--schema", "schema_name", metavar="NAME", help="PostgreSQL schema.")
@data_options
def migrate(print_sql: bool, backend_url: str | None, schema_name: str | None) -> None:
    """Apply the migrations the database lacks and report its schema version.

    Migrations also run whenever a worker or client opens the backend; this
    command does it up front. With --print, write the SQL for a DBA instead.
    """
    # Printing the SQL touches no database, so it needs no project.
    _, settings = common.load(
        need_project=not print_sql, backend_url=backend_url, schema_name=schema_name
    )
    if print_sql:
        sql = database.migration_sql(settings)
        if console.wants_json():
            console.print_json({"backend": database.backend_kind(settings), "sql": sql})
        else:
            click.echo(sql, nl=False)
        return
    result = common.run_async(_migrate(settings))
    if not result.ok:
        raise failure.CliError(
            f"could not migrate {console.describe_backend(settings.backend)}: {result.error}",
            hint="is the database running and is the URL right? `ow doctor` checks",
        )
    if console.wants_json():
        console.print_json(
            {
                "backend": console.describe_backend(settings.backend),
                "migration_version": result.migration_version,
            }
        )
        return
    version = "unknown" if result.migration_version is None else result.migration_version
    click.echo(
        f"Database {console.describe_backend(settings.backend)} is migrated "
        f"(schema version {version})."
    )


async def _migrate(settings: EffectiveSettings) -> database.Check:
    backend = common.backend_from(settings)
    try:
        return await database.check(settings, backend)
    finally:
        await backend.stop()
