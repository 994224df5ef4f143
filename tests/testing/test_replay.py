"""``replay`` / ``replay_many``: today's code against histories of real runs.

Runs are recorded by a real worker (on every backend), exported with
``export_run_history`` and replayed. Each test checks that no step body runs
during a replay, that matching code replays quietly (also runs exported while
in flight), and that each kind of divergence names the right step.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from openworkflow import NonRetryableError, OpenWorkflow, RetryPolicy, Step, Workflow, workflow
from openworkflow.errors import ReplayDivergenceError
from openworkflow.sqlite import SqliteBackend
from openworkflow.testing.history import dump_run_history, export_run_history
from openworkflow.testing.replay import replay, replay_many
from tests.support.waiting import wait_until
from tests.worker.helpers import (
    get_run,
    list_steps,
    running_worker,
    wait_for_running_step,
    wait_for_status,
)

BODIES: list[str] = []
"""The step bodies that ran, by step: a replay must add none."""


def body(name: str, value: Any = None) -> Callable[[], Any]:
    def run() -> Any:
        BODIES.append(name)
        time.sleep(0.003)  # steps recorded in distinct milliseconds (for "reordered")
        return name if value is None else value

    return run


def explode() -> None:
    BODIES.append("explode")
    raise NonRetryableError("boom")


@workflow(name="replay-child")
async def replay_child(input: int, step: Step) -> int:
    return int(await step.run("double", lambda: input * 2))


@workflow(name="replay-other-child")
async def replay_other_child(input: int, step: Step) -> int:
    return input


@workflow(name="replay-waiting-child")
async def replay_waiting_child(step: Step) -> Any:
    return await step.wait_for_signal("child-go", timeout="1h")


# -- a workflow of every kind of step ---------------------------------------------------


@workflow(name="replay-every-kind")
async def every_kind(input: dict[str, str], step: Step) -> dict[str, Any]:
    greeting = await step.run("greet", body("greet", f"hi {input['name']}"))
    again = await step.run("greet", body("greet:1"))  # durable name "greet:1"
    left, right = await asyncio.gather(
        step.run("left", body("left", 1)), step.run("right", body("right", 2))
    )
    await step.sleep("nap", "5ms")
    child = await step.run_workflow(replay_child, 21)
    started = await step.start_workflow(replay_child, 1, name="fire-and-forget")
    await step.set_event("progress", {"done": 1})
    await step.stream("log", "line 1")
    try:
        await step.run("explode", explode, retry_policy=RetryPolicy(maximum_attempts=1))
        caught = ""
    except Exception as error:
        caught = type(error).__name__
    sent = await step.send_signal("replay-nobody-listens", {"n": 1})
    answer = await step.wait_for_signal("answer", timeout="1h")
    return {
        "greeting": greeting,
        "again": again,
        "sum": left + right,
        "child": child,
        "started": bool(started),
        "caught": caught,
        "sent": sent,
        "answer": answer,
    }


EVERY_KIND_WORKERS = [every_kind, replay_child]


async def _record(
    backend: Any,
    wf: Workflow,
    input: Any = None,
    *,
    workflows: list[Workflow],
    answer: bool = False,
    parked_at: str | None = None,
) -> dict[str, Any]:
    """Run ``wf`` with a real worker (to its end, or until it parks at step ``parked_at``);
    its exported history."""
    ow = OpenWorkflow(backend)
    async with running_worker(backend, workflows):
        handle = await ow.run(wf, input)
        if answer:
            await ow.signal(handle.id, "answer", {"ok": True})
        if parked_at is not None:
            await _parked_at(backend, handle.id, parked_at)
        else:
            await wait_for_status(backend, handle.id, "completed", "failed")
    BODIES.clear()
    return await export_run_history(backend, handle.id)


async def _parked_at(backend: Any, run_id: str, step_name: str) -> None:
    async def parked() -> bool:
        run = await get_run(backend, run_id)
        if run.status != "running" or run.worker_id is not None:
            return False
        steps = await list_steps(backend, run_id)
        return any(s.step_name == step_name and s.status == "running" for s in steps)

    await wait_until(parked, message=f"run {run_id} to park at step {step_name!r}")


async def test_a_completed_run_of_every_step_kind_replays_cleanly(
    backend: Any, tmp_path: Path
) -> None:
    history = await _record(
        backend, every_kind, {"name": "Zoë"}, workflows=EVERY_KIND_WORKERS, answer=True
    )
    assert history["run"]["status"] == "completed", history["run"]["error"]
    kinds = {attempt["kind"] for attempt in history["step_attempts"]}
    assert kinds == {"function", "sleep", "workflow", "signal-send", "signal-wait"}

    replay(every_kind, history)
    path = tmp_path / "every-kind.json"
    path.write_text(dump_run_history(history), encoding="utf-8")
    replay(every_kind, path)  # from the exported file, as CI does
    replay(every_kind, str(path))
    assert BODIES == []


async def test_a_run_exported_in_flight_replays_up_to_where_it_waits(backend: Any) -> None:
    history = await _record(
        backend, every_kind, {"name": "Zoë"}, workflows=EVERY_KIND_WORKERS, parked_at="answer"
    )
    waits = [a for a in history["step_attempts"] if a["kind"] == "signal-wait"]
    assert [(a["step_name"], a["status"]) for a in waits] == [("answer", "running")]

    replay(every_kind, history)  # stops quietly at the running wait
    assert BODIES == []


# -- a workflow whose code changes between recording and replay --------------------------

GATE = threading.Event()


def blocked() -> str:
    BODIES.append("slow")
    GATE.wait(10)  # until the test has exported the run mid-step
    return "slow"


Op = tuple[Any, ...]
ORIGINAL: list[Op] = [
    ("run", "a"),
    ("run", "b"),
    ("run", "c"),
    ("sleep", "nap", "2ms"),
    ("child", "kid", replay_child),
]
PLANS: dict[str, list[Op]] = {
    "original": ORIGINAL,
    "renamed": [("run", "a"), ("run", "b2"), *ORIGINAL[2:]],
    "added": [("run", "a"), ("run", "x"), *ORIGINAL[1:]],
    "appended": [*ORIGINAL, ("run", "z")],
    "reordered": [("run", "a"), ("run", "c"), ("run", "b"), *ORIGINAL[3:]],
    "removed": [("run", "a"), *ORIGINAL[2:]],
    "removed last": ORIGINAL[:-1],
    "kind changed": [("run", "a"), ("sleep", "b", "1ms"), *ORIGINAL[2:]],
    "sleep now a signal wait": [*ORIGINAL[:3], ("wait", "nap"), ORIGINAL[4]],
    "child changed": [*ORIGINAL[:4], ("child", "kid", replay_other_child)],
    "raises at the end": [*ORIGINAL, ("raise", "a new bug")],
    "raises early": [("run", "a"), ("raise", "a new bug")],
    # Recorded in flight: a signal wait the run parked on.
    "waiting": [("run", "a"), ("wait", "go")],
    "waiting, then more": [("run", "a"), ("wait", "go"), ("run", "after")],
    "added before the wait": [("run", "a"), ("run", "x"), ("wait", "go")],
    "waiting on a child": [("run", "a"), ("child", "kid", replay_waiting_child)],
    "long sleep": [("run", "a"), ("sleep", "nap", "1h"), ("run", "after")],
    "long sleep, then raise": [("run", "a"), ("sleep", "nap", "1h"), ("raise", "woke")],
    "waiting, then raise": [("run", "a"), ("wait", "go"), ("raise", "answered")],
    "failing": [("run", "a"), ("run", "explode", explode), ("run", "after")],
    "mid-step": [("run", "a"), ("run", "slow", blocked), ("run", "after")],
}
PLAN = {"name": "original"}


async def _perform(step: Step, op: Op) -> Any:
    match op:
        case ("run", name):
            return await step.run(name, body(name))
        case ("sleep", name, duration):
            return await step.sleep(name, duration)
        case ("child", name, child) if child is replay_waiting_child:
            return await step.run_workflow(child, name=name)
        case ("child", name, child):
            return await step.run_workflow(child, 21, name=name)
        case ("wait", name):
            return await step.wait_for_signal(name, timeout="1h")
        case ("run", name, fn):
            return await step.run(name, fn)
        case ("raise", message):
            raise RuntimeError(message)
    raise AssertionError(f"unknown op {op}")


@workflow(name="replay-plans")
async def plans(step: Step) -> list[Any]:
    return [await _perform(step, op) for op in PLANS[PLAN["name"]]]


PLAN_WORKERS = [plans, replay_child, replay_waiting_child]


async def _record_plan(backend: Any, plan: str, *, parked_at: str | None = None) -> dict[str, Any]:
    PLAN["name"] = plan
    try:
        return await _record(backend, plans, workflows=PLAN_WORKERS, parked_at=parked_at)
    finally:
        PLAN["name"] = "original"


def _replay_as(plan: str, history: Any) -> tuple[str, str] | None:
    """Replay with the code of ``plan``: None, or the divergence's (kind, step)."""
    PLAN["name"] = plan
    try:
        replay(plans, history)
    except ReplayDivergenceError as error:
        assert error.workflow_name == "replay-plans"
        assert error.step_name in str(error)
        return error.kind, error.step_name
    finally:
        PLAN["name"] = "original"
    return None


