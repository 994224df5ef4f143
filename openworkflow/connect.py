"""Build a backend from a URL: ``sqlite:///relative.db``, ``sqlite:////abs.db``, ``sqlite://:memory:``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from openworkflow.core.backend import DEFAULT_NAMESPACE_ID, Backend

SUPPORTED_URLS = "sqlite:///relative/path.db, sqlite:////absolute/path.db or sqlite://:memory:"


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


def connect(url: str, *, namespace_id: str = DEFAULT_NAMESPACE_ID) -> Backend:
    """Open the backend a URL names, running migrations.

    A relative SQLite path is relative to the working directory; its parent
    folder is created if missing.

    Raises:
        ValueError: the URL is not one of the supported forms.
    """
    if not isinstance(url, str):
        raise TypeError(f"expected a database URL string, got {type(url).__name__}")
    if url.startswith("sqlite:"):
        from openworkflow.sqlite import SqliteBackend

        path = sqlite_path_from_url(url)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return SqliteBackend(path, namespace_id=namespace_id)
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise ValueError(f"unsupported database URL scheme {scheme!r}: use {SUPPORTED_URLS}")
