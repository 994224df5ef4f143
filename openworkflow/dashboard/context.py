"""What every request handler of one dashboard app shares."""

from __future__ import annotations

from dataclasses import dataclass

from openworkflow.client import OpenWorkflow
from openworkflow.core.backend import Backend
from openworkflow.dashboard.catalog import WorkflowCatalog
from openworkflow.dashboard.rendering import PageRenderer


@dataclass(frozen=True, slots=True)
class DashboardContext:
    """The backend (never stopped here), a client on it, the known workflows, the pages."""

    backend: Backend
    client: OpenWorkflow
    catalog: WorkflowCatalog
    pages: PageRenderer

    @classmethod
    def for_backend(cls, backend: Backend, catalog: WorkflowCatalog) -> DashboardContext:
        """A context over ``backend`` in its namespace."""
        return cls(backend, OpenWorkflow(backend), catalog, PageRenderer(backend.namespace_id))
