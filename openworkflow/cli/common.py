"""What commands share besides output and errors: loading the project, opening its backend.

Output lives in :mod:`openworkflow.cli.console`, errors in
:mod:`openworkflow.cli.failure`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from openworkflow import event_loop
from openworkflow.cli.console import describe_backend, say
from openworkflow.cli.failure import CliError, usage_error
from openworkflow.cli.options import get_state
from openworkflow.client import OpenWorkflow
from openworkflow.config import CONFIG_FILE_NAME, LoadedConfig, load_config
from openworkflow.connect import open_backend
from openworkflow.core.backend import Backend, OpenableBackend
from openworkflow.errors import DatabaseNotFoundError, OpenWorkflowError
from openworkflow.redaction import remember_secret
from openworkflow.settings import (
    EffectiveSettings,
    resolve_settings,
    set_payload_limits,
)

T = TypeVar("T")

_SECRET_VARIABLES = ("OPENWORKFLOW_BACKEND_URL", "OPENWORKFLOW_POSTGRES_URL")


# -- configuration --------------------------------------------------------------------------


def load(*, need_project: bool = True, **flags: Any) -> tuple[LoadedConfig, EffectiveSettings]:
    """Load the config (``--config`` or searched upward) and resolve the settings.

    Args:
        need_project: Refuse to go on (exit code 2) when no config file was
            found and no backend was named by a flag or the environment,
            rather than use a default database in whatever folder this is.
        **flags: ``backend_url``, ``namespace_id``, ``schema_name``,
            ``worker_concurrency`` from the command line (None: not given).

    Raises:
        CliError: the config or a setting is invalid, or no project was found
            (exit code 2).
    """
    for variable in _SECRET_VARIABLES:
        value = os.environ.get(variable)
        if value:
            remember_secret(value)
    if flags.get("backend_url"):
        remember_secret(flags["backend_url"])
    loaded = load_config(get_state().config_path)
    for variable in _SECRET_VARIABLES:  # .env was loaded by load_config
        value = os.environ.get(variable)
        if value:
            remember_secret(value)
    settings = resolve_settings(loaded, **flags)
    if isinstance(settings.backend, str):
        remember_secret(settings.backend)
    set_payload_limits(settings.payload_limits)
    if need_project and loaded.path is None and settings.backend_source == "default":
        raise _no_project_error("backend_url" in flags)
    return loaded, settings


def _no_project_error(has_backend_flag: bool) -> CliError:
    here = Path.cwd()
    flag = "--backend URL or " if has_backend_flag else ""
    return usage_error(
        f"no project here: no {CONFIG_FILE_NAME} in {here} or any folder above it, "
        "and no database named by a flag or the environment",
        hint=f"create a project with `ow init`, point at one with --config PATH, or name "
        f"a database with {flag}OPENWORKFLOW_BACKEND_URL=sqlite:///path/to/db.sqlite",
    )


def note_missing_config(loaded: LoadedConfig, settings: EffectiveSettings) -> None:
    """Say on stderr which backend is used when no config file was found."""
    if loaded.path is None:
        say(
            f"No config file found; using {describe_backend(settings.backend)} "
            f"({settings.backend_source}). Create one with `ow init`.",
            style="yellow",
        )


def backend_from(settings: EffectiveSettings, *, create: bool = True) -> Backend:
    """Open the configured backend, reporting a bad URL as a configuration error.

    Args:
        settings: What to open.
        create: Whether this command may create a missing SQLite database
            (commands that only read pass False).

    Raises:
        CliError: the URL is not usable (exit code 2).
        DatabaseNotFoundError: ``create`` is False and the SQLite file does not exist.
    """
    try:
        return open_backend(settings, create=create)
    except (ValueError, TypeError) as error:
        if isinstance(error, OpenWorkflowError):
            raise
        raise usage_error(
            f"cannot use backend {describe_backend(settings.backend)}: {error}",
            hint=f"check the backend URL (from {settings.backend_source})",
        ) from None


@asynccontextmanager
async def opened_client(
    settings: EffectiveSettings, *, create: bool = True
) -> AsyncIterator[OpenWorkflow]:
    """An :class:`~openworkflow.OpenWorkflow` on the configured backend, stopped afterwards.

    ``create=False`` for commands that only read (see :func:`backend_from`).
    """
    backend = backend_from(settings, create=create)
    try:
        yield OpenWorkflow(backend)
    finally:
        await backend.stop()


async def with_client(
    settings: EffectiveSettings,
    action: Callable[[OpenWorkflow], Awaitable[T]],
    *,
    create: bool = True,
) -> T:
    """Run ``action`` with a client on the configured backend, then stop the backend."""
    async with opened_client(settings, create=create) as client:
        return await action(client)


async def connect_now(backend: Backend) -> None:
    """Connect now (and migrate), so an unreachable database fails with a clear message."""
    if isinstance(backend, OpenableBackend):
        await backend.open()


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine to completion (on uvloop when installed)."""
    return event_loop.run(coroutine)


def on_existing_run(
    settings: EffectiveSettings, run_id: str, action: Callable[[OpenWorkflow], Awaitable[T]]
) -> T:
    """Run ``action`` on an existing database: a missing one has no run to act on."""
    try:
        return run_async(with_client(settings, action, create=False))
    except DatabaseNotFoundError as error:
        raise CliError(
            f"Workflow run {run_id} does not exist: {error}",
            hint="check the backend URL or --config if the database should be elsewhere",
        ) from None


# -- arguments ------------------------------------------------------------------------------


def json_argument(value: str | None, option: str) -> Any:
    """Parse ``--input``/``--data``: JSON text, ``@file`` or ``@-`` (stdin).

    Raises:
        click.BadParameter: unreadable file or invalid JSON (exit code 2).
    """
    if value is None:
        return None
    text = value
    if value.startswith("@"):
        source = value[1:]
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        except OSError as error:
            raise click.BadParameter(
                f"cannot read {source}: {error.strerror}", param_hint=option
            ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise click.BadParameter(
            f"not valid JSON ({error.msg} at line {error.lineno} column {error.colno}); "
            'quote it for the shell, e.g. \'{"name": "Ada"}\', or pass @file.json',
            param_hint=option,
        ) from None
