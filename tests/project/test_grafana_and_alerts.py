"""The shipped Grafana dashboard and Prometheus alerting rules match the metrics that exist.

- ``deploy/grafana/openworkflow-dashboard.json`` is a Grafana dashboard (panels with
  unique ids, a position and Prometheus queries on the ``datasource`` variable), and every
  ``openworkflow_*`` metric its queries (and variables) read is one a worker registry
  exposes or the dashboard's ``/metrics`` serves;
- ``deploy/prometheus/alerts.yml`` parses as YAML into rule groups, each rule with a name,
  an expression, a severity and a summary, and reads only such metrics (and ``up``);
  the rules cover the cases the docs promise;
- both files are referenced from the metrics page.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from openworkflow.dashboard import metrics as dashboard_metrics
from openworkflow.worker.metrics import WorkerMetrics
from tests.support.processes import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "openworkflow-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PAGE = ROOT / "docs" / "metrics-and-tracing.md"
METRIC = re.compile(r"\bopenworkflow_[a-z_]+\b")
# Series Prometheus itself makes for every target.
PROMETHEUS_SERIES = {"up"}


class _NoneDue:
    async def oldest_due_pending_age_s(self) -> float | None:
        return None


async def _worker_series() -> set[str]:
    """Every series name a worker's registry can expose (histogram and counter suffixes too)."""
    metrics = WorkerMetrics(step_labels=True)
    await metrics.refresh_queue_age(_NoneDue())  # the age gauge is exposed once read
    names: set[str] = set()
    for family in metrics.registry.collect():
        if family.type == "counter":
            names.update({family.name + "_total", family.name + "_created"})
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
            names.add(family.name + "_created")
        else:
            names.add(family.name)
    return names


def _dashboard_series() -> set[str]:
    """The gauges the dashboard's ``GET /metrics`` serves."""
    return {
        dashboard_metrics.RUNS_METRIC,
        dashboard_metrics.STEP_ATTEMPTS_METRIC,
        dashboard_metrics.PAUSED_METRIC,
    }


@pytest.fixture
async def known_series() -> set[str]:
    return await _worker_series() | _dashboard_series()


def _balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in re.sub(r'"[^"]*"', '""', expr):  # label values may hold anything
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [
        target["expr"]
        for panel in _panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["definition"])
    return queries


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    dashboard = _dashboard()
    assert dashboard["title"] and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    variables = {item["name"]: item for item in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = list(_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        position = panel["gridPos"]
        assert {"x", "y", "w", "h"} <= set(position) and position["x"] + position["w"] <= 24
        assert panel["title"] and panel["type"] in {"row", "stat", "timeseries"}
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["refId"] and target["datasource"] == panel["datasource"]
            assert _balanced(target["expr"]), target["expr"]


async def test_the_dashboard_queries_only_metrics_that_exist(known_series: set[str]) -> None:
    queried: set[str] = set()
    for query in _queries(_dashboard()):
        queried.update(METRIC.findall(query))
    unknown = sorted(queried - known_series)
    assert not unknown, f"the Grafana dashboard queries metrics nobody serves: {unknown}"
    # Each worker metric and each of the dashboard's gauges has a panel.
    for family in (
        "runs_claimed_total",
        "runs_completed_total",
        "runs_failed_total",
        "runs_rescheduled_total",
        "step_duration_seconds_bucket",
        "claim_duration_seconds_bucket",
        "lease_renewal_failures_total",
        "oldest_due_pending_run_age_seconds",
        "slots_busy",
    ):
        assert "openworkflow_worker_" + family in queried, family
    assert _dashboard_series() <= queried


def _rules() -> list[dict[str, Any]]:
    yaml = pytest.importorskip("yaml")
    loaded = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict) and set(loaded) == {"groups"}
    rules: list[dict[str, Any]] = []
    for group in loaded["groups"]:
        assert group["name"] and group["rules"]
        rules.extend(group["rules"])
    return rules


async def test_the_alerting_rules_parse_and_read_metrics_that_exist(
    known_series: set[str],
) -> None:
    rules = _rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"]
        expr = rule["expr"]
        assert _balanced(expr), rule["alert"]
        unknown = set(METRIC.findall(expr)) - known_series
        assert not unknown, f"{rule['alert']} reads metrics nobody serves: {sorted(unknown)}"
        bare = set(re.findall(r"\b([a-z_]+)\{", expr)) - known_series - PROMETHEUS_SERIES
        assert not bare, f"{rule['alert']} reads unknown series {sorted(bare)}"
    every_expr = "\n".join(rule["expr"] for rule in rules)
    # What the docs promise: nobody claiming while runs wait, the failure rate, the
    # age of the oldest due run, and lease renewal failures.
    for metric in (
        "runs_claimed_total",
        "runs_failed_total",
        "oldest_due_pending_run_age_seconds",
        "lease_renewal_failures_total",
    ):
        assert "openworkflow_worker_" + metric in every_expr, metric


def test_the_metrics_page_points_at_both_files() -> None:
    page = PAGE.read_text(encoding="utf-8")
    assert "deploy/grafana/openworkflow-dashboard.json" in page
    assert "deploy/prometheus/alerts.yml" in page
