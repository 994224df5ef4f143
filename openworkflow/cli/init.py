"""``ow init``: scaffold a project (config, example workflow, ``.env``, ``.gitignore``).

Existing files are never overwritten without asking: interactively each one
is confirmed, with ``--yes`` they are skipped (``--force`` overwrites).
``.env`` and ``.gitignore`` are only appended to. The config is written
last, so an interrupted ``ow init`` can simply be run again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
from rich.text import Text

from openworkflow.cli import console, templates
from openworkflow.cli.options import common_options, get_state
from openworkflow.config import CONFIG_FILE_NAME

_BACKENDS = {
    "sqlite": "SQLite: one file, nothing to run (development, small deployments)",
    "postgres": "PostgreSQL: many workers on many machines (production)",
    "both": "SQLite in the config, PostgreSQL when OPENWORKFLOW_BACKEND_URL is set",
}


@dataclass(frozen=True, slots=True)
class _Options:
    yes: bool
    force: bool


@click.command()
@click.option("-y", "--yes", is_flag=True, help="Do not ask; skip files that already exist.")
@click.option(
    "--backend",
    type=click.Choice(list(_BACKENDS)),
    help="sqlite (default), postgres, or both (SQLite, PostgreSQL by environment).",
)
@click.option("--force", is_flag=True, help="Overwrite existing files without asking.")
@common_options
def init(yes: bool, backend: str | None, force: bool) -> None:
    """Create openworkflow.config.py, an example workflow, .env and .gitignore entries."""
    options = _Options(yes=yes, force=force)
    config_path = (get_state().config_path or Path(CONFIG_FILE_NAME)).resolve()
    folder = config_path.parent
    choice = backend or _ask_backend(options)
    screen = console.out()
    screen.print(Text(f"Setting up OpenWorkflow ({choice}) in {folder}", style="bold"))
    _write(folder / "openworkflow" / "hello_world.py", templates.HELLO_WORLD, folder, options)
    if choice == "postgres":
        _append_env(folder, "OPENWORKFLOW_POSTGRES_URL", templates.ENV_POSTGRES)
    elif choice == "both":
        _append_env(folder, "OPENWORKFLOW_BACKEND_URL", templates.ENV_BOTH)
    else:
        _append_env(folder, "OPENWORKFLOW_BACKEND_URL", templates.ENV_SQLITE)
    _append_gitignore(folder)
    _write(config_path, templates.config_file(choice), folder, options)
    _next_steps(choice)


def _ask_backend(options: _Options) -> str:
    if options.yes:
        return "sqlite"
    for name, text in _BACKENDS.items():
        click.echo(f"  {name:<9} {text}")
    choice: str = click.prompt(
        "Backend", type=click.Choice(list(_BACKENDS)), default="sqlite", show_choices=False
    )
    return choice


def _show(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


def _write(path: Path, text: str, folder: Path, options: _Options) -> None:
    name = _show(path, folder)
    if (
        path.exists()
        and not options.force
        and (options.yes or not click.confirm(f"{name} exists. Overwrite it?", default=False))
    ):
        _said("skipped", f"{name} (exists; --force overwrites)", "yellow")
        return
    existed = path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    _said("overwrote" if existed else "created", name, "green")


def _append_env(folder: Path, key: str, block: str) -> None:
    path = folder / ".env"
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    if key in current:
        _said("kept", f".env (already mentions {key})", "dim")
        return
    if "OPENWORKFLOW_WORKER_CONCURRENCY" not in current:
        block += "\n" + templates.ENV_SETTINGS
    _append(path, current, block)
    _said("updated" if current else "created", f".env ({key})", "green")


def _append_gitignore(folder: Path) -> None:
    path = folder / ".gitignore"
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    present = {line.strip() for line in current.splitlines()}
    missing = [entry for entry in templates.GITIGNORE_ENTRIES if entry not in present]
    if not missing:
        _said("kept", ".gitignore (entries present)", "dim")
        return
    _append(path, current, "# OpenWorkflow\n" + "".join(f"{entry}\n" for entry in missing))
    _said("updated" if current else "created", f".gitignore ({', '.join(missing)})", "green")


def _append(path: Path, current: str, block: str) -> None:
    separator = "" if not current or current.endswith("\n\n") else "\n"
    if current and not current.endswith("\n"):
        separator = "\n\n"
    with path.open("a", encoding="utf-8") as file:
        file.write(separator + block)


def _said(action: str, what: str, style: str) -> None:
    console.out().print(Text.assemble((f"  {action:<10}", style), what))


def _next_steps(choice: str) -> None:
    steps = [
        "ow doctor                    check the set-up",
        "ow worker start              start a worker (leave it running)",
        "ow run hello-world --wait    in another terminal: run the example",
        "ow dev                       or: a worker that reloads on changes",
    ]
    screen = console.out()
    screen.print(Text("\nNext steps:", style="bold"))
    if choice == "postgres":
        screen.print("  edit OPENWORKFLOW_POSTGRES_URL in .env to point at your database")
    for step in steps:
        screen.print(f"  {step}")
