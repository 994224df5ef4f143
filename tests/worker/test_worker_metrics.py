"""Worker metrics (``Worker(metrics=...)``), on every backend.

Checked: runs claimed, completed, failed, rescheduled (a step retry, a run of
an unregistered workflow, a run handed back at shutdown) and parked, by
workflow; the step duration histogram (by workflow, with a ``step`` label
only when asked for); the claim duration histogram; lease renewal failures;
the age of the oldest due pending run (the backend's indexed read, and the
worker refreshing it); the cap on distinct workflow labels; slots; and that
each worker's metrics live in a registry of their own.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from openworkflow import Concurrency, NonRetryableError, OpenWorkflow, Step, Worker, workflow
from openworkflow.core.backend import Backend, CreateWorkflowRunParams
from openworkflow.core.queue_age import OldestDuePendingReader
from openworkflow.errors import BackendUnavailableError
from openworkflow.worker.metrics import OTHER, WorkerMetrics
from tests.support.waiting import wait_until
from tests.worker.helpers import (
    FAST_RETRY,
    get_run,
    idle_worker,
    now,
    running_worker,
    sweep_and_settle,
    wait_for_status,
)

P = "openworkflow_worker_"

attempts: dict[str, int] = {}
# Blocked steps poll this (an asyncio.Event would stay bound to one test's loop).
released = {"blocked": False}


@workflow(name="metrics-ok")
async def ok(input: int, step: Step) -> int:
    first = await step.run("first", lambda: input + 1)
    return int(await step.run("second", lambda: first * 2))


@workflow(name="metrics-fail")
async def fails(input: None, step: Step) -> None:
    def refuse() -> None:
        raise NonRetryableError("no")

    await step.run("refuse", refuse)


@workflow(name="metrics-retry")
async def retried(input: str, step: Step) -> str:
    def flaky() -> str:
        attempts[input] = attempts.get(input, 0) + 1
        if attempts[input] == 1:
            raise ConnectionError("once")
        return "fine"

    return str(await step.run("flaky", flaky, retry_policy=FAST_RETRY))


@workflow(name="metrics-sleep")
async def sleeper(input: None, step: Step) -> str:
    await step.sleep("nap", "50ms")
    return "awake"


@workflow(name="metrics-blocked")
async def blocked(input: None, step: Step) -> None:
    async def wait() -> None:
        while not released["blocked"]:
            await asyncio.sleep(0.01)

    await step.run("wait", wait)


@workflow(name="metrics-keyed", concurrency=Concurrency(1, key=lambda user: user))
async def keyed(input: str, step: Step) -> str:
    return str(await step.run("echo", lambda: input))


def value(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    """A sample's value (0 when absent)."""
    found = metrics.registry.get_sample_value(P + name, labels)
    return 0.0 if found is None else found


async def wait_value(metrics: WorkerMetrics, name: str, expected: float, **labels: str) -> None:
    """Wait until the sample reaches ``expected`` (counted just after the run's final write)."""
    await wait_until(
        lambda: value(metrics, name, **labels) >= expected,
        message=f"{name}{labels} to reach {expected} (is {value(metrics, name, **labels)})",
    )


def labels_of(metrics: WorkerMetrics, name: str) -> list[dict[str, str]]:
    """The label sets of a family's samples named ``name``."""
    return [
        sample.labels
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == P + name
    ]


