"""``ow dev``'s dashboard follows reloads: a new workflow file is listed and validates input.

A real ``ow dev`` subprocess in a temporary project: after a workflow file is
added, the dashboard's create-run form lists the new workflow and checks input
against its schema; a broken file afterwards keeps the list it had.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.cli.helpers import dashboard_url, ow_dev, write
from tests.support.waiting import block_until

FIRST = """
from openworkflow import Step, workflow

@workflow(name="greet")
async def greet(step: Step) -> str:
    return await step.run("say", lambda: "hi")
"""

ADDED = """
from pydantic import BaseModel
from openworkflow import Step, workflow

class Loud(BaseModel):
    text: str
    times: int

@workflow(name="shout")
async def shout(input: Loud, step: Step) -> str:
    return await step.run("shout", lambda: (input.text.upper() + "!") * input.times)
"""


def _listed(http: httpx.Client) -> set[str]:
    """The workflow names the create-run form offers."""
    page = http.get("/runs/new")
    assert page.status_code == 200
    names = page.text.split('<datalist id="workflow-names">', 1)[1].split("</datalist>", 1)[0]
    return set(re.findall(r'<option value="([^"]+)">', names))


def _create(http: httpx.Client, workflow_name: str, input_json: str) -> httpx.Response:
    form = http.get("/runs/new").text
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', form)
    assert token
    return http.post(
        "/runs",
        data={"workflow_name": workflow_name, "input": input_json, "csrf_token": token.group(1)},
        headers={"Origin": str(http.base_url).rstrip("/")},
    )


@pytest.mark.slow
def test_ow_dev_dashboard_lists_and_validates_a_workflow_added_while_it_runs(
    tmp_path: Path,
) -> None:
    write(
        tmp_path / "openworkflow.config.py",
        """
        from openworkflow import define_config
        config = define_config(backend="sqlite:///ow.db", dirs=["./flows"])
        """,
    )
    write(tmp_path / "flows" / "greet.py", FIRST)
    with (
        ow_dev(tmp_path, "--port", "0") as log,
        httpx.Client(base_url=dashboard_url(log), timeout=10) as http,
    ):
        assert _listed(http) == {"greet"}

        write(tmp_path / "flows" / "shout.py", ADDED)
        block_until(lambda: "shout" in _listed(http), "the new workflow on the form", 30)
        refused = _create(http, "shout", '{"text": "hey"}')
        assert refused.status_code == 400, refused.text
        assert 'data-field="input"' in refused.text
        assert "times: Field required" in refused.text  # checked against its schema
        accepted = _create(http, "shout", '{"text": "hey", "times": 2}')
        assert accepted.status_code == 303, accepted.text

        write(tmp_path / "flows" / "broken.py", "def oops(:\n")
        block_until(lambda: "Workflow reload failed" in log.read_text(), "the report", 30)
        assert "broken.py" in log.read_text()
        assert _listed(http) == {"greet", "shout"}  # the previous list stays
    assert "dashboard exited" not in log.read_text()
