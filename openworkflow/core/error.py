"""Errors as stored JSON: ``{"name", "message", "stack"}`` like the original."""

from __future__ import annotations

import traceback
from typing import Any


def serialize_error(error: BaseException) -> dict[str, Any]:
    """Describe an exception as the original does: its type name, message and traceback."""
    serialized: dict[str, Any] = {"name": type(error).__name__, "message": str(error)}
    stack = "".join(traceback.format_exception(error)).rstrip()
    if stack:
        serialized["stack"] = stack
    return serialized


def error_message(error: Any) -> str:
    """Best-effort one-line message of a stored error object."""
    if isinstance(error, dict):
        message = error.get("message")
        name = error.get("name")
        if isinstance(message, str):
            return f"{name}: {message}" if isinstance(name, str) and name else message
    return str(error)
