"""The files ``ow init`` writes."""

from __future__ import annotations

POSTGRES_URL_EXAMPLE = "postgresql://user:password@localhost:5432/openworkflow"
GITIGNORE_ENTRIES = ("openworkflow/backend.db*", ".env")

_CONFIG_HEAD = '''\
"""OpenWorkflow configuration, read by `ow worker start`, `ow dev`, `ow doctor` and `ow run`.

Settings from the environment (OPENWORKFLOW_*, also read from .env) override
this file; command-line flags override both.
"""

from openworkflow import define_config

config = define_config(
'''

_CONFIG_TAIL = """\
    dirs=["./openworkflow"],
    worker={"concurrency": 10},
)
"""

_SQLITE_BACKEND = """\
    backend="sqlite:///openworkflow/backend.db",
"""

_POSTGRES_BACKEND = """\
    # No backend here: it comes from OPENWORKFLOW_POSTGRES_URL (see .env).
"""

_BOTH_BACKEND = """\
    # SQLite for development. Set OPENWORKFLOW_BACKEND_URL=postgresql://... in the
    # environment (e.g. in production) to use PostgreSQL instead: it overrides this line.
    backend="sqlite:///openworkflow/backend.db",
"""


def config_file(backend: str) -> str:
    """``openworkflow.config.py`` for the chosen backend: sqlite, postgres or both."""
    middle = {"sqlite": _SQLITE_BACKEND, "postgres": _POSTGRES_BACKEND, "both": _BOTH_BACKEND}
    return _CONFIG_HEAD + middle[backend] + _CONFIG_TAIL


HELLO_WORLD = '''\
"""An example workflow: one step and a durable one-second sleep.

Start a worker with `ow worker start`, then run it with `ow run hello-world --wait`
(or `ow run hello-world --input '{"name": "Ada"}' --wait`).
"""

from __future__ import annotations

from pydantic import BaseModel

from openworkflow import Step, workflow


class HelloInput(BaseModel):
    name: str = "world"


@workflow(name="hello-world")
async def hello_world(input: HelloInput | None, step: Step) -> dict[str, str]:
    name = input.name if input is not None else "world"
    # A step runs once; its result is stored and replayed if the run resumes.
    greeting = await step.run("greet", lambda: f"Hello, {name}!")
    # A durable sleep: the run parks and frees the worker until it is due.
    await step.sleep("pause", "1s")
    return {"greeting": greeting}
'''

ENV_POSTGRES = f"""\
# OpenWorkflow: the PostgreSQL database (used because openworkflow.config.py names no backend).
OPENWORKFLOW_POSTGRES_URL={POSTGRES_URL_EXAMPLE}
"""

ENV_BOTH = f"""\
# OpenWorkflow: openworkflow.config.py uses SQLite. To use PostgreSQL instead (e.g. in
# production), set OPENWORKFLOW_BACKEND_URL: it overrides the config file's backend.
# (OPENWORKFLOW_POSTGRES_URL is used only when the config file names no backend.)
# OPENWORKFLOW_BACKEND_URL={POSTGRES_URL_EXAMPLE}
"""

ENV_SQLITE = f"""\
# OpenWorkflow: openworkflow.config.py uses SQLite. Settings here (and in the
# environment) override the config file; uncomment to use them.
# OPENWORKFLOW_BACKEND_URL={POSTGRES_URL_EXAMPLE}
"""

ENV_SETTINGS = """\
# OpenWorkflow worker settings (durations: 500ms, 30s, 5m; a bare number is seconds):
# OPENWORKFLOW_NAMESPACE_ID=default
# OPENWORKFLOW_WORKER_CONCURRENCY=10
# OPENWORKFLOW_WORKER_LEASE_DURATION=30s
# OPENWORKFLOW_WORKER_SHUTDOWN_TIMEOUT=30s
"""
