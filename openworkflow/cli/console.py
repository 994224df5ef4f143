"""The CLI's consoles: results on stdout, messages on stderr, JSON, and logging.

Every message is scrubbed of the database passwords this process knows about
before it is printed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import IO, Any

import click
from rich.console import Console
from rich.text import Text

from openworkflow.cli.options import get_state
from openworkflow.core.backend import Backend
from openworkflow.redaction import redact_url, safe, scrub_known

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


def describe_backend(backend: str | Backend) -> str:
    """A printable name for a backend: the URL with its password masked, or its class."""
    if isinstance(backend, str):
        return safe(redact_url(backend))
    for attribute in ("url", "path"):
        value = getattr(backend, attribute, None)
        if isinstance(value, str):
            return f"{type(backend).__name__}({safe(redact_url(value))})"
    return type(backend).__name__


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
