"""Build a backend from a URL.

``sqlite:///relative.db``, ``sqlite:////abs.db`` and ``sqlite://:memory:`` open
a :class:`~openworkflow.sqlite.SqliteBackend`; ``postgresql://user:pass@host:port/db``
(or ``postgres://``) opens a :class:`~openworkflow.postgres.PostgresBackend`,
whose schema may be given as a ``?schema=`` query parameter.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from openworkflow.core.backend import Backend

SUPPORTED_URLS = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, sqlite://:memory: or "
    "postgresql://user:pass@host:port/db"
)


def sqlite_path_from_url(url: str) -> str:
    """Return the file path (or ``:memory:``) named by a ``sqlite://`` URL."""
    rest = url[len("sqlite://") :]
    if rest in (":memory:", "/:memory:", ""):
        return ":memory:"
    if not rest.startswith("/"):
        raise ValueError(
            f"invalid SQLite URL {url!r}: expected {SUPPORTED_URLS} (three slashes before a "
            "relative path)"
        )
    path = unquote(urlsplit("sqlite://" + rest).path)[1:]
    if not path:
        raise ValueError(f"invalid SQLite URL {url!r}: no database path; expected {SUPPORTED_URLS}")
    return path


def split_schema_parameter(url: str) -> tuple[str, str | None]:
    """Remove a ``schema=`` query parameter (not a libpq one) from a PostgreSQL URL."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    if not schemas:
        return url, None
    rest = urlencode([(k, v) for k, v in query if k != "schema"], quote_via=quote)
    return parts._replace(query=rest).geturl(), schemas[-1]


def connect(
    url: str | None = None,
    *,
    namespace_id: str | None = None,
    schema: str | None = None,
) -> Backend:
    """Open the backend a URL names (migrations run on open).

    Without a URL, ``OPENWORKFLOW_POSTGRES_URL`` is used; a missing namespace
    or schema comes from ``OPENWORKFLOW_NAMESPACE_ID`` / ``OPENWORKFLOW_SCHEMA``,
    then the defaults. A relative SQLite path is relative to the working
    directory; its parent folder is created if missing. A PostgreSQL backend
    connects on first use (or ``await backend.open()``).

    Raises:
        ValueError: the URL is not one of the supported forms, or none was given.
    """
    from openworkflow.settings import BackendSettings

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
        from openworkflow.sqlite import SqliteBackend

        path = sqlite_path_from_url(url)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return SqliteBackend(path, namespace_id=namespace)
    if url.startswith(("postgresql:", "postgres:")):
        from openworkflow.postgres import PostgresBackend

        url, url_schema = split_schema_parameter(url)
        if schema is None:
            schema = url_schema if url_schema is not None else settings.schema_name
        return PostgresBackend(url, namespace_id=namespace, schema=schema)
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise ValueError(f"unsupported database URL scheme {scheme!r}: use {SUPPORTED_URLS}")
