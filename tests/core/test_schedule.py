"""The pure rules of schedules: validation, next tick across DST, catch-up, keys and names."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openworkflow.core.json import MAX_NAME_BYTES
from openworkflow.core.schedule import (
    InvalidScheduleError,
    Schedule,
    due_ticks,
    next_tick,
    schedule_names,
    tick_idempotency_key,
)
from openworkflow.errors import InvalidNameError

PARIS = "Europe/Paris"
NEW_YORK = "America/New_York"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def ticks_between(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """Every tick in [start, end), by walking next_tick."""
    found = []
    tick = next_tick(schedule, start - timedelta(microseconds=1))
    while tick < end:
        found.append(tick)
        tick = next_tick(schedule, tick)
    return found


def ticks_on_local_day(schedule: Schedule, day: date) -> list[datetime]:
    zone = ZoneInfo(schedule.timezone)
    start = datetime.combine(day, time(), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=zone)
    return ticks_between(schedule, start, end)


# -- next_tick ---------------------------------------------------------------------------------


def test_every_five_minutes_ticks_strictly_after_the_given_instant() -> None:
    schedule = Schedule("*/5 * * * *")
    assert next_tick(schedule, utc(2026, 5, 1, 10, 2, 59)) == utc(2026, 5, 1, 10, 5)
    assert next_tick(schedule, utc(2026, 5, 1, 10, 5)) == utc(2026, 5, 1, 10, 10)
    just_after = utc(2026, 5, 1, 10, 5).replace(microsecond=1)
    assert next_tick(schedule, just_after) == utc(2026, 5, 1, 10, 10)
    assert next_tick(schedule, utc(2026, 12, 31, 23, 59)) == utc(2027, 1, 1)


def test_ticks_are_returned_in_utc_whatever_the_zone_of_after() -> None:
    schedule = Schedule("0 9 * * *", timezone=PARIS)
    after = datetime(2026, 6, 1, 12, tzinfo=ZoneInfo("Asia/Tokyo"))  # 03:00 UTC
    tick = next_tick(schedule, after)
    assert tick == utc(2026, 6, 1, 7)  # 09:00 CEST
    assert tick.tzinfo is UTC


@pytest.mark.parametrize(
    ("zone", "friday", "expected_utc_hours"),
    [
        # Spring forward between the two weekdays: 09:00 local moves one hour earlier in UTC.
        (PARIS, date(2026, 3, 27), [8, 7]),
        (NEW_YORK, date(2026, 3, 6), [14, 13]),
        # Fall back: one hour later in UTC.
        (PARIS, date(2026, 10, 23), [7, 8]),
        (NEW_YORK, date(2026, 10, 30), [13, 14]),
    ],
)
def test_weekdays_at_nine_stay_at_nine_local_across_dst(
    zone: str, friday: date, expected_utc_hours: list[int]
) -> None:
    schedule = Schedule("0 9 * * MON-FRI", timezone=zone)
    thursday_noon = datetime.combine(friday - timedelta(days=1), time(12), tzinfo=ZoneInfo(zone))
    first = next_tick(schedule, thursday_noon)
    second = next_tick(schedule, first)
    monday = friday + timedelta(days=3)
    assert [first.date(), second.date()] == [friday, monday]  # the weekend has no tick
    assert [first.hour, second.hour] == expected_utc_hours
    assert [t.astimezone(ZoneInfo(zone)).time() for t in (first, second)] == [time(9)] * 2


@pytest.mark.parametrize(
    ("zone", "day", "expected"),
    [
        # 02:30 does not exist: the job runs once, at the first instant after the gap (03:00).
        (NEW_YORK, date(2026, 3, 8), utc(2026, 3, 8, 7)),  # 03:00 EDT
        (PARIS, date(2026, 3, 29), utc(2026, 3, 29, 1)),  # 03:00 CEST
    ],
)
def test_a_fixed_time_in_the_spring_forward_gap_runs_once_right_after_it(
    zone: str, day: date, expected: datetime
) -> None:
    schedule = Schedule("30 2 * * *", timezone=zone)
    assert ticks_on_local_day(schedule, day) == [expected]
    # The days around it run at 02:30 as usual.
    for other in (day - timedelta(days=1), day + timedelta(days=1)):
        [tick] = ticks_on_local_day(schedule, other)
        assert tick.astimezone(ZoneInfo(zone)).time() == time(2, 30)


@pytest.mark.parametrize(
    ("zone", "cron", "day", "expected"),
    [
        # 01:30 happens twice (EDT, then EST): the job runs once, at the first one.
        (NEW_YORK, "30 1 * * *", date(2026, 11, 1), utc(2026, 11, 1, 5, 30)),
        # 02:30 happens twice (CEST, then CET).
        (PARIS, "30 2 * * *", date(2026, 10, 25), utc(2026, 10, 25, 0, 30)),
    ],
)
def test_a_fixed_time_in_the_repeated_hour_runs_once_at_its_first_occurrence(
    zone: str, cron: str, day: date, expected: datetime
) -> None:
    schedule = Schedule(cron, timezone=zone)
    assert ticks_on_local_day(schedule, day) == [expected]
    # Asked from inside the second pass of the repeated hour, the next tick is tomorrow's.
    second_pass = expected + timedelta(minutes=40)
    assert next_tick(schedule, second_pass) == ticks_on_local_day(schedule, day + timedelta(1))[0]
    assert next_tick(schedule, second_pass) > second_pass


@pytest.mark.parametrize("zone", [PARIS, NEW_YORK])
def test_hourly_follows_the_real_clock_23_and_25_ticks_on_dst_days(zone: str) -> None:
    schedule = Schedule("0 * * * *", timezone=zone)
    spring, autumn = (
        (date(2026, 3, 29), date(2026, 10, 25))
        if zone == PARIS
        else (date(2026, 3, 8), date(2026, 11, 1))
    )
    spring_ticks = ticks_on_local_day(schedule, spring)
    autumn_ticks = ticks_on_local_day(schedule, autumn)
    assert len(spring_ticks) == 23
    assert len(autumn_ticks) == 25
    assert len(ticks_on_local_day(schedule, spring - timedelta(days=1))) == 24
    for ticks in (spring_ticks, autumn_ticks):
        assert all(b - a == timedelta(hours=1) for a, b in pairwise(ticks))


def test_an_explicit_hour_list_is_a_fixed_time_and_fires_once_in_the_repeated_hour() -> None:
    # cronsim's (Debian cron's) rule: minute and hour fields not starting with "*" are fixed
    # times, so "every hour from 0 to 23" runs 23 times in spring and 24 (not 25) in autumn.
    schedule = Schedule("0 0-23 * * *", timezone=NEW_YORK)
    assert len(ticks_on_local_day(schedule, date(2026, 3, 8))) == 23
    autumn = ticks_on_local_day(schedule, date(2026, 11, 1))
    assert len(autumn) == 24
    assert len(set(autumn)) == 24


def test_a_wildcard_job_in_the_gap_has_no_tick_that_day() -> None:
    schedule = Schedule("*/30 2 * * *", timezone=NEW_YORK)
    assert ticks_on_local_day(schedule, date(2026, 3, 8)) == []
    assert len(ticks_on_local_day(schedule, date(2026, 3, 9))) == 2


def test_aliases_and_lowercase_names_are_accepted() -> None:
    assert Schedule("@daily").expression == "0 0 * * *"
    assert next_tick(Schedule("@hourly"), utc(2026, 1, 1, 10, 30)) == utc(2026, 1, 1, 11)
    assert next_tick(Schedule("0 9 * * mon-fri"), utc(2026, 1, 3)) == utc(2026, 1, 5, 9)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="after must be an aware datetime"):
        next_tick(Schedule("* * * * *"), datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="now must be an aware datetime"):
        due_ticks(Schedule("* * * * *"), None, utc(2026, 1, 1), datetime(2026, 1, 2))


# -- due_ticks ---------------------------------------------------------------------------------

HOURLY_SEEN = utc(2026, 5, 1, 8, 30)


def hourly(catchup: str) -> Schedule:
    return Schedule("0 * * * *", catchup=catchup)  # type: ignore[arg-type]


def test_the_first_tick_is_the_first_one_after_the_schedule_is_first_seen() -> None:
    for catchup in ("skip", "last", "all"):
        schedule = hourly(catchup)
        assert due_ticks(schedule, None, HOURLY_SEEN, utc(2026, 5, 1, 8, 59)) == []
        assert due_ticks(schedule, None, HOURLY_SEEN, utc(2026, 5, 1, 9)) == [utc(2026, 5, 1, 9)]
        # Seen exactly at a tick: that tick is not "after" it.
        assert due_ticks(schedule, None, utc(2026, 5, 1, 9), utc(2026, 5, 1, 9, 0, 30)) == []


def test_a_tick_already_started_is_not_due_again() -> None:
    for catchup in ("skip", "last", "all"):
        schedule = hourly(catchup)
        now = utc(2026, 5, 1, 9, 0, 20)
        assert due_ticks(schedule, utc(2026, 5, 1, 9), HOURLY_SEEN, now) == []
        # A worker whose clock is behind another's sees a last tick in its future.
        assert due_ticks(schedule, utc(2026, 5, 1, 10), HOURLY_SEEN, now) == []


def test_catchup_after_downtime_per_policy() -> None:
    last_tick = utc(2026, 5, 1, 9)
    back_up = utc(2026, 5, 1, 14, 20)  # 10:00 .. 14:00 were missed
    missed = [utc(2026, 5, 1, hour) for hour in range(10, 15)]
    assert due_ticks(hourly("skip"), last_tick, HOURLY_SEEN, back_up) == []
    assert due_ticks(hourly("last"), last_tick, HOURLY_SEEN, back_up) == [missed[-1]]
    assert due_ticks(hourly("all"), last_tick, HOURLY_SEEN, back_up) == missed


def test_skip_still_runs_the_current_tick_noticed_within_the_grace() -> None:
    last_tick = utc(2026, 5, 1, 9)
    schedule = hourly("skip")
    assert due_ticks(schedule, last_tick, HOURLY_SEEN, utc(2026, 5, 1, 14, 0, 45)) == [
        utc(2026, 5, 1, 14)
    ]
    late = utc(2026, 5, 1, 14, 1, 1)
    assert due_ticks(schedule, last_tick, HOURLY_SEEN, late) == []
    assert due_ticks(schedule, last_tick, HOURLY_SEEN, late, grace=timedelta(minutes=5)) == [
        utc(2026, 5, 1, 14)
    ]


def test_catchup_all_returns_the_oldest_first_in_batches_of_limit() -> None:
    schedule = Schedule("*/5 * * * *", catchup="all")
    seen = utc(2026, 5, 1, 0, 0, 1)
    now = utc(2026, 5, 1, 1, 0)  # 12 missed ticks: 00:05 .. 01:00
    batches: list[list[datetime]] = []
    last_tick = None
    while batch := due_ticks(schedule, last_tick, seen, now, limit=5):
        batches.append(batch)
        last_tick = batch[-1]
    assert [len(batch) for batch in batches] == [5, 5, 2]
    flat = [tick for batch in batches for tick in batch]
    assert flat == [utc(2026, 5, 1, 0, 5) + timedelta(minutes=5 * n) for n in range(12)]
    with pytest.raises(ValueError, match="limit must be at least 1"):
        due_ticks(schedule, None, seen, now, limit=0)


def test_catchup_last_after_a_long_downtime_is_quick_and_exact() -> None:
    schedule = Schedule("* * * * *", catchup="last")
    seen = utc(2025, 1, 1)
    now = utc(2026, 5, 1, 12, 34, 56)
    # A year of minutely ticks: walking them all would take seconds.
    assert due_ticks(schedule, None, seen, now) == [utc(2026, 5, 1, 12, 34)]


def test_catchup_last_picks_the_latest_of_a_burst_of_ticks() -> None:
    schedule = Schedule("* 9 * * *", catchup="last")  # every minute from 09:00 to 09:59
    now = utc(2026, 5, 1, 12)
    assert due_ticks(schedule, None, utc(2026, 4, 1), now) == [utc(2026, 5, 1, 9, 59)]
    assert due_ticks(schedule, utc(2026, 5, 1, 9, 58), utc(2026, 4, 1), now) == [
        utc(2026, 5, 1, 9, 59)
    ]
    assert due_ticks(schedule, utc(2026, 5, 1, 9, 59), utc(2026, 4, 1), now) == []


def test_catchup_last_in_the_second_pass_of_a_repeated_hour() -> None:
    schedule = Schedule("30 1 * * *", timezone=NEW_YORK, catchup="last")
    now = utc(2026, 11, 1, 6, 10)  # 01:10 EST, after 01:30 EDT
    assert due_ticks(schedule, None, utc(2026, 10, 20), now) == [utc(2026, 11, 1, 5, 30)]


# -- idempotency keys --------------------------------------------------------------------------


def test_tick_keys_are_stable_distinct_and_zone_independent() -> None:
    tick = utc(2026, 3, 8, 7)
    key = tick_idempotency_key("reports", tick)
    assert key == "__schedule:reports:2026-03-08T07:00:00Z"
    assert tick_idempotency_key("reports", tick.astimezone(ZoneInfo(NEW_YORK))) == key
    assert tick_idempotency_key("reports", tick + timedelta(minutes=1)) != key
    assert tick_idempotency_key("reports:1", tick) != key
    assert tick_idempotency_key("reports", tick.replace(microsecond=5)) != key


@pytest.mark.parametrize("unit", ["x", "é", "🦆"])
def test_long_schedule_names_still_give_short_distinct_keys(unit: str) -> None:
    tick = utc(2026, 1, 1).replace(microsecond=123456)
    long_name = unit * 600
    keys = {tick_idempotency_key(long_name + suffix, tick) for suffix in ("", "a", "b")}
    assert len(keys) == 3
    for key in keys:
        assert len(key.encode("utf-8")) <= MAX_NAME_BYTES
        assert key.startswith("__schedule:" + unit * 10)
        assert key.endswith(":2026-01-01T00:00:00.123456Z")
    assert tick_idempotency_key(long_name, tick) == tick_idempotency_key(long_name, tick)


# -- names -------------------------------------------------------------------------------------


def test_default_names_are_the_workflow_name_then_numbered() -> None:
    plain = [Schedule("@daily"), Schedule("@hourly"), Schedule("@weekly")]
    assert schedule_names("reports", plain) == ["reports", "reports:1", "reports:2"]
    mixed = [Schedule("@daily", name="nightly"), Schedule("@hourly"), Schedule("@weekly")]
    assert schedule_names("reports", mixed) == ["nightly", "reports", "reports:1"]


def test_explicit_names_win_over_the_defaults() -> None:
    schedules = [Schedule("@daily"), Schedule("@hourly", name="reports")]
    assert schedule_names("reports", schedules) == ["reports:1", "reports"]


def test_duplicate_explicit_names_are_refused() -> None:
    schedules = [Schedule("@daily", name="nightly"), Schedule("@hourly", name="nightly")]
    with pytest.raises(InvalidScheduleError, match="two schedules named 'nightly'"):
        schedule_names("reports", schedules)


# -- validation --------------------------------------------------------------------------------


def test_defaults_match_the_spec() -> None:
    schedule = Schedule("0 9 * * MON-FRI")
    assert (schedule.timezone, schedule.input, schedule.name) == ("UTC", None, None)
    assert (schedule.overlap, schedule.catchup) == ("skip", "last")


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"cron": "61 * * * *"}, ["'61 * * * *'", "Bad minute", "5 fields"]),
        ({"cron": "0 25 * * *"}, ["'0 25 * * *'", "Bad hour", "hour 0-23"]),
        ({"cron": "0 9 * * FUNDAY"}, ["Bad day-of-week", "SUN-SAT"]),
        ({"cron": "0 0 9 * * *"}, ["has 6 fields", "seconds field is not supported"]),
        ({"cron": "0 9 * *"}, ["has 4 fields", '"0 9 * * MON-FRI"']),
        ({"cron": 9}, ["must be a string, got int"]),
        ({"cron": "0 9 * * *", "timezone": "Europe/Pari"}, ["'Europe/Pari'", "'Europe/Paris'"]),
        ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, ["unknown time zone", "IANA"]),
        ({"cron": "0 9 * * *", "timezone": ""}, ["IANA time zone name"]),
        ({"cron": "0 9 * * *", "overlap": "never"}, ["overlap", "'skip', 'allow'", "'never'"]),
        ({"cron": "0 9 * * *", "catchup": "first"}, ["catchup", "'skip', 'last', 'all'"]),
    ],
)
def test_validation_errors_say_what_is_wrong_and_how_to_fix_it(
    kwargs: dict[str, object], fragments: list[str]
) -> None:
    with pytest.raises(InvalidScheduleError) as caught:
        Schedule(**kwargs)  # type: ignore[arg-type]
    for fragment in fragments:
        assert fragment in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_a_schedule_name_the_database_cannot_store_is_refused() -> None:
    with pytest.raises(InvalidNameError, match="schedule name"):
        Schedule("@daily", name="x" * 600)


# -- properties --------------------------------------------------------------------------------

MINUTE_FIELDS = ["*", "*/5", "*/7", "0", "15", "0,30", "10-20", "58"]
HOUR_FIELDS = ["*", "*/3", "0", "1", "2", "3", "1-3", "9", "22"]
WEEKDAY_FIELDS = ["*", "1-5", "0,6", "3"]


def field_values(field: str, low: int, high: int) -> set[int]:
    """A tiny independent reading of the cron fields the property test draws."""
    if field == "*":
        return set(range(low, high + 1))
    if field.startswith("*/"):
        return set(range(low, high + 1, int(field[2:])))
    if "-" in field:
        first, last = map(int, field.split("-"))
        return set(range(first, last + 1))
    return {int(part) for part in field.split(",")}


def matches(minute: str, hour: str, weekday: str, moment: datetime) -> bool:
    return (
        moment.minute in field_values(minute, 0, 59)
        and moment.hour in field_values(hour, 0, 23)
        and (moment.weekday() + 1) % 7 in field_values(weekday, 0, 6)
    )


@settings(max_examples=60, deadline=None)
@given(
    minute=st.sampled_from(MINUTE_FIELDS),
    hour=st.sampled_from(HOUR_FIELDS),
    weekday=st.sampled_from(WEEKDAY_FIELDS),
    seconds=st.integers(0, 365 * 24 * 3600),
)
def test_next_tick_in_utc_is_the_first_matching_minute(
    minute: str, hour: str, weekday: str, seconds: int
) -> None:
    schedule = Schedule(f"{minute} {hour} * * {weekday}")
    after = utc(2026, 1, 1) + timedelta(seconds=seconds, microseconds=seconds % 7)
    tick = next_tick(schedule, after)
    assert tick > after
    assert tick.second == tick.microsecond == 0
    assert matches(minute, hour, weekday, tick)
    moment = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while moment < tick:
        assert not matches(minute, hour, weekday, moment), moment
        moment += timedelta(minutes=1)


TRANSITIONS = [
    (NEW_YORK, utc(2026, 3, 8, 7)),
    (NEW_YORK, utc(2026, 11, 1, 6)),
    (PARIS, utc(2026, 3, 29, 1)),
    (PARIS, utc(2026, 10, 25, 1)),
]


@settings(max_examples=40, deadline=None)
@given(
    minute=st.sampled_from(MINUTE_FIELDS),
    hour=st.sampled_from(HOUR_FIELDS),
    transition=st.sampled_from(TRANSITIONS),
    offset=st.integers(-6 * 3600, 3 * 3600),
)
def test_near_dst_every_instant_before_a_tick_leads_to_that_tick(
    minute: str, hour: str, transition: tuple[str, datetime], offset: int
) -> None:
    zone, instant = transition
    schedule = Schedule(f"{minute} {hour} * * *", timezone=zone)
    after = instant + timedelta(seconds=offset)
    tick = next_tick(schedule, after)
    assert tick > after
    # Walking never skips a tick: from any minute between after and the tick (the last
    # six hours before it, to stay fast), the next tick is the same one.
    moment = max(after, tick - timedelta(hours=6))
    while moment < tick:
        assert next_tick(schedule, moment) == tick, moment
        moment += timedelta(minutes=1)
    # Outside a gap, the tick's wall-clock time matches the expression.
    local = tick.astimezone(ZoneInfo(zone))
    before = (tick - timedelta(minutes=1)).astimezone(ZoneInfo(zone))
    if local.replace(tzinfo=None) - before.replace(tzinfo=None) == timedelta(minutes=1):
        assert matches(minute, hour, "*", local)