async def test_pass_outcomes_are_counted_by_workflow(backend: Backend) -> None:
    metrics = WorkerMetrics()
    ow = OpenWorkflow(backend)
    async with running_worker(backend, [ok, fails, retried, sleeper], metrics=metrics):
        handles = [await ow.run(ok, 1), await ow.run(ok, 2)]
        failing = await ow.run(fails, None)
        retrying = await ow.run(retried, f"retry-{id(backend)}")
        sleeping = await ow.run(sleeper, None)
        assert [await handle.result(timeout="10s") for handle in handles] == [4, 6]
        assert await retrying.result(timeout="10s") == "fine"
        assert await sleeping.result(timeout="10s") == "awake"
        await wait_for_status(backend, failing.id, "failed")
        await wait_value(metrics, "runs_completed_total", 2, workflow="metrics-ok")
        await wait_value(metrics, "runs_failed_total", 1, workflow="metrics-fail")
        await wait_value(metrics, "runs_completed_total", 1, workflow="metrics-retry")
        await wait_value(metrics, "runs_completed_total", 1, workflow="metrics-sleep")
    assert value(metrics, "runs_claimed_total", workflow="metrics-ok") == 2
    assert value(metrics, "runs_claimed_total", workflow="metrics-fail") == 1
    assert value(metrics, "runs_failed_total", workflow="metrics-ok") == 0
    # The retried step: one pass rescheduled, a second completed.
    assert value(metrics, "runs_claimed_total", workflow="metrics-retry") == 2
    assert value(metrics, "runs_rescheduled_total", workflow="metrics-retry", reason="retry") == 1
    assert value(metrics, "runs_failed_total", workflow="metrics-retry") == 0
    # The sleep: one pass parked, a second completed.
    assert value(metrics, "runs_claimed_total", workflow="metrics-sleep") == 2
    assert value(metrics, "runs_parked_total", workflow="metrics-sleep") == 1
    # Step bodies that ran: two per ok run, one for the failure, two attempts of the flaky one.
    assert value(metrics, "step_duration_seconds_count", workflow="metrics-ok") == 4
    assert value(metrics, "step_duration_seconds_count", workflow="metrics-fail") == 1
    assert value(metrics, "step_duration_seconds_count", workflow="metrics-retry") == 2
    assert value(metrics, "step_duration_seconds_count", workflow="metrics-sleep") == 0
    assert all(
        set(labels) <= {"workflow", "le"}
        for labels in labels_of(metrics, "step_duration_seconds_bucket")
    )
    # Every claim query is timed, those that found nothing too.
    assert value(metrics, "claim_duration_seconds_count") >= 7
    assert value(metrics, "slots") == 1
    assert value(metrics, "slots_busy") == 0
    assert value(metrics, "lease_renewal_failures_total") == 0


async def test_step_label_only_when_asked(backend: Backend) -> None:
    metrics = WorkerMetrics(step_labels=True)
    ow = OpenWorkflow(backend)
    async with running_worker(backend, [ok], metrics=metrics):
        assert await (await ow.run(ok, 1)).result(timeout="10s") == 4
        await wait_value(metrics, "runs_completed_total", 1, workflow="metrics-ok")
    for step in ("first", "second"):
        assert value(metrics, "step_duration_seconds_count", workflow="metrics-ok", step=step) == 1


async def test_unregistered_and_handed_back_runs_are_rescheduled(backend: Backend) -> None:
    metrics = WorkerMetrics()
    ow = OpenWorkflow(backend)
    await ow.run(sleeper, None)  # no worker here knows metrics-sleep
    async with idle_worker(backend, [ok], metrics=metrics) as worker:
        await sweep_and_settle(worker, expected=1)
    assert (
        value(metrics, "runs_rescheduled_total", workflow="metrics-sleep", reason="unregistered")
        == 1
    )
    assert value(metrics, "runs_failed_total", workflow="metrics-sleep") == 0

    released["blocked"] = False
    handle = await ow.run(blocked, None)
    async with running_worker(
        backend, [blocked], metrics=metrics, shutdown_timeout="100ms"
    ) as worker:
        await wait_until(lambda: bool(worker.active_run_ids), message="the run to be claimed")
        assert value(metrics, "slots_busy") == 1
    # The stop cancelled the pass and handed the run back for another worker.
    assert (
        value(metrics, "runs_rescheduled_total", workflow="metrics-blocked", reason="handed_back")
        == 1
    )
    assert value(metrics, "runs_completed_total", workflow="metrics-blocked") == 0
    assert (await get_run(backend, handle.id)).worker_id is None  # due again, for anyone


async def test_a_run_put_back_before_starting_is_throttled(backend: Backend) -> None:
    metrics = WorkerMetrics()
    ow = OpenWorkflow(backend)
    # Started by name, without its concurrency key: the worker computes the key and puts
    # the run back so that the limit binds it, then runs it.
    handle = await ow.run("metrics-keyed", "ada")
    async with running_worker(backend, [keyed], metrics=metrics):
        assert await handle.result(timeout="10s") == "ada"
        await wait_value(metrics, "runs_completed_total", 1, workflow="metrics-keyed")
    assert value(metrics, "runs_claimed_total", workflow="metrics-keyed") == 2
    assert (
        value(metrics, "runs_rescheduled_total", workflow="metrics-keyed", reason="throttled") == 1
    )


