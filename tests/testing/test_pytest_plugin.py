"""The pytest plugin: a user's test file, run by ``pytest`` in a subprocess, gets ``ow_env``.

Nothing in the user's run names the plugin: it must come from the
``pytest11`` entry point of the installed package (a changed or missing entry
point fails every test here). Each user file runs with warnings as errors, so
a plugin that warned would fail too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

PLUGIN_FILE = Path(__file__).parents[2] / "openworkflow" / "testing" / "pytest_plugin.py"

ASYNCIO_INI = """\
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""

USER_TESTS = """\
from __future__ import annotations

from datetime import timedelta

import pytest

from openworkflow import Step, workflow
from openworkflow.errors import ResultTimeoutError

pytestmark = pytest.mark.asyncio


@workflow(name="user-monthly-reminder")
async def monthly_reminder(input: dict, step: Step) -> str:
    await step.sleep("wait", f"{input['days']}d")
    return await step.run("send", lambda: f"reminded {input['to']}")


async def test_a_month_passes_at_once(ow_env) -> None:
    async with ow_env(workflows=[monthly_reminder]) as env:
        assert env.time_skipping is True
        started = env.now()
        handle = await env.start(monthly_reminder, {"days": 30, "to": "ana"})
        # A deadline in real time, so a fixture that did not skip fails fast.
        assert await env.result(handle, timeout="20s") == "reminded ana"
        assert env.now() - started >= timedelta(days=30)


async def test_options_reach_the_environment(ow_env) -> None:
    async with ow_env(workflows=[monthly_reminder], time_skipping=False, concurrency=3) as env:
        assert env.time_skipping is False
        handle = await env.start(monthly_reminder, {"days": 1, "to": "bo"})
        with pytest.raises(ResultTimeoutError):
            await env.result(handle, timeout="200ms")  # no skipping: the day goes on
        await env.advance("1d")
        assert await env.result(handle, timeout="20s") == "reminded bo"


async def test_each_environment_is_fresh(ow_env) -> None:
    async with ow_env(workflows=[monthly_reminder]) as first:
        await first.run(monthly_reminder, {"days": 2, "to": "cy"})
    async with ow_env(workflows=[monthly_reminder]) as second:
        assert (await second.client.list_runs()).data == []
"""

FAILING_USER_TEST = """\
from __future__ import annotations

import pytest

from openworkflow import Step, workflow

pytestmark = pytest.mark.asyncio


@workflow(name="user-weekly-digest")
async def weekly_digest(step: Step) -> str:
    await step.sleep("week", "7d")
    return "digest sent"


async def test_expects_the_wrong_output(ow_env) -> None:
    async with ow_env(workflows=[weekly_digest]) as env:
        assert await env.run(weekly_digest) == "nothing sent"


async def test_a_passing_neighbour(ow_env) -> None:
    async with ow_env(workflows=[weekly_digest]) as env:
        assert await env.run(weekly_digest) == "digest sent"
"""

ANYIO_USER_TEST = """\
from __future__ import annotations

import sys

import pytest

from openworkflow import Step, workflow


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@workflow(name="user-yearly-renewal")
async def yearly_renewal(step: Step) -> str:
    await step.sleep("year", "365d")
    return "renewed"


@pytest.mark.anyio
async def test_without_pytest_asyncio(ow_env) -> None:
    assert "pytest_asyncio" not in sys.modules
    async with ow_env(workflows=[yearly_renewal]) as env:
        handle = await env.start(yearly_renewal)
        assert await env.result(handle, timeout="20s") == "renewed"
"""


def _run_pytest(
    folder: Path, test_file: str, ini: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pytest`` in ``folder`` as a user would: no ``-p`` naming our plugin."""
    (folder / "pytest.ini").write_text(ini)
    (folder / "test_user_workflows.py").write_text(test_file)
    env = {name: value for name, value in os.environ.items() if not name.startswith("PYTEST_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", *extra],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )


def test_a_user_test_file_passes_with_ow_env(tmp_path: Path) -> None:
    result = _run_pytest(tmp_path, USER_TESTS, ASYNCIO_INI)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for name in (
        "test_a_month_passes_at_once",
        "test_options_reach_the_environment",
        "test_each_environment_is_fresh",
    ):
        assert f"PASSED test_user_workflows.py::{name}" in output, output
    assert "3 passed" in output, output


def test_a_failing_user_test_is_reported_as_failed(tmp_path: Path) -> None:
    result = _run_pytest(tmp_path, FAILING_USER_TEST, ASYNCIO_INI)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "FAILED test_user_workflows.py::test_expects_the_wrong_output" in output, output
    assert "PASSED test_user_workflows.py::test_a_passing_neighbour" in output, output
    assert "'digest sent' == 'nothing sent'" in output, output
    assert "1 failed, 1 passed" in output, output


def test_the_fixture_needs_no_pytest_asyncio(tmp_path: Path) -> None:
    # pytest-asyncio switched off: anyio's plugin runs the async test.
    result = _run_pytest(
        tmp_path, ANYIO_USER_TEST, "[pytest]\nfilterwarnings = error\n", "-p", "no:asyncio"
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "PASSED test_user_workflows.py::test_without_pytest_asyncio" in output, output


def test_the_plugin_module_imports_nothing_from_the_engine() -> None:
    # The plugin loads in every pytest run of every user: loaded on its own,
    # with every openworkflow import made to fail, it must still import.
    script = textwrap.dedent(
        f"""
        import importlib.util, sys
        for name in [m for m in sys.modules if m.split(".")[0] == "openworkflow"]:
            del sys.modules[name]
        sys.modules["openworkflow"] = None  # any import of it now raises
        spec = importlib.util.spec_from_file_location("plugin_alone", {str(PLUGIN_FILE)!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert callable(module.ow_env)
        print("imported alone")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "imported alone" in result.stdout
