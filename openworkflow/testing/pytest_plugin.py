"""The pytest plugin: an ``ow_env`` fixture for testing workflows with time skipping.

Installing openworkflow registers this module with pytest (the ``pytest11``
entry point), so every test can ask for ``ow_env``: a factory of
:class:`~openworkflow.testing.WorkflowEnvironment`, used inside an async test::

    async def test_reminder_is_sent_after_a_month(ow_env):
        async with ow_env(workflows=[send_reminder]) as env:
            assert await env.run(send_reminder, {"days": 30}) == "sent"

Time skipping is on unless the test passes ``time_skipping=False``; every
other keyword goes to :class:`~openworkflow.testing.WorkflowEnvironment`
as is. The fixture itself is synchronous (no pytest-asyncio needed to
provide it), but the environment runs on the test's event loop: enter it
with ``async with`` in an async test, run by whatever async plugin the
project uses (pytest-asyncio, anyio, ...).

This module is imported in every pytest run of every project that installs
openworkflow, so it imports nothing from the engine until a test uses the
fixture.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from openworkflow.core.workflow_definition import Workflow
    from openworkflow.testing.environment import WorkflowEnvironment

__all__ = ["WorkflowEnvironmentFactory", "ow_env"]


class WorkflowEnvironmentFactory(Protocol):
    """What ``ow_env`` is: call it to get an environment to enter with ``async with``."""

    def __call__(
        self, workflows: Iterable[Workflow], **options: Any
    ) -> WorkflowEnvironment:  # pragma: no cover - a protocol
        """A new environment running ``workflows`` (``options`` as for the class)."""
        ...


@pytest.fixture
def ow_env() -> WorkflowEnvironmentFactory:
    """A factory of :class:`~openworkflow.testing.WorkflowEnvironment`, time skipping on.

    Use it in an async test: ``async with ow_env(workflows=[wf]) as env:``.
    Keyword arguments (``time_skipping``, ``backend``, ``concurrency``) are
    passed to the environment; ``time_skipping`` defaults to ``True``.
    """
    # Imported here, not at the top: the plugin loads in every pytest run.
    from openworkflow.testing.environment import WorkflowEnvironment

    def make(workflows: Iterable[Workflow], **options: Any) -> WorkflowEnvironment:
        options.setdefault("time_skipping", True)
        return WorkflowEnvironment(workflows, **options)

    return make
