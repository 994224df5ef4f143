"""Hello world: one step and a short durable sleep."""

from __future__ import annotations

from pydantic import BaseModel

from openworkflow import Step, workflow


class Greeting(BaseModel):
    name: str = "world"


@workflow
async def hello_world(input: Greeting, step: Step) -> dict[str, str]:
    greeting = await step.run("greet", lambda: f"Hello, {input.name}!")
    await step.sleep("pause", "1s")  # the run parks; any worker resumes it a second later
    return {"greeting": greeting}
