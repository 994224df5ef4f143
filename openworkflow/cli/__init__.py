"""The ``ow`` command line: a thin click layer over the library.

Commands are imported only when they run (or when help lists them), so
``ow --version`` does not pay for rich or the command modules. Each command
module parses its options, calls the library, and hands results to
:mod:`openworkflow.cli.output`; :mod:`openworkflow.cli.failure` turns errors
into one message, a hint and an exit code (0 ok, 1 operation failed, 2 usage
or configuration error).
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from openworkflow import __version__
from openworkflow.cli.options import State, config_option, debug_option, json_option

__all__ = ["main"]

# name -> "module:attribute"; loaded on first use.
_LAZY_COMMANDS: dict[str, str] = {
    "doctor": "openworkflow.cli.doctor:doctor",
    "init": "openworkflow.cli.init:init",
    "migrate": "openworkflow.cli.migrate:migrate",
    "run": "openworkflow.cli.run:run",
    "runs": "openworkflow.cli.runs:runs",
    "schedules": "openworkflow.cli.schedules:schedules",
    "signal": "openworkflow.cli.signal:signal",
    "worker": "openworkflow.cli.worker:worker",
    "workflows": "openworkflow.cli.workflows:workflows",
    "dashboard": "openworkflow.cli.dashboard:dashboard",
    "dev": "openworkflow.cli.dev:dev",
}

_EPILOG = """\b
Exit codes: 0 ok, 1 operation failed, 2 usage or configuration error.

\b
Shell completion (click's standard mechanism), e.g. in ~/.bashrc:
  eval "$(_OW_COMPLETE=bash_source ow)"
zsh: eval "$(_OW_COMPLETE=zsh_source ow)"  fish: _OW_COMPLETE=fish_source ow | source
"""


class _LazyGroup(click.Group):
    """A group whose subcommands are imported on demand, with one error boundary."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in _LAZY_COMMANDS:
            return command
        module_name, attribute = _LAZY_COMMANDS[cmd_name].split(":")
        loaded = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(loaded, click.Command):
            raise TypeError(f"{_LAZY_COMMANDS[cmd_name]} is not a click command")
        return loaded

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as error:
            from openworkflow.cli.failure import cli_error_for

            raise cli_error_for(error) from error


@click.group(
    cls=_LazyGroup, epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(
    __version__, "-V", "--version", prog_name="ow", message="%(prog)s %(version)s"
)
@config_option
@json_option
@debug_option
@click.pass_context
def main(ctx: click.Context) -> None:
    """OpenWorkflow: durable workflows on SQLite or PostgreSQL.

    Start with `ow init`, check the set-up with `ow doctor`, then run a worker
    with `ow worker start` and start runs with `ow run NAME`.
    """
    if not isinstance(ctx.obj, State):
        ctx.obj = State()
