"""Options shared by every ``ow`` command, and the state they fill.

``--config``, ``--json`` and ``--debug`` are accepted both on the group
(``ow --json runs list``) and on each command (``ow runs list --json``); the
value given last on the command line wins. This module imports only click so
that ``ow --version`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(slots=True)
class State:
    """What the global options chose, stored on the root click context."""

    config_path: Path | None = None
    json: bool = False
    debug: bool = False


def get_state(ctx: click.Context | None = None) -> State:
    """The :class:`State` of this invocation (created on first use)."""
    context = ctx if ctx is not None else click.get_current_context()
    root = context.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    # A flag left at its default must not undo the same flag given to the group.
    if value is None or value is False or param.name is None:
        return
    setattr(get_state(ctx), param.name, value)


def config_option(fn: F) -> F:
    """``--config PATH``: use this config file instead of searching upward."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        expose_value=False,
        callback=_remember,
        help="Path to openworkflow.config.py (default: searched upward from here).",
    )(fn)


def json_option(fn: F) -> F:
    """``--json``: machine-readable output on stdout, everything else on stderr."""
    return click.option(
        "--json",
        "json",
        is_flag=True,
        expose_value=False,
        callback=_remember,
        help="Print JSON on stdout (messages and logs go to stderr).",
    )(fn)


def debug_option(fn: F) -> F:
    """``--debug``: show tracebacks and debug logs."""
    return click.option(
        "--debug",
        "debug",
        is_flag=True,
        expose_value=False,
        callback=_remember,
        help="Show tracebacks and debug logs.",
    )(fn)


def common_options(fn: F) -> F:
    """``--config`` and ``--debug``, for every command."""
    return config_option(debug_option(fn))


def data_options(fn: F) -> F:
    """``--config``, ``--debug`` and ``--json``, for commands that print data."""
    return common_options(json_option(fn))
