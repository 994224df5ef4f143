"""Messages: a signal kept for one run, and an event its caller reads while it goes on."""

from __future__ import annotations

from typing import Any

# --8<-- [start:workflow]
from openworkflow import Step, workflow


@workflow(name="review-document")
async def review_document(input: str, step: Step) -> dict[str, Any]:
    await step.set_event("stage", "waiting for a reviewer")  # callers see it at once
    answer = await step.wait_for_signal("review", timeout="2d")
    if answer is None:  # nobody answered within two days
        return {"document": input, "status": "expired"}
    await step.set_event("stage", "reviewed")
    return {"document": input, "status": answer["data"]["verdict"]}


# --8<-- [end:workflow]


async def example() -> None:
    """Signal one run before and after it waits; let another wait time out."""
    from openworkflow.testing import WorkflowEnvironment

    async with WorkflowEnvironment(workflows=[review_document]) as env:
        # --8<-- [start:caller]
        handle = await env.client.run(review_document, "contract.pdf")
        # Kept for this run until its wait_for_signal("review") takes it, even if sent
        # before the run reaches the wait.
        await handle.signal("review", {"verdict": "approved"})
        print(await handle.get_event("stage", timeout="1m"))
        print(await handle.result(timeout="1m"))  # {..., 'status': 'approved'}
        # --8<-- [end:caller]
        assert await env.result(handle) == {"document": "contract.pdf", "status": "approved"}
        assert await handle.get_event("stage") == "reviewed"
        expired = await env.run(review_document, "draft.pdf")
        assert expired == {"document": "draft.pdf", "status": "expired"}