async def test_lease_renewal_failures_are_counted(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(params: object) -> object:
        raise BackendUnavailableError("the database is unreachable (test)")

    metrics = WorkerMetrics()
    ow = OpenWorkflow(backend)
    released["blocked"] = False
    await ow.run(blocked, None)
    monkeypatch.setattr(backend, "extend_workflow_run_lease", unreachable)
    async with running_worker(
        backend, [blocked], metrics=metrics, lease_duration="2s", heartbeat_interval="20ms"
    ) as worker:
        await wait_until(lambda: bool(worker.active_run_ids), message="the run to be claimed")
        await wait_value(metrics, "lease_renewal_failures_total", 2)
        released["blocked"] = True
    monkeypatch.undo()


async def test_oldest_due_pending_age(backend: Backend) -> None:
    metrics = WorkerMetrics(queue_age_interval=0.02)
    gauge = P + "oldest_due_pending_run_age_seconds"
    assert metrics.registry.get_sample_value(gauge) is None  # not read yet: left out
    async with running_worker(backend, [ok], metrics=metrics):
        # The worker reads it on start and every interval (one indexed read each).
        await wait_until(
            lambda: metrics.registry.get_sample_value(gauge) is not None,
            message="the age to be read",
        )
    assert value(metrics, "oldest_due_pending_run_age_seconds") == 0  # nothing is due

    assert isinstance(backend, OldestDuePendingReader)
    await backend.create_workflow_run(
        CreateWorkflowRunParams(workflow_name="later", available_at=now() + timedelta(hours=1))
    )
    assert await backend.oldest_due_pending_age_s() is None  # not due yet
    for ago in (timedelta(minutes=2), timedelta(seconds=5)):
        await backend.create_workflow_run(
            CreateWorkflowRunParams(workflow_name="waiting", available_at=now() - ago)
        )
    age = await backend.oldest_due_pending_age_s()
    assert age is not None and 119 <= age < 180
    await metrics.refresh_queue_age(backend)
    assert 119 <= value(metrics, "oldest_due_pending_run_age_seconds") < 180


async def test_workflow_labels_are_capped(backend: Backend) -> None:
    metrics = WorkerMetrics(max_workflows=2)
    ow = OpenWorkflow(backend)
    async with running_worker(backend, [ok, retried, sleeper], metrics=metrics, concurrency=3):
        await ow.run(ok, 1)
        await ow.run(retried, f"cap-{id(backend)}")
        await ow.run(sleeper, None)
        await wait_until(
            lambda: sum(sample["value"] for sample in claimed_samples(metrics)) >= 3,
            message="three claims",
        )
    samples = claimed_samples(metrics)
    names = {sample["workflow"] for sample in samples}
    assert len(names) == 3 and OTHER in names
    assert names - {OTHER} <= {"metrics-ok", "metrics-retry", "metrics-sleep"}


def claimed_samples(metrics: WorkerMetrics) -> list[dict[str, object]]:
    return [
        {**sample.labels, "value": sample.value}
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == P + "runs_claimed_total"
    ]


async def test_registries_are_per_worker_and_off_by_default(backend: Backend) -> None:
    first = Worker(backend, [ok], metrics=True)
    second = Worker(backend, [ok], metrics=True)
    assert first.metrics is not None and second.metrics is not None
    assert first.metrics.registry is not second.metrics.registry
    assert first.metrics.registry is not REGISTRY
    assert REGISTRY.get_sample_value(P + "slots") is None  # nothing in the global registry
    assert Worker(backend, [ok]).metrics is None
    shared = CollectorRegistry()
    given = WorkerMetrics(registry=shared)
    assert Worker(backend, [ok], metrics=given).metrics is given
    assert shared.get_sample_value(P + "slots") == 1
    with pytest.raises(TypeError):
        Worker(backend, [ok], metrics="yes")  # type: ignore[arg-type]
