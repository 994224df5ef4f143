"""How the CLI fails: one message and a hint on stderr, exit code 1 or 2.

Exit code 1 means an operation failed, 2 a usage or configuration error.
Tracebacks are shown only with ``--debug``.
"""

from __future__ import annotations

import traceback
from typing import IO, Any

import click
from rich.text import Text

from openworkflow.cli.console import err
from openworkflow.cli.options import get_state
from openworkflow.config import ConfigError
from openworkflow.errors import (
    AmbiguousRunIdError,
    BackendUnavailableError,
    DatabaseNotFoundError,
    ForkStepNotFoundError,
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
from openworkflow.redaction import safe, scrub_known

EXIT_FAILED = 1
EXIT_USAGE = 2


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
    (ForkStepNotFoundError, "`ow runs show ID` lists the run's steps by name"),
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
