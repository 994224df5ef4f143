"""Schedules: cron rules that start runs, and the pure arithmetic of their ticks.

A :class:`Schedule` says when a workflow starts by itself: a 5-field cron
expression read in an IANA time zone. This module holds only the rules, with no
storage and no clock: which instant is the next tick (:func:`next_tick`), which
ticks are due now given what was already started (:func:`due_ticks`), the
idempotency key under which a tick's run is created (:func:`tick_idempotency_key`)
and the default names of a workflow's schedules (:func:`schedule_names`).

Cron expressions are parsed and iterated by `cronsim
<https://github.com/cuu508/cronsim>`_, which follows Debian (Vixie) cron,
including its handling of daylight-saving changes. Cron fields are wall-clock
times in the schedule's time zone; on the two days a year when the wall clock
jumps, cron users expect, and this module does:

- **Spring forward** (a wall time is skipped, e.g. 02:30 on 2026-03-08 in
  ``America/New_York``): a job at a fixed time inside the gap runs once, at the
  first instant after the gap (``"30 2 * * *"`` runs at 03:00 local that day).
  A job whose minute or hour field starts with ``*`` (``"*/5 * * * *"``,
  ``"0 * * * *"``, ``"*/30 2 * * *"``) follows the real clock: the wall times that
  do not exist simply have no tick, so an hourly job ticks 23 times that day.
- **Fall back** (a wall time happens twice, e.g. 01:30 on 2026-11-01 in
  ``America/New_York``): a job at a fixed time in the repeated hour runs once, at
  the first occurrence (01:30 EDT, 05:30 UTC), not again an hour later. A job
  whose minute or hour field starts with ``*`` follows the real clock and runs in
  both passes: an hourly job ticks 25 times that day.

"Fixed time" means cronsim's rule: a 5-field expression whose minute and hour
fields both do not start with ``*`` (``"0 9 * * *"``, ``"0,30 1-3 * * *"``).

Every function takes and returns aware datetimes; ticks are returned in UTC.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

from openworkflow.core.json import MAX_NAME_BYTES, JsonValue, check_name
from openworkflow.errors import InvalidScheduleError

Overlap = Literal["skip", "allow"]
"""``skip``: no new run while the schedule's previous run is active; ``allow``: start anyway."""

Catchup = Literal["skip", "last", "all"]
"""After downtime: ``skip`` missed ticks, run only the ``last`` one, or run ``all`` of them."""

SKIP_GRACE = timedelta(minutes=1)
"""How late a tick may be noticed and still count as current under ``catchup="skip"``.

Workers look for due ticks every few seconds; a tick noticed later than this
was missed (downtime), and ``skip`` drops it.
"""

