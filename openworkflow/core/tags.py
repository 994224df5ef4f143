"""Tags of runs (``ow.run(..., tags={"customer": "c-1"})``): the rules and the protocol.

A run's tags are string pairs given when it is created and never changed
afterwards; ``list_runs(tags=...)`` finds the runs carrying every pair asked
for. They are stored in this port's own table (``run_tags``), written in the
same transaction as the run; a TypeScript worker sharing the database never
reads nor writes it (its runs simply have no tags).

Limits (checked here, before anything is written): at most
:data:`MAX_TAGS_PER_RUN` tags; a key is a non-empty string of at most
:data:`MAX_TAG_KEY_CHARS` characters without ``=`` (so ``key=value`` on the
command line is unambiguous); a value is a string (possibly empty) of at most
:data:`MAX_TAG_VALUE_CHARS` characters; neither may hold a NUL character or
a lone surrogate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from openworkflow.core.json import check_name

MAX_TAGS_PER_RUN = 20
"""The most tags one run carries (and one filter asks for)."""

MAX_TAG_KEY_CHARS = 64
"""The longest tag key, in characters."""

MAX_TAG_VALUE_CHARS = 256
"""The longest tag value, in characters."""

RunTags = Mapping[str, str]
"""Tags as given: key to value."""


def check_tags(tags: object, field: str = "tags") -> dict[str, str]:
    """``tags`` once checked (None is no tags), as a new dict in the given order.

    Raises:
        TypeError: ``tags`` is not a mapping, or a key or value is not a string.
        ValueError: too many tags, an empty or too long key, a key with ``=``,
            or a too long value.
        InvalidNameError: a key or value holds a NUL character or a lone
            surrogate (a ``ValueError`` too).
    """
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise TypeError(
            f"{field} must be a dict of str to str, got {type(tags).__name__}"
            ' (e.g. tags={"customer": "c-1"})'
        )
    if len(tags) > MAX_TAGS_PER_RUN:
        raise ValueError(f"{field} has {len(tags)} tags; at most {MAX_TAGS_PER_RUN} are allowed")
    return {_check_key(key, field): _check_value(key, value, field) for key, value in tags.items()}


def _check_key(key: object, field: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"{field}: tag key {key!r} is a {type(key).__name__}; keys must be str")
    if not key:
        raise ValueError(f"{field}: a tag key must not be empty")
    if len(key) > MAX_TAG_KEY_CHARS:
        raise ValueError(
            f"{field}: tag key {key[:20]!r}... is {len(key)} characters long; "
            f"at most {MAX_TAG_KEY_CHARS} are allowed"
        )
    if "=" in key:
        raise ValueError(f"{field}: tag key {key!r} must not contain '='")
    return check_name(key, f"{field} key")


def _check_value(key: str, value: object, field: str) -> str:
    if not isinstance(value, str):
        raise TypeError(
            f"{field}: the value of tag {key!r} is a {type(value).__name__}; values must be str"
        )
    if len(value) > MAX_TAG_VALUE_CHARS:
        raise ValueError(
            f"{field}: the value of tag {key!r} is {len(value)} characters long; "
            f"at most {MAX_TAG_VALUE_CHARS} are allowed"
        )
    return check_name(value, f"{field} value of {key!r}", allow_empty=True)


def parse_tag(text: str) -> tuple[str, str]:
    """``"key=value"`` as ``(key, value)`` (split at the first ``=``; the value may be empty).

    Raises:
        ValueError: there is no ``=`` or nothing before it.
    """
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"tag {text!r} must be written key=value (e.g. customer=c-1)")
    return key, value


def parse_tags(texts: Iterable[str], field: str = "tags") -> dict[str, str]:
    """Several ``key=value`` texts as checked tags; a key given twice is refused.

    Raises:
        ValueError: a text is not ``key=value``, a key repeats, or a limit is exceeded.
    """
    tags: dict[str, str] = {}
    for text in texts:
        key, value = parse_tag(text)
        if key in tags:
            raise ValueError(f"tag {key!r} is given twice")
        tags[key] = value
    return check_tags(tags, field)


class TagStore(Protocol):
    """Storage of run tags, part of every :class:`~openworkflow.core.backend.Backend`.

    Tags are written by ``create_workflow_run`` (``CreateWorkflowRunParams.tags``)
    and filtered on by ``list_workflow_runs`` (``ListWorkflowRunsParams.tags``).
    """

    async def get_run_tags(self, workflow_run_id: str) -> dict[str, str]:
        """The run's tags, by key (empty for an unknown run or one without tags)."""
        ...
