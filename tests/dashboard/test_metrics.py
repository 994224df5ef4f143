"""``GET /metrics`` (Prometheus text, fresh per scrape) and ``GET /healthz``."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from openworkflow import OpenWorkflow, SqliteBackend
from tests.dashboard.helpers import dashboard_client, explode
from tests.worker.helpers import running_worker, wait_for_status


def _gauge(text: str, name: str) -> tuple[str, str, dict[str, float]]:
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert set(families) == {"openworkflow_workflow_runs", "openworkflow_step_attempts"}
    family = families[name]
    values = {sample.labels["status"]: sample.value for sample in family.samples}
    return family.type, family.documentation, values


def _runs_gauge(text: str) -> tuple[str, str, dict[str, float]]:
    return _gauge(text, "openworkflow_workflow_runs")


async def test_metrics_count_runs_by_status_with_zeros(backend: Any) -> None:
    ow = OpenWorkflow(backend)
    async with dashboard_client(backend) as client:
        empty = await client.get("/metrics")
        assert empty.status_code == 200
        assert empty.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        kind, help_text, values = _runs_gauge(empty.text)
        assert kind == "gauge"
        assert help_text == "Current count of workflow runs in each status."
        assert values == dict.fromkeys(
            ("pending", "running", "completed", "failed", "canceled"), 0.0
        )
        kind, help_text, steps = _gauge(empty.text, "openworkflow_step_attempts")
        assert (kind, help_text) == ("gauge", "Current count of step attempts in each status.")
        assert steps == dict.fromkeys(("running", "completed", "failed"), 0.0)

        for number in range(3):
            await ow.run("waiting", number)
        canceled = await ow.run("waiting")
        await ow.cancel(canceled.id)
        failed = await ow.run(explode)
        async with running_worker(backend, [explode]):
            await wait_for_status(backend, failed.id, "failed")

        scraped = await client.get("/metrics")  # computed again, not cached
    _, _, values = _runs_gauge(scraped.text)
    assert values == {
        "pending": 3.0,
        "running": 0.0,
        "completed": 0.0,
        "failed": 1.0,
        "canceled": 1.0,
    }
    _, _, steps = _gauge(scraped.text, "openworkflow_step_attempts")
    assert steps["failed"] == 1.0  # explode's one step, not retried (NonRetryableError)
    assert steps["running"] == 0.0
    assert "process_" not in scraped.text and "python_" not in scraped.text


async def test_healthz_answers_ok(backend: Any) -> None:
    async with dashboard_client(backend) as client:
        health = await client.get("/healthz")
    assert health.status_code == 200
    assert health.text == "ok"


async def test_database_failures_give_500_metrics_and_503_health() -> None:
    backend = SqliteBackend(":memory:")
    await backend.stop()  # every query now fails
    async with dashboard_client(backend) as client:
        metrics = await client.get("/metrics")
        health = await client.get("/healthz")
        page = await client.get("/")
    assert metrics.status_code == 500
    assert metrics.text == "failed to collect metrics\n"
    assert metrics.headers["content-type"].startswith("text/plain")
    assert health.status_code == 503
    assert page.status_code == 500
    assert 'data-error-status="500"' in page.text
    assert "Traceback" not in page.text
