"""F14: hostile names (workflow, version, idempotency key, namespace, step, signal, schema).

Every name a user can choose is fed quotes, backslashes, ``%`` and psycopg
placeholders, ``;`` and SQL, NUL, emoji, bidi and zero-width characters,
newlines, lone surrogates, 10 KB strings and the 512-byte boundary. Each is
either refused by a validation error that names the field, before anything
is written, or stored and read back byte for byte (and found again by the
same key); never a database error, never an object outside the schema. On
every backend; schema names on PostgreSQL, where they are identifiers.
The dashboard answers such names in URLs with 404/400, never 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import string
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from openworkflow import (
    OpenWorkflow,
    PostgresBackend,
    SqliteBackend,
    Step,
    connect,
    declare_workflow,
    workflow,
)
from openworkflow.core.json import MAX_NAME_BYTES
from openworkflow.dashboard import create_app
from openworkflow.errors import InvalidNameError, OpenWorkflowError, WorkflowDefinitionError
from openworkflow.postgres.schema import InvalidSchemaNameError
from tests.cli.helpers import clean_env, ow
from tests.faults.figures import Figure, report
from tests.faults.ledger import Expected, tally
from tests.fixtures.postgres import TEST_SCHEMA, prepare_server, require_server_url

_random = random.Random(14)
TEN_KB = "".join(_random.choice(string.printable) for _ in range(10_000))

HOSTILE: dict[str, str] = {
    "double quote": 'wf"x"',
    "single quote": "it's",
    "backslash": "a\\b\\",
    "percent": "100%",
    "psycopg %s": "%s",
    "psycopg %(ns)s": "%(ns)s",
    "semicolon": "a;b",
    "sql injection": "x'); DROP TABLE workflow_runs; --",
    "dollar quoting": "$$ $1 `x`",
    "NUL": "a\x00b",
    "only NUL": "\x00",
    "emoji": "🚀🔥",
    "bidi and zero-width": "\u202eabc\u200b\ufeff",
    "newline and tab": "a\nb\tc\r",
    "last code point": "\U0010ffff",
    "lone surrogate": "a\udc80",
    "512 bytes": "é" * (MAX_NAME_BYTES // 2),
    "513 bytes": "a" * (MAX_NAME_BYTES + 1),
    "10 KB": TEN_KB,
    "spaces": "   ",
}


def storable(value: str) -> bool:
    """The documented rule: no NUL, no lone surrogate, at most 512 UTF-8 bytes."""
    if "\x00" in value or any(0xD800 <= ord(char) <= 0xDFFF for char in value):
        return False
    return len(value.encode("utf-8")) <= MAX_NAME_BYTES


@workflow(name="faults-hostile-target")
async def target(input: Any) -> Any:
    return input


class _Tally:
    """Outcomes per field: refused with a validation error, or stored byte-equal."""

    def __init__(self) -> None:
        self.refused = 0
        self.round_tripped = 0
        self.problems: list[str] = []

    def refuse(self, field: str, label: str, error: Exception, words: tuple[str, ...]) -> None:
        if any(word in str(error) for word in words):
            self.refused += 1
        else:
            self.problems.append(f"{field} {label}: refused without naming the field: {error}")

    def check(self, field: str, label: str, ok: bool) -> None:
        if ok:
            self.round_tripped += 1
        else:
            self.problems.append(f"{field} {label}: not read back byte-equal")

    def wrong(self, field: str, label: str, outcome: str) -> None:
        self.problems.append(f"{field} {label}: {outcome}")


async def test_hostile_names_are_refused_or_round_trip_byte_equal(
    backend: Any, backend_kind: str, make_backend: Any
) -> None:
    """F14: Workflow names, versions, idempotency keys, namespaces and signals, on every backend."""
    refused_by_rule = {label for label, value in HOSTILE.items() if not storable(value)}
    assert refused_by_rule == {"NUL", "only NUL", "lone surrogate", "513 bytes", "10 KB"}
    assert len(HOSTILE["512 bytes"].encode()) == MAX_NAME_BYTES
    client = OpenWorkflow(backend)
    tally = _Tally()
    for label, value in HOSTILE.items():
        expect_ok = storable(value) and (value.strip() != "")
        # Workflow name (a blank one is refused by @workflow as before).
        await _try(
            tally,
            "workflow name",
            label,
            expect_ok,
            (InvalidNameError, WorkflowDefinitionError),
            ("workflow name",),
            lambda value=value: _workflow_name_round_trip(client, value),
        )
        # Version.
        await _try(
            tally,
            "version",
            label,
            storable(value),
            (InvalidNameError,),
            ("version",),
            lambda value=value: _version_round_trip(client, value),
        )
        # Idempotency key: stored, and the same key finds the same run again.
        await _try(
            tally,
            "idempotency key",
            label,
            storable(value),
            (InvalidNameError,),
            ("idempotency_key",),
            lambda value=value: _idempotency_round_trip(client, value),
        )
        # Namespace: a backend bound to it isolates its runs.
        await _try(
            tally,
            "namespace",
            label,
            storable(value),
            (InvalidNameError,),
            ("namespace_id",),
            lambda value=value: _namespace_round_trip(make_backend, value),
        )
        # Signal names and keys through the client (nobody waits: nothing is stored).
        await _try(
            tally,
            "signal",
            label,
            storable(value),
            (InvalidNameError, TypeError),
            ("signal",),
            lambda value=value: _signal_send(client, value),
        )
    # A list filter and lookups by id with the same names: no database error either.
    for value in HOSTILE.values():
        if storable(value):
            await client.list_runs(workflow_name=value)
        else:
            with pytest.raises(InvalidNameError, match="workflow_name filter"):
                await client.list_runs(workflow_name=value)
        assert await client.get_run(value) is None
    dashboard_errors = await _dashboard_answers(backend)
    assert dashboard_errors == [], dashboard_errors
    assert not tally.problems, "\n".join(tally.problems)
    report(
        Figure(
            "F14",
            f"hostile names ({backend_kind})",
            runs=tally.refused + tally.round_tripped,
            faults=len(HOSTILE) * 5,
            lost=len(tally.problems),
            details=(
                f"{len(HOSTILE)} hostile strings (quotes, backslash, %, %s, %(ns)s, ;, SQL, "
                "NUL, emoji, bidi, newlines, U+10FFFF, lone surrogates, 512/513 bytes, 10 KB) as "
                "workflow name, version, idempotency key, namespace and signal: "
                f"{tally.round_tripped} round-tripped byte-equal, {tally.refused} refused by "
                "a validation error naming the field, database errors 0; dashboard URLs with "
                f"them: 500s {len(dashboard_errors)}; step names: see the worker test below"
            ),
        )
    )


async def _try(
    tally: _Tally,
    field: str,
    label: str,
    expect_ok: bool,
    refusals: tuple[type[Exception], ...],
    words: tuple[str, ...],
    attempt: Any,
) -> None:
    try:
        ok = await attempt()
    except refusals as error:
        if expect_ok:
            tally.wrong(field, label, f"refused: {error}")
        else:
            tally.refuse(field, label, error, words)
        return
    except Exception as error:  # a database error, an encoding error: never acceptable
        tally.wrong(field, label, f"{type(error).__name__}: {error}")
        return
    if not expect_ok:
        tally.wrong(field, label, "accepted although the rules refuse it")
        return
    tally.check(field, label, ok)


async def _workflow_name_round_trip(client: OpenWorkflow, value: str) -> bool:
    handle = await client.run(declare_workflow(value), {"name": value[:20]})
    run = await client.get_run(handle.id)
    listed = (await client.list_runs(workflow_name=value)).data
    return (
        run is not None
        and run.workflow_name.encode() == value.encode()
        and [item.id for item in listed] == [handle.id]
    )


async def _version_round_trip(client: OpenWorkflow, value: str) -> bool:
    handle = await client.run(target, None, version=value)
    run = await client.get_run(handle.id)
    return run is not None and run.version is not None and run.version.encode() == value.encode()


async def _idempotency_round_trip(client: OpenWorkflow, value: str) -> bool:
    first = await client.run(target, 1, idempotency_key=value)
    again = await client.run(target, 2, idempotency_key=value)
    variant = value + "\u200b" if len(value.encode()) + 3 <= MAX_NAME_BYTES else value[:-1] + "x"
    other = await client.run(target, 3, idempotency_key=variant)
    run = await client.get_run(first.id)
    return (
        run is not None
        and run.idempotency_key is not None
        and run.idempotency_key.encode() == value.encode()
        and again.id == first.id
        and other.id != first.id
    )


async def _namespace_round_trip(make_backend: Any, value: str) -> bool:
    scoped = OpenWorkflow(make_backend(value))
    handle = await scoped.run(target, "in a hostile namespace")
    run = await scoped.get_run(handle.id)
    listed = (await scoped.list_runs()).data
    return (
        run is not None
        and run.namespace_id.encode() == value.encode()
        and [item.id for item in listed] == [handle.id]
    )


async def _signal_send(client: OpenWorkflow, value: str) -> bool:
    delivered = await client.send_signal(value, {"x": 1}, idempotency_key=value)
    return delivered == []


async def _dashboard_answers(backend: Any) -> list[str]:
    """GET pages with every hostile name in the path and the filter: never a 500."""
    errors = []
    app = create_app(backend, workflows=[target])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        for label, value in HOSTILE.items():
            quoted = urllib.parse.quote(value.encode("utf-8", "surrogatepass"), safe="")
            for path in (f"/runs/{quoted}", f"/api/runs/{quoted}", f"/?workflow={quoted}"):
                response = await http.get(path)
                if response.status_code >= 500:
                    errors.append(f"{label} {path[:30]}: {response.status_code}")
    return errors


# -- step names and signal waits: executed by the worker ------------------------------------

STEP_NAMES = {label: value for label, value in HOSTILE.items() if value.strip()}


@workflow(name="faults-hostile-steps")
async def hostile_step(input: str, step: Step) -> str:
    value = STEP_NAMES[input]
    return str(await step.run(value, lambda: "done"))


@workflow(name="faults-hostile-wait")
async def hostile_wait(input: str, step: Step) -> Any:
    return await step.wait_for_signal(STEP_NAMES[input], timeout="5m")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_hostile_step_and_signal_names_complete_byte_equal_or_fail_by_name(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """F14: Step names and waited-on signals: completed byte-equal, or failed naming the field."""
    caplog.set_level(logging.WARNING, logger="openworkflow")
    backend: Any = (
        SqliteBackend(str(tmp_path / "names.db"), namespace_id="f14")
        if kind == "sqlite"
        else PostgresBackend(
            prepare_server(), schema=TEST_SCHEMA, namespace_id=f"f14-{tmp_path.name}"
        )
    )
    client = OpenWorkflow(backend)
    problems: list[str] = []
    try:
        steps = {label: await client.run(hostile_step, label) for label in STEP_NAMES}
        waits = {label: await client.run(hostile_wait, label) for label in STEP_NAMES}
        async with client.new_worker([hostile_step, hostile_wait], concurrency=8):
            outcomes = await _outcomes(client, [h.id for h in steps.values()], caplog)
            for label, handle in steps.items():
                outcome = outcomes[handle.id]
                if outcome == "completed":
                    names = [s.step_name for s in (await client.list_steps(handle.id)).data]
                    if names != [STEP_NAMES[label]]:
                        problems.append(f"step {label}: stored {names!r}")
                elif "step name" not in outcome:
                    problems.append(f"step {label}: {outcome[:160]}")
            await _outcomes(client, [h.id for h in waits.values()], caplog, parked=True)
            for label, handle in waits.items():
                try:
                    await client.send_signal(STEP_NAMES[label], {"for": label})
                except InvalidNameError:
                    run = await client.get_run(handle.id)
                    if run is None or run.status != "failed" or "signal" not in str(run.error):
                        problems.append(f"wait {label}: waits for a signal nobody can send")
            sent = [h.id for label, h in waits.items() if storable(STEP_NAMES[label])]
            for run_id, outcome in (await _outcomes(client, sent, caplog)).items():
                if outcome != "completed":
                    problems.append(f"wait {run_id}: {outcome[:160]}")
        all_ids = [h.id for h in [*steps.values(), *waits.values()]]
        counted = await tally(backend, dict.fromkeys(all_ids, Expected(("completed", "failed"))))
    finally:
        await backend.stop()
    report(
        Figure(
            "F14",
            f"hostile step and signal names through a worker ({kind})",
            runs=counted.runs,
            faults=len(STEP_NAMES) * 2,
            lost=len(problems),
            duplicated=counted.duplicated,
            details=(
                f"{len(STEP_NAMES)} hostile step names and waited-on signal names: runs "
                f"neither completed nor failed naming the field {counted.lost}, "
                f"problems {len(problems)}" + (f" (first: {problems[0][:120]})" if problems else "")
            ),
        )
    )
    assert not problems, "\n".join(problems)
    assert counted.duplicated == 0, counted


async def _outcomes(
    client: OpenWorkflow,
    run_ids: list[str],
    caplog: pytest.LogCaptureFixture,
    *,
    parked: bool = False,
    timeout: float = 8.0,
) -> dict[str, str]:
    """Per run: ``completed``, the failure, the fault retried forever, or ``stuck``.

    With ``parked``, a run that waits (pending or running with a step recorded) counts too.
    """
    outcomes: dict[str, str] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(outcomes) < len(run_ids) and loop.time() < deadline:
        for run_id in run_ids:
            if run_id in outcomes:
                continue
            run = await client.get_run(run_id)
            assert run is not None
            messages = [r.getMessage() for r in caplog.records if run_id in r.getMessage()]
            if run.status == "completed":
                outcomes[run_id] = "completed"
            elif run.status == "failed":
                outcomes[run_id] = f"failed: {run.error}"
            elif any("paused" in message for message in messages):
                outcomes[run_id] = f"database fault, retried forever: {messages[-1]}"
            elif parked and (await client.list_steps(run_id)).data and run.worker_id is None:
                outcomes[run_id] = "parked"
        await asyncio.sleep(0.05)
    return {run_id: outcomes.get(run_id, "stuck") for run_id in run_ids}


# -- schema names (PostgreSQL) ------------------------------------------------------------------

SCHEMA_NAMES: dict[str, tuple[str, bool]] = {
    "double quote": ('fa"ults', False),
    "percent": ("faults%", False),
    "psycopg %s": ("%s", False),
    "space": ("faults schema", False),
    "semicolon and SQL": ('x"; DROP SCHEMA public CASCADE; --', False),
    "NUL": ("faults\x00x", False),
    "emoji": ("faults_🚀", False),
    "leading digit": ("1faults", False),
    "dash": ("faults-x", False),
    "64 bytes": ("f" * 64, False),
    "10 KB": ("s" * 10_000, False),
    "trailing newline": ("faults\n", False),
    "empty": ("", False),
    "mixed case": ("Faults_Hostile_Case", True),
    "63 bytes": ("f" * 63, True),
    "underscore first": ("_faults_hostile", True),
}


def _catalog(url: str) -> set[tuple[str, str]]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', "
            "'information_schema', 'pg_toast')"
        ).fetchall()
    return {(str(schema), str(name)) for schema, name in rows}


@contextlib.contextmanager
def _scratch_database(server: str) -> Iterator[str]:
    """A new empty database on the test server, dropped afterwards.

    The test compares the whole catalog before and after: in the shared test
    database, tests running in parallel create schemas of their own meanwhile.
    """
    name = f"ow_f14_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    try:
        yield urllib.parse.urlsplit(server)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(
                psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    psycopg.sql.Identifier(name)
                )
            )


async def test_hostile_schema_names_are_refused_before_any_sql(tmp_path: Path) -> None:
    """F14: Invalid identifiers: InvalidSchemaNameError; valid ones: tables only inside them."""
    with _scratch_database(require_server_url()) as url:
        await _try_hostile_schema_names(url, tmp_path)


async def _try_hostile_schema_names(url: str, tmp_path: Path) -> None:
    legal = [name for name, ok in SCHEMA_NAMES.values() if ok]
    before = _catalog(url)
    refused = created = 0
    problems = []
    for label, (name, ok) in SCHEMA_NAMES.items():
        for how in ("PostgresBackend", "connect"):
            try:
                if how == "PostgresBackend":
                    backend: Any = PostgresBackend(url, schema=name, namespace_id="f14")
                else:
                    query = urllib.parse.urlencode({"schema": name})
                    backend = connect(f"{url}?{query}", namespace_id="f14")
            except InvalidSchemaNameError as error:
                if ok or "schema name" not in str(error).lower():
                    problems.append(f"{label} via {how}: {error}")
                refused += 1
                continue
            except OpenWorkflowError as error:
                problems.append(f"{label} via {how}: {type(error).__name__}: {error}")
                continue
            try:
                handle = await OpenWorkflow(backend).run(target, label)
                run = await backend.get_workflow_run(_params(handle.id))
                if not ok or run is None:
                    problems.append(f"{label} via {how}: accepted")
                created += 1
            finally:
                await backend.stop()
    cli = ow(
        tmp_path,
        "migrate",
        "--schema",
        'x"; DROP SCHEMA public; --',
        env=clean_env(OPENWORKFLOW_POSTGRES_URL=url),
    )
    if cli.returncode != 2 or "Invalid schema name" not in cli.stderr:
        problems.append(f"ow migrate --schema: {cli.returncode} {cli.stderr}")
    after = _catalog(url)
    outside = sorted((schema, name) for schema, name in after - before if schema not in legal)
    report(
        Figure(
            "F14",
            "hostile schema names (postgres)",
            runs=len(SCHEMA_NAMES) * 2 + 1,
            faults=refused + 1,
            lost=len(outside),
            details=(
                f"{len(SCHEMA_NAMES)} schema names via PostgresBackend() and connect(?schema=) "
                f"(quotes, %, %s, spaces, ;, SQL, NUL, emoji, 64 bytes, 10 KB, newline): "
                f"{refused} refused by InvalidSchemaNameError before any SQL, {created} legal "
                f"ones created and used; ow migrate --schema with SQL exit 2; objects created "
                f"outside the named schemas {len(outside)}"
            ),
        )
    )
    assert not problems, "\n".join(problems)
    assert outside == []


def _params(run_id: str) -> Any:
    from openworkflow.core.backend import GetWorkflowRunParams

    return GetWorkflowRunParams(workflow_run_id=run_id)
