"""Opaque pagination cursors, base64 of ``{"createdAt": ISO, "id": ...}`` as in the original."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from openworkflow.core import clock

DEFAULT_PAGE_SIZE = 100


class _Paged(Protocol):
    @property
    def created_at(self) -> datetime: ...

    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=_Paged)


@dataclass(frozen=True, slots=True)
class Cursor:
    """A decoded cursor: the position just past the row it names."""

    created_at: datetime
    id: str


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of rows plus the cursors to the neighbouring pages (``None`` at an end)."""

    data: list[T]
    next: str | None
    prev: str | None


def encode_cursor(item: _Paged) -> str:
    """Encode the position of ``item``."""
    payload = json.dumps(
        {"createdAt": clock.to_iso(item.created_at), "id": item.id}, separators=(",", ":")
    )
    return base64.b64encode(payload.encode()).decode()


def decode_cursor(cursor: str) -> Cursor:
    """Decode a cursor made by :func:`encode_cursor`; raise ValueError on garbage."""
    try:
        parsed = json.loads(base64.b64decode(cursor, validate=True))
        return Cursor(created_at=clock.from_iso(parsed["createdAt"]), id=str(parsed["id"]))
    except (binascii.Error, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"invalid pagination cursor {cursor!r}") from error


def decode_list_cursor(after: str | None, before: str | None) -> Cursor | None:
    """Decode whichever of ``after``/``before`` is given; both at once is an error."""
    if after and before:
        raise ValueError("Cannot specify both 'after' and 'before' cursors")
    if after:
        return decode_cursor(after)
    if before:
        return decode_cursor(before)
    return None


def build_page(rows: Sequence[T], limit: int, *, has_after: bool, has_before: bool) -> Page[T]:
    """Build a page from ``limit + 1`` fetched rows (in query order).

    Backward pages are queried in reverse order, so they are flipped back here.
    """
    overflow = len(rows) > limit
    ordered = list(reversed(rows)) if has_before else list(rows)
    if overflow:
        ordered = ordered[1:] if has_before else ordered[:-1]
    has_next = has_before or overflow
    has_prev = overflow if has_before else has_after
    return Page(
        data=ordered,
        next=encode_cursor(ordered[-1]) if has_next and ordered else None,
        prev=encode_cursor(ordered[0]) if has_prev and ordered else None,
    )
