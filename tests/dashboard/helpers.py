"""Workflows and an HTTP client for the dashboard tests.

The app runs in the test's event loop through ``httpx.ASGITransport``, on the
``backend`` fixture's backend, so every test runs on SQLite (memory and file)
and PostgreSQL.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from pydantic import BaseModel

from openworkflow import NonRetryableError, Step, Workflow, WorkflowSpec, workflow
from openworkflow.core.backend import Backend
from openworkflow.dashboard import create_app

BASE_URL = "http://testserver"
SAME_ORIGIN = {"Origin": BASE_URL}


class Person(BaseModel):
    name: str


@workflow
async def greet(input: Person, step: Step) -> dict[str, str]:
    greeting = await step.run("fetch-greeting", lambda: f"Hello, {input.name}!")
    return {"greeting": greeting}


@workflow
async def explode(step: Step) -> None:
    def fail() -> None:
        raise NonRetryableError("boom")

    await step.run("fail-once", fail)


@workflow
async def double_it(input: int) -> int:
    return input * 2


@workflow
async def parent_flow(step: Step) -> int:
    return int(await step.run_workflow(double_it, 21, name="child"))


ALL_WORKFLOWS: list[Workflow] = [greet, explode, double_it, parent_flow]


class DashboardClient:
    """An ``httpx.AsyncClient`` on the app, with CSRF-aware form posts."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def get(self, path: str, **options: Any) -> httpx.Response:
        return await self.http.get(path, **options)

    async def token(self) -> str:
        """The CSRF token of this client's session (sets the cookie on first use)."""
        page = await self.http.get("/runs/new")
        assert page.status_code == 200, page.text
        return form_token(page.text)

    async def post(
        self,
        path: str,
        data: dict[str, str] | None = None,
        *,
        token: str | bool | None = True,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST a form; ``token=True`` adds this session's token, a string adds that one."""
        fields = dict(data or {})
        if token is True:
            fields["csrf_token"] = await self.token()
        elif isinstance(token, str):
            fields["csrf_token"] = token
        return await self.http.post(
            path, data=fields, headers=SAME_ORIGIN if headers is None else headers
        )


@asynccontextmanager
async def dashboard_client(
    backend: Backend,
    *,
    workflows: Iterable[Workflow | WorkflowSpec] = ALL_WORKFLOWS,
    auth: Any = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[DashboardClient]:
    """The app on ``backend``, with a client that keeps cookies."""
    app = create_app(backend, workflows=workflows, auth=auth)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=headers) as http:
        yield DashboardClient(http)


def form_token(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page)
    assert match, "no CSRF token in the page"
    return match.group(1)


def run_ids(page: str) -> list[str]:
    """The ids of the runs listed, in page order."""
    return re.findall(r'<tr data-run-id="([^"]+)"', page)


def count_of(page: str, status: str) -> int:
    match = re.search(rf'data-count="{status}">(\d+)<', page)
    assert match, f"no count card for {status}"
    return int(match.group(1))


def link(page: str, element_id: str) -> str | None:
    """The (unescaped) href of the element with this id, if present."""
    match = re.search(rf'id="{element_id}"[^>]*href="([^"]+)"', page)
    return html.unescape(match.group(1)) if match else None


def run_status(page: str) -> str:
    match = re.search(r'data-status="([a-z]+)" id="run-status"', page)
    assert match, "no #run-status on the page"
    return match.group(1)


def section(page: str, element_id: str) -> str | None:
    """The raw text of the element with this id up to its closing tag (rough, for asserts)."""
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</(pre|div|section|p)>', page, re.DOTALL)
    return match.group(1) if match else None