async def test_each_divergence_is_reported_at_the_right_step(backend: Any) -> None:
    history = await _record_plan(backend, "original")
    assert history["run"]["status"] == "completed", history["run"]["error"]
    kid = next(a for a in history["step_attempts"] if a["step_name"] == "kid")
    assert kid["child_workflow_name"] == "replay-child"

    found = {
        plan: _replay_as(plan, history)
        for plan in (
            "original",
            "renamed",
            "added",
            "appended",
            "reordered",
            "removed",
            "removed last",
            "kind changed",
            "sleep now a signal wait",
            "child changed",
        )
    }
    assert found == {
        "original": None,
        "renamed": ("added", "b2"),
        "added": ("added", "x"),
        "appended": ("added", "z"),  # the recorded run completed without it
        "reordered": ("reordered", "b"),
        "removed": ("removed", "b"),
        "removed last": ("removed", "kid"),
        "kind changed": ("kind_changed", "b"),
        "sleep now a signal wait": ("kind_changed", "nap"),
        "child changed": ("child_changed", "kid"),
    }
    assert BODIES == []  # not even the added steps' bodies


async def test_code_that_now_raises_is_reported(backend: Any) -> None:
    history = await _record_plan(backend, "original")
    # Before recorded steps: they are not reached, and the error is the cause.
    with pytest.raises(ReplayDivergenceError) as early:
        PLAN["name"] = "raises early"
        try:
            replay(plans, history)
        finally:
            PLAN["name"] = "original"
    assert (early.value.kind, early.value.step_name) == ("removed", "b")
    assert isinstance(early.value.__cause__, RuntimeError)
    # After every recorded step: the workflow's own error, as it is.
    with pytest.raises(RuntimeError, match="a new bug"):
        PLAN["name"] = "raises at the end"
        try:
            replay(plans, history)
        finally:
            PLAN["name"] = "original"
    assert BODIES == []


