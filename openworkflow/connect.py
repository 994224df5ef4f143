"""Build a backend from a URL.

``sqlite:///relative.db``, ``sqlite:////abs.db`` and ``sqlite://:memory:`` open
a :class:`~openworkflow.sqlite.SqliteBackend`; ``postgresql://user:pass@host:port/db``
(or ``postgres://``) opens a :class:`~openworkflow.postgres.PostgresBackend`,
whose schema may be given as a ``?schema=`` query parameter.
"""

from __future__ import annotations

from pathlib import Path

from openworkflow.core.backend import Backend
from openworkflow.core.database_url import (
    SUPPORTED_URLS,
    split_schema_parameter,
    sqlite_path_from_url,
)
from openworkflow.settings import BackendSettings, EffectiveSettings


def connect(
    url: str | None = None,
    *,
    namespace_id: str | None = None,
    schema: str | None = None,
    create: bool = True,
) -> Backend:
    """Open the backend a URL names (migrations run on open).

    Without a URL, ``OPENWORKFLOW_POSTGRES_URL`` is used; a missing namespace
    or schema comes from ``OPENWORKFLOW_NAMESPACE_ID`` / ``OPENWORKFLOW_SCHEMA``,
    then the defaults. A relative SQLite path is relative to the working
    directory; the file and its parent folder are created if missing, unless
    ``create`` is False (for tools that only read): then a missing SQLite
    file raises :class:`~openworkflow.errors.DatabaseNotFoundError` and
    nothing is created. A PostgreSQL backend connects on first use (or
    ``await backend.open()``); ``create`` does not apply to it.

    Raises:
        ValueError: the URL is not one of the supported forms, or none was given.
        DatabaseNotFoundError: ``create=False`` and the SQLite file does not exist.
    """
    settings = BackendSettings()
    if url is None:
        url = settings.postgres_url
        if url is None:
            raise ValueError(
                f"no database URL: pass one ({SUPPORTED_URLS}) or set OPENWORKFLOW_POSTGRES_URL"
            )
    if not isinstance(url, str):
        raise TypeError(f"expected a database URL string, got {type(url).__name__}")
    namespace = namespace_id if namespace_id is not None else settings.namespace_id
    if url.startswith("sqlite:"):
        from openworkflow.sqlite import SqliteBackend  # loaded only when used

        path = sqlite_path_from_url(url)
        if path != ":memory:" and create:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return SqliteBackend(path, namespace_id=namespace, create=create)
    if url.startswith(("postgresql:", "postgres:")):
        from openworkflow.postgres import PostgresBackend  # loaded only when used

        url, url_schema = split_schema_parameter(url)
        if schema is None:
            schema = url_schema if url_schema is not None else settings.schema_name
        return PostgresBackend(url, namespace_id=namespace, schema=schema)
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise ValueError(f"unsupported database URL scheme {scheme!r}: use {SUPPORTED_URLS}")


def open_backend(settings: EffectiveSettings, *, create: bool = True) -> Backend:
    """The backend resolved settings name (a config may hand over a backend object).

    ``create=False`` is for tools that only read: a missing SQLite file raises
    :class:`~openworkflow.errors.DatabaseNotFoundError` instead of being created.
    """
    if not isinstance(settings.backend, str):
        return settings.backend
    return connect(
        settings.backend,
        namespace_id=settings.namespace_id,
        schema=settings.schema,
        create=create,
    )
