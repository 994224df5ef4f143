"""Starting runs: the checks of ``ow.run`` and the batch start ``ow.run_many``.

``ow.run_many(workflow, items)`` starts one run of ``workflow`` per item and
returns their handles in the order of ``items``. An item is the run's input,
or a :class:`RunRequest` holding its input and its own options. Every item is
checked (input against the schema, names, times, tags, concurrency key)
before anything is written; the runs are then written all together or not at
all, in one transaction of one statement per 1000 runs (PostgreSQL) or one
transaction (SQLite). Idempotency keys work as in ``ow.run``: an item whose
key (same workflow) names a run created in the last 24 h gets that run, and
items sharing a key get one run, the one the first of them created.

Example:
    ``handles = await ow.run_many(send_email, [{"to": "a@x"}, {"to": "b@x"}])``
    ``handles = await ow.run_many(charge, [RunRequest(input=o, idempotency_key=o["id"]) ...])``
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from openworkflow.core.backend import Backend, CreateWorkflowRunParams
from openworkflow.core.concurrency import concurrency_columns
from openworkflow.core.duration import Duration, resolve_time
from openworkflow.core.flow_control import check_priority
from openworkflow.core.json import check_name
from openworkflow.core.schedule_store import StoredSchedule
from openworkflow.core.tags import check_tags
from openworkflow.core.workflow_definition import WorkflowRef, WorkflowSpec, spec_of
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.payload import current_limits
from openworkflow.tracing import (
    ATTR_WORKFLOW_NAME,
    SPAN_RUN_CREATE,
    current_trace_context,
    tracer,
    with_trace_context,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRequest:
    """One run of an ``ow.run_many`` call: its input and its own options.

    Each option left None takes the value given to ``run_many`` (which in
    turn defaults as in ``ow.run``); ``tags`` are added to the call's tags
    (an item's value wins for a key both name).

    Attributes:
        input: The run's input (validated against the workflow's schema).
        idempotency_key: Returns the run of this key (same workflow, last 24 h) if any.
        version: The workflow version to run.
        available_at: When the run may start (a datetime, or a duration from now).
        deadline_at: When the run fails if not finished.
        priority: Claim order among due runs (higher first).
        tags: Key/value pairs stored with the run.
    """

    input: Any = None
    idempotency_key: str | None = None
    version: str | None = None
    available_at: datetime | Duration | None = None
    deadline_at: datetime | Duration | None = None
    priority: int | None = None
    tags: Mapping[str, str] | None = None


def run_params(spec: WorkflowSpec, request: RunRequest) -> CreateWorkflowRunParams:
    """The checked create of one run of ``spec`` (see ``OpenWorkflow.run`` for what is raised).

    Nothing is written here: every rule is checked, the input validated and
    the concurrency key computed, so a bad run fails before any write.
    """
    if request.version is not None:
        check_name(request.version, "version")
    key = request.idempotency_key
    if key is not None:
        if not isinstance(key, str):
            raise TypeError(f"idempotency_key must be a string, got {type(key)!r}")
        check_name(key, "idempotency_key", allow_empty=True)
    priority = request.priority
    run_priority = spec.priority if priority is None else check_priority(priority, "priority")
    run_tags = check_tags(request.tags)
    validated, stored_input = spec.validate_input_value(request.input, current_limits())
    concurrency_key, concurrency_limit = concurrency_columns(spec.concurrency, validated)
    return CreateWorkflowRunParams(
        workflow_name=spec.name,
        version=request.version if request.version is not None else spec.version,
        idempotency_key=key,
        config={},
        input=stored_input,
        available_at=None if request.available_at is None else resolve_time(request.available_at),
        deadline_at=None if request.deadline_at is None else resolve_time(request.deadline_at),
        priority=run_priority,
        concurrency_key=concurrency_key,
        concurrency_limit=concurrency_limit,
        tags=run_tags or None,
    )


def schedule_run_params(schedule: StoredSchedule) -> CreateWorkflowRunParams:
    """The create of a run a schedule starts on demand (``ow.trigger_schedule``): no tick."""
    return CreateWorkflowRunParams(
        workflow_name=schedule.workflow_name,
        version=schedule.version,
        config={},
        input=schedule.input,
    )


async def start_runs(
    backend: Backend, workflow: WorkflowRef, items: Iterable[Any], defaults: RunRequest
) -> list[WorkflowRun]:
    """Check every item, then create all the runs in one backend call (``ow.run_many``).

    ``defaults`` holds the call's options (its ``input`` is unused).

    Raises:
        TypeError: ``items`` is a string, bytes or a mapping rather than a
            collection of inputs.
        Whatever ``ow.run`` raises for a bad item, with a note naming the
            item; nothing is written.
    """
    if isinstance(items, str | bytes | bytearray | Mapping):
        raise TypeError(
            f"run_many takes a list of inputs (or RunRequest objects), got a "
            f"{type(items).__name__}; to start one run with it as input, use ow.run, "
            "or pass [input]"
        )
    spec = spec_of(workflow)
    requests = list(items)
    checked: list[CreateWorkflowRunParams] = []
    for index, item in enumerate(requests):
        try:
            checked.append(run_params(spec, _merged(item, defaults)))
        except Exception as error:
            error.add_note(
                f"in run_many item {index} of {len(requests)} (counted from 0); nothing was "
                "written: fix or remove that item and call run_many again"
            )
            raise
    return await _create_traced(backend, spec.name, checked)


async def _create_traced(
    backend: Backend, workflow_name: str, checked: list[CreateWorkflowRunParams]
) -> list[WorkflowRun]:
    """``backend.create_workflow_runs``, under one create span when tracing is on.

    As with ``ow.run``, each run stores the context of that
    ``workflow_run.create`` span, so the passes of every run of the batch
    join the caller's trace under it.
    """
    found = tracer()
    if found is None or not checked:
        return await backend.create_workflow_runs(checked)
    from opentelemetry.trace import SpanKind

    with found.start_as_current_span(
        SPAN_RUN_CREATE, kind=SpanKind.PRODUCER, attributes={ATTR_WORKFLOW_NAME: workflow_name}
    ):
        trace = current_trace_context()
        return await backend.create_workflow_runs(
            [
                dataclasses.replace(item, context=with_trace_context(item.context, trace))
                for item in checked
            ]
        )


def _merged(item: Any, defaults: RunRequest) -> RunRequest:
    """The item as a request, its unset options taken from the call's."""
    if not isinstance(item, RunRequest):
        return dataclasses.replace(defaults, input=item)
    tags = item.tags
    if defaults.tags and tags is not None:
        tags = {**check_tags(defaults.tags), **check_tags(tags)}
    return RunRequest(
        input=item.input,
        idempotency_key=item.idempotency_key,
        version=_first(item.version, defaults.version),
        available_at=_first(item.available_at, defaults.available_at),
        deadline_at=_first(item.deadline_at, defaults.deadline_at),
        priority=_first(item.priority, defaults.priority),
        tags=tags if tags is not None else defaults.tags,
    )


def _first(value: Any, default: Any) -> Any:
    return default if value is None else value
