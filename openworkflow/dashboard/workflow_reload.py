"""Which workflows a served dashboard knows, and learning them again on SIGHUP.

Workflow files are discovered only for their names and input schemas, so a
file that fails to import is a warning, not an error. On SIGHUP (which
``ow dev`` sends after each reload) they are discovered again; if a file is
broken then, the previous list stays and the problem is reported.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Protocol

from starlette.applications import Starlette

from openworkflow.core.workflow_definition import Workflow
from openworkflow.dashboard.app import replace_workflows
from openworkflow.discovery import discover
from openworkflow.settings import EffectiveSettings


class Say(Protocol):
    """Where messages for the person running the dashboard go (a style is a rich style)."""

    def __call__(self, message: str, style: str | None = None) -> None:
        """Show ``message`` (in ``style`` where the output has colours)."""


_early_hangups: list[int] = []


def known_workflows(settings: EffectiveSettings, say: Say) -> list[Workflow]:
    """The project's workflows, for their input schemas; problems are only warnings."""
    found = discover(settings.dirs, settings.ignore_patterns, settings.folder)
    for problem in (*found.problems, *found.duplicates):
        say(f"Warning: {problem}", style="yellow")
    if found.problems:
        say(
            "Runs of workflows in those files are created without input validation.",
            style="yellow",
        )
    if found.workflows:
        names = ", ".join(sorted({item.name for item in found.workflows}))
        say(f"Input schemas known for: {names}", style="dim")
    return found.workflows


def defer_hangups() -> None:
    """Until the server runs, only note a SIGHUP (its default action would end the process)."""
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda signum, _frame: _early_hangups.append(signum))


def reload_workflows(app: Starlette, settings: EffectiveSettings, say: Say) -> bool:
    """Discover the project's workflows again and give them to the running dashboard.

    A file that fails to import (or a duplicate) keeps the previous list: the
    problem is reported and False returned.
    """
    found = discover(settings.dirs, settings.ignore_patterns, settings.folder)
    problems = [*found.problems, *found.duplicates]
    if problems:
        for problem in problems:
            say(f"Workflow reload failed: {problem}", style="red")
        say("The dashboard keeps the workflows it knew before.", style="yellow")
        return False
    replace_workflows(app, found.workflows)
    names = ", ".join(sorted({item.name for item in found.workflows})) or "none"
    say(f"Workflows reloaded: {names}", style="dim")
    return True


def reload_on_hangup(app: Starlette, settings: EffectiveSettings, say: Say) -> None:
    """Rediscover the workflows on SIGHUP (and now, if one came during start-up)."""
    if not hasattr(signal, "SIGHUP"):
        return
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reload_workflows, app, settings, say)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
        return
    if _early_hangups:
        _early_hangups.clear()
        reload_workflows(app, settings, say)
