"""A parent that fans out to one child workflow per item and gathers their results.

Each ``step.run_workflow`` starts its child once (however often the parent
replays), and the parent parks until the children finish.
"""

from __future__ import annotations

import asyncio

from openworkflow import Step, workflow


@workflow(name="resize-image")
async def resize_image(input: str, step: Step) -> dict[str, str]:
    """One child: pretend to resize one image."""
    return await step.run("resize", lambda: {"image": input, "thumbnail": f"thumb-{input}"})


@workflow(name="resize-album")
async def resize_album(input: list[str], step: Step) -> list[dict[str, str]]:
    """Start one child per image, in parallel, and return their outputs in order."""
    return list(
        await asyncio.gather(
            *(step.run_workflow(resize_image, image, name=f"resize:{image}") for image in input)
        )
    )
