"""The run page and its JSON API show the run's events and streams (issue 18 item 3).

On every backend, with a real worker: each event key with its latest value
and when it was set; each stream with its size, last write and only its last
20 items (read from ``last_seq - 20``, never the whole stream); neither
section for a run without them; hostile keys and values stay text.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest

from openworkflow import OpenWorkflow, Step, workflow
from openworkflow.core.streams import ReadRunStreamParams, RunStreamItem
from openworkflow.dashboard.run_page import STREAM_TAIL
from openworkflow.dashboard.views import iso_time
from tests.dashboard.helpers import dashboard_client
from tests.worker.helpers import running_worker, wait_for_status

SCRIPT = "<script>alert(1)</script>"
ITEMS = 50


@workflow
async def publishes(step: Step) -> str:
    await step.set_event("phase", "loading")
    for n in range(1, ITEMS + 1):
        await step.stream("progress", {"n": n, "note": "x" * 5})
    await step.set_event("phase", {"done": True, "items": ITEMS})
    await step.set_event("answer", 42)
    await step.stream("log", "only line")
    return "ok"


@workflow
async def publishes_nothing(step: Step) -> int:
    return int(await step.run("compute", lambda: 7))


@workflow
async def publishes_hostile(step: Step) -> None:
    await step.set_event(SCRIPT, {"html": SCRIPT})
    await step.stream(SCRIPT, SCRIPT)


WORKFLOWS = [publishes, publishes_nothing, publishes_hostile]


async def _finished(backend: Any, target: Any) -> str:
    handle = await OpenWorkflow(backend).run(target)
    async with running_worker(backend, WORKFLOWS):
        await wait_for_status(backend, handle.id, "completed", timeout=30)
    return handle.id


def _section(page: str, element_id: str) -> str:
    match = re.search(rf'<section class="panel" id="{element_id}">(.*?)</section>', page, re.DOTALL)
    assert match, f"no #{element_id} section"
    return match.group(1)


def _pre_values(fragment: str, css_class: str) -> list[Any]:
    """The JSON shown in each ``<pre class="json {css_class}">``, parsed back."""
    shown = re.findall(rf'<pre class="json {css_class}">(.*?)</pre>', fragment, re.DOTALL)
    return [json.loads(html.unescape(text)) for text in shown]


def _stream_block(streams: str, key: str) -> str:
    match = re.search(
        rf'<div class="run-stream" data-stream-key="{re.escape(key)}">(.*?)\n  </div>',
        streams,
        re.DOTALL,
    )
    assert match, f"no stream {key!r}"
    return match.group(1)


def _text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", fragment)).split())


async def test_the_page_shows_latest_events_and_the_last_items_of_each_stream(
    backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = await _finished(backend, publishes)
    events = {event.key: event for event in await backend.list_run_events(run_id)}
    reads: list[ReadRunStreamParams] = []
    real_read = backend.read_run_stream

    async def spy(params: ReadRunStreamParams) -> list[RunStreamItem]:
        reads.append(params)
        return list(await real_read(params))

    monkeypatch.setattr(backend, "read_run_stream", spy)
    async with dashboard_client(backend, workflows=WORKFLOWS) as client:
        page = (await client.get(f"/runs/{run_id}")).text

    shown_events = _section(page, "run-events")
    keys = re.findall(r'<tr data-event-key="([^"]+)">', shown_events)
    assert keys == ["answer", "phase"]
    assert _pre_values(shown_events, "event-value") == [42, {"done": True, "items": ITEMS}]
    assert "loading" not in shown_events  # overwritten: only the latest set is shown
    assert f'<time datetime="{iso_time(events["phase"].updated_at)}">' in shown_events

    streams = _section(page, "run-streams")
    progress = _stream_block(streams, "progress")
    seqs = [int(seq) for seq in re.findall(r'<tr data-seq="(\d+)">', progress)]
    assert seqs == list(range(ITEMS - STREAM_TAIL + 1, ITEMS + 1))  # the last 20, newest last
    assert _pre_values(progress, "stream-value") == [{"n": n, "note": "xxxxx"} for n in seqs]
    summary = _text(progress.split("</p>")[0])
    assert summary.startswith(f"progress: {ITEMS} items, last written")
    assert f"(showing the last {STREAM_TAIL} of {ITEMS})" in summary
    log = _stream_block(streams, "log")
    assert _pre_values(log, "stream-value") == ["only line"]
    assert "1 item," in _text(log) and "showing the last" not in log
    # Cheap for any stream length: each read starts at last_seq - 20 and asks for 20.
    assert sorted((r.key, r.after_seq, r.limit) for r in reads) == [
        ("log", 0, STREAM_TAIL),
        ("progress", ITEMS - STREAM_TAIL, STREAM_TAIL),
    ]
    assert page.index('id="run-events"') < page.index('id="run-streams"') < page.index("Steps</h2>")


async def test_a_run_without_events_or_streams_shows_neither_section(backend: Any) -> None:
    run_id = await _finished(backend, publishes_nothing)
    async with dashboard_client(backend, workflows=WORKFLOWS) as client:
        page = (await client.get(f"/runs/{run_id}")).text
    assert 'data-step-name="compute"' in page  # the page itself rendered
    assert 'id="run-events"' not in page and 'id="run-streams"' not in page
    assert "Events</abbr>" not in page and "Streams</abbr>" not in page


async def test_hostile_event_and_stream_keys_and_values_stay_text(backend: Any) -> None:
    run_id = await _finished(backend, publishes_hostile)
    async with dashboard_client(backend, workflows=WORKFLOWS) as client:
        page = (await client.get(f"/runs/{run_id}")).text
    assert SCRIPT not in page and "<script>alert" not in page
    escaped = html.escape(SCRIPT, quote=False)
    events = _section(page, "run-events")
    streams = _section(page, "run-streams")
    assert f'<code class="event-key">{escaped}</code>' in events
    assert _pre_values(events, "event-value") == [{"html": SCRIPT}]
    assert f'<code class="stream-key">{escaped}</code>' in streams
    assert _pre_values(streams, "stream-value") == [SCRIPT]
    scripts = re.findall(r"<script[^>]*>", page)  # only the dashboard's own file
    assert len(scripts) == 1 and 'src="/static/dashboard.js?v=' in scripts[0]
