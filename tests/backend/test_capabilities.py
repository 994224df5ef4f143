"""Optional capabilities both backends declare alike: wake-ups, connecting now, migrations."""

from __future__ import annotations

from typing import Any

from openworkflow.core.backend import Backend, MigratableBackend, OpenableBackend
from openworkflow.notifications import ChangeNotifier, NotifyingBackend, notifier_of
from openworkflow.postgres import migration_scripts as postgres_scripts
from openworkflow.sqlite import migration_scripts as sqlite_scripts


async def test_the_migration_version_is_the_latest_after_opening(
    backend: Any, backend_kind: str
) -> None:
    assert isinstance(backend, Backend)
    assert isinstance(backend, MigratableBackend)
    await backend.count_workflow_runs()  # opens (and migrates) a lazy backend

    version = await backend.migration_version()

    if backend_kind == "sqlite_memory":
        assert version is None  # nothing outside the connection could read it
    elif backend_kind == "sqlite_file":
        assert version == len(sqlite_scripts()) - 1
    else:
        assert version == len(postgres_scripts()) - 1


async def test_both_backends_offer_wake_ups_and_only_postgres_connects_lazily(
    backend: Any, backend_kind: str
) -> None:
    assert isinstance(backend, NotifyingBackend)
    assert isinstance(notifier_of(backend), ChangeNotifier)
    assert isinstance(backend, OpenableBackend) == (backend_kind == "postgres")


def test_an_object_without_a_notifier_has_no_wake_ups() -> None:
    assert notifier_of(object()) is None