async def test_runs_in_flight_replay_quietly_until_the_code_diverges(backend: Any) -> None:
    waiting = await _record_plan(backend, "waiting", parked_at="go")
    assert _replay_as("waiting", waiting) is None
    assert _replay_as("waiting, then more", waiting) is None  # past the end: not run
    # The running wait is a recorded step too: a step added before it diverges.
    assert _replay_as("added before the wait", waiting) == ("added", "x")
    assert _replay_as("original", waiting) == ("added", "b")

    sleeping = await _record_plan(backend, "long sleep", parked_at="nap")
    assert _replay_as("long sleep", sleeping) is None

    on_child = await _record_plan(backend, "waiting on a child", parked_at="kid")
    kid = next(a for a in on_child["step_attempts"] if a["step_name"] == "kid")
    assert (kid["status"], kid["child_workflow_name"]) == ("running", "replay-waiting-child")
    assert _replay_as("waiting on a child", on_child) is None
    assert BODIES == []


async def test_waits_due_since_the_export_still_end_the_replay(backend: Any, clock: Any) -> None:
    sleeping = await _record_plan(backend, "long sleep", parked_at="nap")
    waiting = await _record_plan(backend, "waiting", parked_at="go")
    clock.advance(timedelta(hours=2))
    # Today the sleep would be over and the wait timed out: the replay still stops
    # where the history does instead of resolving them and going on.
    assert _replay_as("long sleep, then raise", sleeping) is None
    assert _replay_as("waiting, then raise", waiting) is None
    assert BODIES == []


