"""find_workflow_runs_by_id_prefix: whole ids, unique and shared prefixes, namespaces, bad input."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from openworkflow.core.backend import FindWorkflowRunsByIdPrefixParams
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import InvalidRunIdPrefixError
from tests.backend.helpers import create_pending_run


def _common_prefix(ids: list[str]) -> str:
    """The longest string every id starts with."""
    first, last = min(ids), max(ids)
    length = next(
        (i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), len(first)
    )
    return first[:length]


async def _find(backend: Any, prefix: str, limit: int = 10) -> list[str]:
    found = await backend.find_workflow_runs_by_id_prefix(
        FindWorkflowRunsByIdPrefixParams(prefix=prefix, limit=limit)
    )
    assert all(isinstance(run, WorkflowRun) for run in found)
    return [run.id for run in found]


async def _runs(backend: Any, count: int) -> list[str]:
    return [(await create_pending_run(backend)).id for _ in range(count)]


def _unique_prefix(target: str, others: list[str]) -> str:
    """The shortest prefix of ``target`` no other id starts with."""
    for length in range(1, len(target) + 1):
        if not any(other.startswith(target[:length]) for other in others):
            return target[:length]
    raise AssertionError("ids are not distinct")


async def test_a_whole_id_finds_that_run_only(backend: Any) -> None:
    ids = await _runs(backend, 3)
    for run_id in ids:
        assert await _find(backend, run_id) == [run_id]
        assert await _find(backend, run_id.upper()) == [run_id]  # folded to lowercase
        assert await _find(backend, f"  {run_id} ") == [run_id]  # pasted with spaces


async def test_a_shared_prefix_lists_every_match_in_id_order_up_to_the_limit(backend: Any) -> None:
    ids = await _runs(backend, 4)
    shared = _common_prefix(ids)
    assert shared, "runs created together share the time part of their ids"
    assert await _find(backend, shared) == sorted(ids)
    assert await _find(backend, shared, limit=2) == sorted(ids)[:2]
    assert await _find(backend, ids[0][:1]) == sorted(ids)  # one character is a prefix too


async def test_a_unique_prefix_finds_one_run_even_ending_in_a_hyphen(backend: Any) -> None:
    ids = await _runs(backend, 3)
    target = ids[1]
    unique = _unique_prefix(target, [ids[0], ids[2]])
    assert await _find(backend, unique) == [target]
    dashed = target[: target.index("-") + 1]  # "0190a1b2-"
    assert await _find(backend, dashed) == sorted(i for i in ids if i.startswith(dashed))


async def test_no_match_is_an_empty_list(backend: Any) -> None:
    await _runs(backend, 2)
    assert await _find(backend, "ffffffff-ffff") == []


async def test_runs_of_other_namespaces_are_not_found(backend: Any, make_backend: Any) -> None:
    other = make_backend("other-namespace-" + uuid.uuid4().hex[:8])
    theirs = (await create_pending_run(other)).id
    ours = (await create_pending_run(backend)).id
    assert await _find(backend, theirs) == []
    assert await _find(other, theirs) == [theirs]
    shared = _common_prefix([theirs, ours])
    if shared:
        assert await _find(backend, shared) == [ours]


@pytest.mark.parametrize(
    ("prefix", "says"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("%", "'%'"),
        ("0_", "'_'"),
        ("01-xyz", "'x', 'y', 'z'"),
        ("0190a1b2' OR '1'='1", "'=', 'O', 'R'"),
        ("0" * 37, "37 characters"),
    ],
)
async def test_a_prefix_no_run_id_can_have_is_refused_with_the_reason(
    backend: Any, prefix: str, says: str
) -> None:
    await _runs(backend, 1)
    with pytest.raises(InvalidRunIdPrefixError, match="run id") as caught:
        await _find(backend, prefix)
    assert isinstance(caught.value, ValueError)
    assert says in str(caught.value)


@pytest.mark.parametrize("limit", [0, -1, 1001, True])
async def test_a_bad_limit_is_refused(backend: Any, limit: Any) -> None:
    with pytest.raises(ValueError, match="limit must be a whole number from 1 to 1000"):
        await _find(backend, "0", limit=limit)
