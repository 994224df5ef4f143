"""``ow doctor``: check the config, the database and the workflows, and say what is wrong.

Exit code 0 when healthy, 1 when the database cannot be reached, 2 for
configuration or discovery problems (which take precedence).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from openworkflow.cli import common, console, database, failure
from openworkflow.cli.options import data_options
from openworkflow.config import LoadedConfig
from openworkflow.discovery import Discovery, discover
from openworkflow.errors import DatabaseNotFoundError
from openworkflow.redaction import safe
from openworkflow.settings import EffectiveSettings


@dataclass(slots=True)
class Report:
    """Everything doctor found, in the order it is printed."""

    loaded: LoadedConfig
    settings: EffectiveSettings
    kind: str
    check: database.Check | None
    found: Discovery
    problems: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """2 for config or discovery problems, 1 for an unreachable database, else 0."""
        if self.loaded.path is None or not self.found.ok or not self.found.workflows:
            return failure.EXIT_USAGE
        if self.check is not None and not self.check.ok:
            return failure.EXIT_FAILED
        return 0


@click.command()
@click.option("--backend", "backend_url", metavar="URL", help="Database URL (overrides config).")
@data_options
def doctor(backend_url: str | None) -> None:
    """Check the config, the database connection and the workflow files."""
    loaded, settings = common.load(need_project=False, backend_url=backend_url)
    found = discover(settings.dirs, settings.ignore_patterns, settings.folder)
    # Without a config, do not create the default SQLite file just to check it.
    skip = loaded.path is None and settings.backend_source == "default"
    result = None if skip else common.run_async(_check(settings))
    report = Report(loaded, settings, database.backend_kind(settings), result, found)
    if console.wants_json():
        console.print_json(_to_json(report))
    else:
        _print(report)
    if report.exit_code:
        raise click.exceptions.Exit(report.exit_code)


async def _check(settings: EffectiveSettings) -> database.Check:
    try:
        # Checking must not create the database: a missing file is reported, not made.
        backend = common.backend_from(settings, create=False)
    except DatabaseNotFoundError as error:
        return database.Check(ok=True, missing=error.path)
    except failure.CliError as error:
        return database.Check(ok=False, error=error.message)
    except Exception as error:  # e.g. a SQLite file that cannot be created
        return database.Check(ok=False, error=safe(str(error)))
    try:
        return await database.check(settings, backend)
    finally:
        await backend.stop()


def _to_json(report: Report) -> dict[str, Any]:
    settings, found, check = report.settings, report.found, report.check
    return {
        "ok": report.exit_code == 0,
        "exit_code": report.exit_code,
        "config": str(report.loaded.path) if report.loaded.path else None,
        "backend": {
            "kind": report.kind,
            "url": console.describe_backend(settings.backend),
            "source": settings.backend_source,
            "schema": settings.schema if report.kind == "postgres" else None,
            "reachable": None if check is None or check.missing else check.ok,
            "exists": None if check is None else check.missing is None,
            "migration_version": None if check is None else check.migration_version,
            "error": None if check is None else check.error,
        },
        "namespace": settings.namespace_id,
        "concurrency": settings.concurrency,
        "dirs": [{"path": str(d), "exists": d not in found.missing_dirs} for d in found.dirs],
        "files": [str(path) for path in found.files],
        "workflows": [
            {"name": item.name, "version": item.version, "source": item.source}
            for item in found.workflows
        ],
        "problems": [
            {"file": str(p.path), "line": p.line, "message": p.message} for p in found.problems
        ],
        "duplicates": [
            {"name": d.name, "version": d.version, "first": d.first, "second": d.second}
            for d in found.duplicates
        ],
    }


def _print(report: Report) -> None:
    screen = console.out()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for label, value in _rows(report):
        grid.add_row(label, value)
    screen.print(grid)
    for problem in report.found.problems:
        screen.print(Text.assemble(("✗ ", "red"), ("import error ", "red"), str(problem)))
    for duplicate in report.found.duplicates:
        screen.print(Text.assemble(("✗ ", "red"), str(duplicate)))
    for line in _verdict(report):
        screen.print(line)


def _rows(report: Report) -> list[tuple[str, Text]]:
    settings, found = report.settings, report.found
    config = (
        Text(str(report.loaded.path))
        if report.loaded.path
        else Text("No config file found (run `ow init` to create one)", style="yellow")
    )
    backend = Text.assemble(
        console.describe_backend(settings.backend), (f"  (from {settings.backend_source})", "dim")
    )
    rows = [("Config", config), ("Backend", backend), ("Database", _database_text(report))]
    if report.kind == "postgres":
        rows.append(("Schema", Text(database.postgres_schema(settings))))
    rows.append(("Namespace", Text(settings.namespace_id)))
    rows.append(("Concurrency", Text(str(settings.concurrency))))
    rows.append(("Dirs", _dirs_text(found)))
    rows.append(("Files", _files_text(report)))
    rows.append(("Workflows", _workflows_text(found)))
    return rows


def _database_text(report: Report) -> Text:
    check = report.check
    if check is None:
        return Text("not checked (no config file)", style="dim")
    if check.missing is not None:
        return Text(
            f"no database yet at {check.missing} (a worker or `ow run` creates it)", style="yellow"
        )
    if not check.ok:
        return Text.assemble(("✗ unreachable: ", "red"), check.error or "")
    version = check.migration_version
    detail = f"schema version {version}" if version is not None else (check.error or "")
    return Text.assemble(("✓ connected", "green"), f", {detail}" if detail else "")


def _dirs_text(found: Discovery) -> Text:
    text = Text()
    for index, directory in enumerate(found.dirs):
        text.append(("\n" if index else "") + str(directory))
        if directory in found.missing_dirs:
            text.append("  (missing)", style="yellow")
    return text


def _files_text(report: Report) -> Text:
    folder = report.settings.folder
    names = []
    for path in report.found.files:
        try:
            names.append(str(path.relative_to(folder)))
        except ValueError:
            names.append(str(path))
    return Text("\n".join([f"{len(names)} file(s)", *names]))


def _workflows_text(found: Discovery) -> Text:
    if not found.workflows:
        return Text("none found", style="red")
    return Text(
        "\n".join(f"{item.name} (version: {item.version or '-'})" for item in found.workflows)
    )


def _verdict(report: Report) -> list[Text]:
    lines = []
    if report.loaded.path is None:
        lines.append(
            _hint("No config file found", "run `ow init` to create openworkflow.config.py")
        )
    if report.found.workflows == [] and report.found.ok:
        dirs = ", ".join(str(d) for d in report.settings.dirs)
        lines.append(_hint(f"No workflows found in {dirs}", "define one with @workflow there"))
    if report.check is not None and not report.check.ok:
        lines.append(
            _hint("The database cannot be reached", "start it, or fix the backend URL and rerun")
        )
    if report.exit_code == 0:
        lines.append(Text("✓ Configuration looks good!", style="bold green"))
    else:
        count = len(report.found.problems) + len(report.found.duplicates) + len(lines)
        lines.append(Text(f"✗ {count} problem(s) found", style="bold red"))
    return lines


def _hint(message: str, hint: str) -> Text:
    return Text.assemble(("✗ ", "red"), message, ("  Hint: ", "cyan"), hint)
