"""What a run's page derives from the run row and its step attempts (pure).

- :func:`first_start` and :func:`run_span`: the run row's ``started_at`` is
  the *last* resume (and is cleared when a run fails or is rescheduled), so the
  first start comes from the earliest step attempt too.
- :func:`waiting_for`: what a parked or pending run waits for: a sleep, a
  signal, a child run, a retry (with "attempt n of N"), or its schedule.
- :func:`outcome_error`: the run's error only when it is the outcome (failed);
  a completed or canceled run may still carry an earlier attempt's error.
- :func:`build_timeline`: the geometry of the steps waterfall, one lane per
  step and one bar per attempt on one time axis, drawn as SVG by the template.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from openworkflow.core.json import JsonValue
from openworkflow.core.step_attempt import StepAttempt, StepAttemptStatus, StepKind
from openworkflow.core.waits import WaitContext, wait_resume_at
from openworkflow.core.workflow_run import WorkflowRun, WorkflowRunStatus
from openworkflow.dashboard.views import format_duration, format_time

TIMELINE_WIDTH = 1000.0
"""Width of the timeline drawing in SVG user units (it scales to the page)."""
LABEL_WIDTH = 230.0
"""Units on the left kept for step names."""
AXIS_HEIGHT = 26.0
LANE_HEIGHT = 24.0
BAR_HEIGHT = 14.0
MIN_BAR_WIDTH = 2.0
"""An instant attempt is still drawn this wide."""
LABEL_CHARACTERS = 30

_TICK_STEPS_S = (
    *(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
    *(1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800),
    *(3600, 7200, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, 30 * 86400),
)
_MAX_TICKS = 6


# -- start, duration and outcome ------------------------------------------------------------


def _attempt_start(attempt: StepAttempt) -> datetime:
    return attempt.started_at or attempt.created_at


def _attempt_end(attempt: StepAttempt, now: datetime) -> datetime:
    return attempt.finished_at or max(now, _attempt_start(attempt))


def first_start(run: WorkflowRun, attempts: Sequence[StepAttempt]) -> datetime | None:
    """When a worker first started the run: the earliest of its row and its attempts."""
    moments = [_attempt_start(attempt) for attempt in attempts]
    if run.started_at is not None:
        moments.append(run.started_at)
    return min(moments, default=None)


def run_span(
    run: WorkflowRun, attempts: Sequence[StepAttempt], now: datetime
) -> tuple[datetime | None, datetime | None]:
    """The run's first start and its end (``finished_at``, or now while it is active)."""
    start = first_start(run, attempts)
    if start is None:
        return None, None
    if not run.is_terminal:
        return start, max(now, start)
    ends = [_attempt_end(attempt, run.updated_at) for attempt in attempts]
    end = run.finished_at or max(ends, default=run.updated_at)
    return start, max(end, start)


def duration_text(run: WorkflowRun, attempts: Sequence[StepAttempt], now: datetime) -> str:
    """The true duration (first start to finish), ``… so far`` while active, or ``—``."""
    start, end = run_span(run, attempts, now)
    if start is None:
        return "—"
    text = format_duration(start, end)
    return text if run.is_terminal else f"{text} so far"


def outcome_error(run: WorkflowRun) -> JsonValue:
    """The run's error if it is why the run ended (failed), else None."""
    return run.error if run.status == WorkflowRunStatus.FAILED else None


# -- what a parked or pending run waits for ---------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Waiting:
    """One thing a run waits for.

    ``kind`` is ``sleep``, ``signal``, ``child``, ``retry`` or ``scheduled``;
    ``until`` is when the wait ends on its own (a sleep's end, a timeout, the
    retry time, the schedule).
    """

    kind: str
    until: datetime | None
    step_name: str | None = None
    signal: str | None = None
    child_run_id: str | None = None
    attempt: int | None = None
    max_attempts: int | None = None
    error: JsonValue = None


