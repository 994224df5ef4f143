"""Lookup of workflow implementations by exact (name, version)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from openworkflow.core.workflow_definition import Workflow
from openworkflow.errors import DuplicateWorkflowError


def describe(name: str, version: str | None) -> str:
    """``"name"`` or ``"name" (version: v)``, as the original prints it."""
    return f'"{name}"' + (f" (version: {version})" if version is not None else "")


class WorkflowRegistry:
    """Workflows a worker can execute; ``None`` version matches only unversioned runs."""

    def __init__(self, workflows: Iterable[Workflow] = ()) -> None:
        self._workflows: dict[tuple[str, str | None], Workflow] = {}
        for item in workflows:
            self.register(item)

    def register(self, item: Workflow) -> None:
        """Add a workflow; a second implementation of the same (name, version) is an error."""
        if not isinstance(item, Workflow):
            raise TypeError(
                f"expected a workflow made with @workflow, got {type(item).__name__}: {item!r}"
            )
        key = (item.name, item.version)
        existing = self._workflows.get(key)
        if existing is not None and existing is not item:
            raise DuplicateWorkflowError(
                f"Workflow {describe(*key)} is already registered: defined at {existing.source} "
                f"and again at {item.source}"
            )
        self._workflows[key] = item

    def get(self, name: str, version: str | None) -> Workflow | None:
        """Return the implementation of exactly (name, version), or None."""
        return self._workflows.get((name, version))

    def __iter__(self) -> Iterator[Workflow]:
        return iter(self._workflows.values())

    def __len__(self) -> int:
        return len(self._workflows)
