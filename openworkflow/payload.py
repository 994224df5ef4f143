"""The payload size limits in force in this process, and storing values under them.

Defaults follow Temporal (warn at 256 KiB, refuse above 2 MiB). They can be
changed with ``OPENWORKFLOW_PAYLOAD_WARN_SIZE`` / ``OPENWORKFLOW_PAYLOAD_MAX_SIZE``,
``define_config(payload={...})`` (applied by the CLI) or :func:`set_payload_limits`.
The pure conversion and size check live in :mod:`openworkflow.core.json`;
this module only decides which limits apply.
"""

from __future__ import annotations

import os
import threading

from openworkflow.core.json import (
    DEFAULT_MAX_SIZE,
    DEFAULT_WARN_SIZE,
    JsonConversionError,
    JsonValue,
    PayloadLimits,
    parse_size,
    to_json_value,
)

WARN_SIZE_VARIABLE = "OPENWORKFLOW_PAYLOAD_WARN_SIZE"
MAX_SIZE_VARIABLE = "OPENWORKFLOW_PAYLOAD_MAX_SIZE"

_limits: PayloadLimits | None = None
_limits_lock = threading.Lock()


def limits_from_environment() -> PayloadLimits:
    """The limits ``OPENWORKFLOW_PAYLOAD_WARN_SIZE`` / ``..._MAX_SIZE`` ask for (else defaults).

    Raises:
        ValueError: a variable is not a size (the message names it).
    """
    warn: int | None = DEFAULT_WARN_SIZE
    maximum: int | None = DEFAULT_MAX_SIZE
    if os.environ.get(WARN_SIZE_VARIABLE, "").strip():
        warn = parse_size(os.environ[WARN_SIZE_VARIABLE], WARN_SIZE_VARIABLE)
    if os.environ.get(MAX_SIZE_VARIABLE, "").strip():
        maximum = parse_size(os.environ[MAX_SIZE_VARIABLE], MAX_SIZE_VARIABLE)
    lowered_only_the_maximum = not os.environ.get(WARN_SIZE_VARIABLE, "").strip()
    if warn is not None and maximum is not None and warn > maximum and lowered_only_the_maximum:
        warn = maximum  # warn no later than the maximum
    return PayloadLimits(warn_size=warn, max_size=maximum)


def payload_limits() -> PayloadLimits:
    """The limits in force: set by :func:`set_payload_limits`, else from the environment.

    Raises:
        ValueError: an environment variable is not a size.
    """
    global _limits
    current = _limits
    if current is None:
        with _limits_lock:
            if _limits is None:
                _limits = limits_from_environment()
            current = _limits
    return current


def set_payload_limits(limits: PayloadLimits | None) -> None:
    """Use ``limits`` from now on, in this process (``None``: back to the environment/defaults)."""
    global _limits
    if limits is not None and not isinstance(limits, PayloadLimits):
        raise TypeError(f"expected PayloadLimits or None, got {type(limits).__name__}")
    with _limits_lock:
        _limits = limits


def current_limits() -> PayloadLimits:
    """:func:`payload_limits`, with a bad environment reported as a payload that cannot be stored.

    Raises:
        JsonConversionError: the limits in the environment are invalid.
    """
    try:
        return payload_limits()
    except ValueError as error:
        raise JsonConversionError(f"cannot check the payload size: {error}", "$") from None


def to_stored_json(value: object, what: str | None = None) -> JsonValue:
    """:func:`~openworkflow.core.json.to_json_value` under the limits in force.

    Raises:
        JsonConversionError: the value cannot be stored, or the limits are invalid.
        PayloadTooLargeError: its JSON is larger than the maximum size.
    """
    return to_json_value(value, what, limits=current_limits())
