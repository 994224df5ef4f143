"""Python and the TypeScript original (npm ``openworkflow``) on one PostgreSQL schema.

The pinned npm package is installed by name into a cache folder (reused by
later sessions), and ``ts/interop.mjs`` drives it in Node.js subprocesses.
Both sides share one fresh schema and one namespace:

- a run started by the TypeScript client is executed by a Python ``Worker``,
  and the TypeScript client reads its result with ``handle.result()``;
- a run started by the Python client is executed by a TypeScript ``Worker``,
  and the Python client reads its result;
- the rows each worker wrote (runs and step attempts, final and every
  intermediate version, captured by a trigger) must be the same either way;
- the same holds for a workflow whose step throws (no retries): the failed
  step and run rows, and the stored error, are the same either way;
- each side reads the runs the other wrote through its public API, and an
  idempotency key used by one side finds the run the other side created;
- the schema each side's migrations create is identical.

Without Node.js or npm (or when the package cannot be installed) the tests
skip locally and fail under ``CI``. PostgreSQL comes from
``OPENWORKFLOW_TEST_POSTGRES_URL`` (see ``tests/fixtures/postgres.py``).

Run: ``OPENWORKFLOW_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test
.venv/bin/pytest tests/interop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from openworkflow import (
    OpenWorkflow,
    RetryPolicy,
    RunHandle,
    Step,
    StepAttempt,
    Worker,
    WorkflowFailedError,
    WorkflowRun,
    workflow,
)
from openworkflow.postgres import PostgresBackend
from tests.fixtures.postgres import require_server_url

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
A, B, T = TypeVar("A"), TypeVar("B"), TypeVar("T")

OPENWORKFLOW_NPM_VERSION = "0.10.1"
POSTGRES_NPM_VERSION = "3.4.9"  # the package's optional peer dependency (^3.4.9)
MIN_NODE_MAJOR = 20
DRIVER = Path(__file__).resolve().parent / "ts" / "interop.mjs"
CACHE_VARIABLE = "OPENWORKFLOW_INTEROP_NPM_DIR"
NPM_INSTALL_TIMEOUT_S = 240.0
NODE_TIMEOUT_S = 90.0
RUN_TIMEOUT = "60s"

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[47][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
ISO_MS_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

INPUT = {"name": "Zoë", "Mixed_Case": {"innerKey": [1, None, True]}}
MIXED_KEYS = {
    "UPPER_KEY": 1,
    "camelKey": 2,
    "snake_key": 3,
    "nested": {"innerKey": [1, {"DeepKey": True}], "kebab-key": "x"},
}
EXPECTED_OUTPUT = {
    "greeting": "Hello, Zoë!",
    "shout": "HELLO, ZOË!",
    "keys": MIXED_KEYS,
    "nothing": None,
    "echo": INPUT,
}


@workflow(name="interop-greet", schema=None)
async def interop_greet(input: Any, step: Step) -> dict[str, Any]:
    """The same workflow as ``interopGreet`` in ``ts/interop.mjs``."""
    greeting = await step.run("greet", lambda: f"Hello, {input['name']}!")
    keys = await step.run("mixed-keys", lambda: MIXED_KEYS)
    shout = await step.run("greet", lambda: greeting.upper())  # durable name "greet:1"
    await step.sleep("nap", "1s")
    nothing = await step.run("nothing", lambda: None)
    return {"greeting": greeting, "shout": shout, "keys": keys, "nothing": nothing, "echo": input}


@workflow(name="interop-fail", schema=None)
async def interop_fail(input: Any, step: Step) -> str:
    """The same workflow as ``interopFail`` in ``ts/interop.mjs``: its second step throws."""

    def explode() -> None:
        raise TypeError(f"boom for {input['name']}")

    await step.run("prepare", lambda: {"ready": True})
    await step.run("explode", explode, retry_policy=RetryPolicy(maximum_attempts=1))
    return "unreachable"


WORKFLOWS = [interop_greet, interop_fail]
GREET, FAIL = interop_greet.name, interop_fail.name
# A stored error with its stack replaced (JavaScript and Python stacks differ by nature).
EXPECTED_ERROR = {"name": "TypeError", "message": "boom for Zoë", "stack": "<stack>"}


# -- the TypeScript side ------------------------------------------------------------------


def _unavailable(message: str) -> NoReturn:
    """Skip locally; fail under CI, which must run the interop tests."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must run the TypeScript interop tests)")
    pytest.skip(message)


@dataclass(frozen=True)
class TypeScript:
    """The installed npm package and the Node.js that runs the driver next to it."""

    directory: Path
    node: str

    def env(self, url: str, schema: str, namespace: str) -> dict[str, str]:
        """Environment for one driver process."""
        return {
            **os.environ,
            "OW_URL": url,
            "OW_SCHEMA": schema,
            "OW_NAMESPACE": namespace,
            "OW_TIMEOUT_MS": str(int(NODE_TIMEOUT_S * 1000) - 10_000),
        }

    async def start(self, env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
        """Start ``node interop.mjs <args>`` with piped output."""
        return await asyncio.create_subprocess_exec(
            self.node,
            "interop.mjs",
            *args,
            cwd=self.directory,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    async def call(self, env: dict[str, str], *args: str) -> list[dict[str, Any]]:
        """Run the driver to the end and return its events."""
        return await finish(await self.start(env, *args), " ".join(args))


async def next_event(process: asyncio.subprocess.Process, what: str) -> dict[str, Any]:
    """Read the next JSON event line of a running driver."""
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), NODE_TIMEOUT_S)
    except TimeoutError:
        await _kill(process)
        raise AssertionError(f"node {what}: no output within {NODE_TIMEOUT_S}s") from None
    if not line:
        events = await finish(process, what)
        raise AssertionError(f"node {what} ended without output: {events}")
    return dict(json.loads(line))


