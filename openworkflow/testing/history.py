"""Run histories: one run and its step attempts as a JSON document, for replay tests.

``ow runs export RUN_ID`` writes one (:func:`export_run_history`) and
:func:`openworkflow.testing.replay` reads it back (:func:`load_run_history`).
The document, version 1::

    {
      "format": "openworkflow-run-history",
      "version": 1,
      "exported_at": "2026-01-02T03:04:05.678Z",
      "run": {...},
      "step_attempts": [{...}, ...]
    }

``run`` holds the fields of :class:`~openworkflow.WorkflowRun` and each item of
``step_attempts`` those of :class:`~openworkflow.StepAttempt`, under their
snake_case attribute names (as ``ow runs show --json`` prints them). Times are
ISO 8601 strings in UTC with milliseconds (``2026-01-02T03:04:05.678Z``);
``config``, ``context``, ``input``, ``output`` and ``error`` are the stored
JSON values as they are. Step attempts come oldest first (by ``created_at``,
then ``id``), every attempt of the run, retries and failures included. An
attempt of a child-workflow step (``kind`` ``"workflow"``) whose child run
still existed when exported also has ``child_workflow_name``.

Reading requires ``format`` and ``version``, the run's ``id``,
``workflow_name``, ``status`` and ``created_at``, and each attempt's ``id``,
``step_name``, ``kind``, ``status`` and ``created_at``; every other field may
be left out (it reads as null, ``{}`` for ``config``, 0 for ``priority``, 1
for ``attempts``, ``created_at`` for ``updated_at``). Unknown keys are
ignored, so later exports stay readable while the version is the same.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from openworkflow.core import clock
from openworkflow.core.backend import Backend, GetWorkflowRunParams, ListStepAttemptsParams
from openworkflow.core.json import JsonValue
from openworkflow.core.step_attempt import StepAttempt, StepKind
from openworkflow.core.workflow_run import WorkflowRun
from openworkflow.errors import WorkflowRunNotFoundError

HISTORY_FORMAT = "openworkflow-run-history"
"""The ``format`` of every run history document."""

HISTORY_VERSION = 1
"""The version this module writes and the highest it reads."""

HistorySource = Mapping[str, Any] | str | os.PathLike[str]
"""A history: the parsed JSON document, or the path of an exported file."""

_PAGE = 1000

# -- the fields: (name, reader, default); a default of _REQUIRED must be present -----------

_REQUIRED: Any = object()


class _Invalid(Exception):
    """A field's value is not what the format says (caught and reported with its place)."""


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_kind(value)}")
    return value


def _text_or_none(value: Any) -> str | None:
    return None if value is None else _text(value)


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"expected an integer, got {_kind(value)}")
    return value


def _integer_or_none(value: Any) -> int | None:
    return None if value is None else _integer(value)


