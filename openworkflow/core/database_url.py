"""Database URLs: the forms accepted, SQLite paths, PostgreSQL's ``?schema=`` parameter."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

DEFAULT_SCHEMA = "openworkflow"
"""The PostgreSQL schema of the tables when none is named (the original's)."""

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
