"""Concurrency limits: how many runs of a workflow (per key) may execute at once.

A limited run carries its key and limit in its own row (``concurrency_key``,
``concurrency_limit``), computed once when the run is created, so every
worker agrees on them whatever code it runs; the claim admits a run only
while its key has a free slot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from openworkflow.core.json import check_name

MAX_CONCURRENCY_LIMIT = 2**31 - 1
"""The largest limit: the column is a 32-bit integer on every backend."""

MAX_CONCURRENCY_KEY_CHARS = 255
"""A concurrency key longer than this is cut to this many characters."""

ConcurrencyKey = Callable[[Any], object] | None
"""A concurrency key: a callable of the workflow's validated input, or None (one shared key)."""


@dataclass(frozen=True, slots=True)
class Concurrency:
    """At most ``limit`` runs of the workflow (per key) execute at once.

    ``@workflow(concurrency=Concurrency(limit=1, key=lambda input: input.user_id))``
    makes sure that, across every Python worker on the database, no more than
    ``limit`` runs of the workflow with the same key are executing at any
    moment; racing workers never admit more. The other runs wait in the queue
    (pending) until a slot frees up. ``@workflow(concurrency=5)`` is short for
    ``Concurrency(limit=5)``.

    Only executing runs hold a slot: a parked run (sleeping, waiting for a
    child workflow or a signal) holds none, and takes one again when it
    resumes.

    ``key`` splits the limit: a callable that receives the workflow's
    **validated input** (the model object, before JSON serialization) and
    returns a ``str`` or ``int``; each distinct key has its own ``limit``.
    ``key=None`` (the default), or a key that returns None, means one key
    shared by all the workflow's runs. The key is computed once, when the run
    is created (``ow.run``, a child workflow, a schedule tick); if it raises,
    the exception propagates and no run is created.

    The key and limit are stored with each run, so a changed limit applies to
    runs created after the change. Runs started by a workflow name only
    (without the workflow's spec) carry no limit.
    """

    limit: int
    key: ConcurrencyKey = None

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int):
            raise TypeError(f"Concurrency limit must be an integer, got {self.limit!r}")
        if not 1 <= self.limit <= MAX_CONCURRENCY_LIMIT:
            raise ValueError(
                f"Concurrency limit must be between 1 and {MAX_CONCURRENCY_LIMIT}, got {self.limit}"
            )
        if self.key is not None and not callable(self.key):
            raise TypeError(
                "Concurrency key must be a callable of the workflow input, or None; "
                f"got {type(self.key).__name__}"
            )


def resolve_concurrency(option: int | Concurrency | None, where: str) -> Concurrency | None:
    """The :class:`Concurrency` an option means: an integer ``N`` is ``Concurrency(limit=N)``.

    ``where`` names the caller's option in the messages
    (``"@workflow(concurrency=...)"``).

    Raises:
        TypeError: neither an integer, a ``Concurrency`` nor None.
        ValueError: an integer limit below 1 or above ``2**31 - 1``.
    """
    if option is None or isinstance(option, Concurrency):
        return option
    if isinstance(option, bool) or not isinstance(option, int):
        raise TypeError(
            f"{where} must be an integer limit or a Concurrency(limit, key=...), "
            f"got {type(option).__name__}"
        )
    try:
        return Concurrency(limit=option)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def concurrency_key_of(concurrency: Concurrency, validated_input: Any) -> str:
    """The key of one run: ``''`` (shared), else ``str()`` of the key's result, cut to 255.

    Raises:
        Exception: whatever the key callable raises, unchanged.
        InvalidNameError: the key has a NUL or a lone surrogate (it cannot be stored).
    """
    key = concurrency.key
    if key is None:
        return ""
    value = key(validated_input)
    if value is None:
        return ""
    text = str(value)[:MAX_CONCURRENCY_KEY_CHARS]
    return check_name(text, "concurrency key", allow_empty=True)


def concurrency_columns(
    concurrency: Concurrency | None, validated_input: Any
) -> tuple[str | None, int | None]:
    """A new run's ``(concurrency_key, concurrency_limit)``: both None for an unlimited workflow."""
    if concurrency is None:
        return None, None
    return concurrency_key_of(concurrency, validated_input), concurrency.limit