async def test_a_run_exported_while_a_step_runs_replays_quietly(backend: Any) -> None:
    PLAN["name"] = "mid-step"
    GATE.clear()
    ow = OpenWorkflow(backend)
    try:
        async with running_worker(backend, PLAN_WORKERS):
            handle = await ow.run(plans)
            await wait_for_running_step(backend, handle.id, "slow")
            history = await export_run_history(backend, handle.id)
            GATE.set()
            await wait_for_status(backend, handle.id, "completed")
    finally:
        GATE.set()
        PLAN["name"] = "original"
    assert history["run"]["status"] == "running"
    BODIES.clear()
    assert _replay_as("mid-step", history) is None  # the running step is not run again
    assert BODIES == []


async def test_a_recorded_step_failure_replays_as_recorded(backend: Any) -> None:
    history = await _record_plan(backend, "failing")
    assert history["run"]["status"] == "failed"
    assert _replay_as("failing", history) is None  # the memoized failure is raised again
    assert BODIES == []


# -- replay_many ------------------------------------------------------------------------


async def test_replay_many_replays_a_folder_and_lists_every_divergence(
    backend: Any, tmp_path: Path
) -> None:
    for name in ("first", "second"):
        history = await _record_plan(backend, "original")
        (tmp_path / f"{name}.json").write_text(dump_run_history(history), encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not a history")

    assert replay_many(plans, tmp_path) == 2
    assert replay_many([every_kind, plans], [tmp_path / "first.json", history]) == 2

    PLAN["name"] = "renamed"
    try:
        with pytest.raises(ReplayDivergenceError) as raised:
            replay_many(plans, str(tmp_path))
    finally:
        PLAN["name"] = "original"
    error = raised.value
    assert [(e.kind, e.step_name) for e in error.errors] == [("added", "b2")] * 2
    assert [Path(e.source or "").name for e in error.errors] == ["first.json", "second.json"]
    assert str(error).startswith("2 of 2 run histories diverge")
    assert "first.json" in str(error) and "second.json" in str(error)
    assert BODIES == []


async def test_replay_refuses_another_workflow_and_an_empty_folder(
    backend: Any, tmp_path: Path
) -> None:
    history = await _record_plan(backend, "original")
    with pytest.raises(ValueError, match="not of 'replay-every-kind'"):
        replay(every_kind, history)
    with pytest.raises(ValueError, match="no workflow named 'replay-plans'"):
        replay_many([every_kind, replay_child], [history])
    with pytest.raises(ValueError, match=r"no run history \(\*\.json\)"):
        replay_many(plans, tmp_path)
    assert replay_many(plans, []) == 0


def test_replay_is_sync_outside_an_event_loop(tmp_path: Path) -> None:
    async def record() -> dict[str, Any]:
        backend = SqliteBackend(str(tmp_path / "ow.db"))
        try:
            return await _record_plan(backend, "original")
        finally:
            await backend.stop()

    path = tmp_path / "history.json"
    path.write_text(json.dumps(asyncio.run(record())), encoding="utf-8")
    replay(plans, path)
    assert _replay_as("reordered", path) == ("reordered", "b")
    assert BODIES == []