DEFAULT_CATCHUP_LIMIT = 100
"""Most ticks :func:`due_ticks` returns at once under ``catchup="all"``."""

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""The usual cron shorthands, with the 5-field expressions they stand for."""

_CRON_HELP = (
    'Write 5 fields, "minute hour day-of-month month day-of-week", such as "*/5 * * * *" '
    'or "0 9 * * MON-FRI" (minute 0-59, hour 0-23, day 1-31 or L, month 1-12 or JAN-DEC, '
    "day of week 0-7 or SUN-SAT), or one of " + ", ".join(ALIASES) + "."
)
_KEY_PREFIX = "__schedule:"
_STAMP_BYTES = len("2026-01-01T00:00:00.000000Z")
_KEY_NAME_BYTES = MAX_NAME_BYTES - len(_KEY_PREFIX) - len(":") - _STAMP_BYTES
"""Longest schedule name kept as is in an idempotency key; longer ones are hashed."""
_HASH_CHARS = 64
_PROBE = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Schedule:
    """Start a workflow run at every tick of a cron expression.

    Args:
        cron: 5-field cron expression (``"0 9 * * MON-FRI"``) or an alias such as
            ``"@daily"``, read as wall-clock time in ``timezone``.
        timezone: IANA time zone name, e.g. ``"Europe/Paris"``; default ``"UTC"``.
        input: the input of every run the schedule starts (checked by the engine).
        name: identifies the schedule (``ow schedules pause NAME``); by default the
            workflow's name, then ``NAME:1``, ``NAME:2`` for further schedules.
        overlap: ``"skip"`` (no new run while the previous one is active) or ``"allow"``.
        catchup: after downtime, ``"skip"`` missed ticks, run the ``"last"`` one, or
            ``"all"`` of them. The first tick is the first one after the schedule is
            first seen.

    Raises:
        InvalidScheduleError: a field is not usable; the message says how to fix it.

    Example:
        ``Schedule("0 9 * * MON-FRI", timezone="Europe/Paris", input={"report": "daily"})``
    """

    cron: str
    timezone: str = "UTC"
    input: JsonValue = None
    name: str | None = None
    overlap: Overlap = "skip"
    catchup: Catchup = "last"

    def __post_init__(self) -> None:
        _check_cron(self.cron)
        _zone(self.timezone)
        _check_choice("overlap", self.overlap, get_args(Overlap))
        _check_choice("catchup", self.catchup, get_args(Catchup))
        if self.name is not None:
            check_name(self.name, "schedule name")

    @property
    def expression(self) -> str:
        """The 5-field cron expression, with an alias such as ``@daily`` spelled out."""
        return _expression(self.cron)


def next_tick(schedule: Schedule, after: datetime) -> datetime:
    """Return the schedule's first tick strictly after ``after``, in UTC.

    The cron fields are matched against wall-clock time in the schedule's time
    zone, with the daylight-saving rules described in this module's docstring.
    Every instant between ``after`` and the returned tick has the same next tick,
    so walking from tick to tick never skips or repeats one.

    Raises:
        ValueError: ``after`` is a naive datetime.
        InvalidScheduleError: the expression has no tick in the 50 years after ``after``.
    """
    _require_aware(after, "after")
    ticks = CronSim(schedule.expression, after.astimezone(ZoneInfo(schedule.timezone)))
    try:
        while True:
            tick = next(ticks)
            # cronsim iterates fixed-time jobs on the naive wall clock, so from the
            # second pass of a repeated hour it can yield that hour's first pass,
            # which is earlier than ``after``: those ticks already happened.
            if tick > after:
                return tick.astimezone(UTC)
    except StopIteration:
        raise InvalidScheduleError(
            f"cron expression {schedule.cron!r} has no tick in the 50 years after "
            f"{after.isoformat()}; check its day-of-month and month fields"
        ) from None


def due_ticks(
    schedule: Schedule,
    last_tick: datetime | None,
    first_seen: datetime,
    now: datetime,
    *,
    limit: int = DEFAULT_CATCHUP_LIMIT,
    grace: timedelta = SKIP_GRACE,
) -> list[datetime]:
    """Return the ticks to create runs for at ``now``, oldest first, in UTC.

    Only ticks strictly after ``first_seen`` (when the schedule was first seen)
    and strictly after ``last_tick`` (the latest tick a run was already created
    for, None if none) and at or before ``now`` can be due. Among those, per
    ``schedule.catchup``:

    - ``"skip"``: the latest one, if it is at most ``grace`` old; older ticks
      were missed while nothing was running and are dropped.
    - ``"last"``: the latest one, however old.
    - ``"all"``: every one, oldest first, at most ``limit``; once the engine has
      recorded the last of them as ``last_tick``, the next call returns the
      following ones.

    Overlap is not decided here: the engine knows whether a run is active.

    Raises:
        ValueError: a naive datetime, or ``limit`` below 1.
    """
    for value, label in ((first_seen, "first_seen"), (now, "now"), (last_tick, "last_tick")):
        if value is not None:
            _require_aware(value, label)
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    floor = first_seen if last_tick is None else max(first_seen, last_tick)
    if schedule.catchup == "all":
        return list(itertools.islice(_ticks_until(schedule, floor, now), limit))
    if schedule.catchup == "skip":
        floor = max(floor, now - grace)
    latest = _latest_tick(schedule, floor, now)
    return [] if latest is None else [latest]


def tick_idempotency_key(schedule_name: str, tick: datetime) -> str:
    """Return the idempotency key of the run that serves ``tick`` of a schedule.

    Racing workers that find the same tick due create its run under the same key,
    so the backend returns one run to all of them. The key is
    ``__schedule:<name>:<tick in UTC, ISO 8601>`` (the ``__`` prefix keeps it
    apart from users' own keys, like the engine's ``__workflow:`` keys); a name too
    long to fit in the database's 512-byte limit is cut and followed by its
    SHA-256, so distinct names keep distinct keys.
    """
    _require_aware(tick, "tick")
    moment = tick.astimezone(UTC)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if moment.microsecond else "%Y-%m-%dT%H:%M:%SZ")
    name = schedule_name
    encoded = name.encode("utf-8")
    if len(encoded) > _KEY_NAME_BYTES:
        digest = hashlib.sha256(encoded).hexdigest()
        head = encoded[: _KEY_NAME_BYTES - 1 - _HASH_CHARS].decode("utf-8", errors="ignore")
        name = f"{head}~{digest}"
    return f"{_KEY_PREFIX}{name}:{stamp}"


def schedule_names(workflow_name: str, schedules: Sequence[Schedule]) -> list[str]:
    """Return the name of each of a workflow's schedules, in order.

    An explicit ``Schedule(name=...)`` is kept. The others take, in order, the
    workflow's name, then ``<workflow>:1``, ``<workflow>:2`` and so on, skipping
    names already given explicitly (explicit names win).

    Raises:
        InvalidScheduleError: two schedules of the workflow have the same explicit name.
    """
    explicit = [schedule.name for schedule in schedules if schedule.name is not None]
    seen: set[str] = set()
    for name in explicit:
        if name in seen:
            raise InvalidScheduleError(
                f"workflow {workflow_name!r} has two schedules named {name!r}; give each "
                "schedule its own name=, or leave name out to get the default names "
                f"{workflow_name!r}, '{workflow_name}:1', ..."
            )
        seen.add(name)
    defaults = (
        candidate
        for candidate in itertools.chain(
            [workflow_name], (f"{workflow_name}:{n}" for n in itertools.count(1))
        )
        if candidate not in seen
    )
    names = [
        schedule.name if schedule.name is not None else next(defaults) for schedule in schedules
    ]
    for name in names:
        check_name(name, "schedule name")
    return names


# -- helpers ---------------------------------------------------------------------------------


def _ticks_until(schedule: Schedule, after: datetime, until: datetime) -> Iterator[datetime]:
    """Yield the ticks in ``(after, until]``, oldest first."""
    tick = next_tick(schedule, after)
    while tick <= until:
        yield tick
        tick = next_tick(schedule, tick)


def _latest_tick(schedule: Schedule, after: datetime, until: datetime) -> datetime | None:
    """Return the latest tick in ``(after, until]``, or None if there is none.

    Walking from ``after`` could take a long time (a minutely schedule after a
    month of downtime), so look back from ``until`` over windows doubling from one
    minute until one holds a tick, then walk through that window only.
    """
    if next_tick(schedule, after) > until:
        return None
    span = timedelta(minutes=1)
    while True:
        start = max(after, until - span)
        tick = next_tick(schedule, start)
        if tick <= until:
            break
        span *= 2
    while (following := next_tick(schedule, tick)) <= until:
        tick = following
    return tick


def _expression(cron: str) -> str:
    text = " ".join(cron.split())
    return ALIASES.get(text.lower(), text)


def _check_cron(cron: object) -> None:
    if not isinstance(cron, str):
        raise InvalidScheduleError(
            f"Schedule cron must be a string, got {type(cron).__name__}. {_CRON_HELP}"
        )
    fields = _expression(cron).split()
    if len(fields) != 5:
        extra = " (a seconds field is not supported)" if len(fields) == 6 else ""
        raise InvalidScheduleError(
            f"cron expression {cron!r} has {len(fields)} fields{extra}. {_CRON_HELP}"
        )
    try:
        next(CronSim(" ".join(fields), _PROBE))
    except CronSimError as error:
        raise InvalidScheduleError(
            f"invalid cron expression {cron!r}: {error}. {_CRON_HELP}"
        ) from None
    except StopIteration:
        raise InvalidScheduleError(
            f"cron expression {cron!r} never matches a date; check its day-of-month and "
            "month fields (e.g. there is no 30 February)"
        ) from None


def _zone(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise InvalidScheduleError(
            f'Schedule timezone must be an IANA time zone name such as "Europe/Paris", got {name!r}'
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        close = difflib.get_close_matches(name, sorted(available_timezones()), n=3)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise InvalidScheduleError(
            f"unknown time zone {name!r}: use an IANA time zone name such as "
            f'"Europe/Paris", "America/New_York" or "UTC".{hint}'
        ) from None


def _check_choice(field: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        choices = ", ".join(repr(choice) for choice in allowed)
        raise InvalidScheduleError(f"Schedule {field} must be one of {choices}, got {value!r}")


def _require_aware(value: datetime, label: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{label} must be an aware datetime, got the naive {value.isoformat()}; "
            "use e.g. datetime.now(UTC)"
        )
