"""Run histories: exported from every backend, read back, and refused with clear errors."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from openworkflow import OpenWorkflow, Step, workflow
from openworkflow.errors import WorkflowRunNotFoundError
from openworkflow.testing import history as history_module
from openworkflow.testing.history import (
    HISTORY_FORMAT,
    RunHistory,
    dump_run_history,
    export_run_history,
    history_document,
    load_run_history,
)
from tests.worker.helpers import list_steps, running_worker, wait_for_status


@workflow(name="history-child")
async def history_child(input: int, step: Step) -> int:
    return int(await step.run("inc", lambda: input + 1))


@workflow(name="history-parent")
async def history_parent(input: dict[str, Any], step: Step) -> list[Any]:
    first = await step.run("first", lambda: {"text": input["text"], "n": [1, 2.5, None]})
    repeated = [await step.run("again", lambda i=i: i) for i in range(3)]
    child = await step.run_workflow(history_child, 1, name="kid")
    await step.sleep("nap", "2ms")
    return [first, repeated, child]


async def _completed_run(backend: Any) -> str:
    ow = OpenWorkflow(backend)
    async with running_worker(backend, [history_parent, history_child]):
        handle = await ow.run(history_parent, {"text": "Zoë ✓"})
        run = await wait_for_status(backend, handle.id, "completed", "failed")
    assert run.status == "completed", run.error
    return handle.id


async def test_export_reads_the_run_and_every_attempt_oldest_first(
    backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = await _completed_run(backend)
    monkeypatch.setattr(history_module, "_PAGE", 2)  # several pages of attempts
    document = await export_run_history(backend, run_id)

    assert (document["format"], document["version"]) == (HISTORY_FORMAT, 1)
    assert document["run"]["id"] == run_id
    assert document["run"]["workflow_name"] == "history-parent"
    assert document["run"]["input"] == {"text": "Zoë ✓"}
    names = [attempt["step_name"] for attempt in document["step_attempts"]]
    assert names == [attempt.step_name for attempt in await list_steps(backend, run_id)]
    assert sorted(names) == ["again", "again:1", "again:2", "first", "kid", "nap"]
    kid = next(a for a in document["step_attempts"] if a["step_name"] == "kid")
    assert kid["kind"] == "workflow"
    assert kid["child_workflow_name"] == "history-child"
    assert "child_workflow_name" not in document["step_attempts"][0]
    assert document["run"]["created_at"].endswith("Z")
    json.dumps(document)  # plain JSON


async def test_an_exported_history_reads_back_as_the_same_records(
    backend: Any, tmp_path: Path
) -> None:
    run_id = await _completed_run(backend)
    document = await export_run_history(backend, run_id)
    path = tmp_path / "run.json"
    path.write_text(dump_run_history(document), encoding="utf-8")

    loaded = load_run_history(path)
    assert loaded.source == str(path)
    assert loaded.run == await OpenWorkflow(backend).get_run(run_id)
    assert list(loaded.step_attempts) == await list_steps(backend, run_id)
    assert loaded.child_workflow_names_by_step() == {"kid": "history-child"}
    assert load_run_history(document).run == loaded.run
    assert load_run_history(loaded) is loaded
    # Written again, the document is the same.
    again = history_document(
        loaded.run,
        loaded.step_attempts,
        loaded.child_workflow_names,
        exported_at=loaded.exported_at,
    )
    assert again == document


async def test_exporting_an_unknown_run_raises(backend: Any) -> None:
    with pytest.raises(WorkflowRunNotFoundError):
        await export_run_history(backend, "01a00000-0000-7000-8000-000000000000")


# -- reading: what is refused, and what may be left out ---------------------------------

MINIMAL: dict[str, Any] = {
    "format": HISTORY_FORMAT,
    "version": 1,
    "run": {
        "id": "r1",
        "workflow_name": "w",
        "status": "completed",
        "created_at": "2026-01-02T03:04:05.678Z",
    },
    "step_attempts": [
        {
            "id": "s1",
            "step_name": "a",
            "kind": "function",
            "status": "completed",
            "created_at": "2026-01-02T03:04:05.680+00:00",
            "output": {"x": 1},
            "some_future_field": True,
        }
    ],
}


def test_a_minimal_history_reads_with_defaults() -> None:
    loaded = load_run_history(MINIMAL)
    assert isinstance(loaded, RunHistory)
    run, (attempt,) = loaded.run, loaded.step_attempts
    assert (run.namespace_id, run.attempts, run.priority, run.config) == ("default", 1, 0, {})
    assert run.updated_at == run.created_at == datetime(2026, 1, 2, 3, 4, 5, 678000, UTC)
    assert (attempt.workflow_run_id, attempt.namespace_id) == ("r1", "default")
    assert attempt.output == {"x": 1}
    assert attempt.updated_at == attempt.created_at
    assert loaded.exported_at is None and loaded.source is None


def _broken(change: Any) -> dict[str, Any]:
    document = copy.deepcopy(MINIMAL)
    change(document)
    return document


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="something-else"), "not an OpenWorkflow run history"),
        (lambda d: d.pop("format"), "'format' is None"),
        (lambda d: d.update(version=2), "unsupported history version 2"),
        (lambda d: d.update(version="1"), "'version' must be an integer"),
        (lambda d: d.pop("run"), "missing field 'run'"),
        (lambda d: d.update(run=[]), "run: expected a JSON object, got a list"),
        (lambda d: d["run"].pop("workflow_name"), "run: missing field 'workflow_name'"),
        (lambda d: d["run"].update(attempts="2"), "run.attempts: expected an integer"),
        (lambda d: d.pop("step_attempts"), "missing field 'step_attempts'"),
        (lambda d: d.update(step_attempts={}), "step_attempts: expected a list, got an object"),
        (lambda d: d["step_attempts"].append(3), "step_attempts[1]: expected a JSON object"),
        (
            lambda d: d["step_attempts"][0].pop("kind"),
            "step_attempts[0]: missing field 'kind'",
        ),
        (
            lambda d: d["step_attempts"][0].update(created_at=12),
            "step_attempts[0].created_at: expected an ISO 8601 timestamp string, got a number",
        ),
        (
            lambda d: d["step_attempts"][0].update(created_at="yesterday"),
            "expected an ISO 8601 timestamp, got 'yesterday'",
        ),
        (
            lambda d: d["step_attempts"][0].update(created_at="2026-01-02T03:04:05"),
            "has no time zone",
        ),
        (
            lambda d: d["step_attempts"][0].update(workflow_run_id="other"),
            "is not the run's id 'r1'",
        ),
        (
            lambda d: d["step_attempts"].append(copy.deepcopy(d["step_attempts"][0])),
            "step_attempts[1].id: 's1' is listed twice",
        ),
        (
            lambda d: d["step_attempts"][0].update(child_workflow_name=5),
            "step_attempts[0].child_workflow_name: expected a string",
        ),
    ],
)
def test_an_invalid_history_is_refused_saying_what_is_wrong(change: Any, message: str) -> None:
    with pytest.raises(ValueError, match=r"^run history: ") as raised:
        load_run_history(_broken(change))
    assert message in str(raised.value)


def test_a_file_that_is_not_a_history_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.json' is not valid JSON"):
        load_run_history(path)
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.json': expected a JSON object, got a list"):
        load_run_history(str(path))
    with pytest.raises(FileNotFoundError):
        load_run_history(tmp_path / "missing.json")
