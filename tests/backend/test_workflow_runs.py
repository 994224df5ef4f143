"""createWorkflowRun (including idempotency keys) and getWorkflowRun."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from openworkflow.core.backend import (
    CancelWorkflowRunParams,
    CompleteWorkflowRunParams,
    CreateWorkflowRunParams,
    FailWorkflowRunParams,
    GetWorkflowRunParams,
    ListWorkflowRunsParams,
)
from openworkflow.core.workflow_run import WorkflowRun
from tests.backend.helpers import (
    TERMINAL_RETRY_POLICY,
    claim,
    create_claimed_run,
    create_pending_run,
    create_step,
    get_run,
    in_one_year,
    new_id,
    now,
    seconds_from_now,
)
from tests.fixtures.clock import Clock


async def _create_keyed(
    backend: object, workflow_name: str, key: str, **fields: object
) -> WorkflowRun:
    fields.setdefault("version", "v1")
    return await create_pending_run(
        backend, workflow_name=workflow_name, idempotency_key=key, **fields
    )


# -- plain create ------------------------------------------------------------


async def test_create_with_all_fields_round_trips_every_field(backend) -> None:
    available_at = in_one_year()
    deadline_at = in_one_year() + timedelta(milliseconds=123)
    params = CreateWorkflowRunParams(
        workflow_name=new_id(),
        version=new_id(),
        idempotency_key=new_id(),
        config={"key": "val"},
        context={"key": "val"},
        input={"key": "val"},
        parent_step_attempt_namespace_id=None,
        parent_step_attempt_id=None,
        available_at=available_at,
        deadline_at=deadline_at,
    )

    created = await backend.create_workflow_run(params)

    assert len(created.namespace_id) == 36
    assert created.namespace_id == backend.namespace_id
    assert len(created.id) == 36
    assert seconds_from_now(created.available_at) > 1
    assert seconds_from_now(created.created_at) < 1
    assert seconds_from_now(created.updated_at) < 1
    expected = WorkflowRun(
        namespace_id=backend.namespace_id,
        id=created.id,
        workflow_name=params.workflow_name,
        version=params.version,
        status="pending",
        idempotency_key=params.idempotency_key,
        config={"key": "val"},
        context={"key": "val"},
        input={"key": "val"},
        output=None,
        error=None,
        attempts=0,
        parent_step_attempt_namespace_id=None,
        parent_step_attempt_id=None,
        worker_id=None,
        available_at=available_at,
        deadline_at=deadline_at,
        started_at=None,
        finished_at=None,
        created_at=created.created_at,
        updated_at=created.updated_at,
    )
    assert created == expected
    assert await get_run(backend, created.id) == expected


async def test_create_with_minimal_fields_defaults_to_null_and_available_now(backend) -> None:
    created = await backend.create_workflow_run(
        CreateWorkflowRunParams(workflow_name="minimal", config={})
    )

    assert created.workflow_name == "minimal"
    assert created.status == "pending"
    assert created.attempts == 0
    assert created.version is None
    assert created.idempotency_key is None
    assert created.input is None
    assert created.context is None
    assert created.config == {}
    assert created.deadline_at is None
    assert created.output is None
    assert created.error is None
    assert created.worker_id is None
    assert created.started_at is None
    assert created.finished_at is None
    assert seconds_from_now(created.available_at) < 1  # null means now


async def test_legacy_payload_without_parent_linkage_stores_nulls(backend) -> None:
    # Legacy callers never pass the parent-linkage fields at all.
    created = await backend.create_workflow_run(CreateWorkflowRunParams(workflow_name=new_id()))

    assert created.parent_step_attempt_namespace_id is None
    assert created.parent_step_attempt_id is None
    fetched = await get_run(backend, created.id)
    assert fetched.parent_step_attempt_namespace_id is None
    assert fetched.parent_step_attempt_id is None


async def test_parent_linkage_is_persisted(backend) -> None:
    parent = await create_claimed_run(backend)
    parent_step = await create_step(backend, parent)

    child = await create_pending_run(
        backend,
        input={"key": "val"},
        parent_step_attempt_namespace_id=parent_step.namespace_id,
        parent_step_attempt_id=parent_step.id,
    )

    assert child.parent_step_attempt_namespace_id == parent_step.namespace_id
    assert child.parent_step_attempt_id == parent_step.id
    fetched = await get_run(backend, child.id)
    assert fetched.parent_step_attempt_namespace_id == parent_step.namespace_id
    assert fetched.parent_step_attempt_id == parent_step.id


async def test_input_json_keys_are_stored_verbatim(backend) -> None:
    payload = {
        "UPPER_SNAKE": 1,
        "camelCase": {"NESTED_KEY": [1, 2.5, "x", None, True]},
        "snake_case": "ünïcödé",
        "": "empty key",
    }

    created = await create_pending_run(backend, input=payload, context={"SOME_KEY": None})

    assert created.input == payload
    fetched = await get_run(backend, created.id)
    assert fetched.input == payload
    assert fetched.context == {"SOME_KEY": None}


async def test_distinct_creates_get_distinct_ids(backend) -> None:
    first = await create_pending_run(backend)
    second = await create_pending_run(backend)

    assert first.id != second.id


# -- idempotency keys --------------------------------------------------------


async def test_same_key_and_name_returns_the_same_run(backend) -> None:
    name, key = new_id(), new_id()

    first = await _create_keyed(backend, name, key, input={"val": 1}, config={})
    second = await _create_keyed(backend, name, key, input={"val": 2}, config={"changed": True})

    assert second.id == first.id
    assert second.input == {"val": 1}
    assert second.config == {}
    assert second == first


async def test_same_key_with_different_workflow_names_creates_different_runs(backend) -> None:
    key = new_id()

    first = await _create_keyed(backend, "workflow-a", key)
    second = await _create_keyed(backend, "workflow-b", key)

    assert second.id != first.id
    assert first.workflow_name == "workflow-a"
    assert second.workflow_name == "workflow-b"


async def test_same_key_in_two_namespaces_creates_one_run_per_namespace(
    backend, make_backend
) -> None:
    other = make_backend(new_id())
    name, key = new_id(), new_id()

    first_a = await _create_keyed(backend, name, key)
    first_b = await _create_keyed(other, name, key)

    assert first_a.id != first_b.id
    assert first_a.namespace_id != first_b.namespace_id
    assert first_a.namespace_id == backend.namespace_id
    assert first_b.namespace_id == other.namespace_id

    second_a = await _create_keyed(backend, name, key)
    second_b = await _create_keyed(other, name, key)

    assert second_a.id == first_a.id
    assert second_b.id == first_b.id


async def test_same_key_and_name_with_another_version_returns_the_original(backend) -> None:
    name, key = new_id(), new_id()

    first = await _create_keyed(backend, name, key, version="v1")
    second = await _create_keyed(backend, name, key, version="v2")

    assert second.id == first.id
    assert second.version == "v1"


async def test_key_older_than_the_idempotency_period_creates_a_new_run(
    backend, clock: Clock
) -> None:
    name, key = new_id(), new_id()
    first = await _create_keyed(backend, name, key)

    clock.advance(timedelta(hours=24, seconds=60))
    second = await _create_keyed(backend, name, key)

    assert second.id != first.id
    assert second.idempotency_key == key
    # From now on the newer run is the one the key resolves to.
    third = await _create_keyed(backend, name, key)
    assert third.id == second.id


async def test_key_just_inside_the_idempotency_period_still_dedupes(backend, clock: Clock) -> None:
    name, key = new_id(), new_id()
    first = await _create_keyed(backend, name, key)

    clock.advance(timedelta(hours=23, minutes=59))
    second = await _create_keyed(backend, name, key)

    assert second.id == first.id


async def test_null_key_always_creates_distinct_runs(backend) -> None:
    name = new_id()

    first = await create_pending_run(backend, workflow_name=name, idempotency_key=None)
    second = await create_pending_run(backend, workflow_name=name, idempotency_key=None)

    assert second.id != first.id


async def test_concurrent_creates_with_the_same_key_collapse_to_one_run(backend) -> None:
    name, key = new_id(), new_id()

    runs = await asyncio.wait_for(
        asyncio.gather(*(_create_keyed(backend, name, key, input={"i": i}) for i in range(10))),
        timeout=15,
    )

    assert len({run.id for run in runs}) == 1
    listed = await backend.list_workflow_runs(ListWorkflowRunsParams(workflow_name=name))
    assert [run.id for run in listed.data] == [runs[0].id]


async def test_key_matching_a_completed_run_returns_it(backend) -> None:
    name, key = new_id(), new_id()
    created = await _create_keyed(backend, name, key)
    worker_id = new_id()
    claimed = await claim(backend, worker_id)
    assert claimed is not None
    assert claimed.id == created.id
    await backend.complete_workflow_run(
        CompleteWorkflowRunParams(workflow_run_id=created.id, worker_id=worker_id, output={"ok": 1})
    )

    deduped = await _create_keyed(backend, name, key)

    assert deduped.id == created.id
    assert deduped.status == "completed"
    assert deduped.output == {"ok": 1}


async def test_key_matching_a_failed_or_canceled_run_returns_it(backend) -> None:
    name = new_id()
    failed_key = new_id()
    failed_run = await _create_keyed(backend, name, failed_key)
    worker_id = new_id()
    claimed = await claim(backend, worker_id)
    assert claimed is not None
    assert claimed.id == failed_run.id
    await backend.fail_workflow_run(
        FailWorkflowRunParams(
            workflow_run_id=failed_run.id,
            worker_id=worker_id,
            error={"message": "terminal failure"},
            retry_policy=TERMINAL_RETRY_POLICY,
        )
    )

    failed_deduped = await _create_keyed(backend, name, failed_key)

    assert failed_deduped.id == failed_run.id
    assert failed_deduped.status == "failed"
    assert failed_deduped.error == {"message": "terminal failure"}

    canceled_key = new_id()
    canceled_run = await _create_keyed(backend, name, canceled_key)
    await backend.cancel_workflow_run(CancelWorkflowRunParams(workflow_run_id=canceled_run.id))

    canceled_deduped = await _create_keyed(backend, name, canceled_key)

    assert canceled_deduped.id == canceled_run.id
    assert canceled_deduped.status == "canceled"


# -- get ---------------------------------------------------------------------


async def test_get_returns_the_stored_run(backend) -> None:
    created = await create_pending_run(backend, input=[1, 2, 3])

    fetched = await backend.get_workflow_run(GetWorkflowRunParams(workflow_run_id=created.id))

    assert fetched == created


async def test_get_returns_none_for_an_unknown_id(backend) -> None:
    assert await backend.get_workflow_run(GetWorkflowRunParams(workflow_run_id=new_id())) is None


async def test_get_does_not_see_other_namespaces(backend, make_backend) -> None:
    other = make_backend(new_id())
    created = await create_pending_run(other)

    assert await backend.get_workflow_run(GetWorkflowRunParams(workflow_run_id=created.id)) is None
    assert await get_run(other, created.id) == created


async def test_timestamps_are_stored_at_millisecond_precision(backend) -> None:
    moment = now() + timedelta(minutes=5)

    created = await create_pending_run(backend, available_at=moment, deadline_at=moment)

    assert created.available_at == moment
    assert created.deadline_at == moment
    assert created.created_at.microsecond % 1000 == 0  # cursors compare created_at
