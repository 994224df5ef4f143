"""Run tags (issue 20 item 3): written with the run, read back, filtered on with pagination."""

from __future__ import annotations

from typing import Any

import pytest

from openworkflow.core.backend import ListWorkflowRunsParams
from openworkflow.core.workflow_run import WorkflowRun
from tests.backend.helpers import create_claimed_run, create_pending_run, new_id


async def _list(backend: Any, **params: Any) -> Any:
    return await backend.list_workflow_runs(ListWorkflowRunsParams(**params))


def _newest_first(runs: list[WorkflowRun]) -> list[str]:
    """The list order: ``created_at`` then ``id``, both descending."""
    return [run.id for run in sorted(runs, key=lambda r: (r.created_at, r.id), reverse=True)]


async def test_create_with_tags_and_read_them_back(backend: Any) -> None:
    tags = {"customer": "c-1", "region": "eu", "empty": "", "unicode": "é ✓ 日本"}
    run = await create_pending_run(backend, tags=tags)
    assert await backend.get_run_tags(run.id) == tags
    untagged = await create_pending_run(backend)
    assert await backend.get_run_tags(untagged.id) == {}
    assert await backend.get_run_tags("no-such-run") == {}


async def test_idempotent_create_keeps_the_first_runs_tags(backend: Any) -> None:
    name, key = new_id(), new_id()
    first = await create_pending_run(
        backend, workflow_name=name, idempotency_key=key, tags={"customer": "c-1"}
    )
    again = await create_pending_run(
        backend, workflow_name=name, idempotency_key=key, tags={"customer": "c-2", "x": "y"}
    )
    assert again.id == first.id
    assert await backend.get_run_tags(first.id) == {"customer": "c-1"}
    listed = await _list(backend, tags={"customer": "c-2"})
    assert listed.data == []
    keyed_untagged = await create_pending_run(backend, workflow_name=name, idempotency_key=new_id())
    assert await backend.get_run_tags(keyed_untagged.id) == {}


async def test_filter_by_one_and_by_two_tags(backend: Any) -> None:
    a = await create_pending_run(backend, tags={"customer": "c-1", "region": "eu"})
    b = await create_pending_run(backend, tags={"customer": "c-1", "region": "us"})
    c = await create_pending_run(backend, tags={"customer": "c-2", "region": "eu"})
    await create_pending_run(backend)

    one = await _list(backend, tags={"customer": "c-1"})
    assert [run.id for run in one.data] == _newest_first([a, b])
    two = await _list(backend, tags={"customer": "c-1", "region": "eu"})
    assert [run.id for run in two.data] == [a.id]
    two_other_order = await _list(backend, tags={"region": "eu", "customer": "c-1"})
    assert [run.id for run in two_other_order.data] == [a.id]
    eu = await _list(backend, tags={"region": "eu"})
    assert [run.id for run in eu.data] == _newest_first([a, c])
    assert (await _list(backend, tags={"customer": "c-3"})).data == []
    # A value is matched exactly, not as a prefix, and the key matters.
    assert (await _list(backend, tags={"customer": "c-"})).data == []
    assert (await _list(backend, tags={"region": "c-1"})).data == []
    # No filter (None or empty) lists every run.
    assert len((await _list(backend, tags={})).data) == 4
    assert len((await _list(backend)).data) == 4


async def test_tag_filter_combines_with_status_and_workflow_name(backend: Any) -> None:
    name = new_id()
    running = await create_claimed_run(backend, workflow_name=name, tags={"team": "a"})
    pending = await create_pending_run(backend, workflow_name=name, tags={"team": "a"})
    other_name = await create_pending_run(backend, tags={"team": "a"})
    by_status = await _list(backend, tags={"team": "a"}, status="running")
    assert [run.id for run in by_status.data] == [running.id]
    by_name = await _list(backend, tags={"team": "a"}, workflow_name=name)
    assert [run.id for run in by_name.data] == _newest_first([pending, running])
    both = await _list(backend, tags={"team": "a"}, workflow_name=name, status="pending")
    assert [run.id for run in both.data] == [pending.id]
    assert other_name.id in [run.id for run in (await _list(backend, tags={"team": "a"})).data]


async def test_pagination_with_a_tag_filter(backend: Any) -> None:
    tagged = []
    for n in range(7):
        tagged.append(await create_pending_run(backend, tags={"batch": "b1", "n": str(n)}))
        await create_pending_run(backend, tags={"batch": "b2"})  # interleaved, filtered out
    expected = _newest_first(tagged)

    seen: list[str] = []
    page = await _list(backend, tags={"batch": "b1"}, limit=3)
    assert page.prev is None
    pages = [page]
    for _ in range(5):  # bounded: a cursor that never ends fails instead of hanging
        seen += [run.id for run in page.data]
        if page.next is None:
            break
        page = await _list(backend, tags={"batch": "b1"}, limit=3, after=page.next)
        pages.append(page)
    assert seen == expected
    assert [len(p.data) for p in pages] == [3, 3, 1]

    # Back from the last page with its prev cursor: the same second page.
    back = await _list(backend, tags={"batch": "b1"}, limit=3, before=pages[2].prev)
    assert [run.id for run in back.data] == expected[3:6]
    assert back.next is not None and back.prev is not None
    first_again = await _list(backend, tags={"batch": "b1"}, limit=3, before=back.prev)
    assert [run.id for run in first_again.data] == expected[:3]
    assert first_again.prev is None

    # Two tags with pagination: the second tag narrows each page.
    narrowed = await _list(backend, tags={"batch": "b1", "n": "4"}, limit=1)
    assert [run.id for run in narrowed.data] == [tagged[4].id]
    assert narrowed.next is None


async def test_tags_do_not_leak_across_namespaces(backend: Any, make_backend: Any) -> None:
    other = make_backend(new_id())
    mine = await create_pending_run(backend, tags={"customer": "c-1"})
    theirs = await create_pending_run(other, tags={"customer": "c-1"})
    assert [run.id for run in (await _list(backend, tags={"customer": "c-1"})).data] == [mine.id]
    assert [run.id for run in (await _list(other, tags={"customer": "c-1"})).data] == [theirs.id]
    assert await other.get_run_tags(mine.id) == {}
    assert await backend.get_run_tags(theirs.id) == {}


@pytest.mark.parametrize(
    ("tags", "error"),
    [
        ({"": "x"}, ValueError),
        ({"k=v": "x"}, ValueError),
        ({"k": 1}, TypeError),
        ("customer=c-1", TypeError),
    ],
)
async def test_list_refuses_an_invalid_tag_filter(backend: Any, tags: Any, error: type) -> None:
    with pytest.raises(error):
        await _list(backend, tags=tags)
