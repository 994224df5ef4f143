"""Safe by default: Basic auth, cross-site POSTs, escaping and response headers."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from openworkflow import OpenWorkflow, SqliteBackend
from openworkflow.dashboard import create_app
from openworkflow.dashboard.security import (
    BasicCredentials,
    CsrfProtection,
    is_loopback_host,
    parse_basic_auth,
)
from tests.dashboard.helpers import BASE_URL, dashboard_client, form_token

SCRIPT = "<script>alert(1)</script>"


def basic(user: str, password: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


@pytest.fixture
async def memory_backend() -> AsyncIterator[SqliteBackend]:
    backend = SqliteBackend(":memory:")
    yield backend
    await backend.stop()


async def test_basic_auth_guards_every_route_but_healthz(memory_backend: Any) -> None:
    async with dashboard_client(memory_backend, auth="admin:pa:ss") as client:
        for path in ("/", "/runs/new", "/metrics", "/api/runs/x", "/static/dashboard.css", "/x"):
            anonymous = await client.get(path)
            assert anonymous.status_code == 401, path
            assert anonymous.headers["www-authenticate"].startswith('Basic realm="OpenWorkflow"')
        for user, password in (("admin", "wrong"), ("root", "pa:ss"), ("admin", "pa")):
            refused = await client.get("/", headers=basic(user, password))
            assert refused.status_code == 401
        garbage = await client.get("/", headers={"Authorization": "Basic !!!"})
        assert garbage.status_code == 401
        bearer = await client.get("/", headers={"Authorization": "Bearer pa:ss"})
        assert bearer.status_code == 401

        allowed = await client.get("/", headers=basic("admin", "pa:ss"))
        assert allowed.status_code == 200
        metrics = await client.get("/metrics", headers=basic("admin", "pa:ss"))
        assert metrics.status_code == 200
        health = await client.get("/healthz")  # open for probes
        assert health.status_code == 200


async def test_basic_auth_also_guards_posts(memory_backend: Any) -> None:
    async with dashboard_client(
        memory_backend, auth=("admin", "secret"), headers=basic("admin", "secret")
    ) as client:
        created = await client.post("/runs", {"workflow_name": "w", "input": "{}"})
        assert created.status_code == 303
        token = await client.token()
        client.http.headers.pop("Authorization")
        anonymous = await client.post("/runs", {"workflow_name": "w"}, token=token)
        assert anonymous.status_code == 401
    assert len((await OpenWorkflow(memory_backend).list_runs()).data) == 1


def test_auth_values_are_parsed_strictly() -> None:
    assert parse_basic_auth("u:p:q") == BasicCredentials("u", "p:q")
    for bad in ("nocolon", ":password", "user:", ""):
        with pytest.raises(ValueError, match="user:password") as caught:
            parse_basic_auth(bad)
        assert "password" not in str(caught.value).replace("user:password", "")
    assert "secret" not in repr(parse_basic_auth("u:secret"))
    with pytest.raises(TypeError):
        create_app(SqliteBackend(":memory:"), auth=42)  # type: ignore[arg-type]


def test_loopback_hosts() -> None:
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback_host(host), host
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com", "10.0.0.1"):
        assert not is_loopback_host(host), host


async def test_posts_need_the_session_token(memory_backend: Any) -> None:
    data = {"workflow_name": "w", "input": "{}"}
    async with dashboard_client(memory_backend) as client:
        without = await client.post("/runs", data, token=False)
        assert without.status_code == 403
        assert "security token is missing" in without.text

        forged = await client.post("/runs", data, token="0" * 64)
        assert forged.status_code == 403
        assert "security token is not valid" in forged.text

        token = await client.token()
        async with dashboard_client(memory_backend) as other:
            stolen = await other.post("/runs", data, token=token)  # another session's token
            assert stolen.status_code == 403

        client.http.cookies.clear()
        no_cookie = await client.post("/runs", data, token=token)
        assert no_cookie.status_code == 403

        ok = await client.post("/runs", data)
        assert ok.status_code == 303
    assert len((await OpenWorkflow(memory_backend).list_runs()).data) == 1


async def test_posts_from_another_site_are_refused(memory_backend: Any) -> None:
    handle = await OpenWorkflow(memory_backend).run("w")
    async with dashboard_client(memory_backend) as client:
        token = await client.token()
        for headers in (
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Origin": "http://testserver:8080"},
            {"Origin": "https://testserver.evil.example"},
            {"Referer": "http://evil.example/page"},
        ):
            refused = await client.post(f"/runs/{handle.id}/cancel", token=token, headers=headers)
            assert refused.status_code == 403, headers
            assert "came from another site" in refused.text
        same = await client.post(
            f"/runs/{handle.id}/cancel", token=token, headers={"Referer": f"{BASE_URL}/x"}
        )
        assert same.status_code == 303
        scripted = await client.post(f"/runs/{handle.id}/cancel", token=token, headers={})
        assert scripted.status_code == 303  # no Origin/Referer (curl): the token decides


def test_csrf_tokens_are_bound_to_the_secret_and_session() -> None:
    one, two = CsrfProtection(b"a" * 32), CsrfProtection(b"b" * 32)
    session = one.new_session()
    assert one.token_for(session) == CsrfProtection(b"a" * 32).token_for(session)
    assert one.token_for(session) != two.token_for(session)
    assert one.token_for(session) != one.token_for(one.new_session())


async def test_user_data_is_escaped_everywhere(memory_backend: Any) -> None:
    ow = OpenWorkflow(memory_backend)
    handle = await ow.run(SCRIPT, {"note": SCRIPT}, idempotency_key=SCRIPT, version=SCRIPT)
    async with dashboard_client(memory_backend) as client:
        pages = [
            await client.get("/"),
            await client.get(f"/runs/{handle.id}"),
            await client.get("/", params={"workflow": SCRIPT}),
            await client.get("/runs/new", params={"workflow": SCRIPT}),
            await client.get(f"/runs/{SCRIPT}"),
            await client.post("/runs", {"workflow_name": SCRIPT, "input": SCRIPT}),
        ]
        created = await client.post("/runs", {"workflow_name": SCRIPT, "version": SCRIPT})
        assert created.status_code == 303
        pages.append(await client.get(created.headers["location"]))
    for page in pages:
        assert SCRIPT not in page.text, page.url
        assert "<script>alert" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0].text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[1].text
    assert pages[4].status_code == 404
    assert pages[5].status_code == 400
    # The only scripts are the dashboard's own file.
    for page in pages:
        scripts = re.findall(r"<script[^>]*>", page.text)
        assert len(scripts) == 1 and 'src="/static/dashboard.js?v=' in scripts[0]


async def test_security_headers_and_cookie_flags(memory_backend: Any) -> None:
    async with dashboard_client(memory_backend) as client:
        page = await client.get("/")
        health = await client.get("/healthz")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    cookie = page.headers["set-cookie"]
    assert cookie.startswith("ow_csrf=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert form_token(page.text)
    assert health.headers["x-content-type-options"] == "nosniff"


async def test_large_bodies_are_refused(memory_backend: Any) -> None:
    async with dashboard_client(memory_backend) as client:
        huge = await client.post("/runs", {"workflow_name": "w", "input": "x" * 2_000_000})
    assert huge.status_code == 413
