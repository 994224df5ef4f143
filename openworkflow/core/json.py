"""JSON values as stored in the database, and the strict conversion into them.

Stored JSON must be readable by the TypeScript original, so only plain JSON
is accepted: no NaN or infinities, string keys only, no arbitrary objects.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, TypeAlias

from pydantic import BaseModel

JsonValue: TypeAlias = Any
"""A value made of dicts with string keys, lists, strings, numbers, booleans and None."""


class JsonConversionError(TypeError):
    """A value cannot be stored as JSON; ``path`` says where inside it."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


def dumps(value: JsonValue) -> str:
    """Serialize a JSON value compactly, as JavaScript's ``JSON.stringify`` does."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps_or_none(value: JsonValue) -> str | None:
    """Serialize for a nullable column: ``None`` is SQL NULL, not the JSON ``null``."""
    return None if value is None else dumps(value)


def loads(text: str | bytes | None) -> JsonValue:
    """Parse stored JSON; SQL NULL reads as ``None``."""
    return None if text is None else json.loads(text)


def to_json_value(value: object) -> JsonValue:
    """Convert ``value`` to plain JSON, or raise :class:`JsonConversionError`.

    pydantic models are dumped in JSON mode, dataclasses as dicts and tuples as
    lists; anything else that JSON cannot represent is refused rather than
    silently coerced.
    """
    return _convert(value, "$")


def _convert(value: object, path: str) -> JsonValue:  # noqa: PLR0911
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise JsonConversionError(f"{value!r} at {path} is not a finite number", path)
        return value
    if isinstance(value, dict):
        out: dict[str, JsonValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise JsonConversionError(
                    f"dict key {key!r} at {path} is a {type(key).__name__}; JSON keys must be str",
                    path,
                )
            out[key] = _convert(item, f"{path}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_convert(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, BaseModel):
        return _convert(value.model_dump(mode="json"), path)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _convert(dataclasses.asdict(value), path)
    raise JsonConversionError(
        f"a value of type {type(value).__name__} at {path} cannot be stored as JSON", path
    )
