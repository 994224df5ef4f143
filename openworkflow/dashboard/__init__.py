"""The web dashboard and Prometheus metrics (``ow dashboard``).

``create_app(backend, workflows=..., auth=...)`` returns a Starlette app:
server-rendered pages for runs (list, detail, create, cancel, retry, live
status), ``GET /metrics`` and ``GET /healthz``. See :mod:`.app`; ``ow dashboard``
serves it with :func:`.server.serve_dashboard`.
"""

from __future__ import annotations

from openworkflow.dashboard.app import create_app
from openworkflow.dashboard.security import AUTH_ENVIRONMENT_VARIABLE, BasicCredentials

__all__ = ["AUTH_ENVIRONMENT_VARIABLE", "BasicCredentials", "create_app"]
