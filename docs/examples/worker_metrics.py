"""Worker metrics: a worker embedded in an application, its registry served for Prometheus."""

from __future__ import annotations

import urllib.request
from typing import Any

from openworkflow import Step, workflow


@workflow(name="resize-image")
async def resize_image(input: str, step: Step) -> str:
    return str(await step.run("resize", lambda: f"{input}@2x"))


# --8<-- [start:config]
from openworkflow import define_config  # noqa: E402

# `ow worker start` then serves http://0.0.0.0:9464/metrics (--metrics-port and
# OPENWORKFLOW_WORKER_METRICS_PORT override the port, --metrics-host the address).
config = define_config(worker={"concurrency": 10, "metrics_port": 9464, "metrics_host": "0.0.0.0"})
# --8<-- [end:config]


# --8<-- [start:embed]
from openworkflow import OpenWorkflow, Worker  # noqa: E402
from openworkflow.worker.metrics import WorkerMetrics, serve  # noqa: E402


async def run_with_metrics(ow: OpenWorkflow, port: int = 9464) -> Any:
    # A registry of its own (not prometheus_client's global one); step_labels=True
    # would add a `step` label to the step duration histogram.
    metrics = WorkerMetrics()
    endpoint = serve(metrics.registry, "127.0.0.1", port)  # port 0 picks a free one
    try:
        async with Worker(ow.backend, [resize_image], concurrency=10, metrics=metrics):
            handle = await ow.run(resize_image, "cat.png")
            output = await handle.result(timeout="30s")
        with urllib.request.urlopen(endpoint.url) as response:  # what Prometheus scrapes
            text = response.read().decode()
    finally:
        endpoint.close()
    return output, text


# --8<-- [end:embed]


async def example() -> None:
    """One run through a worker with metrics; the scrape shows it by workflow."""
    assert config.worker.metrics_port == 9464
    async with OpenWorkflow("sqlite:///:memory:") as ow:
        output, text = await run_with_metrics(ow, port=0)
    assert output == "cat.png@2x"
    assert 'openworkflow_worker_runs_completed_total{workflow="resize-image"} 1.0' in text
    assert 'openworkflow_worker_step_duration_seconds_count{workflow="resize-image"} 1.0' in text
