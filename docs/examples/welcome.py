"""The quick start's program: define a workflow, start a run, and serve it with a worker."""

from __future__ import annotations

import tempfile
from typing import Any

# --8<-- [start:program]
from pydantic import BaseModel

from openworkflow import OpenWorkflow, RetryPolicy, Step, workflow


class Signup(BaseModel):
    user_id: str


@workflow  # name "send-welcome-email"
async def send_welcome_email(input: Signup, step: Step) -> dict[str, bool]:
    user = await step.run("fetch-user", lambda: {"email": f"{input.user_id}@example.com"})
    await step.sleep("cool-off", "2s")  # durable: the worker slot is freed meanwhile
    await step.run(
        "send-email",
        lambda: print("sending to", user["email"]),
        retry_policy=RetryPolicy(maximum_attempts=5),
    )
    return {"sent": True}


async def main(url: str = "sqlite:///welcome.db") -> dict[str, Any]:
    async with OpenWorkflow(url) as ow:
        handle = await ow.run(send_welcome_email, {"user_id": "u1"}, idempotency_key="welcome:u1")
        async with ow.new_worker([send_welcome_email], concurrency=10):
            output: dict[str, Any] = await handle.result(timeout="30s")
    print(output)  # {'sent': True}, after about 2 s
    return output


# --8<-- [end:program]


async def example() -> None:
    """Run the program for real, on a SQLite file in a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        assert await main(f"sqlite:///{folder}/welcome.db") == {"sent": True}