async def finish(process: asyncio.subprocess.Process, what: str) -> list[dict[str, Any]]:
    """Wait for a driver to exit successfully and return the events it printed."""
    try:
        out, err = await asyncio.wait_for(process.communicate(), NODE_TIMEOUT_S)
    except TimeoutError:
        await _kill(process)
        raise AssertionError(f"node {what} did not finish within {NODE_TIMEOUT_S}s") from None
    if process.returncode != 0:
        raise AssertionError(
            f"node {what} exited with {process.returncode}:\n{err.decode(errors='replace')}"
        )
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
    with contextlib.suppress(Exception):
        await process.communicate()


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        _unavailable(f"{name} is not installed")
    return path


def _node_major(node: str) -> int:
    try:
        version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
        return int(version.lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.SubprocessError) as error:
        _unavailable(f"cannot run {node} --version: {error}")


def _installed_version(directory: Path, package: str) -> str | None:
    manifest = directory / "node_modules" / package / "package.json"
    try:
        return str(json.loads(manifest.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def _is_installed(directory: Path) -> bool:
    return (
        _installed_version(directory, "openworkflow") == OPENWORKFLOW_NPM_VERSION
        and _installed_version(directory, "postgres") == POSTGRES_NPM_VERSION
    )


def _npm_install(npm: str, target: Path) -> None:
    """Install the pinned packages by name into ``target`` (atomically, by renaming)."""
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    partial.mkdir(parents=True)
    try:
        manifest = {"name": "openworkflow-interop", "private": True, "version": "0.0.0"}
        (partial / "package.json").write_text(json.dumps(manifest))
        command = [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            f"openworkflow@{OPENWORKFLOW_NPM_VERSION}",
            f"postgres@{POSTGRES_NPM_VERSION}",
        ]
        try:
            result = subprocess.run(
                command,
                cwd=partial,
                capture_output=True,
                text=True,
                timeout=NPM_INSTALL_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            _unavailable(f"npm install failed: {error}")
        if result.returncode != 0 or not _is_installed(partial):
            _unavailable(
                f"npm install of openworkflow@{OPENWORKFLOW_NPM_VERSION} failed "
                f"({result.returncode}):\n{result.stderr[-2000:]}"
            )
        with contextlib.suppress(OSError):  # another session may have won the race
            partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _install_dir(request: pytest.FixtureRequest, factory: pytest.TempPathFactory) -> Path:
    name = f"openworkflow-{OPENWORKFLOW_NPM_VERSION}-postgres-{POSTGRES_NPM_VERSION}"
    configured = os.environ.get(CACHE_VARIABLE)
    if configured:
        return Path(configured) / name
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("openworkflow-interop")) / name
    return factory.mktemp("openworkflow-interop") / name


@pytest.fixture(scope="session")
def typescript(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> TypeScript:
    """The pinned npm package, installed once and cached, with the driver next to it."""
    node, npm = _tool("node"), _tool("npm")
    if _node_major(node) < MIN_NODE_MAJOR:
        _unavailable(f"openworkflow needs Node.js >= {MIN_NODE_MAJOR}")
    directory = _install_dir(request, tmp_path_factory)
    if not _is_installed(directory):
        shutil.rmtree(directory, ignore_errors=True)
        directory.parent.mkdir(parents=True, exist_ok=True)
        _npm_install(npm, directory)
    assert _is_installed(directory), f"no usable install in {directory}"
    # The driver must sit next to node_modules to import the package by name.
    staged = directory / f".interop-{uuid.uuid4().hex}.mjs"
    shutil.copyfile(DRIVER, staged)
    staged.replace(directory / "interop.mjs")
    return TypeScript(directory, node)


# -- database helpers ---------------------------------------------------------------------


def _drop_schemas(url: str, *schemas: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        for schema in schemas:
            connection.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )


def _fresh_name() -> str:
    return f"ow_interop_{uuid.uuid4().hex[:12]}"


_AUDIT_DDL = """
CREATE TABLE {schema}."interop_audit" (
  "seq" BIGSERIAL PRIMARY KEY,
  "table_name" TEXT NOT NULL,
  "op" TEXT NOT NULL,
  "row" JSONB NOT NULL
);
CREATE FUNCTION {schema}."interop_audit_row"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {schema}."interop_audit" ("table_name", "op", "row")
  VALUES (TG_TABLE_NAME, TG_OP, to_jsonb(NEW));
  RETURN NULL;
END
$$;
CREATE TRIGGER "interop_audit" AFTER INSERT OR UPDATE ON {schema}."workflow_runs"
  FOR EACH ROW EXECUTE FUNCTION {schema}."interop_audit_row"();
CREATE TRIGGER "interop_audit" AFTER INSERT OR UPDATE ON {schema}."step_attempts"
  FOR EACH ROW EXECUTE FUNCTION {schema}."interop_audit_row"();
"""


async def _execute(url: str, statement: sql.Composable) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
        await connection.execute(statement)


async def _fetch(url: str, statement: sql.Composable, params: Any = None) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, row_factory=dict_row
    ) as connection:
        cursor = await connection.execute(statement, params)
        return await cursor.fetchall()


def _json_types(alias: str, *columns: str) -> sql.Composable:
    return sql.SQL(", ").join(
        sql.SQL("jsonb_typeof({}.{}) AS {}").format(
            sql.Identifier(alias), sql.Identifier(column), sql.Identifier(f"{column}_type")
        )
        for column in columns
    )


async def _run_row(url: str, schema: str, namespace: str, run_id: str) -> dict[str, Any]:
    query = sql.SQL(
        "SELECT r.*, {types} FROM {schema}.workflow_runs r WHERE r.namespace_id = %s AND r.id = %s"
    ).format(
        types=_json_types("r", "config", "context", "input", "output", "error"),
        schema=sql.Identifier(schema),
    )
    (row,) = await _fetch(url, query, (namespace, run_id))
    return row


def _in_step_order(items: Iterable[T], name_of: Callable[[T], str]) -> list[T]:
    """The steps in the order the workflows run them (each name occurs once)."""
    order = {name: index for names in STEP_NAMES.values() for index, name in enumerate(names)}
    return sorted(items, key=lambda item: order[name_of(item)])


async def _step_rows(url: str, schema: str, namespace: str, run_id: str) -> list[dict[str, Any]]:
    query = sql.SQL(
        "SELECT s.*, {types} FROM {schema}.step_attempts s "
        "WHERE s.namespace_id = %s AND s.workflow_run_id = %s ORDER BY s.created_at, s.id"
    ).format(
        types=_json_types("s", "config", "context", "output", "error"),
        schema=sql.Identifier(schema),
    )
    return await _fetch(url, query, (namespace, run_id))


async def _audit_rows(url: str, schema: str) -> list[dict[str, Any]]:
    query = sql.SQL(
        'SELECT "table_name", "op", "row" FROM {}."interop_audit" ORDER BY "seq"'
    ).format(sql.Identifier(schema))
    return await _fetch(url, query)


async def _migration_versions(url: str, schema: str) -> list[int]:
    query = sql.SQL('SELECT "version" FROM {}."openworkflow_migrations" ORDER BY 1').format(
        sql.Identifier(schema)
    )
    return [int(row["version"]) for row in await _fetch(url, query)]


# -- normalizing what each side wrote -----------------------------------------------------


def _shape(value: Any) -> Any:
    """JSON with ISO-ms timestamps, UUIDs and error stacks replaced by placeholders.

    The ``openworkflow`` key of a failed attempt's error (the Python engine's memo of
    a final failure, which the original ignores; see docs/differences.md) is left out.
    """
    if isinstance(value, dict):
        return {
            key: "<stack>" if key == "stack" and isinstance(item, str) and item else _shape(item)
            for key, item in value.items()
            if not (key == "openworkflow" and isinstance(item, dict) and "final" in item)
        }
    if isinstance(value, list):
        return [_shape(item) for item in value]
    if isinstance(value, str) and ISO_MS_UTC.match(value):
        return "<iso-ms-utc>"
    if isinstance(value, str) and UUID.match(value):
        return "<uuid>"
    return value


def _iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _ms_truncated(value: datetime) -> bool:
    return value.microsecond % 1000 == 0


def _in_order(*instants: datetime | None) -> bool:
    present = [instant for instant in instants if instant is not None]
    return present == sorted(present)


def _sleep_resume_at(steps: list[dict[str, Any]]) -> datetime | None:
    sleeps = [step for step in steps if step["kind"] == "sleep"]
    return _iso(sleeps[0]["context"]["resumeAt"]) if sleeps else None


_RUN_JSON = ("config", "context", "input", "output", "error")
_STEP_JSON = ("config", "context", "output", "error")


def normalize_run_row(row: dict[str, Any], namespace: str) -> dict[str, Any]:
    """A ``workflow_runs`` row without ids and instants, keeping facts about them."""
    created, started, finished = row["created_at"], row["started_at"], row["finished_at"]
    return {
        "namespace_id": "<shared>" if row["namespace_id"] == namespace else row["namespace_id"],
        "id": _shape(row["id"]),
        "workflow_name": row["workflow_name"],
        "version": row["version"],
        "status": row["status"],
        "idempotency_key": row["idempotency_key"],
        **{column: _shape(row[column]) for column in _RUN_JSON},
        # jsonb_typeof: None for SQL NULL, "null" for the JSON null.
        **{f"{column}_type": row[f"{column}_type"] for column in _RUN_JSON},
        "attempts": row["attempts"],
        "parent_step_attempt_namespace_id": row["parent_step_attempt_namespace_id"],
        "parent_step_attempt_id": row["parent_step_attempt_id"],
        "worker_id": _shape(row["worker_id"]),
        "available_at": row["available_at"],
        "deadline_at": row["deadline_at"],
        "started_at set": started is not None,
        "finished_at set": finished is not None,
        "created_at ms-truncated": _ms_truncated(created),
        "created <= started <= finished": _in_order(created, started, finished),
        "finished_at <= updated_at": _in_order(finished, row["updated_at"]),
        # Completing sets both to NOW() ...
        **(
            {"updated_at == finished_at": row["updated_at"] == finished}
            if row["status"] == "completed"
            # ... failing takes finished_at from the retry decision's clock, in ms.
            else {"finished_at ms-truncated": finished is not None and _ms_truncated(finished)}
        ),
    }


def normalize_step_rows(
    rows: list[dict[str, Any]], namespace: str, run_id: str
) -> list[dict[str, Any]]:
    """``step_attempts`` rows without ids and instants, keeping facts about them."""
    normalized = []
    for row in rows:
        created, started, finished = row["created_at"], row["started_at"], row["finished_at"]
        item = {
            "namespace_id": "<shared>" if row["namespace_id"] == namespace else row["namespace_id"],
            "id": _shape(row["id"]),
            "workflow_run_id": "<run>" if row["workflow_run_id"] == run_id else "<other>",
            "step_name": row["step_name"],
            "kind": row["kind"],
            "status": row["status"],
            **{column: _shape(row[column]) for column in _STEP_JSON},
            **{f"{column}_type": row[f"{column}_type"] for column in _STEP_JSON},
            "child_workflow_run_namespace_id": row["child_workflow_run_namespace_id"],
            "child_workflow_run_id": row["child_workflow_run_id"],
            "created_at ms-truncated": _ms_truncated(created),
            # started_at is NOW() and created_at date_trunc('milliseconds', NOW()).
            "started_at - created_at < 1 ms": timedelta(0)
            <= started - created
            < timedelta(milliseconds=1),
            "finished_at >= started_at": finished is not None and finished >= started,
            "updated_at == finished_at": row["updated_at"] == finished,
        }
        if row["kind"] == "sleep":
            resume_at = _iso(row["context"]["resumeAt"])
            # resumeAt is the app clock + 1 s just before the insert.
            item["resumeAt - created_at ~ 1s"] = (
                timedelta(milliseconds=500) < resume_at - created <= timedelta(milliseconds=1250)
            )
            # The run is claimed again only once NOW() >= resumeAt (its available_at).
            item["finished_at >= resumeAt"] = finished >= resume_at
        normalized.append(item)
    return normalized


def normalize_audit(
    audit: list[dict[str, Any]], run_id: str, resume_at: datetime | None
) -> list[tuple[Any, ...]]:
    """Every version of the run and its steps, in write order, as comparable tuples."""
    workers: dict[str, str] = {}
    events: list[tuple[Any, ...]] = []
    started_values: set[str] = set()
    for entry in audit:
        row, op = entry["row"], entry["op"]
        if entry["table_name"] == "workflow_runs" and row["id"] == run_id:
            worker = row["worker_id"]
            label = None if worker is None else workers.setdefault(worker, f"w{len(workers) + 1}")
            available = row["available_at"]
            if available is None:
                when = None
            elif _iso(available) == resume_at:
                when = "sleep resumeAt"
            else:
                delta = _iso(available) - _iso(row["updated_at"])
                when = f"updated_at + {delta / timedelta(milliseconds=1):g} ms"
            if row["started_at"] is not None:
                started_values.add(row["started_at"])
            events.append(
                (
                    "run",
                    op,
                    row["status"],
                    label,
                    row["attempts"],
                    when,
                    row["started_at"] is not None,
                    row["finished_at"] is not None,
                    row["output"] is not None,
                    _shape(row["error"]),
                )
            )
        elif entry["table_name"] == "step_attempts" and row["workflow_run_id"] == run_id:
            events.append(
                (
                    "step",
                    op,
                    row["step_name"],
                    row["kind"],
                    row["status"],
                    row["output"],
                    _shape(row["error"]),
                )
            )
    # started_at is set by the first claim and kept by later ones.
    events.append(("distinct started_at values", len(started_values)))
    return events


def normalize_api_run(run: WorkflowRun) -> dict[str, Any]:
    """A run as the Python API returns it, without ids and instants."""
    instants = (run.created_at, run.started_at, run.finished_at, run.updated_at)
    return {
        "workflow_name": run.workflow_name,
        "version": run.version,
        "status": run.status,
        "idempotency_key": run.idempotency_key,
        "config": run.config,
        "context": run.context,
        "input": run.input,
        "output": run.output,
        "error": _shape(run.error),
        "attempts": run.attempts,
        "worker_id": _shape(run.worker_id),
        "available_at": run.available_at,
        "deadline_at": run.deadline_at,
        "instants aware and ms-truncated": all(
            value.utcoffset() == timedelta(0) and _ms_truncated(value)
            for value in instants
            if value is not None
        ),
    }


def normalize_api_steps(steps: list[StepAttempt]) -> list[dict[str, Any]]:
    """Steps as the Python API returns them, without ids and instants."""
    return [
        {
            "step_name": step.step_name,
            "kind": step.kind,
            "status": step.status,
            "config": step.config,
            "context": _shape(step.context),
            "output": step.output,
            "error": _shape(step.error),
            "is_completed": step.is_completed,
        }
        for step in steps
    ]


_TS_INSTANTS = ("createdAt", "updatedAt", "startedAt", "finishedAt", "availableAt", "deadlineAt")


def normalize_ts_record(record: dict[str, Any]) -> dict[str, Any]:
    """A run or step as the TypeScript backend returns it, without ids and instants."""
    return {
        key: (None if value is None else bool(ISO_MS_UTC.match(value)))
        if key in _TS_INSTANTS
        else _shape(value)
        if key in ("id", "workflowRunId", "workerId", "context", "error")
        else value
        for key, value in record.items()
    }


# -- the scenario: both directions, two workflows, one schema and namespace --------------


@dataclass
class Direction:
    """What happened to one run, as seen from both sides."""

    workflow_name: str
    run_id: str = ""
    created: Any = None  # the run as the starting client got it (TS JSON or WorkflowRun)
    ts_outcome: tuple[str, Any] = ("", None)  # TS handle.result() (a) or getWorkflowRun (b)
    py_outcome: tuple[str, Any] = ("", None)  # Python handle.result()
    py_run: WorkflowRun | None = None
    py_steps: list[StepAttempt] = field(default_factory=list)
    ts_view: dict[str, Any] = field(default_factory=dict)  # TypeScript get: {run, steps}
    run_row: dict[str, Any] = field(default_factory=dict)
    step_rows: list[dict[str, Any]] = field(default_factory=list)
    audit: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass
class Scenario:
    """Everything both sides did on one schema and namespace."""

    schema: str
    namespace: str
    migrations_by_typescript: list[int] = field(default_factory=list)
    migrations_after_python: list[int] = field(default_factory=list)
    # (a) started by the TypeScript client, executed by a Python worker, per workflow name
    ts_to_py: dict[str, Direction] = field(default_factory=dict)
    # (b) started by the Python client, executed by a TypeScript worker, per workflow name
    py_to_ts: dict[str, Direction] = field(default_factory=dict)
    # idempotency key -> (id of the run its first user created, id the other side got)
    idempotent: dict[str, tuple[str, str]] = field(default_factory=dict)

    def pair(self, workflow_name: str) -> tuple[Direction, Direction]:
        """Direction (a) and (b) of one workflow."""
        return self.ts_to_py[workflow_name], self.py_to_ts[workflow_name]


async def _py_outcome(handle: RunHandle) -> tuple[str, Any]:
    try:
        return "result", await handle.result(timeout=RUN_TIMEOUT)
    except WorkflowFailedError as error:
        return "failed", error.error


def _ts_outcome(event: dict[str, Any]) -> tuple[str, Any]:
    if event["event"] == "failed":  # "Workflow <name> failed: <JSON of the error>"
        return "failed", json.loads(event["message"].split(" failed: ", 1)[1])
    assert event["event"] == "result", event
    return "result", event["output"]


async def _together(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Await both; if one fails, cancel the other (a TaskGroup)."""
    async with asyncio.TaskGroup() as group:
        one, two = group.create_task(_coroutine(first)), group.create_task(_coroutine(second))
    return one.result(), two.result()


async def _coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


async def _typescript_client_python_worker(
    typescript: TypeScript, env: dict[str, str], ow: OpenWorkflow, workflow_name: str
) -> Direction:
    direction = Direction(workflow_name)
    client = await typescript.start(env, "run", workflow_name, json.dumps(INPUT))
    try:
        created = await next_event(client, "run")
        assert created["event"] == "created", created
        direction.created, direction.run_id = created["run"], created["run"]["id"]
        async with Worker(ow.backend, WORKFLOWS, concurrency=1):
            # The TypeScript client polls handle.result() meanwhile.
            direction.py_outcome, events = await _together(
                _py_outcome(ow.handle(direction.run_id)), finish(client, "run")
            )
    finally:
        await _kill(client)
    (event,) = events
    direction.ts_outcome = _ts_outcome(event)
    return direction


async def _python_client_typescript_worker(
    typescript: TypeScript, env: dict[str, str], ow: OpenWorkflow, workflow_name: str
) -> Direction:
    direction = Direction(workflow_name)
    handle = await ow.run(next(w for w in WORKFLOWS if w.name == workflow_name), INPUT)
    direction.run_id, direction.created = handle.id, handle.workflow_run
    worker = await typescript.start(env, "work", handle.id)
    try:
        direction.py_outcome, events = await _together(_py_outcome(handle), finish(worker, "work"))
    finally:
        await _kill(worker)
    assert [event["event"] for event in events] == ["started", "finished"], events
    run = events[1]["run"]
    assert run["status"] in ("completed", "failed"), run
    direction.ts_outcome = (
        ("result", run["output"]) if run["status"] == "completed" else ("failed", run["error"])
    )
    return direction


async def _cross_idempotency(
    typescript: TypeScript, env: dict[str, str], ow: OpenWorkflow, scenario: Scenario
) -> None:
    """One side creates a run with a key; the other side's create with it finds that run."""
    ts_key, py_key = "interop:created-by-typescript", "interop:created-by-python"
    (event,) = await typescript.call(env, "create", GREET, json.dumps(INPUT), ts_key)
    again = await ow.run(interop_greet, {"name": "other"}, idempotency_key=ts_key)
    scenario.idempotent[ts_key] = (event["run"]["id"], again.id)
    first = await ow.run(interop_greet, INPUT, idempotency_key=py_key)
    (event,) = await typescript.call(env, "create", GREET, json.dumps({"name": "x"}), py_key)
    scenario.idempotent[py_key] = (first.id, event["run"]["id"])


async def _play(typescript: TypeScript, url: str, scenario: Scenario) -> None:
    schema, namespace = scenario.schema, scenario.namespace
    env = typescript.env(url, schema, namespace)

    # The TypeScript package connects first: it creates and migrates the schema.
    await typescript.call(env, "migrate")
    scenario.migrations_by_typescript = await _migration_versions(url, schema)
    backend = PostgresBackend(url, namespace_id=namespace, schema=schema)
    try:
        await backend.open()  # Python on a schema the original migrated: nothing to apply
        scenario.migrations_after_python = await _migration_versions(url, schema)
        await _execute(url, sql.SQL(_AUDIT_DDL).format(schema=sql.Identifier(schema)))
        ow = OpenWorkflow(backend)
        for name in (GREET, FAIL):
            scenario.ts_to_py[name] = await _typescript_client_python_worker(
                typescript, env, ow, name
            )
            scenario.py_to_ts[name] = await _python_client_typescript_worker(
                typescript, env, ow, name
            )

        audit = await _audit_rows(url, schema)
        for direction in [*scenario.ts_to_py.values(), *scenario.py_to_ts.values()]:
            direction.py_run = await ow.get_run(direction.run_id)
            # Steps are listed by (created_at, id) with created_at in whole
            # milliseconds, so two steps recorded in one millisecond come in id
            # order (random); compare them in the workflow's order instead.
            steps = (await ow.list_steps(direction.run_id, limit=100)).data
            direction.py_steps = _in_step_order(steps, lambda step: step.step_name)
            (direction.ts_view,) = await typescript.call(env, "get", direction.run_id)
            direction.ts_view["steps"] = _in_step_order(
                direction.ts_view["steps"], lambda step: step["stepName"]
            )
            direction.run_row = await _run_row(url, schema, namespace, direction.run_id)
            direction.step_rows = _in_step_order(
                await _step_rows(url, schema, namespace, direction.run_id),
                lambda row: row["step_name"],
            )
            direction.audit = normalize_audit(
                audit, direction.run_id, _sleep_resume_at(direction.step_rows)
            )

        # Idempotency in a namespace of its own, where no worker claims the runs.
        other = backend.with_namespace(f"{namespace}-idempotency")
        try:
            other_env = {**env, "OW_NAMESPACE": other.namespace_id}
            await _cross_idempotency(typescript, other_env, OpenWorkflow(other), scenario)
        finally:
            await other.stop()
    finally:
        await backend.stop()


@pytest.fixture(scope="module")
def scenario(typescript: TypeScript) -> Iterator[Scenario]:
    """Play every exchange once on a fresh schema; drop it afterwards."""
    url = require_server_url()
    name = _fresh_name()
    played = Scenario(schema=name, namespace=f"interop-{name[len('ow_interop_') :]}")
    try:
        asyncio.run(_play(typescript, url, played))
        yield played
    finally:
        _drop_schemas(url, name)


# -- the tests ----------------------------------------------------------------------------

STEP_NAMES = {
    GREET: ["greet", "mixed-keys", "greet:1", "nap", "nothing"],
    FAIL: ["prepare", "explode"],
}
OUTCOMES = {GREET: ("result", EXPECTED_OUTPUT), FAIL: ("failed", EXPECTED_ERROR)}
both_workflows = pytest.mark.parametrize("workflow_name", [GREET, FAIL])


def test_python_opens_a_schema_the_typescript_package_created(scenario: Scenario) -> None:
    assert scenario.migrations_by_typescript == [0, 1, 2, 3, 4, 5]
    assert scenario.migrations_after_python == [0, 1, 2, 3, 4, 5]


@both_workflows
def test_typescript_run_is_executed_by_a_python_worker(
    scenario: Scenario, workflow_name: str
) -> None:
    a, _ = scenario.pair(workflow_name)
    assert a.created["status"] == "pending"
    assert a.created["workflowName"] == workflow_name
    assert a.created["namespaceId"] == scenario.namespace
    expected_status = "completed" if workflow_name == GREET else "failed"
    # Python handle.result() on a run the TypeScript client created...
    assert (a.py_outcome[0], _shape(a.py_outcome[1])) == OUTCOMES[workflow_name]
    # ...and TypeScript handle.result() on the run a Python worker executed.
    assert (a.ts_outcome[0], _shape(a.ts_outcome[1])) == OUTCOMES[workflow_name]
    assert a.py_run is not None
    assert (a.py_run.status, a.py_run.input) == (expected_status, INPUT)
    assert [step.step_name for step in a.py_steps] == STEP_NAMES[workflow_name]


@both_workflows
def test_python_run_is_executed_by_a_typescript_worker(
    scenario: Scenario, workflow_name: str
) -> None:
    _, b = scenario.pair(workflow_name)
    created = b.created
    assert (created.status, created.workflow_name, created.namespace_id) == (
        "pending",
        workflow_name,
        scenario.namespace,
    )
    expected_status = "completed" if workflow_name == GREET else "failed"
    # TypeScript getWorkflowRun on a run the Python client created...
    assert (b.ts_outcome[0], _shape(b.ts_outcome[1])) == OUTCOMES[workflow_name]
    # ...and Python handle.result() on the run a TypeScript worker executed.
    assert (b.py_outcome[0], _shape(b.py_outcome[1])) == OUTCOMES[workflow_name]
    assert b.py_run is not None
    assert (b.py_run.status, b.py_run.input) == (expected_status, INPUT)
    assert [step["stepName"] for step in b.ts_view["steps"]] == STEP_NAMES[workflow_name]


_STEP_COMMON = {
    "namespace_id": "<shared>",
    "id": "<uuid>",
    "workflow_run_id": "<run>",
    "kind": "function",
    "status": "completed",
    "config": {},
    "config_type": "object",
    "context": None,
    "context_type": None,
    "error": None,
    "error_type": None,
    "child_workflow_run_namespace_id": None,
    "child_workflow_run_id": None,
    "created_at ms-truncated": True,
    "started_at - created_at < 1 ms": True,
    "finished_at >= started_at": True,
    "updated_at == finished_at": True,
}

EXPECTED_STEPS = {
    GREET: [
        {**_STEP_COMMON, "step_name": "greet", "output": "Hello, Zoë!", "output_type": "string"},
        {**_STEP_COMMON, "step_name": "mixed-keys", "output": MIXED_KEYS, "output_type": "object"},
        {**_STEP_COMMON, "step_name": "greet:1", "output": "HELLO, ZOË!", "output_type": "string"},
        {
            **_STEP_COMMON,
            "step_name": "nap",
            "kind": "sleep",
            "context": {"kind": "sleep", "resumeAt": "<iso-ms-utc>"},
            "context_type": "object",
            "output": None,
            "output_type": None,  # SQL NULL, not the JSON null
            "resumeAt - created_at ~ 1s": True,
            "finished_at >= resumeAt": True,
        },
        {**_STEP_COMMON, "step_name": "nothing", "output": None, "output_type": None},
    ],
    FAIL: [
        {
            **_STEP_COMMON,
            "step_name": "prepare",
            "output": {"ready": True},
            "output_type": "object",
        },
        {
            **_STEP_COMMON,
            "step_name": "explode",
            "status": "failed",
            "output": None,
            "output_type": None,
            "error": EXPECTED_ERROR,
            "error_type": "object",
        },
    ],
}


@both_workflows
def test_step_rows_are_the_same_whichever_worker_wrote_them(
    scenario: Scenario, workflow_name: str
) -> None:
    a, b = scenario.pair(workflow_name)
    by_python = normalize_step_rows(a.step_rows, scenario.namespace, a.run_id)
    by_typescript = normalize_step_rows(b.step_rows, scenario.namespace, b.run_id)
    assert by_python == by_typescript
    assert by_typescript == EXPECTED_STEPS[workflow_name]


_RUN_COMMON = {
    "namespace_id": "<shared>",
    "id": "<uuid>",
    "version": None,
    "idempotency_key": None,
    "config": {},
    "context": None,
    "input": INPUT,
    "config_type": "object",
    "context_type": None,  # SQL NULL
    "input_type": "object",
    "parent_step_attempt_namespace_id": None,
    "parent_step_attempt_id": None,
    "available_at": None,
    "deadline_at": None,
    "finished_at set": True,
    "created_at ms-truncated": True,
    "created <= started <= finished": True,
    "finished_at <= updated_at": True,
}

EXPECTED_RUNS = {
    GREET: {
        **_RUN_COMMON,
        "workflow_name": GREET,
        "status": "completed",
        "output": EXPECTED_OUTPUT,
        "output_type": "object",
        "error": None,
        "error_type": None,
        "attempts": 2,  # claimed, parked by the sleep, claimed again
        "worker_id": "<uuid>",  # completing keeps the worker id
        "started_at set": True,
        "updated_at == finished_at": True,
    },
    FAIL: {
        **_RUN_COMMON,
        "workflow_name": FAIL,
        "status": "failed",
        "output": None,
        "output_type": None,
        "error": EXPECTED_ERROR,
        "error_type": "object",
        "attempts": 1,
        "worker_id": None,  # failing clears the worker id...
        "started_at set": False,  # ...and started_at
        "finished_at ms-truncated": True,
    },
}


@both_workflows
def test_run_rows_are_the_same_whichever_side_wrote_them(
    scenario: Scenario, workflow_name: str
) -> None:
    # (a) was created by TypeScript and executed by Python; (b) the other way round.
    a, b = scenario.pair(workflow_name)
    ts_created = normalize_run_row(a.run_row, scenario.namespace)
    py_created = normalize_run_row(b.run_row, scenario.namespace)
    assert ts_created == py_created
    assert py_created == EXPECTED_RUNS[workflow_name]


def _steps(name: str, kind: str, output: Any) -> list[tuple[Any, ...]]:
    return [
        ("step", "INSERT", name, kind, "running", None, None),
        ("step", "UPDATE", name, kind, "completed", output, None),
    ]


_LEASE = "updated_at + 30000 ms"
_CREATED = ("run", "INSERT", "pending", None, 0, "updated_at + 0 ms", False, False, False, None)
EXPECTED_HISTORY = {
    GREET: [
        _CREATED,
        ("run", "UPDATE", "running", "w1", 1, _LEASE, True, False, False, None),
        *_steps("greet", "function", "Hello, Zoë!"),
        *_steps("mixed-keys", "function", MIXED_KEYS),
        *_steps("greet:1", "function", "HELLO, ZOË!"),
        ("step", "INSERT", "nap", "sleep", "running", None, None),
        # Parked: still running, no worker, available at the sleep's resumeAt.
        ("run", "UPDATE", "running", None, 1, "sleep resumeAt", True, False, False, None),
        ("run", "UPDATE", "running", "w1", 2, _LEASE, True, False, False, None),
        ("step", "UPDATE", "nap", "sleep", "completed", None, None),
        *_steps("nothing", "function", None),
        ("run", "UPDATE", "completed", "w1", 2, None, True, True, True, None),
        ("distinct started_at values", 1),
    ],
    FAIL: [
        _CREATED,
        ("run", "UPDATE", "running", "w1", 1, _LEASE, True, False, False, None),
        *_steps("prepare", "function", {"ready": True}),
        ("step", "INSERT", "explode", "function", "running", None, None),
        ("step", "UPDATE", "explode", "function", "failed", None, EXPECTED_ERROR),
        ("run", "UPDATE", "failed", None, 1, None, False, True, False, EXPECTED_ERROR),
        ("distinct started_at values", 1),
    ],
}


def _one_write_per_quick_step(history: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The history as the Python worker writes it.

    A function step that returns quickly is inserted already completed (one
    write); the original inserts it running and then updates it. Failures
    and other kinds keep the insert-then-update pair.
    """
    merged: list[tuple[Any, ...]] = []
    for entry in history:
        previous = merged[-1] if merged else None
        if (
            previous is not None
            and previous[:2] == ("step", "INSERT")
            and entry[:2] == ("step", "UPDATE")
            and entry[2:5] == (previous[2], "function", "completed")
            and previous[4] == "running"
        ):
            merged[-1] = ("step", "INSERT", *entry[2:])
        else:
            merged.append(entry)
    return merged


@both_workflows
def test_every_intermediate_row_is_the_same_whichever_side_wrote_it(
    scenario: Scenario, workflow_name: str
) -> None:
    # (b) was executed by TypeScript, (a) by Python: the same rows, except that
    # Python records a quick step with one write (the final row is identical).
    a, b = scenario.pair(workflow_name)
    assert b.audit == EXPECTED_HISTORY[workflow_name]
    assert a.audit == _one_write_per_quick_step(EXPECTED_HISTORY[workflow_name])


@both_workflows
def test_each_side_reads_the_runs_the_other_wrote(scenario: Scenario, workflow_name: str) -> None:
    a, b = scenario.pair(workflow_name)
    # Python API: the run Python executed and the run TypeScript executed look alike.
    assert a.py_run is not None and b.py_run is not None
    assert normalize_api_run(a.py_run) == normalize_api_run(b.py_run)
    assert normalize_api_run(b.py_run)["instants aware and ms-truncated"] is True
    assert normalize_api_steps(a.py_steps) == normalize_api_steps(b.py_steps)
    # TypeScript backend API: the same.
    views = [
        {
            "run": normalize_ts_record(d.ts_view["run"]),
            "steps": [normalize_ts_record(step) for step in d.ts_view["steps"]],
        }
        for d in (a, b)
    ]
    assert views[0] == views[1]
    assert [step["stepName"] for step in views[1]["steps"]] == STEP_NAMES[workflow_name]
    # The two APIs agree on what each run holds.
    for direction in (a, b):
        run, ts_run = direction.py_run, direction.ts_view["run"]
        assert run is not None
        assert (ts_run["id"], ts_run["status"], ts_run["attempts"], ts_run["workerId"]) == (
            run.id,
            run.status,
            run.attempts,
            run.worker_id,
        )
        assert (ts_run["output"], ts_run["error"]) == (run.output, run.error)
        assert _iso(ts_run["createdAt"]) == run.created_at
        assert _iso(ts_run["finishedAt"]) == run.finished_at
        ts_steps = [
            (s["id"], s["status"], s["context"], s["output"], s["error"], _iso(s["createdAt"]))
            for s in direction.ts_view["steps"]
        ]
        assert ts_steps == [
            (s.id, s.status, s.context, s.output, s.error, s.created_at) for s in direction.py_steps
        ]


def test_an_idempotency_key_finds_the_run_the_other_side_created(scenario: Scenario) -> None:
    assert set(scenario.idempotent) == {
        "interop:created-by-typescript",
        "interop:created-by-python",
    }
    for key, (first, again) in scenario.idempotent.items():
        assert UUID.match(first), key
        assert again == first, key


# -- the schema ---------------------------------------------------------------------------

_COLUMNS = """
SELECT table_name, column_name, ordinal_position, data_type, udt_name, is_nullable,
       column_default, character_maximum_length, numeric_precision, is_identity
FROM information_schema.columns WHERE table_schema = %s
ORDER BY table_name, ordinal_position"""

_TABLES = """
SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = %s
ORDER BY table_name"""

_CONSTRAINTS = """
SELECT rel.relname AS table_name, con.conname, con.contype,
       pg_get_constraintdef(con.oid) AS definition, con.convalidated, con.condeferrable,
       con.condeferred
FROM pg_constraint con
JOIN pg_class rel ON rel.oid = con.conrelid
JOIN pg_namespace nsp ON nsp.oid = rel.relnamespace
WHERE nsp.nspname = %s
ORDER BY 1, 2"""

_INFORMATION_SCHEMA_CONSTRAINTS = """
SELECT table_name, constraint_name, constraint_type, is_deferrable, initially_deferred
FROM information_schema.table_constraints WHERE table_schema = %s
ORDER BY table_name, constraint_name"""

_OID_PREFIX = re.compile(r"^\d+_\d+_(?=\d+_not_null$)")

_INDEXES = """
SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = %s
ORDER BY tablename, indexname"""

_OTHER_OBJECTS = """
SELECT c.relkind, c.relname FROM pg_class c JOIN pg_namespace nsp ON nsp.oid = c.relnamespace
WHERE nsp.nspname = %s AND c.relkind NOT IN ('r', 'i')
UNION ALL
SELECT 'function', p.proname FROM pg_proc p JOIN pg_namespace nsp ON nsp.oid = p.pronamespace
WHERE nsp.nspname = %s
ORDER BY 1, 2"""


async def _describe_schema(url: str, schema: str) -> dict[str, Any]:
    def strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {
                key: value.replace(schema, "<schema>") if isinstance(value, str) else value
                for key, value in row.items()
            }
            for row in rows
        ]

    return {
        "tables": strip(await _fetch(url, sql.SQL(_TABLES), (schema,))),
        "columns": strip(await _fetch(url, sql.SQL(_COLUMNS), (schema,))),
        "constraints": strip(await _fetch(url, sql.SQL(_CONSTRAINTS), (schema,))),
        "information_schema constraints": [
            # NOT NULL checks are named <schema oid>_<table oid>_<column>_not_null.
            {**row, "constraint_name": _OID_PREFIX.sub("", row["constraint_name"])}
            for row in strip(await _fetch(url, sql.SQL(_INFORMATION_SCHEMA_CONSTRAINTS), (schema,)))
        ],
        "indexes": strip(await _fetch(url, sql.SQL(_INDEXES), (schema,))),
        "other objects": strip(await _fetch(url, sql.SQL(_OTHER_OBJECTS), (schema, schema))),
        "migrations": await _migration_versions(url, schema),
    }


PYTHON_EXTRA_INDEX = "workflow_runs_active_deadline_at_idx"
"""The deadline index this port adds to the original's tables (its own ledger, version 0)."""

PYTHON_EXTRA_INDEXES = {
    PYTHON_EXTRA_INDEX,
    "workflow_runs_pending_priority_idx",
    "workflow_runs_pending_route_idx",
    "workflow_runs_pending_concurrency_idx",
}
"""Every index this port adds to the original's tables."""

PYTHON_TABLES = {
    "openworkflow_python_migrations",
    "paused_workflows",
    "worker_registrations",
    "schedules",
    "rate_limit_tokens",
    "concurrency_keys",
    "run_messages",
    "run_events",
    "run_streams",
    "run_tags",
    "run_forks",
}
"""This port's own tables (migration ledger, flow control, schedules, rate and concurrency
limits, messages to, events and streams of one run, tags of runs, forks)."""

PYTHON_COLUMNS = {
    ("workflow_runs", "priority"),
    ("workflow_runs", "scheduled_at"),
    ("workflow_runs", "concurrency_key"),
    ("workflow_runs", "concurrency_limit"),
    ("workflow_runs", "start_granted_at"),
    ("workflow_runs", "continued_as_id"),
}
"""The nullable columns this port adds to the original's tables."""


def _without_python_extras(described: dict[str, Any]) -> dict[str, Any]:
    def ours(row: Any) -> bool:
        return isinstance(row, dict) and (
            row.get("table_name", row.get("tablename")) in PYTHON_TABLES
        )

    kept = {part: [row for row in rows if not ours(row)] for part, rows in described.items()}
    kept["columns"] = [
        row
        for row in kept["columns"]
        if (row["table_name"], row["column_name"]) not in PYTHON_COLUMNS
    ]
    kept["indexes"] = [
        row for row in kept["indexes"] if row["indexname"] not in PYTHON_EXTRA_INDEXES
    ]
    return kept


async def test_both_sides_migrate_identical_schemas(typescript: TypeScript) -> None:
    url = require_server_url()
    stem = _fresh_name()
    by_typescript, by_python = f"{stem}_ts", f"{stem}_py"
    try:
        await typescript.call(typescript.env(url, by_typescript, "default"), "migrate")
        backend = PostgresBackend(url, schema=by_python)
        try:
            await backend.open()
        finally:
            await backend.stop()
        ts_schema = await _describe_schema(url, by_typescript)
        py_schema = await _describe_schema(url, by_python)
        assert [row["indexname"] for row in py_schema["indexes"]].count(PYTHON_EXTRA_INDEX) == 1
        for part, ts_rows in ts_schema.items():
            assert _without_python_extras(py_schema)[part] == ts_rows, part
        assert len(ts_schema["tables"]) == 4
        assert len(ts_schema["indexes"]) == 16  # 4 primary keys and 12 others
        assert ts_schema["migrations"] == [0, 1, 2, 3, 4, 5]

        # Each side then opens the schema the other migrated without changing it.
        await typescript.call(typescript.env(url, by_python, "default"), "migrate")
        backend = PostgresBackend(url, schema=by_typescript)
        try:
            await backend.open()
        finally:
            await backend.stop()
        # Python adds only its own storage to the schema TypeScript made.
        assert _without_python_extras(await _describe_schema(url, by_typescript)) == ts_schema
        assert await _describe_schema(url, by_python) == py_schema
    finally:
        await asyncio.to_thread(_drop_schemas, url, by_typescript, by_python)
