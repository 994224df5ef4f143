"""Keeping database passwords out of everything printed or logged: one place for it.

URLs are masked where they are shown (:func:`redact_url`); messages are
scrubbed of the passwords of the URLs this process was given
(:func:`remember_secret`, :func:`scrub_known`) and of anything shaped like a
password in a URL or a libpq ``key=value`` string (:func:`safe`).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

_SECRET_URLS: set[str] = set()


def _passwords(url: str) -> list[str]:
    """Every form of every password the URL carries: raw and decoded, netloc and query."""
    found: list[str] = []
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is not None and parts.password:
        found += [unquote(parts.password), parts.password]
    if parts is not None and parts.query:
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "password" and value:
                found.append(value)
        found += [m.group(1) for m in _QUERY_PASSWORD.finditer(parts.query)]
    # A libpq key=value string ("host=db password=secret").
    for m in _DSN_PASSWORD.finditer(url):
        value = m.group(1)
        found.append(value)
        if value.startswith("'") and value.endswith("'") and len(value) >= 2:
            found.append(re.sub(r"\\(.)", r"\1", value[1:-1]))
    return [secret for secret in dict.fromkeys(found) if secret]


def redact_url(url: str) -> str:
    """The URL with its passwords replaced by ``***`` (safe to print)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if "://" not in url:  # a libpq key=value string
        return _DSN_PASSWORD.sub(_masked, url)
    # Edit the text in place rather than rebuild it with geturl(), which turns
    # sqlite:////abs/path into sqlite://abs/path (a URL that no longer round-trips).
    masked = url
    if parts.password is not None:
        masked = masked.replace(":" + parts.password + "@", ":***@", 1)
    if parts.query:
        query = _QUERY_PASSWORD.sub(_masked, parts.query)
        masked = masked.replace("?" + parts.query, "?" + query, 1)
    return masked


def scrub(message: str, url: str) -> str:
    """Remove the URL's passwords (raw or decoded, netloc or query) from a message."""
    for secret in sorted(_passwords(url), key=len, reverse=True):
        message = message.replace(secret, "***")
    return message


def _masked(match: re.Match[str]) -> str:
    """The match with its password group (by position) replaced by ``***``."""
    start, end = match.span(1)
    if start == end:
        return match.group(0)
    offset = match.start(0)
    text = match.group(0)
    return text[: start - offset] + "***" + text[end - offset :]


_QUERY_PASSWORD = re.compile(r"(?:^|&)password=([^&]*)")
# libpq key=value: password=secret, or password='a quoted \'secret\''
_DSN_PASSWORD = re.compile(r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']+)")


def remember_secret(url: str) -> None:
    """Scrub this URL's password from everything printed from now on."""
    if "://" in url:
        _SECRET_URLS.add(url)


# user:password@ in any URL, and password=... as libpq accepts it in a query or a DSN.
_URL_PASSWORD = re.compile(r"(?P<keep>[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:)[^\s@/]+(?=@)")
_PARAM_PASSWORD = re.compile(r"(?P<keep>\bpassword\s*=\s*)[^\s&;'\"]+", re.IGNORECASE)


def safe(message: str) -> str:
    """The message without any known database password, nor any password in a URL or DSN."""
    message = scrub_known(message)
    message = _URL_PASSWORD.sub(r"\g<keep>***", message)
    return _PARAM_PASSWORD.sub(r"\g<keep>***", message)


def scrub_known(text: str) -> str:
    """The text without the passwords of the database URLs this process knows about.

    Used for data (``--json`` output) and hints, where a URL-shaped example
    must stay as it is; messages go through :func:`safe`.
    """
    for url in _SECRET_URLS:
        text = scrub(text, url)
    return text
