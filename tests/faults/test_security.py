"""F15 and F16: the dashboard's bind and auth rules end to end, and secrets never printed.

F15 (``tests/dashboard`` already covers the app's routes in-process: 401 on
every path but ``/healthz``, cross-site and token-less POSTs refused, the
``0.0.0.0`` refusal of ``ow dashboard``). What is added here: the refusal for
other public addresses and for ``ow dev``'s dashboard, and the rules as a
real ``ow dashboard --host 0.0.0.0`` server enforces them over TCP.

F16: a sentinel password in the PostgreSQL URL (trust authentication ignores
it) must never show up in anything a user or an operator sees: stdout and
stderr of every ``ow`` command (worker, dev, run, runs, signal, doctor,
migrate, dashboard, ``--debug`` tracebacks, connection failures on a wrong
port), the worker's logs, the dashboard's pages and ``/metrics``, and the
text and repr of exceptions raised in-process. The dashboard's own Basic
auth password is a second sentinel.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import signal
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from openworkflow import PostgresBackend, connect
from openworkflow.errors import OpenWorkflowError
from tests.cli.helpers import Background, Finished, clean_env, ow, write
from tests.faults.figures import Figure, report
from tests.fixtures.postgres import require_server_url
from tests.support.waiting import block_until

SENTINEL = f"SENTINEL-{uuid.uuid4().hex[:12]}"
DASHBOARD_PASSWORD = f"DASHPW-{uuid.uuid4().hex[:12]}"
SECRETS = (SENTINEL, DASHBOARD_PASSWORD)
SCHEMA = "faults_security"

WORKFLOW = """
from openworkflow import Step, workflow


@workflow(name="faults-sec-echo")
async def echo(input: dict, step: Step) -> dict:
    value = await step.run("copy", lambda: input)
    if input.get("fail"):
        raise RuntimeError("failing on purpose")
    if input.get("wait"):
        await step.wait_for_signal("faults-sec-go", timeout="5m")
    return {"echo": value}
