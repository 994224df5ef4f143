"""The create-run form: its fields, and turning what was typed into a new run.

Every refusal is a :class:`FormProblem` naming the field at fault, shown
next to the form; a run is created only when every field is usable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.datastructures import FormData

from openworkflow.client import OpenWorkflow
from openworkflow.core.workflow_definition import WorkflowRef
from openworkflow.dashboard import views
from openworkflow.dashboard.catalog import WorkflowCatalog
from openworkflow.errors import (
    InputValidationError,
    InvalidDurationError,
    InvalidNameError,
    PayloadError,
)

FORM_FIELDS = (
    "workflow_name",
    "input",
    "available_at",
    "deadline_at",
    "version",
    "idempotency_key",
    "tz_offset",
)

_NAME_FIELDS = {
    "workflow name": "workflow_name",
    "workflow version": "version",
    "version": "version",
    "idempotency_key": "idempotency_key",
}
"""The form field of each name :class:`InvalidNameError` can refuse."""


class FormProblem(Exception):
    """Why the create-run form was refused, for showing next to the form.

    Attributes:
        field: The form field at fault.
        message: What is wrong, for people.
        details: One line per rejected part of the input (schema errors).
    """

    def __init__(self, field: str, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.details = details or []


def form_values(form: FormData) -> dict[str, str]:
    """Every field of the create-run form as text (``""`` when absent or a file)."""
    values: dict[str, str] = {}
    for name in FORM_FIELDS:
        value = form.get(name)
        values[name] = value if isinstance(value, str) else ""
    return values


def _input_of(text: str) -> Any:
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise FormProblem(
            "input",
            f"The input is not valid JSON: {error.msg} "
            f"(line {error.lineno}, column {error.colno}).",
        ) from None


async def create_from_form(
    client: OpenWorkflow, catalog: WorkflowCatalog, values: Mapping[str, str]
) -> str:
    """Create the run the form describes and return its id.

    Raises:
        FormProblem: a field is missing or unusable.
    """
    name = values["workflow_name"].strip()
    if not name:
        raise FormProblem("workflow_name", "Enter the name of the workflow to run.")
    data = _input_of(values["input"])
    tz_offset = views.parse_tz_offset(values["tz_offset"])
    try:
        available_at = views.parse_when("available_at", values["available_at"], tz_offset)
        deadline_at = views.parse_when("deadline_at", values["deadline_at"], tz_offset)
    except views.FormValueError as error:
        label = "Schedule for" if error.field == "available_at" else "Deadline"
        raise FormProblem(error.field, f"{label}: {error}") from None
    version = values["version"].strip() or None
    ref = workflow_ref(catalog, name, version)
    try:
        handle = await client.run(
            ref,
            data,
            version=version,
            idempotency_key=values["idempotency_key"].strip() or None,
            available_at=available_at,
            deadline_at=deadline_at,
        )
    except InputValidationError as error:
        details = []
        for item in error.errors:
            location = ".".join(str(part) for part in item.get("loc", ()))
            details.append(f"{location or '(input)'}: {item.get('msg', 'invalid')}")
        raise FormProblem("input", str(error), details) from None
    except PayloadError as error:
        raise FormProblem("input", str(error)) from None
    except InvalidNameError as error:
        raise FormProblem(_NAME_FIELDS.get(error.field, "workflow_name"), str(error)) from None
    except InvalidDurationError as error:
        raise FormProblem("available_at", str(error)) from None
    return handle.id


def workflow_ref(catalog: WorkflowCatalog, name: str, version: str | None) -> WorkflowRef:
    """The registered spec to validate with, or the bare name when none is known.

    Raises:
        FormProblem: no version was given and the catalog knows several.
    """
    candidates = [spec for spec in catalog.specs if spec.name == name]
    if version is not None:
        exact = [spec for spec in candidates if spec.version == version]
        return exact[0] if exact else name
    unversioned = [spec for spec in candidates if spec.version is None]
    if unversioned:
        return unversioned[0]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        known = ", ".join(sorted(spec.version or "" for spec in candidates))
        raise FormProblem(
            "version", f"Workflow {name!r} has several versions ({known}): choose one."
        )
    return name
