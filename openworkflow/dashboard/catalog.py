"""The workflows the dashboard knows: their names and the input schemas of the create-run form.

Runs of names the catalog does not know are still shown and created (without
input validation); the catalog only adds names to pick and schemas to check.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import TypeAdapter

from openworkflow.core.workflow_definition import Workflow, WorkflowSpec, spec_of
from openworkflow.dashboard import views


def _schema_of(spec: WorkflowSpec) -> str | None:
    if spec.schema is None:
        return None
    try:
        return views.pretty_json(TypeAdapter(spec.schema).json_schema())
    except Exception:  # a type pydantic validates but cannot describe
        return None


class WorkflowCatalog:
    """The known workflow specs, with their input schemas as pretty JSON."""

    def __init__(self, workflows: Iterable[Workflow | WorkflowSpec] = ()) -> None:
        self.specs: list[WorkflowSpec] = []
        self._schemas: dict[tuple[str, str | None], str] = {}
        self.use(workflows)

    def use(self, workflows: Iterable[Workflow | WorkflowSpec]) -> None:
        """Replace the known workflows (names and input schemas of the create-run form)."""
        specs = [spec_of(item) for item in workflows]
        schemas = {
            (spec.name, spec.version): schema
            for spec in specs
            if (schema := _schema_of(spec)) is not None
        }
        self.specs, self._schemas = specs, schemas

    def names(self) -> list[str]:
        """The known workflow names, sorted, each once."""
        return sorted({spec.name for spec in self.specs})

    def form_entries(self) -> list[dict[str, Any]]:
        """Name, version and schema of each known workflow, for the create-run form."""
        return [
            {
                "name": spec.name,
                "version": spec.version,
                "schema": self._schemas.get((spec.name, spec.version)),
            }
            for spec in sorted(self.specs, key=lambda spec: (spec.name, spec.version or ""))
        ]
