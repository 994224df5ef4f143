"""Creating, canceling and retrying runs through the dashboard's forms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from openworkflow import OpenWorkflow, declare_workflow
from tests.dashboard.helpers import (
    dashboard_client,
    explode,
    greet,
    run_status,
)
from tests.worker.helpers import get_run, now, running_worker, wait_for_status


def _created_id(location: str) -> str:
    assert location.startswith("/runs/"), location
    return location.removeprefix("/runs/")


async def test_index_and_new_page_offer_the_create_form(backend: Any) -> None:
    async with dashboard_client(backend) as client:
        index = await client.get("/", params={"workflow": "greet"})
        form_page = await client.get("/runs/new", params={"workflow": "greet"})
    for page in (index, form_page):
        assert page.status_code == 200
        assert 'form id="create-run"' in page.text
        for field in ("workflow_name", "available_at", "deadline_at", "version"):
            assert f'name="{field}"' in page.text
        assert '<textarea id="input" name="input"' in page.text
        assert 'id="workflow_name" name="workflow_name" type="text" required value="greet"' in (
            page.text
        )
    assert "Input schema" in form_page.text  # the known workflows and their schemas
    assert '"title": "Person"' in form_page.text.replace("&#34;", '"')


async def test_create_validates_input_then_redirects_to_the_new_run(backend: Any) -> None:
    async with dashboard_client(backend) as client:
        created = await client.post(
            "/runs",
            {"workflow_name": "greet", "input": '{"name": "Ada"}', "idempotency_key": "k-1"},
        )
        assert created.status_code == 303
        run_id = _created_id(created.headers["location"])
        page = await client.get(created.headers["location"])
        assert page.status_code == 200
        assert run_status(page.text) == "pending"
    run = await get_run(backend, run_id)
    assert run.workflow_name == "greet"
    assert run.input == {"name": "Ada"}
    assert run.idempotency_key == "k-1"
    assert run.version is None
    async with running_worker(backend, [greet]):
        done = await wait_for_status(backend, run_id, "completed")
    assert done.output == {"greeting": "Hello, Ada!"}


async def test_create_schedules_with_durations_and_local_times(backend: Any) -> None:
    async with dashboard_client(backend) as client:
        in_an_hour = await client.post(
            "/runs",
            {"workflow_name": "greet", "input": '{"name": "Later"}', "available_at": "1h"},
        )
        local = await client.post(
            "/runs",
            {
                "workflow_name": "unknown-elsewhere",
                "input": "[1, 2]",
                "available_at": "2030-01-31T09:00",
                "deadline_at": "2030-01-31T10:30",
                "tz_offset": "-120",  # the browser is at UTC+2
                "version": "v7",
            },
        )
    later = await get_run(backend, _created_id(in_an_hour.headers["location"]))
    assert later.available_at is not None
    assert abs(later.available_at - (now() + timedelta(hours=1))) < timedelta(seconds=30)
    scheduled = await get_run(backend, _created_id(local.headers["location"]))
    assert scheduled.available_at == datetime(2030, 1, 31, 7, 0, tzinfo=UTC)
    assert scheduled.deadline_at == datetime(2030, 1, 31, 8, 30, tzinfo=UTC)
    assert scheduled.version == "v7"
    assert scheduled.input == [1, 2]  # an unknown workflow: no schema to check


async def test_create_refuses_bad_json_schema_errors_and_bad_times(backend: Any) -> None:
    async with dashboard_client(backend) as client:
        bad_json = await client.post("/runs", {"workflow_name": "greet", "input": "{name: 1"})
        assert bad_json.status_code == 400
        assert "The input is not valid JSON" in bad_json.text
        assert "{name: 1</textarea>" in bad_json.text  # what was typed is kept

        rejected = await client.post("/runs", {"workflow_name": "greet", "input": '{"nom": 1}'})
        assert rejected.status_code == 400
        assert 'id="form-error" data-field="input"' in rejected.text
        assert "<li>name: Field required</li>" in rejected.text

        no_name = await client.post("/runs", {"workflow_name": "  ", "input": "{}"})
        assert no_name.status_code == 400
        assert "Enter the name of the workflow" in no_name.text

        bad_time = await client.post(
            "/runs", {"workflow_name": "greet", "input": '{"name": "x"}', "deadline_at": "soon"}
        )
        assert bad_time.status_code == 400
        assert "Deadline: &#39;soon&#39; is neither a duration" in bad_time.text
    assert (await OpenWorkflow(backend).list_runs()).data == []


async def test_create_uses_the_schema_of_the_chosen_version(backend: Any) -> None:
    v1 = declare_workflow("versioned", version="v1", schema=int)
    v2 = declare_workflow("versioned", version="v2", schema=str)
    async with dashboard_client(backend, workflows=[v1, v2]) as client:
        ambiguous = await client.post("/runs", {"workflow_name": "versioned", "input": "1"})
        assert ambiguous.status_code == 400
        assert "has several versions (v1, v2)" in ambiguous.text

        wrong = await client.post(
            "/runs", {"workflow_name": "versioned", "input": "1", "version": "v2"}
        )
        assert wrong.status_code == 400
        assert "Input should be a valid string" in wrong.text

        right = await client.post(
            "/runs", {"workflow_name": "versioned", "input": '"one"', "version": "v2"}
        )
        assert right.status_code == 303
    run = await get_run(backend, _created_id(right.headers["location"]))
    assert (run.version, run.input) == ("v2", "one")


async def test_cancel_an_active_run_and_refuse_a_finished_one(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(greet, {"name": "Ada"})
    async with dashboard_client(backend) as client:
        page = await client.get(f"/runs/{handle.id}")
        assert 'form id="cancel-run"' in page.text
        assert 'id="retry-run"' not in page.text

        canceled = await client.post(f"/runs/{handle.id}/cancel")
        assert canceled.status_code == 303
        assert canceled.headers["location"] == f"/runs/{handle.id}"
        after = await client.get(f"/runs/{handle.id}")
        assert run_status(after.text) == "canceled"
        assert 'id="cancel-run"' not in after.text
        assert 'form id="retry-run"' in after.text

        done = await ow.run(greet, {"name": "Bo"})
        async with running_worker(backend, [greet]):
            await wait_for_status(backend, done.id, "completed")
        refused = await client.post(f"/runs/{done.id}/cancel")
        assert refused.status_code == 409
        assert 'id="run-message"' in refused.text
        assert "Cannot cancel workflow run" in refused.text

        missing = await client.post("/runs/no-such-run/cancel")
        assert missing.status_code == 404
    assert (await get_run(backend, handle.id)).status == "canceled"


async def test_retry_resumes_a_failed_run(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    handle = await ow.run(explode)
    async with running_worker(backend, [explode]):
        await wait_for_status(backend, handle.id, "failed")
    async with dashboard_client(backend) as client:
        retried = await client.post(f"/runs/{handle.id}/retry")
        assert retried.status_code == 303
        page = await client.get(retried.headers["location"])
        assert run_status(page.text) == "pending"
        assert 'form id="cancel-run"' in page.text

        again = await client.post(f"/runs/{handle.id}/retry")  # pending now: not retryable
        assert again.status_code == 409
        assert "only failed or canceled runs can be retried" in again.text
    assert (await get_run(backend, handle.id)).status == "pending"


async def test_send_a_signal_to_a_run_that_waits_for_one(backend: Any) -> None:
    from openworkflow import Step, workflow

    @workflow(name="awaits-approval")
    async def awaits_approval(step: Step) -> Any:
        received = await step.wait_for_signal("approve", timeout="1h")
        return None if received is None else received["data"]

    ow = OpenWorkflow(backend)
    handle = await ow.run(awaits_approval)
    async with running_worker(backend, [awaits_approval]), dashboard_client(backend) as client:

        async def form_shown() -> bool:
            page = await client.get(f"/runs/{handle.id}")
            return 'form id="send-signal"' in page.text

        from tests.support.waiting import wait_until

        await wait_until(form_shown, timeout=10)
        page = await client.get(f"/runs/{handle.id}")
        assert '<option value="approve">approve</option>' in page.text

        bad = await client.post(
            f"/runs/{handle.id}/signal", data={"signal": "approve", "data": "{"}
        )
        assert bad.status_code == 400 and "is not JSON" in bad.text
        sent = await client.post(
            f"/runs/{handle.id}/signal", data={"signal": "approve", "data": '{"ok": true}'}
        )
        assert sent.status_code == 303 and sent.headers["location"] == f"/runs/{handle.id}"
        assert await handle.result(timeout=10) == {"ok": True}

        done = await client.get(f"/runs/{handle.id}")
        assert 'id="send-signal"' not in done.text
        refused = await client.post(f"/runs/{handle.id}/signal", data={"signal": "approve"})
        assert refused.status_code == 409 and "was not sent" in refused.text
