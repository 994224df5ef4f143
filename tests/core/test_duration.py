from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from openworkflow.core.duration import parse_duration_ms, resolve_time
from openworkflow.errors import InvalidDurationError


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("500ms", 500),
        ("500", 500),
        ("1.5s", 1500),
        (".5s", 500),
        ("-1s", -1000),
        ("30 s", 30_000),
        ("5m", 300_000),
        ("2 Minutes", 120_000),
        ("1h", 3_600_000),
        ("7d", 604_800_000),
        ("2w", 1_209_600_000),
        ("1mo", 2_629_800_000),
        ("1y", 31_557_600_000),
        ("3 hrs", 10_800_000),
    ],
)
def test_parses_the_original_grammar(text: str, ms: float) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", " 1s", "1s ", "1s2m", "1 fortnight", "abc", "s"])
def test_rejects_what_the_original_rejects(text: str) -> None:
    with pytest.raises(InvalidDurationError, match="invalid duration"):
        parse_duration_ms(text)


def test_numbers_are_seconds_and_timedeltas_are_taken_as_is() -> None:
    assert parse_duration_ms(2) == 2000
    assert parse_duration_ms(0.25) == 250
    assert parse_duration_ms(timedelta(minutes=1)) == 60_000
    with pytest.raises(InvalidDurationError):
        parse_duration_ms(float("nan"))
    with pytest.raises(InvalidDurationError):
        parse_duration_ms(True)


def test_resolve_time_accepts_aware_datetimes_and_durations() -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    assert resolve_time("1h", base=base) == base + timedelta(hours=1)
    exact = datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    assert resolve_time(exact).microsecond == 123000
    with pytest.raises(InvalidDurationError, match="timezone-aware"):
        resolve_time(datetime(2026, 1, 1))
