"""A run canceled while parked on ``wait_for_signal`` leaves no attempt ``running`` (issue 14)."""

from __future__ import annotations

from typing import Any

from openworkflow import OpenWorkflow, Step, workflow
from tests.worker.helpers import list_steps, running_worker, wait_for_parked


@workflow(name="await-approval")
async def await_approval(step: Step) -> Any:
    return await step.wait_for_signal("approve", timeout="1h")


async def test_cancel_of_a_run_parked_on_a_signal_closes_its_wait(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    async with running_worker(backend, [await_approval]):
        handle = await ow.run(await_approval)
        await wait_for_parked(backend, handle.id)
        (waiting,) = await list_steps(backend, handle.id)
        assert waiting.kind == "signal-wait" and waiting.status == "running"

        canceled = await ow.cancel(handle.id)
        assert canceled.status == "canceled"

        (closed,) = await list_steps(backend, handle.id)
        assert closed.id == waiting.id and closed.status == "failed"
        assert closed.error == {"message": "the run was canceled"}
        assert closed.finished_at is not None
        assert (await backend.count_step_attempts()).running == 0
        assert await ow.send_signal("approve", "late") == []  # nobody waits any more
