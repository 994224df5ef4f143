"""Pure derivations of the run page: first start, duration, waiting-for, outcome, timeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from openworkflow.core.step_attempt import StepAttempt
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.dashboard.run_view import (
    LABEL_WIDTH,
    TIMELINE_WIDTH,
    build_timeline,
    duration_text,
    first_start,
    outcome_error,
    tick_label,
    waiting_for,
)

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
ERROR = {"name": "Error", "message": "boom"}


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _run(**fields: Any) -> WorkflowRun:
    values: dict[str, Any] = dict(
        namespace_id="ns", id="0190a1b2-0000-7000-8000-000000000001", workflow_name="wf",
        version=None, status="completed", idempotency_key=None, config={}, context=None,
        input=None, output=None, error=None, attempts=1, parent_step_attempt_namespace_id=None,
        parent_step_attempt_id=None, worker_id=None, available_at=None, deadline_at=None,
        started_at=_at(0), finished_at=_at(10), created_at=_at(-1), updated_at=_at(10),
    )  # fmt: skip
    values.update(fields)
    return WorkflowRun(**values)


def _step(name: str, start: float, end: float | None, **fields: Any) -> StepAttempt:
    values: dict[str, Any] = dict(
        namespace_id="ns", id=f"{name}-{start}", workflow_run_id="run", step_name=name,
        kind="function", status="completed" if end is not None else "running", config={},
        context=None, output=None, error=None, child_workflow_run_namespace_id=None,
        child_workflow_run_id=None, started_at=_at(start),
        finished_at=None if end is None else _at(end), created_at=_at(start),
        updated_at=_at(end or start),
    )  # fmt: skip
    values.update(fields)
    return StepAttempt(**values)


def test_first_start_and_duration_cover_every_pass_of_a_retried_run() -> None:
    attempts = [
        _step("charge", 0, 1, status="failed"),
        _step("charge", 3, 4, status="failed"),
        _step("charge", 9, 10),
    ]
    run = _run(started_at=_at(9), finished_at=_at(10), attempts=3)  # started_at: last resume
    assert first_start(run, attempts) == _at(0)
    assert duration_text(run, attempts, now=_at(99)) == "10.0 s"


def test_a_failed_run_still_has_a_start_and_duration() -> None:
    attempts = [_step("charge", 2, 3, status="failed")]
    run = _run(status="failed", started_at=None, finished_at=_at(3), error=ERROR)
    assert first_start(run, attempts) == _at(2)
    assert duration_text(run, attempts, now=_at(99)) == "1.0 s"
    assert duration_text(_run(status="pending", started_at=None), [], now=_at(5)) == "—"
    assert duration_text(_run(status="running", finished_at=None), [], now=_at(5)) == (
        "5.0 s so far"
    )


def test_the_error_shows_only_when_it_is_the_outcome() -> None:
    assert outcome_error(_run(status="failed", error=ERROR)) == ERROR
    for status in ("completed", "canceled", "pending", "running"):
        assert outcome_error(_run(status=status, error=ERROR)) is None


def test_a_parked_run_waits_for_its_sleep_signal_and_child() -> None:
    year_later = _at(365 * 86400).isoformat()
    sleep = {"kind": "sleep", "resumeAt": _at(60).isoformat()}
    signal = {"kind": "signal-wait", "signal": "approved", "timeoutAt": _at(3600).isoformat()}
    child = {"kind": "workflow", "timeoutAt": year_later}
    attempts = [
        _step("nap", 0, None, kind="sleep", context=sleep),
        _step("approve", 1, None, kind="signal-wait", context=signal),
        _step("child", 2, None, kind="workflow", child_workflow_run_id="child-id", context=child),
        _step("done", 0, 0.5),
    ]
    run = _run(status="running", worker_id=None, finished_at=None, available_at=_at(60))
    waits = waiting_for(run, attempts, now=_at(5))
    assert [(w.kind, w.step_name) for w in waits] == [
        ("sleep", "nap"),
        ("signal", "approve"),
        ("child", "child"),
    ]
    assert waits[0].until == _at(60)
    assert waits[1].signal == "approved" and waits[1].until == _at(3600)
    assert waits[2].child_run_id == "child-id"


def test_a_pending_run_with_an_error_waits_for_a_retry_numbered_n_of_n() -> None:
    step_retry = _run(status="pending", error=ERROR, attempts=2, available_at=_at(20))
    failed = [_step("charge", 0, 1, status="failed"), _step("charge", 5, 6, status="failed")]
    (wait,) = waiting_for(step_retry, failed, now=_at(10))
    assert (wait.kind, wait.step_name, wait.attempt, wait.until) == ("retry", "charge", 3, _at(20))
    assert wait.max_attempts is None and wait.error == ERROR

    run_retry = _run(status="pending", error=ERROR, attempts=1, available_at=_at(20))
    (wait,) = waiting_for(run_retry, [_step("ok", 0, 1)], now=_at(10), workflow_max_attempts=3)
    assert (wait.step_name, wait.attempt, wait.max_attempts) == (None, 2, 3)
    (unknown,) = waiting_for(run_retry, [], now=_at(10))
    assert (unknown.attempt, unknown.max_attempts) == (2, None)


def test_scheduled_and_finished_runs() -> None:
    scheduled = _run(status="pending", attempts=0, started_at=None, available_at=_at(100))
    (wait,) = waiting_for(scheduled, [], now=_at(0))
    assert (wait.kind, wait.until) == ("scheduled", _at(100))
    assert waiting_for(_run(status="pending", available_at=_at(0)), [], now=_at(1)) == []
    assert waiting_for(_run(status="canceled", error=ERROR), [], now=_at(1)) == []


def test_the_timeline_draws_retries_in_one_lane_and_parallel_steps_side_by_side() -> None:
    attempts = [
        _step("fetch", 0, 2),
        _step("a", 2, 6),
        _step("b", 2, 4),  # parallel with "a"
        _step("charge", 6, 7, status="failed"),
        _step("charge", 8, 10),
    ]
    timeline = build_timeline(_run(started_at=_at(8), finished_at=_at(10)), attempts, _at(99))
    assert timeline is not None
    assert [lane.name for lane in timeline.lanes] == ["(run)", "fetch", "a", "b", "charge"]
    lanes = {lane.name: lane for lane in timeline.lanes}
    scale = (TIMELINE_WIDTH - LABEL_WIDTH) / 10
    assert lanes["(run)"].bars[0].x == LABEL_WIDTH
    assert lanes["(run)"].bars[0].width == TIMELINE_WIDTH - LABEL_WIDTH
    a, b = lanes["a"].bars[0], lanes["b"].bars[0]
    assert a.x == b.x == LABEL_WIDTH + 2 * scale and a.width == 2 * b.width  # same axis
    assert a.y != b.y
    charge = lanes["charge"]
    assert [bar.status for bar in charge.bars] == ["failed", "completed"]
    assert charge.gaps == [(LABEL_WIDTH + 7 * scale, LABEL_WIDTH + 8 * scale)]
    assert "attempt 2" in charge.bars[1].title
    assert [tick.label for tick in timeline.ticks] == ["0", "2 s", "4 s", "6 s", "8 s", "10 s"]
    assert all(LABEL_WIDTH <= tick.x <= TIMELINE_WIDTH for tick in timeline.ticks)


def test_the_timeline_of_a_running_run_ends_now_not_at_a_wait_timeout() -> None:
    far = _at(365 * 86400).isoformat()
    attempts = [
        _step("first", 0, 1),
        _step("child", 1, None, kind="workflow", context={"kind": "workflow", "timeoutAt": far}),
    ]
    run = _run(status="running", finished_at=None)
    timeline = build_timeline(run, attempts, now=_at(4))
    assert timeline is not None and timeline.end == _at(4)
    child = timeline.lanes[-1].bars[0]
    assert child.kind == "workflow" and child.x + child.width == TIMELINE_WIDTH
    assert build_timeline(_run(status="pending", started_at=None), [], _at(1)) is None


def test_tick_labels() -> None:
    assert [tick_label(s) for s in (0, 0.5, 2, 90, 7200, 172800)] == [
        "0", "500 ms", "2 s", "1.5 min", "2 h", "2 d",
    ]  # fmt: skip
