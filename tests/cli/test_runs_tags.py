"""``ow run NAME --tag K=V`` and ``ow runs list --tag K=V`` (issue 20 item 3), as subprocesses."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from openworkflow import OpenWorkflow
from tests.cli.helpers import ow, write

FLOWS = """
from typing import Any

from openworkflow import Step, workflow


@workflow(name="echo")
async def echo(input: Any, step: Step) -> Any:
    return input


@workflow(name="other")
async def other(input: Any, step: Step) -> Any:
    return input
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli-tags")
    write(
        folder / "openworkflow.config.py",
        """
        from openworkflow import define_config
        config = define_config(backend="sqlite:///ow.db", dirs=["./flows"])
        """,
    )
    write(folder / "flows" / "flows.py", FLOWS)
    return folder


def _start(project: Path, *args: str) -> str:
    result = ow(project, "run", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _listed(project: Path, *args: str) -> dict[str, object]:
    result = ow(project, "runs", "list", "--json", *args)
    assert result.returncode == 0, result.stderr
    listed: dict[str, object] = json.loads(result.stdout)
    return listed


def _ids(listed: dict[str, object]) -> list[str]:
    data = listed["data"]
    assert isinstance(data, list)
    return [row["id"] for row in data]


def _stored_tags(project: Path, run_id: str) -> dict[str, str]:
    async def read() -> dict[str, str]:
        async with OpenWorkflow(f"sqlite:///{project / 'ow.db'}") as client:
            return await client.backend.get_run_tags(run_id)

    return asyncio.run(read())


def test_run_stores_tags_and_list_filters_on_every_tag(project: Path) -> None:
    both = _start(project, "echo", "--tag", "customer=c-1", "--tag", "region=eu=west")
    one = _start(project, "other", "--tag", "customer=c-1")
    empty_value = _start(project, "echo", "--tag", "flag=")
    untagged = _start(project, "echo")
    assert _stored_tags(project, both) == {"customer": "c-1", "region": "eu=west"}
    assert _stored_tags(project, empty_value) == {"flag": ""}
    assert _stored_tags(project, untagged) == {}
    shown = ow(project, "runs", "show", both, "--json")
    assert json.loads(shown.stdout)["tags"] == {"customer": "c-1", "region": "eu=west"}
    assert "customer=c-1, region=eu=west" in ow(project, "runs", "show", both).stdout

    assert set(_ids(_listed(project, "--tag", "customer=c-1"))) == {both, one}
    # Repeated --tag: runs carrying every one (AND).
    assert _ids(_listed(project, "--tag", "customer=c-1", "--tag", "region=eu=west")) == [both]
    assert _ids(_listed(project, "--tag", "flag=")) == [empty_value]
    assert _ids(_listed(project, "--tag", "customer=c-1", "--workflow", "other")) == [one]
    assert _ids(_listed(project, "--tag", "customer=nobody")) == []
    plain = ow(project, "runs", "list", "--tag", "customer=nobody")
    assert plain.returncode == 0 and "No runs found" in plain.stderr + plain.stdout


def test_list_pages_with_a_tag_filter(project: Path) -> None:
    started = [_start(project, "echo", "--tag", "batch=p1") for _ in range(3)]
    _start(project, "echo", "--tag", "batch=p2")
    first = _listed(project, "--tag", "batch=p1", "--limit", "2")
    assert len(_ids(first)) == 2 and isinstance(first["next"], str)
    second = _listed(project, "--tag", "batch=p1", "--limit", "2", "--after", first["next"])
    assert second["next"] is None
    assert set(_ids(first) + _ids(second)) == set(started)
    hint = ow(project, "runs", "list", "--tag", "batch=p1", "--limit", "2")
    assert "--tag batch=p1 --after" in hint.stderr + hint.stdout


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("customer", "key=value"),
        ("=c-1", "key=value"),
        ("k" * 65 + "=v", "at most 64"),
        ("k=" + "v" * 257, "at most 256"),
    ],
)
def test_a_bad_tag_is_a_usage_error_and_nothing_is_written(
    project: Path, tag: str, message: str
) -> None:
    before = _ids(_listed(project, "--limit", "1000"))
    for args in (("run", "echo", "--tag", tag), ("runs", "list", "--tag", tag)):
        result = ow(project, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "--tag" in result.stderr and message in result.stderr
    assert _ids(_listed(project, "--limit", "1000")) == before


def test_a_key_given_twice_is_refused(project: Path) -> None:
    result = ow(project, "run", "echo", "--tag", "a=1", "--tag", "a=2")
    assert result.returncode == 2
    assert "given twice" in result.stderr
