"""Pure helpers: schedule fields, durations and status explanations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from openworkflow.dashboard.views import (
    FormValueError,
    format_duration,
    format_time,
    parse_tz_offset,
    parse_when,
)


def test_schedule_fields_take_durations_and_times() -> None:
    assert parse_when("available_at", "  ", None) is None
    assert parse_when("available_at", "5m", None) == "5m"
    assert parse_when("available_at", "2030-01-31T09:00", None) == datetime(
        2030, 1, 31, 9, 0, tzinfo=UTC
    )
    assert parse_when("available_at", "2030-01-31T09:00", 60) == datetime(
        2030, 1, 31, 10, 0, tzinfo=UTC
    )  # UTC-1 in the browser
    assert parse_when("deadline_at", "2030-01-31T09:00:00+02:00", 60) == datetime(
        2030, 1, 31, 7, 0, tzinfo=UTC
    )
    with pytest.raises(FormValueError) as refused:
        parse_when("deadline_at", "tomorrow", None)
    assert refused.value.field == "deadline_at"


def test_timezone_offsets_are_bounded() -> None:
    assert parse_tz_offset("-120") == -120
    assert parse_tz_offset("") is None
    assert parse_tz_offset("abc") is None
    assert parse_tz_offset("100000") is None


def test_durations_and_times_read_well() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert format_duration(start, None) == "—"
    assert format_duration(start, start + timedelta(milliseconds=250)) == "250 ms"
    assert format_duration(start, start + timedelta(seconds=2.5)) == "2.5 s"
    assert format_duration(start, start + timedelta(minutes=3, seconds=4)) == "3m 04s"
    assert format_duration(start, start + timedelta(hours=5, minutes=6)) == "5h 06m"
    assert format_duration(start, start + timedelta(days=3, hours=1)) == "3d 01h"
    assert format_time(start) == "2026-01-01 00:00:00 UTC"
    assert format_time(None) == "—"
