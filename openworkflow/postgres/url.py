"""PostgreSQL connection URLs: checking them and keeping passwords out of messages."""

from __future__ import annotations

from urllib.parse import SplitResult, unquote, urlsplit

from openworkflow.errors import OpenWorkflowError

URL_EXAMPLE = "postgresql://user:pass@host:port/db"
_SCHEMES = ("postgresql", "postgres")


class InvalidDatabaseUrlError(OpenWorkflowError, ValueError):
    """A database URL that cannot be used (wrong form, bad port)."""


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


def password_of(url: str) -> str | None:
    """The URL's password, decoded, if it has one."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (safe to print)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    return _with_netloc(parts, parts.netloc.replace(":" + parts.password + "@", ":***@", 1))


def scrub(message: str, url: str) -> str:
    """Remove the URL's password (raw or decoded) from a message."""
    parts = urlsplit(url) if "://" in url else None
    secrets = {password_of(url), parts.password if parts else None} - {None, ""}
    for secret in sorted(secrets, key=len, reverse=True):  # type: ignore[arg-type]
        message = message.replace(secret, "***")  # type: ignore[arg-type]
    return message


def _with_netloc(parts: SplitResult, netloc: str) -> str:
    return parts._replace(netloc=netloc).geturl()