def _time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise _Invalid(f"expected an ISO 8601 timestamp string, got {_kind(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _Invalid(f"expected an ISO 8601 timestamp, got {value!r}") from None
    if parsed.tzinfo is None:
        raise _Invalid(f"timestamp {value!r} has no time zone (write it in UTC, ending in Z)")
    return parsed.astimezone(UTC)


def _time_or_none(value: Any) -> datetime | None:
    return None if value is None else _time(value)


def _json(value: Any) -> JsonValue:
    return value  # already parsed JSON


Reader = Callable[[Any], Any]

_RUN_FIELDS: tuple[tuple[str, Reader, Any], ...] = (
    ("namespace_id", _text, "default"),
    ("id", _text, _REQUIRED),
    ("workflow_name", _text, _REQUIRED),
    ("version", _text_or_none, None),
    ("status", _text, _REQUIRED),
    ("idempotency_key", _text_or_none, None),
    ("config", _json, {}),
    ("context", _json, None),
    ("input", _json, None),
    ("output", _json, None),
    ("error", _json, None),
    ("attempts", _integer, 1),
    ("parent_step_attempt_namespace_id", _text_or_none, None),
    ("parent_step_attempt_id", _text_or_none, None),
    ("worker_id", _text_or_none, None),
    ("available_at", _time_or_none, None),
    ("deadline_at", _time_or_none, None),
    ("started_at", _time_or_none, None),
    ("finished_at", _time_or_none, None),
    ("created_at", _time, _REQUIRED),
    ("updated_at", _time, None),  # None: the run's created_at
    ("priority", _integer, 0),
    ("scheduled_at", _time_or_none, None),
    ("concurrency_key", _text_or_none, None),
    ("concurrency_limit", _integer_or_none, None),
    ("start_granted_at", _time_or_none, None),
    ("continued_as_id", _text_or_none, None),
)

_STEP_FIELDS: tuple[tuple[str, Reader, Any], ...] = (
    ("namespace_id", _text, None),  # None: the run's
    ("id", _text, _REQUIRED),
    ("workflow_run_id", _text, None),  # None: the run's
    ("step_name", _text, _REQUIRED),
    ("kind", _text, _REQUIRED),
    ("status", _text, _REQUIRED),
    ("config", _json, {}),
    ("context", _json, None),
    ("output", _json, None),
    ("error", _json, None),
    ("child_workflow_run_namespace_id", _text_or_none, None),
    ("child_workflow_run_id", _text_or_none, None),
    ("started_at", _time_or_none, None),
    ("finished_at", _time_or_none, None),
    ("created_at", _time, _REQUIRED),
    ("updated_at", _time, None),  # None: the attempt's created_at
)


@dataclass(frozen=True, slots=True)
class RunHistory:
    """A loaded history: the run, its step attempts oldest first, and where it came from.

    Attributes:
        run: The run as exported.
        step_attempts: Every step attempt of the run, oldest first.
        child_workflow_names: The workflow of each child run, by the id of the
            step attempt that started it (only children known when exported).
        exported_at: When it was exported (None if the document does not say).
        source: The file it was read from (None for a document given as a dict).
    """

    run: WorkflowRun
    step_attempts: tuple[StepAttempt, ...]
    child_workflow_names: Mapping[str, str] = field(default_factory=dict)
    exported_at: datetime | None = None
    source: str | None = None

    def child_workflow_names_by_step(self) -> dict[str, str]:
        """The recorded child workflow of each child-workflow step, by step name."""
        names: dict[str, str] = {}
        for attempt in self.step_attempts:
            name = self.child_workflow_names.get(attempt.id)
            if name is not None:
                names[attempt.step_name] = name
        return names


# -- writing -------------------------------------------------------------------------------


async def export_run_history(backend: Backend, workflow_run_id: str) -> dict[str, Any]:
    """The history document of one run (exact id), read from ``backend``.

    Reads every page of the run's step attempts, and the workflow name of each
    child run a child-workflow step started (when the child still exists).

    Raises:
        WorkflowRunNotFoundError: no run with this id in the backend's namespace.
    """
    run = await backend.get_workflow_run(GetWorkflowRunParams(workflow_run_id=workflow_run_id))
    if run is None:
        raise WorkflowRunNotFoundError(workflow_run_id)
    attempts: list[StepAttempt] = []
    cursor: str | None = None
    while True:
        page = await backend.list_step_attempts(
            ListStepAttemptsParams(workflow_run_id=run.id, after=cursor, limit=_PAGE)
        )
        attempts.extend(page.data)
        if page.next is None:
            break
        cursor = page.next
    children = await _child_workflow_names(backend, attempts)
    return history_document(run, attempts, children, exported_at=clock.now())


async def _child_workflow_names(backend: Backend, attempts: list[StepAttempt]) -> dict[str, str]:
    """The child run's workflow name for each child-workflow attempt, by attempt id."""
    names: dict[str, str] = {}
    by_child: dict[str, str | None] = {}
    for attempt in attempts:
        child_id = attempt.child_workflow_run_id
        if attempt.kind != StepKind.WORKFLOW or child_id is None:
            continue
        if attempt.child_workflow_run_namespace_id not in (None, backend.namespace_id):
            continue  # the engine starts children in the parent's namespace
        if child_id not in by_child:
            child = await backend.get_workflow_run(GetWorkflowRunParams(workflow_run_id=child_id))
            by_child[child_id] = None if child is None else child.workflow_name
        name = by_child[child_id]
        if name is not None:
            names[attempt.id] = name
    return names


def history_document(
    run: WorkflowRun,
    step_attempts: list[StepAttempt] | tuple[StepAttempt, ...],
    child_workflow_names: Mapping[str, str] | None = None,
    *,
    exported_at: datetime | None = None,
) -> dict[str, Any]:
    """The JSON document (a dict) for ``run`` and its attempts, oldest first."""
    children = child_workflow_names or {}
    steps = []
    for attempt in step_attempts:
        item = _record(attempt, _STEP_FIELDS)
        if attempt.id in children:
            item["child_workflow_name"] = children[attempt.id]
        steps.append(item)
    return {
        "format": HISTORY_FORMAT,
        "version": HISTORY_VERSION,
        "exported_at": clock.to_iso(exported_at or clock.now()),
        "run": _record(run, _RUN_FIELDS),
        "step_attempts": steps,
    }


def dump_run_history(document: Mapping[str, Any]) -> str:
    """The document as JSON text (indented, UTF-8 characters kept, ending in a newline)."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _record(record: object, fields: tuple[tuple[str, Reader, Any], ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, _, _ in fields:
        value = getattr(record, name)
        out[name] = clock.to_iso(value) if isinstance(value, datetime) else value
    return out


# -- reading -------------------------------------------------------------------------------


def load_run_history(source: HistorySource | RunHistory) -> RunHistory:
    """Read and check a history: a parsed document, or the path of an exported file.

    Raises:
        ValueError: not a run history, an unsupported version, or a field that
            is missing or of the wrong type (the message says which and where).
        OSError: the file cannot be read.
    """
    if isinstance(source, RunHistory):
        return source
    if isinstance(source, Mapping):
        return _parse(source, None)
    path = Path(source)
    text = path.read_text(encoding="utf-8")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"run history {str(path)!r} is not valid JSON: {error}") from None
    return _parse(document, str(path))


def _parse(document: Any, source: str | None) -> RunHistory:
    where = "run history" if source is None else f"run history {source!r}"
    if not isinstance(document, Mapping):
        raise ValueError(f"{where}: expected a JSON object, got {_kind(document)}")
    _check_header(document, where)
    run_fields = _read_object(document, "run", _RUN_FIELDS, where)
    run_fields["updated_at"] = run_fields["updated_at"] or run_fields["created_at"]
    run = WorkflowRun(**run_fields)
    raw_steps = document.get("step_attempts", _REQUIRED)
    if raw_steps is _REQUIRED:
        raise ValueError(f"{where}: missing field 'step_attempts'")
    if not isinstance(raw_steps, list):
        raise ValueError(f"{where}: step_attempts: expected a list, got {_kind(raw_steps)}")
    attempts: list[StepAttempt] = []
    children: dict[str, str] = {}
    seen: set[str] = set()
    for index, item in enumerate(raw_steps):
        place = f"step_attempts[{index}]"
        attempt = _read_step(item, run, place, where)
        if attempt.id in seen:
            raise ValueError(f"{where}: {place}.id: {attempt.id!r} is listed twice")
        seen.add(attempt.id)
        child = item.get("child_workflow_name")
        if child is not None:
            children[attempt.id] = _field(_text, child, f"{place}.child_workflow_name", where)
        attempts.append(attempt)
    exported_at = _field(_time_or_none, document.get("exported_at"), "exported_at", where)
    return RunHistory(run, tuple(attempts), children, exported_at, source)


def _check_header(document: Mapping[str, Any], where: str) -> None:
    found = document.get("format")
    if found != HISTORY_FORMAT:
        raise ValueError(
            f"{where}: not an OpenWorkflow run history: 'format' is {found!r}, "
            f"expected {HISTORY_FORMAT!r} (write one with `ow runs export RUN_ID`)"
        )
    version = document.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"{where}: 'version' must be an integer, got {version!r}")
    if not 1 <= version <= HISTORY_VERSION:
        raise ValueError(
            f"{where}: unsupported history version {version} "
            f"(this OpenWorkflow reads version {HISTORY_VERSION})"
        )


def _read_step(item: Any, run: WorkflowRun, place: str, where: str) -> StepAttempt:
    if not isinstance(item, Mapping):
        raise ValueError(f"{where}: {place}: expected a JSON object, got {_kind(item)}")
    values = _read_fields(item, _STEP_FIELDS, place, where)
    values["namespace_id"] = values["namespace_id"] or run.namespace_id
    values["workflow_run_id"] = values["workflow_run_id"] or run.id
    values["updated_at"] = values["updated_at"] or values["created_at"]
    if values["workflow_run_id"] != run.id:
        raise ValueError(
            f"{where}: {place}.workflow_run_id: {values['workflow_run_id']!r} is not the "
            f"run's id {run.id!r}"
        )
    return StepAttempt(**values)


def _read_object(
    document: Mapping[str, Any], key: str, fields: tuple[tuple[str, Reader, Any], ...], where: str
) -> dict[str, Any]:
    value = document.get(key)
    if value is None:
        raise ValueError(f"{where}: missing field {key!r}")
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: {key}: expected a JSON object, got {_kind(value)}")
    return _read_fields(value, fields, key, where)


def _read_fields(
    item: Mapping[str, Any], fields: tuple[tuple[str, Reader, Any], ...], place: str, where: str
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, reader, default in fields:
        if name not in item:
            if default is _REQUIRED:
                raise ValueError(f"{where}: {place}: missing field {name!r}")
            values[name] = dict(default) if isinstance(default, dict) else default
            continue
        values[name] = _field(reader, item[name], f"{place}.{name}", where)
    return values


def _field(reader: Callable[[Any], Any], value: Any, place: str, where: str) -> Any:
    try:
        return reader(value)
    except _Invalid as error:
        raise ValueError(f"{where}: {place}: {error}") from None


_JSON_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (type(None), "null"),
    (bool, "a boolean"),
    ((int, float), "a number"),
    (str, "a string"),
    (list, "a list"),
    (Mapping, "an object"),
)


def _kind(value: Any) -> str:
    """A JSON value's type, in JSON's words."""
    for types, name in _JSON_KINDS:
        if isinstance(value, types):
            return name
    return type(value).__name__