def _wait_of(attempt: StepAttempt) -> Waiting | None:
    context = WaitContext.of(attempt)
    if attempt.status != StepAttemptStatus.RUNNING or context is None:
        return None
    until = wait_resume_at(attempt)
    if context.kind == StepKind.SLEEP:
        return Waiting(kind="sleep", until=until, step_name=attempt.step_name)
    if context.kind == StepKind.SIGNAL_WAIT:
        return Waiting(
            kind="signal", until=until, step_name=attempt.step_name, signal=context.signal
        )
    return Waiting(
        kind="child",
        until=until,
        step_name=attempt.step_name,
        child_run_id=attempt.child_workflow_run_id,
    )


def _retry_of(
    run: WorkflowRun, attempts: Sequence[StepAttempt], workflow_max_attempts: int | None
) -> Waiting:
    """The retry a pending run with an error waits for: of a step, or of the whole run."""
    completed = {attempt.step_name for attempt in attempts if attempt.is_completed}
    failed = [
        a for a in attempts if a.status == StepAttemptStatus.FAILED and a.step_name not in completed
    ]
    if failed:
        last = max(failed, key=lambda attempt: (attempt.created_at, attempt.id))
        count = sum(1 for attempt in failed if attempt.step_name == last.step_name)
        return Waiting(
            kind="retry",
            until=run.available_at,
            step_name=last.step_name,
            attempt=count + 1,
            error=run.error,
        )
    limit = workflow_max_attempts if workflow_max_attempts else None
    return Waiting(
        kind="retry",
        until=run.available_at,
        attempt=run.attempts + 1,
        max_attempts=limit,
        error=run.error,
    )


def waiting_for(
    run: WorkflowRun,
    attempts: Sequence[StepAttempt],
    now: datetime,
    *,
    workflow_max_attempts: int | None = None,
) -> list[Waiting]:
    """What the run waits for, soonest first (empty when it waits for nothing).

    Args:
        run: The run.
        attempts: Its step attempts (any order).
        now: The current time.
        workflow_max_attempts: The registered workflow's retry policy limit
            (0 or None: unknown or unlimited, then only "attempt n" is said).
    """
    if run.status in (WorkflowRunStatus.RUNNING, WorkflowRunStatus.SLEEPING):
        waits = [wait for attempt in attempts if (wait := _wait_of(attempt)) is not None]
        return sorted(waits, key=lambda wait: (wait.until is None, wait.until or now))
    if run.status != WorkflowRunStatus.PENDING:
        return []
    if run.error is not None and run.attempts >= 1:
        return [_retry_of(run, attempts, workflow_max_attempts)]
    if run.available_at is not None and run.available_at > now:
        return [Waiting(kind="scheduled", until=run.available_at)]
    return []


# -- timeline -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bar:
    """One attempt on the timeline (SVG user units)."""

    x: float
    y: float
    width: float
    height: float
    status: str
    kind: str
    title: str
    attempt_id: str


@dataclass(frozen=True, slots=True)
class Lane:
    """One step (or the run itself) and its attempts; ``gaps`` join consecutive attempts."""

    name: str
    label: str
    y: float
    text_y: float
    bars: list[Bar] = field(default_factory=list)
    gaps: list[tuple[float, float]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Tick:
    """A gridline of the time axis, labelled with the time since the first start."""

    x: float
    label: str


@dataclass(frozen=True, slots=True)
class Timeline:
    """Everything the template needs to draw the waterfall."""

    width: float
    height: float
    label_width: float
    lanes: list[Lane]
    ticks: list[Tick]
    start: datetime
    end: datetime


def tick_label(seconds: float) -> str:
    """A tick's offset from the first start: ``0``, ``500 ms``, ``2 s``, ``5 min``, ``3 h``."""
    if seconds == 0:
        return "0"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    if seconds < 86400:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 86400:g} d"


def _ticks(span_s: float, scale: float) -> list[Tick]:
    step = next((s for s in _TICK_STEPS_S if span_s / s <= _MAX_TICKS), _TICK_STEPS_S[-1])
    count = int(span_s / step + 1e-9)
    return [Tick(LABEL_WIDTH + i * step * scale, tick_label(i * step)) for i in range(count + 1)]


