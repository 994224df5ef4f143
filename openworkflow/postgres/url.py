"""PostgreSQL connection URLs: checking them (redaction: :mod:`openworkflow.redaction`)."""

from __future__ import annotations

from urllib.parse import urlsplit

from openworkflow.errors import InvalidDatabaseUrlError
from openworkflow.redaction import redact_url

URL_EXAMPLE = "postgresql://user:pass@host:port/db"
_SCHEMES = ("postgresql", "postgres")


def check_postgres_url(url: object) -> str:
    """Return ``url`` if it is a usable ``postgresql://`` URL, else raise a redacted error.

    Raises:
        InvalidDatabaseUrlError: not a string, another scheme, or an invalid host/port.
    """
    if not isinstance(url, str):
        raise InvalidDatabaseUrlError(
            f"expected a PostgreSQL URL string like {URL_EXAMPLE!r}, got {type(url).__name__}"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as error:
        raise InvalidDatabaseUrlError(
            f"invalid PostgreSQL URL {redact_url(url)!r}: {error}. Expected {URL_EXAMPLE!r}."
        ) from None
    if parts.scheme not in _SCHEMES or not (parts.netloc or parts.path or parts.query):
        raise InvalidDatabaseUrlError(
            f"invalid PostgreSQL URL {redact_url(url)!r}: expected {URL_EXAMPLE!r}"
        )
    return url
