"""A long job that streams its progress to whoever is watching.

Each page is summarized in a step of its own; after each one the run appends
an item to its ``progress`` stream and updates its ``status`` event. A caller
reads the stream from the first item, even one that connects late, with
``async for item in handle.stream("progress")`` (or ``ow runs tail RUN_ID
progress``), and the latest status with ``handle.get_event("status")``. The
stream is durable: a worker that crashes mid-report is replaced by another,
which replays the finished pages without appending their items again.
"""

from __future__ import annotations

from pydantic import BaseModel

from openworkflow import Step, workflow


class Report(BaseModel):
    """The report to summarize: a title and its pages' text."""

    title: str
    pages: list[str]


def summarize(text: str) -> str:
    """Stand-in for a call to a summarizing service: the page's first five words."""
    words = text.split()
    return " ".join(words[:5]) + (" ..." if len(words) > 5 else "")


@workflow(name="summarize-report")
async def summarize_report(input: Report, step: Step) -> dict[str, object]:
    """Summarize page by page, streaming one progress item per page."""
    summaries = []
    for number, text in enumerate(input.pages, start=1):
        summary = await step.run(f"summarize-page-{number}", summarize, text)
        summaries.append(summary)
        await step.stream("progress", {"page": number, "of": len(input.pages), "summary": summary})
        await step.set_event("status", f"{number}/{len(input.pages)} pages")
    return {"title": input.title, "pages": len(summaries), "summary": " / ".join(summaries)}
