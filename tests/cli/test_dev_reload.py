"""``ow dev`` reloads when any project module the worker imported changes, not only workflows."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from openworkflow import SyncOpenWorkflow
from tests.cli.helpers import ow_dev, write
from tests.support.waiting import block_until

CONFIG = """
from openworkflow import define_config
config = define_config(backend="sqlite:///dev.db", dirs=["./openworkflow"])
"""

GREET = """
from shipping import suffix
from texts import greeting

from openworkflow import Step, workflow

def lazy() -> str:
    from lazy_texts import VALUE  # imported while a step runs, not at start
    return VALUE

@workflow(name="greet")
async def greet(step: Step) -> str:
    first = await step.run("say", lambda: greeting() + suffix())
    return first + "/" + await step.run("lazy", lazy)
"""


def _project(folder: Path) -> Path:
    write(folder / "openworkflow.config.py", CONFIG)
    write(folder / "openworkflow" / "greet.py", GREET)
    write(folder / "openworkflow" / "shipping.py", "def suffix() -> str:\n    return '!'\n")
    # Helpers outside the workflow folder, importable from the project folder.
    write(folder / "texts.py", "def greeting() -> str:\n    return 'v1'\n")
    write(folder / "lazy_texts.py", "VALUE = 'lazy1'\n")
    write(folder / "unrelated.py", "X = 1\n")
    return folder


def _greet(client: SyncOpenWorkflow) -> str:
    return str(client.run("greet").result(timeout="20s"))


def _replace_atomically(path: Path, text: str) -> None:
    """Save the way many editors do: write a new file, then rename it over the old one."""
    temporary = path.with_name(path.name + ".swp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


@pytest.mark.slow
def test_ow_dev_reloads_on_imported_helpers_and_names_the_file(tmp_path: Path) -> None:
    project = _project(tmp_path)
    with (
        ow_dev(project, "--no-dashboard") as log,
        SyncOpenWorkflow(f"sqlite:///{project / 'dev.db'}") as client,
    ):
        assert _greet(client) == "v1!/lazy1"
        time.sleep(1.5)  # the worker reports the lazily imported module within a second

        write(project / "texts.py", "def greeting() -> str:\n    return 'v2'\n")
        block_until(lambda: _greet(client).startswith("v2!"), "the edited helper", 30)
        assert "texts.py; restarting the worker" in log.read_text()

        _replace_atomically(project / "texts.py", "def greeting() -> str:\n    return 'v3'\n")
        block_until(lambda: _greet(client).startswith("v3!"), "the replaced helper", 30)

        sibling = project / "openworkflow" / "shipping.py"
        write(sibling, "def suffix() -> str:\n    return '?'\n")
        block_until(lambda: _greet(client).startswith("v3?"), "the edited sibling", 30)

        time.sleep(1.5)
        write(project / "lazy_texts.py", "VALUE = 'lazy2'\n")
        block_until(lambda: _greet(client).endswith("/lazy2"), "the lazy helper", 30)

        before = log.read_text().count("restarting the worker")
        write(project / "unrelated.py", "X = 2\n")  # never imported: no reload
        time.sleep(2.5)
        assert log.read_text().count("restarting the worker") == before
