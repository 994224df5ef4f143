"""Looking runs up by the first characters of their id: validation and the bounds to query.

Run ids are UUID strings (``0190a1b2-...``: lowercase hex digits and hyphens,
36 characters), so a prefix is checked against that alphabet before any SQL
runs. Uppercase hex is accepted and folded to lowercase, as ids are stored.
"""

from __future__ import annotations

from openworkflow.errors import InvalidRunIdPrefixError

RUN_ID_LENGTH = 36
"""Length of a run id (a UUID string)."""

RUN_ID_CHARACTERS = frozenset("0123456789abcdef-")
"""Every character a run id can contain."""

MAX_PREFIX_MATCHES = 1000
"""The largest ``limit`` a prefix lookup accepts."""

_EXAMPLE = "e.g. 0190a1b2 or a whole id such as 0190a1b2-3c4d-7e5f-8a9b-0c1d2e3f4a5b"


def check_run_id_prefix(prefix: object) -> str:
    """Return ``prefix`` normalized (trimmed, lowercase) if a run id can start with it.

    Raises:
        InvalidRunIdPrefixError: not a string, empty, longer than a run id, or
            with a character run ids never contain; the message says which.
    """
    if not isinstance(prefix, str):
        raise InvalidRunIdPrefixError(
            f"a run id prefix must be a string, got {type(prefix).__name__} ({_EXAMPLE})"
        )
    trimmed = prefix.strip()
    text = trimmed.lower()
    if not text:
        raise InvalidRunIdPrefixError(
            f"the run id prefix is empty: give the first characters of a run id ({_EXAMPLE})"
        )
    if len(text) > RUN_ID_LENGTH:
        raise InvalidRunIdPrefixError(
            f"the run id prefix {prefix!r} is {len(text)} characters long, but run ids have "
            f"{RUN_ID_LENGTH}: check for extra characters"
        )
    bad = sorted({char for char in trimmed if char.lower() not in RUN_ID_CHARACTERS})
    if bad:
        shown = ", ".join(repr(char) for char in bad)
        raise InvalidRunIdPrefixError(
            f"the run id prefix {prefix!r} contains {shown}, which no run id contains: "
            f"run ids are made of 0-9, a-f and '-' ({_EXAMPLE})"
        )
    return text


def check_prefix_limit(limit: object) -> int:
    """Return ``limit`` if it is a whole number from 1 to :data:`MAX_PREFIX_MATCHES`.

    Raises:
        ValueError: anything else, saying what is accepted.
    """
    if (
        isinstance(limit, bool)
        or not isinstance(limit, int)
        or not 1 <= limit <= MAX_PREFIX_MATCHES
    ):
        raise ValueError(
            f"limit must be a whole number from 1 to {MAX_PREFIX_MATCHES}, got {limit!r}"
        )
    return limit


def prefix_upper_bound(prefix: str) -> str:
    """The smallest string above every string that starts with ``prefix`` (binary order).

    ``prefix`` is a checked prefix, so its last character is never the
    highest code point and can simply be incremented: ids starting with
    ``prefix`` are exactly those in ``[prefix, prefix_upper_bound(prefix))``.
    """
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def like_pattern(prefix: str) -> str:
    r"""A ``LIKE ... ESCAPE '\'`` pattern matching strings that start with ``prefix``."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"
