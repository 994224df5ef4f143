"""The engine's PostgreSQL sessions run in UTC, whatever the server's or the URL's time zone.

psycopg then hands timestamps over in ``datetime.UTC`` itself, which
``base.load_time`` passes through (in any other zone, each timestamp read is
converted first). The instants are the same either way: a server or a URL set
to another zone changes nothing the engine reads.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from openworkflow.core.ids import new_id
from openworkflow.postgres import PostgresBackend
from openworkflow.postgres.base import load_time
from tests.backend.helpers import create_pending_run

KOLKATA = ZoneInfo("Asia/Kolkata")  # +05:30: an offset no rounding hides


def test_a_timestamp_in_another_zone_loads_as_the_same_instant_in_utc() -> None:
    local = datetime(2026, 12, 8, 9, 30, 15, 123456, tzinfo=KOLKATA)
    loaded = load_time(local)
    assert loaded.tzinfo is UTC
    assert loaded == datetime(2026, 12, 8, 4, 0, 15, 123000, tzinfo=UTC)


def test_a_utc_timestamp_loads_truncated_to_milliseconds() -> None:
    loaded = load_time(datetime(2026, 12, 8, 4, 0, 15, 123999, tzinfo=UTC))
    assert loaded == datetime(2026, 12, 8, 4, 0, 15, 123000, tzinfo=UTC)


@pytest.mark.parametrize("backend_kind", ["postgres"], indirect=True)
async def test_engine_sessions_are_in_utc(backend: Any) -> None:
    for kind in ("main", "lease", "claim"):
        pool = await backend._db.pool_for(kind)
        async with pool.connection() as connection:
            zone = await (await connection.execute("SHOW TimeZone")).fetchone()
            now = await (await connection.execute("SELECT NOW()")).fetchone()
        assert zone[0] == "UTC", kind
        assert now[0].tzinfo is UTC, kind  # what load_time passes through as it is


@pytest.mark.parametrize("backend_kind", ["postgres"], indirect=True)
async def test_a_url_in_another_zone_reads_the_same_instants(backend: Any) -> None:
    url = backend._db.url
    separator = "&" if "?" in url else "?"
    url = f"{url}{separator}options=-c%20TimeZone%3DAsia/Kolkata"
    other = PostgresBackend(url, namespace_id=new_id(), schema=backend._db.schema)
    await other.open()
    try:
        before = datetime.now(UTC)
        run = await create_pending_run(other)
        after = datetime.now(UTC)
        assert run.created_at.tzinfo is UTC
        async with (await other._db.pool_for("main")).connection() as connection:
            row = await (await connection.execute("SHOW TimeZone")).fetchone()
        assert row[0] == "UTC"  # the engine's setting wins over the URL's
        # The database's clock is the engine's reference; allow for skew and trip.
        assert before - timedelta(seconds=5) <= run.created_at <= after + timedelta(seconds=5)
    finally:
        await other.stop()