def _label(name: str) -> str:
    return name if len(name) <= LABEL_CHARACTERS else name[: LABEL_CHARACTERS - 1] + "…"


def _bar_title(attempt: StepAttempt, number: int, end: datetime) -> str:
    state = attempt.status if attempt.finished_at is not None else f"{attempt.status} (so far)"
    return (
        f"{attempt.step_name} · {attempt.kind} · attempt {number} · {state} · "
        f"{format_duration(_attempt_start(attempt), end)} · "
        f"{format_time(_attempt_start(attempt))} → {format_time(attempt.finished_at)}"
    )


@dataclass(frozen=True, slots=True)
class _Axis:
    """Maps instants between ``start`` and ``start + span_s`` onto the drawing."""

    start: datetime
    span_s: float

    @property
    def scale(self) -> float:
        return (TIMELINE_WIDTH - LABEL_WIDTH) / self.span_s

    def x_of(self, moment: datetime) -> float:
        offset = min(max((moment - self.start).total_seconds(), 0.0), self.span_s)
        return LABEL_WIDTH + offset * self.scale

    def bar(self, lane: Lane, begin: datetime, finish: datetime, what: tuple[str, ...]) -> Bar:
        """A bar in ``lane``; ``what`` is (status, kind, title, attempt id)."""
        x = min(self.x_of(begin), TIMELINE_WIDTH - MIN_BAR_WIDTH)
        width = max(self.x_of(finish) - x, MIN_BAR_WIDTH)
        top = lane.y + (LANE_HEIGHT - BAR_HEIGHT) / 2
        status, kind, title, attempt_id = what
        return Bar(x, top, width, BAR_HEIGHT, status, kind, title, attempt_id)


def _new_lane(name: str, label: str, index: int) -> Lane:
    y = AXIS_HEIGHT + index * LANE_HEIGHT
    return Lane(name, label, y, y + LANE_HEIGHT / 2 + 4)


def _step_lanes(attempts: Sequence[StepAttempt], axis: _Axis, end: datetime) -> list[Lane]:
    """One lane per step, in order of its first attempt; retries joined by gaps."""
    lanes: dict[str, Lane] = {}
    for attempt in sorted(attempts, key=lambda attempt: (_attempt_start(attempt), attempt.id)):
        lane = lanes.get(attempt.step_name)
        if lane is None:
            lane = _new_lane(attempt.step_name, _label(attempt.step_name), len(lanes) + 1)
            lanes[attempt.step_name] = lane
        finish = _attempt_end(attempt, end)
        title = _bar_title(attempt, len(lane.bars) + 1, finish)
        what = (attempt.status, attempt.kind, title, attempt.id)
        drawn = axis.bar(lane, _attempt_start(attempt), finish, what)
        if lane.bars:
            previous = lane.bars[-1]
            lane.gaps.append((previous.x + previous.width, drawn.x))
        lane.bars.append(drawn)
    return list(lanes.values())


def build_timeline(
    run: WorkflowRun, attempts: Sequence[StepAttempt], now: datetime
) -> Timeline | None:
    """The waterfall: the run's span, then one lane per step in order of its first attempt.

    Each attempt is a bar from its start to its end (now while it runs);
    retries are several bars in one lane joined by a dashed gap; parallel
    steps are lanes whose bars overlap in time. None without attempts.
    """
    start, end = run_span(run, attempts, now)
    if start is None or end is None or not attempts:
        return None
    axis = _Axis(start, max((end - start).total_seconds(), 0.001))
    run_lane = _new_lane("(run)", "run", 0)
    run_title = f"run · {run.status} · {format_duration(start, end)}"
    run_lane.bars.append(axis.bar(run_lane, start, end, (run.status, "run", run_title, "")))
    lanes = [run_lane, *_step_lanes(attempts, axis, end)]
    height = AXIS_HEIGHT + len(lanes) * LANE_HEIGHT + 4
    ticks = _ticks(axis.span_s, axis.scale)
    return Timeline(TIMELINE_WIDTH, height, LABEL_WIDTH, lanes, ticks, start, end)
