"""``ow.run(..., tags=...)`` and ``ow.list_runs(tags=...)``: the rules, checked before any write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from openworkflow import OpenWorkflow, Step, SyncOpenWorkflow, workflow
from openworkflow.core.tags import (
    MAX_TAG_KEY_CHARS,
    MAX_TAG_VALUE_CHARS,
    MAX_TAGS_PER_RUN,
    check_tags,
    parse_tags,
)
from openworkflow.errors import InvalidNameError


@workflow(name="tagged-echo")
async def echo(input: Any, step: Step) -> Any:
    return input


BAD_TAGS: list[tuple[object, type[Exception], str]] = [
    ("customer=c-1", TypeError, "must be a dict of str to str"),
    ([("customer", "c-1")], TypeError, "must be a dict of str to str"),
    ({1: "x"}, TypeError, "keys must be str"),
    ({"customer": 1}, TypeError, "values must be str"),
    ({"customer": None}, TypeError, "values must be str"),
    ({"": "x"}, ValueError, "must not be empty"),
    ({"a=b": "x"}, ValueError, "must not contain '='"),
    ({"k" * (MAX_TAG_KEY_CHARS + 1): "x"}, ValueError, f"at most {MAX_TAG_KEY_CHARS}"),
    ({"k": "v" * (MAX_TAG_VALUE_CHARS + 1)}, ValueError, f"at most {MAX_TAG_VALUE_CHARS}"),
    (
        {f"k{n}": "v" for n in range(MAX_TAGS_PER_RUN + 1)},
        ValueError,
        f"at most {MAX_TAGS_PER_RUN}",
    ),
    ({"nul\x00": "x"}, InvalidNameError, "NUL"),
    ({"k": "lone \ud800"}, InvalidNameError, "lone surrogate"),
]


@pytest.mark.parametrize(("tags", "error", "message"), BAD_TAGS)
async def test_run_refuses_bad_tags_and_writes_nothing(
    backend: Any, tags: object, error: type[Exception], message: str
) -> None:
    ow = OpenWorkflow(backend)
    with pytest.raises(error, match=message) as raised:
        await ow.run(echo, 1, tags=tags)  # type: ignore[arg-type]
    assert isinstance(raised.value, ValueError | TypeError)
    assert (await ow.list_runs()).data == []
    with pytest.raises(error, match=message):
        await ow.list_runs(tags=tags)  # type: ignore[arg-type]


async def test_the_limits_themselves_are_allowed(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    widest = {f"{n:0{MAX_TAG_KEY_CHARS}d}": "v" * MAX_TAG_VALUE_CHARS for n in range(20)}
    assert len(widest) == MAX_TAGS_PER_RUN
    handle = await ow.run(echo, 1, tags=widest)
    assert await backend.get_run_tags(handle.id) == widest
    found = await ow.list_runs(tags=widest)
    assert [run.id for run in found.data] == [handle.id]
    empty_value = await ow.run(echo, 2, tags={"flag": ""})
    assert [run.id for run in (await ow.list_runs(tags={"flag": ""})).data] == [empty_value.id]


def test_sync_client_passes_tags_through(tmp_path: Path) -> None:
    with SyncOpenWorkflow(f"sqlite:///{tmp_path / 'ow.db'}") as ow:
        handle = ow.run(echo, 1, tags={"customer": "c-1"})
        ow.run(echo, 2, tags={"customer": "c-2"})
        assert [run.id for run in ow.list_runs(tags={"customer": "c-1"}).data] == [handle.id]
        with pytest.raises(ValueError, match="must not be empty"):
            ow.run(echo, 3, tags={"": "x"})
        with pytest.raises(TypeError):
            ow.list_runs(tags={"customer": 5})  # type: ignore[dict-item]


def test_parse_tags_reads_key_value_texts() -> None:
    assert parse_tags(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    assert check_tags(None) == {}
    for text, message in [("a", "key=value"), ("=1", "key=value")]:
        with pytest.raises(ValueError, match=message):
            parse_tags([text])
    with pytest.raises(ValueError, match="given twice"):
        parse_tags(["a=1", "a=2"])
