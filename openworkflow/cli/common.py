"""What every command shares: loading the config, consoles, JSON output, and errors.

Errors are one message plus a hint on stderr, with exit code 1 when an
operation failed and 2 for usage or configuration errors. Tracebacks are
shown only with ``--debug``. Every message is scrubbed of the database
passwords this process knows about before it is printed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import click
from rich.console import Console
from rich.text import Text

from openworkflow import event_loop
from openworkflow.cli.options import get_state
from openworkflow.client import OpenWorkflow
from openworkflow.config import CONFIG_FILE_NAME, ConfigError, LoadedConfig, load_config
from openworkflow.connect import open_backend
from openworkflow.core.backend import Backend, OpenableBackend
from openworkflow.errors import (
    AmbiguousRunIdError,
    BackendUnavailableError,
    DatabaseNotFoundError,
    InputValidationError,
    InvalidDatabaseUrlError,
    InvalidDurationError,
    InvalidNameError,
    InvalidRunStateError,
    InvalidSchemaNameError,
    OpenWorkflowError,
    PayloadError,
    ResultTimeoutError,
    WorkflowRunNotFoundError,
)
from openworkflow.redaction import redact_url, remember_secret, safe, scrub_known
from openworkflow.settings import (
    EffectiveSettings,
    resolve_settings,
    set_payload_limits,
)

T = TypeVar("T")

EXIT_FAILED = 1
EXIT_USAGE = 2

_SECRET_VARIABLES = ("OPENWORKFLOW_BACKEND_URL", "OPENWORKFLOW_POSTGRES_URL")


# -- consoles -------------------------------------------------------------------------------


def _console(stream: IO[str]) -> Console:
    # Off a terminal rich would wrap at 80 columns and cut run ids; give it room.
    width = None if stream.isatty() or os.environ.get("COLUMNS") else 200
    return Console(file=stream, width=width, highlight=False, soft_wrap=True)


def out() -> Console:
    """The console for results (stdout)."""
    return _console(sys.stdout)


def err() -> Console:
    """The console for messages, progress and errors (stderr)."""
    return _console(sys.stderr)


def say(message: str | Text, style: str | None = None) -> None:
    """A message for the human: stderr, never markup-interpreted."""
    text = message if isinstance(message, Text) else Text(safe(message), style=style or "")
    err().print(text)


def wants_json() -> bool:
    """Whether ``--json`` was given."""
    return get_state().json


def print_json(data: Any) -> None:
    """Write ``data`` as JSON on stdout (passwords scrubbed)."""
    click.echo(scrub_known(json.dumps(data, indent=2, ensure_ascii=False, default=str)))


# -- secrets --------------------------------------------------------------------------------


def describe_backend(backend: str | Backend) -> str:
    """A printable name for a backend: the URL with its password masked, or its class."""
    if isinstance(backend, str):
        return safe(redact_url(backend))
    for attribute in ("url", "path"):
        value = getattr(backend, attribute, None)
        if isinstance(value, str):
            return f"{type(backend).__name__}({safe(redact_url(value))})"
    return type(backend).__name__


# -- errors ---------------------------------------------------------------------------------


class CliError(click.ClickException):
    """An error shown as one message and a hint, with its exit code."""

    exit_code: int  # type: ignore[misc]  # per instance here, a class default in click

    def __init__(
        self, message: str, *, hint: str | None = None, exit_code: int = EXIT_FAILED
    ) -> None:
        super().__init__(message)
        self.hint = hint
        self.exit_code = exit_code

    def show(self, file: IO[Any] | None = None) -> None:
        """Print the message and hint on stderr."""
        console = err()
        lines = safe(self.message).splitlines() or [""]
        console.print(Text.assemble(("Error: ", "bold red"), lines[0]))
        for line in lines[1:]:
            console.print(Text(line))
        if self.hint:
            console.print(Text.assemble(("Hint: ", "cyan"), scrub_known(self.hint)))


def usage_error(message: str, hint: str | None = None) -> CliError:
    """A usage or configuration error (exit code 2)."""
    return CliError(message, hint=hint, exit_code=EXIT_USAGE)


_USAGE_ERRORS = (
    ConfigError,
    InvalidDatabaseUrlError,
    InvalidSchemaNameError,
    InputValidationError,
    InvalidDurationError,
    InvalidNameError,
    PayloadError,
)

_HINTS: tuple[tuple[type[BaseException], str], ...] = (
    (InvalidDatabaseUrlError, "use sqlite:///path/to/db.sqlite or postgresql://user:pass@host/db"),
    (InputValidationError, "pass input matching the workflow's schema with --input"),
    (PayloadError, "pass plain JSON within the payload size limit (see the message)"),
    (BackendUnavailableError, "is the database running and is the URL right? `ow doctor` checks"),
    (DatabaseNotFoundError, "start a worker (`ow worker start`) or a run (`ow run NAME`) first"),
    (WorkflowRunNotFoundError, "list the runs of this namespace with `ow runs list`"),
    (AmbiguousRunIdError, "give more characters of the id (`ow runs list` shows them whole)"),
    (InvalidRunStateError, "see the run's status with `ow runs show ID`"),
    (ResultTimeoutError, "the run goes on; follow it with `ow runs show ID`"),
)


def cli_error_for(error: BaseException) -> click.ClickException:
    """Turn an exception from a command into a printable error (traceback with --debug)."""
    if get_state().debug:
        click.echo(safe("".join(traceback.format_exception(error))), err=True)
    if isinstance(error, click.ClickException):
        return error
    if isinstance(error, ConfigError):
        return _config_error(error)
    hint = next((text for kind, text in _HINTS if isinstance(error, kind)), None)
    if isinstance(error, _USAGE_ERRORS):
        return CliError(str(error), hint=hint, exit_code=EXIT_USAGE)
    if isinstance(error, OpenWorkflowError):
        return CliError(str(error), hint=hint)
    return CliError(
        f"unexpected error: {type(error).__name__}: {error}",
        hint=None if get_state().debug else "run again with --debug to see the traceback",
    )


def _config_error(error: ConfigError) -> CliError:
    message = str(error)
    problems = error.problems
    if len(problems) == 1 and ("does not exist" in message or "does not define" in message):
        # The library's single "problem" is advice: show it as the hint.
        return usage_error(message.splitlines()[0], hint=problems[0])
    if error.location is not None and not problems:
        return usage_error(message, hint="fix the error at that line (--debug shows the traceback)")
    return usage_error(message, hint="fix the values listed above, then check with `ow doctor`")


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


def setup_logging(level: int = logging.WARNING) -> None:
    """Send library logs to stderr through rich (debug level with ``--debug``)."""
    from rich.logging import RichHandler

    handler = RichHandler(console=err(), show_path=False, markup=False, rich_tracebacks=False)
    handler.addFilter(_ScrubFilter())
    logger = logging.getLogger("openworkflow")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if get_state().debug else level)
    logger.propagate = False


class _ScrubFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = safe(record.getMessage())
        record.args = None
        return True


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
