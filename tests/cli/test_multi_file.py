"""A project of several files in the layout ``ow init`` makes: workflow files import siblings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openworkflow.discovery import discover
from tests.cli.helpers import Background, ow, sqlite_project, write

ORDERS = """
from billing.invoice import total
from shipping import label

from openworkflow import Step, workflow

@workflow(name="ship-order")
async def ship_order(step: Step) -> dict:
    tag = await step.run("label", lambda: label("o-1"))
    amount = await step.run("total", lambda: total([2, 3]))
    return {"label": tag, "total": amount}
"""

SHIPPING = """
LOADED = []
LOADED.append(__name__)

def label(order_id: str) -> str:
    return f"LABEL-{order_id}"
"""

INVOICE = """
def total(prices: list[int]) -> int:
    return sum(prices)
"""


def multi_file_project(folder: Path) -> Path:
    """``ow init``'s layout plus a workflow importing a sibling and a nested helper."""
    sqlite_project(folder)
    write(folder / "openworkflow" / "orders.py", ORDERS)
    write(folder / "openworkflow" / "shipping.py", SHIPPING)
    write(folder / "openworkflow" / "billing" / "invoice.py", INVOICE)
    return folder


def test_discovery_imports_siblings_once_and_rescans_fresh(tmp_path: Path) -> None:
    project = multi_file_project(tmp_path)
    folder = project / "openworkflow"
    found = discover([folder], [], project)
    assert found.ok, found.problems
    assert sorted(w.name for w in found.workflows) == ["hello-world", "ship-order"]
    import sys

    # shipping.py ran once, as the module a sibling import names.
    assert sys.modules["shipping"].LOADED == ["shipping"]
    write(folder / "shipping.py", SHIPPING.replace("LABEL-", "TAG-"))
    discover([folder], [], project)
    assert sys.modules["shipping"].label("x") == "TAG-x"


def test_a_file_named_like_an_installed_module_still_loads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(
        tmp_path / "flows" / "json.py",
        """
        from openworkflow import workflow

        @workflow(name="shadow")
        async def shadow() -> int:
            return 1
        """,
    )
    found = discover([tmp_path / "flows"], [], tmp_path)
    assert [w.name for w in found.workflows] == ["shadow"]
    assert "rename the file" in caplog.text
    import json as stdlib_json

    assert hasattr(stdlib_json, "dumps")


def test_doctor_worker_and_run_load_a_multi_file_project(tmp_path: Path) -> None:
    project = multi_file_project(tmp_path)
    doctor = ow(project, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "ship-order" in doctor.stdout + doctor.stderr
    worker = Background(project, "worker", "start")
    try:
        worker.wait_for("ship-order")
        result = ow(project, "run", "ship-order", "--wait", "--timeout", "30s", "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        assert json.loads(result.stdout)["output"] == {"label": "LABEL-o-1", "total": 5}
    finally:
        finished = worker.stop()
    assert "ModuleNotFoundError" not in finished.stderr
