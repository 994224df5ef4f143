"""F3 for run streams: a stream reader and writer, cut by PostgreSQL restarts.

The test runs in a throwaway cluster of its own (the ``cluster`` fixture of
:mod:`tests.faults.private_cluster`), restarted with ``pg_ctlcluster ...
restart -m immediate`` (a crash: backends get SIGQUIT, crash recovery on
start). Everything is counted from the database and reported before it is
asserted.

A run writes :data:`CHUNKS` items to one stream (``step.stream``) while a
caller with a backend of its own reads them (``handle.stream``). The cluster
is restarted twice while both are mid-stream. The reader must get every item
once, in order, and end; the stored stream must hold each position once; the
run must complete with every step completed once. Pruning cut by a restart is
in :mod:`tests.faults.test_restart_pruning`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from openworkflow import OpenWorkflow, Step, Worker, workflow
from openworkflow.core.backend import GetWorkflowRunParams
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.postgres import PostgresBackend
from tests.faults.figures import Figure, report
from tests.faults.ledger import Expected, Tally, tally
from tests.faults.pg_app import new_schema_name, with_application_name
from tests.faults.private_cluster import PrivateCluster, fetch_rows

pytestmark = pytest.mark.slow

DEADLINE_S = 90.0


# -- a stream written and read across restarts -------------------------------------------------

CHUNKS = 300
STREAM_KEY = "chunks"
PACE_S = 0.015
"""Pause after each append, so the restarts land in the middle of the stream."""
RESTART_AT = (80, 180)
"""Chunks the reader has got when each restart strikes."""

_stream_steps: Counter[str] = Counter()


async def _count_step(name: str) -> str:
    _stream_steps[name] += 1
    return name


@workflow(name="fault-restart-stream")
async def _streamer(step: Step) -> int:
    """A step, :data:`CHUNKS` stream items ``{"i": i}``, a step; returns how many items."""
    await step.run("begin", functools.partial(_count_step, "begin"))
    for index in range(CHUNKS):
        await step.stream(STREAM_KEY, {"i": index})
        # Plain pacing, not durable: a replay after a fault sleeps again, harmlessly.
        await asyncio.sleep(PACE_S)
    await step.run("end", functools.partial(_count_step, "end"))
    return CHUNKS


@dataclass
class _Reading:
    """What the reader got: each item with the time it arrived."""

    items: list[Any] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)


async def _read_all(stream: Any, reading: _Reading) -> None:
    async for item in stream:
        reading.items.append(item)
        reading.arrived.append(time.time())


@dataclass
class _Strike:
    """The restarts: (began, server started) wall-clock times, and where the stream was at each."""

    restarts: list[tuple[float, float]] = field(default_factory=list)
    read_at_restart: list[int] = field(default_factory=list)
    stored_at_restart: list[int] = field(default_factory=list)


def _stored_positions(url: str, schema: str, run_id: str) -> list[tuple[int, Any]]:
    return [
        (int(seq), value)
        for seq, value in fetch_rows(
            url,
            sql.SQL(
                'SELECT seq, value FROM {} WHERE workflow_run_id = %s AND "key" = %s ORDER BY seq'
            ).format(sql.Identifier(schema, "run_streams")),
            (run_id, STREAM_KEY),
        )
    ]


def _hold_next_position(url: str, schema: str, run_id: str) -> psycopg.Connection[Any]:
    """Insert the stream's next position in an open transaction, so the writer's append waits.

    The writer's insert of that position then waits inside the server for this
    transaction, and the restart cuts it off mid-write (otherwise a restart is
    mostly absorbed by the pool, between two appends). The held row is rolled
    back by the restart; the run's replay writes the real item there.
    """
    table = sql.Identifier(schema, "run_streams")
    holder = psycopg.connect(url, connect_timeout=5)
    while True:
        row = holder.execute(
            sql.SQL(
                "INSERT INTO {table} "
                '(namespace_id, workflow_run_id, "key", seq, value, created_at) '
                'SELECT namespace_id, workflow_run_id, "key", max(seq) + 1, %s, now() '
                'FROM {table} WHERE workflow_run_id = %s AND "key" = %s '
                'GROUP BY namespace_id, workflow_run_id, "key" '
                "ON CONFLICT DO NOTHING RETURNING seq"
            ).format(table=table),
            (Jsonb("held by the test"), run_id, STREAM_KEY),
        ).fetchone()
        if row is not None:
            return holder
        holder.rollback()  # the writer took that position first: hold the next one


def _writer_waits(url: str) -> bool:
    return bool(
        fetch_rows(
            url,
            "SELECT 1 FROM pg_stat_activity "
            "WHERE application_name = 'owf-stream-writer' AND wait_event_type = 'Lock'",
        )
    )


async def _restart_mid_stream(
    cluster: PrivateCluster, schema: str, run_id: str, reading: _Reading, reader: asyncio.Task[None]
) -> _Strike:
    strike = _Strike()
    for threshold in RESTART_AT:
        deadline = time.monotonic() + DEADLINE_S
        while len(reading.items) < threshold:
            assert not reader.done(), f"the reader ended after {len(reading.items)} items"
            assert time.monotonic() < deadline, f"the reader got {len(reading.items)} items"
            await asyncio.sleep(0.005)
        holder = await asyncio.to_thread(_hold_next_position, cluster.url, schema, run_id)
        try:
            while not await asyncio.to_thread(_writer_waits, cluster.url):
                assert time.monotonic() < deadline, "the writer never waited on the held position"
                await asyncio.sleep(0.005)
            strike.read_at_restart.append(len(reading.items))
            stored = await asyncio.to_thread(_stored_positions, cluster.url, schema, run_id)
            strike.stored_at_restart.append(len(stored))
            began = time.time()
            await asyncio.to_thread(cluster.restart, "immediate")
            strike.restarts.append((began, await asyncio.to_thread(cluster.started_at)))
        finally:
            with contextlib.suppress(psycopg.Error):
                holder.close()
    return strike


async def test_stream_reader_and_writer_across_restarts(cluster: PrivateCluster) -> None:
    """Two immediate restarts mid-stream: every chunk read once and in order, the run completes."""
    schema = new_schema_name()
    namespace = f"stream-{uuid.uuid4().hex[:8]}"
    writer = PostgresBackend(
        with_application_name(cluster.url, "owf-stream-writer"),
        namespace_id=namespace,
        schema=schema,
        connect_timeout=2,
    )
    client = PostgresBackend(
        with_application_name(cluster.url, "owf-stream-reader"),
        namespace_id=namespace,
        schema=schema,
        connect_timeout=2,
    )
    _stream_steps.clear()
    reading = _Reading()
    try:
        await client.open()
        handle = await OpenWorkflow(client).run(_streamer)
        reader = asyncio.create_task(_read_all(handle.stream(STREAM_KEY), reading))
        async with Worker(writer, [_streamer], lease_duration="2s"):
            strike = await _restart_mid_stream(cluster, schema, handle.id, reading, reader)
            output = await handle.result(timeout=f"{DEADLINE_S:.0f}s")
            await asyncio.wait_for(reader, DEADLINE_S)
        counted = await tally(client, {handle.id: Expected(output=CHUNKS)})
        run = await client.get_workflow_run(GetWorkflowRunParams(workflow_run_id=handle.id))
    finally:
        await writer.stop()
        await client.stop()
    _report_stream(cluster, schema, handle.id, reading, strike, counted, run)
    assert output == CHUNKS


def _report_stream(
    cluster: PrivateCluster,
    schema: str,
    run_id: str,
    reading: _Reading,
    strike: _Strike,
    counted: Tally,
    run: WorkflowRun | None,
) -> None:
    """Report the stream figure from the database and the reader, then assert on it."""
    expected = [{"i": index} for index in range(CHUNKS)]
    stored = _stored_positions(cluster.url, schema, run_id)
    stored_values = Counter(str(value) for _, value in stored)
    read_values = Counter(str(item) for item in reading.items)
    wanted = Counter(str(item) for item in expected)
    lost = len(wanted - read_values) + len(wanted - stored_values) + counted.lost
    duplicated = (
        sum((read_values - wanted).values())
        + sum((stored_values - wanted).values())
        + counted.duplicated
    )
    recovery = [
        next(at for at in reading.arrived if at > back) - began
        for began, back in strike.restarts
        if any(at > back for at in reading.arrived)
    ]
    report(
        Figure(
            fault_id="F3",
            title="stream written and read across PostgreSQL immediate restarts",
            runs=1,
            faults=len(strike.restarts),
            lost=lost,
            duplicated=duplicated,
            reexecuted_steps=sum(count - 1 for count in _stream_steps.values()),
            recovery_s=recovery,
            details=(
                f"{CHUNKS} chunks; restarts when the reader had "
                f"{'/'.join(map(str, strike.read_at_restart))} and the database "
                f"{'/'.join(map(str, strike.stored_at_restart))}; the reader got "
                f"{len(reading.items)} items, the database holds {len(stored)}; "
                f"run claimed {run.attempts if run else 0} times; recovery is restart to the "
                "next chunk read"
            ),
        )
    )
    assert len(strike.restarts) == len(RESTART_AT)
    assert all(count < CHUNKS for count in strike.stored_at_restart), "a restart missed the stream"
    assert reading.items == expected, "the reader missed, repeated or reordered chunks"
    assert stored == [(index + 1, item) for index, item in enumerate(expected)]
    assert dict(_stream_steps) == {"begin": 1, "end": 1}
    assert run is not None and run.status == "completed"
    assert run.attempts > 1, "no restart cut the writer's pass (the replay went untested)"
    assert lost == 0 and duplicated == 0, counted