"""


def _with_password(url: str, password: str, *, port: int | None = None) -> str:
    """``url`` with ``password`` (and optionally another port) in its netloc."""
    parts = urllib.parse.urlsplit(url)
    user = parts.username or "postgres"
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user}:{password}@{host}:{port if port is not None else (parts.port or 5432)}"
    return parts._replace(netloc=netloc).geturl()


def _leaks(text: str) -> int:
    return sum(text.count(secret) for secret in SECRETS)


class _Transcript:
    """Everything the commands printed, served or raised, scanned for the secrets."""

    def __init__(self) -> None:
        self.outputs: list[tuple[str, str]] = []

    def add(self, label: str, text: str) -> None:
        self.outputs.append((label, text))

    def command(self, label: str, result: Any) -> Any:
        self.add(label + " stdout", result.stdout)
        self.add(label + " stderr", result.stderr)
        return result

    def leaks(self) -> list[str]:
        return [label for label, text in self.outputs if _leaks(text)]


def _project(folder: Path) -> Path:
    write(
        folder / "openworkflow.config.py",
        """
        from openworkflow import define_config

        config = define_config(dirs=["./flows"])  # the backend comes from the environment
        """,
    )
    write(folder / "flows" / "echo.py", WORKFLOW)
    return folder


def _get(url: str, *, auth: bool = True, method: str = "GET", **headers: str) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, headers=headers)
    if auth:
        token = base64.b64encode(f"admin:{DASHBOARD_PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _post(url: str, fields: dict[str, str], *, cookie: str, **headers: str) -> tuple[int, str]:
    data = urllib.parse.urlencode(fields).encode()
    token = base64.b64encode(f"admin:{DASHBOARD_PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={
            "Authorization": f"Basic {token}",
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": cookie,
            **headers,
        },
    )

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _dashboard_url(server: Background) -> str:
    server.wait_for("Dashboard running at", timeout=30)
    match = re.search(r"Dashboard running at (http://[^\s]+?:\d+)", server.stderr)
    assert match, server.stderr
    return match.group(1).replace("0.0.0.0", "127.0.0.1")


def _stop(server: Background, transcript: _Transcript, label: str) -> Finished:
    finished = server.stop(signal.SIGTERM)
    transcript.add(label + " stdout", finished.stdout)
    transcript.add(label + " stderr", finished.stderr)
    return finished


# -- F15 ---------------------------------------------------------------------------------------


def test_public_binds_need_auth_and_the_real_server_enforces_it(tmp_path: Path) -> None:
    """F15: Every public address is refused without auth; over TCP, 401/403 and an open /healthz."""
    url = require_server_url()
    project = _project(tmp_path / "project")
    namespace = f"f15-{uuid.uuid4().hex[:8]}"
    base_env = clean_env(
        OPENWORKFLOW_POSTGRES_URL=url,
        OPENWORKFLOW_SCHEMA=SCHEMA,
        OPENWORKFLOW_NAMESPACE_ID=namespace,
    )
    refusals = 0
    cases = 0
    for args in (
        ["dashboard", "--host", "::", "--port", "0"],
        ["dashboard", "--host", "0", "--port", "0"],  # 0 means 0.0.0.0 to the socket layer
        ["dashboard", "--host", "example.com", "--port", "0"],
        ["dev", "--host", "0.0.0.0", "--port", "0"],  # ow dev used to start the worker anyway
    ):
        cases += 1
        result = ow(project, *args, env=base_env)
        assert result.returncode == 2, (args, result.stderr)
        assert "without authentication" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert "Worker started" not in result.stderr
        refusals += 1

    checks: dict[str, bool] = {}
    server = Background(
        project,
        "dashboard",
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        env={**base_env, "OPENWORKFLOW_DASHBOARD_AUTH": f"admin:{DASHBOARD_PASSWORD}"},
    )
    try:
        base = _dashboard_url(server)
        for path in ("/", "/metrics", "/runs/new", "/api/runs/x"):
            checks[f"anonymous GET {path} -> 401"] = _get(base + path, auth=False)[0] == 401
        checks["GET /healthz without auth -> 200"] = _get(base + "/healthz", auth=False) == (
            200,
            "ok",
        )
        status, _ = _get(base + "/")
        checks["GET / with auth -> 200"] = status == 200
        # The session cookie and form token of an authenticated browser.
        request = urllib.request.Request(base + "/runs/new")
        request.add_header(
            "Authorization",
            "Basic " + base64.b64encode(f"admin:{DASHBOARD_PASSWORD}".encode()).decode(),
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            cookie = response.headers["set-cookie"].split(";")[0]
            token_match = re.search(
                r'name="csrf_token" value="([0-9a-f]+)"', response.read().decode()
            )
        assert token_match
        form = {"workflow_name": "faults-sec-echo", "input": "{}", "csrf_token": token_match[1]}
        cross = _post(base + "/runs", form, cookie=cookie, Origin="http://evil.example")
        checks["cross-origin POST with auth and token -> 403"] = cross[0] == 403
        same = _post(base + "/runs", form, cookie=cookie, Origin=base)
        checks["same-origin POST with auth and token -> 303"] = same[0] == 303
        anonymous_post = _get(base + "/runs", auth=False, method="POST")
        checks["anonymous POST -> 401"] = anonymous_post[0] == 401
    finally:
        finished = server.stop(signal.SIGINT)
    assert finished.returncode == 0, finished.stderr
    failed = [name for name, ok in checks.items() if not ok]
    assert not failed, failed
    report(
        Figure(
            "F15",
            "dashboard bind and auth rules",
            runs=cases + len(checks),
            faults=cases + len(checks) - 2,
            details=(
                f"public bind without auth (::, 0, a host name, ow dev 0.0.0.0) -> exit 2 "
                f"{refusals}/{cases}; real server on 0.0.0.0 with Basic auth: "
                f"{sum(checks.values())}/{len(checks)} checks held (anonymous GET/POST 401, "
                "/healthz 200 without auth, cross-origin POST 403, same-origin POST 303); "
                "lost/duplicated: not applicable (no runs)"
            ),
        )
    )


# -- F16 ---------------------------------------------------------------------------------------


def test_the_database_password_is_never_printed(tmp_path: Path) -> None:
    """F16: Every command, log, page, metric and error, with a sentinel password: 0 occurrences."""
    server_url = require_server_url()
    secret_url = _with_password(server_url, SENTINEL)
    wrong_port = _with_password(server_url, SENTINEL, port=1)
    project = _project(tmp_path / "project")
    namespace = f"f16-{uuid.uuid4().hex[:8]}"
    env = clean_env(
        OPENWORKFLOW_POSTGRES_URL=secret_url,
        OPENWORKFLOW_SCHEMA=SCHEMA,
        OPENWORKFLOW_NAMESPACE_ID=namespace,
    )
    out = _Transcript()

    def run(label: str, *args: str, environment: dict[str, str] = env) -> Any:
        return out.command(label, ow(project, *args, env=environment, timeout=60))

    assert run("migrate", "migrate").returncode == 0
    run("migrate --json", "migrate", "--json")
    run("migrate --print", "migrate", "--print")
    assert run("doctor", "doctor").returncode == 0
    run("doctor --json", "doctor", "--json")
    pending = run("run", "run", "faults-sec-echo", "--input", '{"wait": true}').stdout.strip()
    failing = run("run fail", "run", "faults-sec-echo", "--input", '{"fail": true}').stdout.strip()

    worker = Background(project, "worker", "start", "--debug", env=env)
    try:
        worker.wait_for("Worker started")
        waited = run(
            "run --wait", "run", "faults-sec-echo", "--input", '{"a": 1}', "--wait", "--json"
        )
        assert waited.returncode == 0, waited.stderr
        failed = run(
            "run --wait failing", "run", "faults-sec-echo", "--input", '{"fail": 1}', "--wait"
        )
        assert failed.returncode == 1
        block_until(
            lambda: (
                json.loads(run("show", "runs", "show", failing, "--json").stdout)["run"]["status"]
                == "failed"
            ),
            "the failing run to fail",
        )
        run("runs list", "runs", "list")
        run("runs list --json", "runs", "list", "--json")
        run("runs show", "runs", "show", pending)
        run("runs retry", "runs", "retry", failing)
        run("signal send", "signal", "send", "faults-sec-go", "--data", '{"ok": true}', "--json")
        run(
            "runs cancel",
            "runs",
            "cancel",
            run("run 3", "run", "faults-sec-echo", "--input", '{"wait": 1}').stdout.strip(),
        )
        run("debug runs list", "--debug", "runs", "list")
    finally:
        _stop(worker, out, "worker start")

    dashboard = Background(
        project,
        "dashboard",
        "--port",
        "0",
        env={**env, "OPENWORKFLOW_DASHBOARD_AUTH": f"admin:{DASHBOARD_PASSWORD}"},
    )
    pages = 0
    try:
        base = _dashboard_url(dashboard)
        for path in (
            "/",
            f"/runs/{pending}",
            f"/runs/{failing}",
            "/runs/new",
            "/metrics",
            "/healthz",
            f"/api/runs/{pending}",
            "/runs/nope",
            "/?workflow=x",
        ):
            status, body = _get(base + path)
            out.add(f"dashboard {path} ({status})", body)
            pages += 1
    finally:
        _stop(dashboard, out, "dashboard")

    dev = Background(project, "dev", "--port", "0", env=env)
    try:
        dev.wait_for("Worker started", timeout=30)
        dev.wait_for("Dashboard running at", timeout=30)
    finally:
        _stop(dev, out, "dev")

    # Connection failures: the same secret on a port where nothing listens.
    broken = {**env, "OPENWORKFLOW_POSTGRES_URL": wrong_port}
    failures = 0
    for label, args in (
        ("doctor (wrong port)", ["doctor"]),
        ("runs list (wrong port)", ["runs", "list"]),
        ("debug runs list (wrong port)", ["--debug", "runs", "list"]),
        ("run (wrong port)", ["run", "faults-sec-echo"]),
        ("migrate (wrong port)", ["migrate"]),
        ("worker start (wrong port)", ["worker", "start"]),
        ("dashboard (wrong port)", ["dashboard", "--port", "0"]),
        ("doctor --backend (wrong port)", ["doctor", "--backend", wrong_port]),
        ("doctor (password in the query)", ["doctor", "--backend", _query_url()]),
        ("worker start (key=value DSN)", ["worker", "start", "--backend", _dsn()]),
    ):
        result = run(label, *args, environment=broken)
        assert result.returncode != 0, label
        failures += 1

    # In-process: exception text, repr and tracebacks, and the library's log records.
    exception_texts = asyncio.run(_in_process_errors(wrong_port))
    for index, text in enumerate(exception_texts):
        out.add(f"in-process exception {index}", text)

    leaked = out.leaks()
    assert not leaked, leaked
    masked = sum("postgres:***@" in text or "password=***" in text for _, text in out.outputs)
    assert masked >= 10, "the URL should have been printed (masked) by many commands"
    report(
        Figure(
            "F16",
            "secrets in output, logs, pages and errors",
            runs=len(out.outputs),
            faults=failures,
            details=(
                f"sentinel password in the PostgreSQL URL (and a dashboard password): "
                f"{len(out.outputs)} outputs scanned (stdout/stderr of migrate, doctor, run, "
                f"worker start --debug, runs list/show/retry/cancel, signal send, dashboard, dev, "
                f"{failures} wrong-port failures incl. --debug tracebacks; {pages} dashboard "
                f"pages and /metrics; {len(exception_texts)} in-process exception texts and log "
                f"records): occurrences 0; lost/duplicated: not applicable (no runs)"
            ),
        )
    )


def _query_url() -> str:
    return f"postgresql://postgres@127.0.0.1:1/faults_c?password={SENTINEL}"


def _dsn() -> str:
    return f"host=127.0.0.1 port=1 dbname=faults_c password={SENTINEL}"


async def test_a_password_in_the_query_or_a_dsn_is_masked_by_the_library() -> None:
    """F16: Library-level texts for the two other ways to pass a password to libpq."""
    texts: list[str] = []
    backend = PostgresBackend(_query_url(), schema=SCHEMA)
    texts.append(str(backend.url))
    try:
        await backend.open()
    except OpenWorkflowError as error:
        texts.append(str(error))
    finally:
        await backend.stop()
    try:
        PostgresBackend(_dsn(), schema=SCHEMA)
    except ValueError as error:
        texts.append(str(error))
    leaked = [text for text in texts if SENTINEL in text]
    report(
        Figure(
            fault_id="F16",
            title="password in a URL query string or a DSN (library texts)",
            runs=0,
            faults=2,
            details=(
                f"{len(texts)} texts (URL, connection error, DSN refusal): sentinel shown "
                f"{len(leaked)}; lost/duplicated: not applicable (no runs)"
            ),
        )
    )
    assert not leaked


async def _in_process_errors(wrong_port: str) -> list[str]:
    """Texts a program embedding the library could print: errors, reprs and log lines."""
    texts: list[str] = []
    records: list[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = _Keep(level=logging.DEBUG)
    library = logging.getLogger("openworkflow")
    previous = library.level
    library.addHandler(handler)
    library.setLevel(logging.DEBUG)
    try:
        for backend in (
            PostgresBackend(wrong_port, schema=SCHEMA),
            connect(wrong_port + f"?schema={SCHEMA}"),
        ):
            texts.append(repr(backend))
            texts.append(str(getattr(backend, "url", "")))
            try:
                await backend.open()  # type: ignore[attr-defined]
            except OpenWorkflowError as error:
                texts.append(str(error))
                texts.append(repr(error))
                texts.append("".join(traceback.format_exception(error)))
            else:
                pytest.fail("a backend on a closed port opened")
            finally:
                await backend.stop()
    finally:
        library.removeHandler(handler)
        library.setLevel(previous)
    texts.extend(record.getMessage() for record in records)
    return texts
