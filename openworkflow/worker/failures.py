"""A step's final failure, memoized: stored once, raised the same way on every pass.

When a step fails for good (its retry policy is used up, it raised
:class:`~openworkflow.NonRetryableError`, or the run's deadline leaves no time
for another attempt), its failed attempt keeps the original's error shape
(``name``, ``message``, ``stack``) plus a key the TypeScript engine ignores::

    "openworkflow": {"final": true, "raise": "original", "type": "app.errors:CardDeclined",
                     "args": ["card 4242 declined"], "attributes": {"card": "4242"}}

``raise`` is decided once, when the failure happens, and stored: ``original``
when the exception can be rebuilt as it was (its class is found among the
modules this process already imported, never imported because the database
names it; its ``args`` and instance attributes are plain JSON; an instance made
with ``cls.__new__``, those ``args`` and attributes, without running
``__init__`` and without unpickling anything, has the same class and message),
else ``StepFailedError``. Every later pass raises what the stored decision says,
so an ``except`` in workflow code takes the same branch on the first pass and on
every replay.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from openworkflow.core.error import serialize_error
from openworkflow.core.json import JsonConversionError, JsonValue, to_json_value
from openworkflow.core.step_attempt import StepAttempt, StepAttemptStatus
from openworkflow.errors import StepFailedError

MARKER = "openworkflow"
_ORIGINAL = "original"
_FALLBACK = "StepFailedError"


@dataclass(frozen=True, slots=True)
class FinalFailure:
    """A memoized final failure as stored with the failed attempt."""

    name: str
    message: str
    raise_as: str
    type_path: str
    args: list[Any]
    attributes: dict[str, Any]

    def rebuild(self) -> BaseException:
        """The exception every pass raises for this failure."""
        if self.raise_as == _ORIGINAL:
            cls = _resolve(self.type_path)
            if cls is not None:
                rebuilt = _construct(cls, self.args, self.attributes)
                if rebuilt is not None and str(rebuilt) == self.message:
                    return rebuilt
        return StepFailedError(self.name, self.message)


def final_failure_json(error: BaseException) -> JsonValue:
    """The stored error of a final failure: the original's shape plus the memo."""
    stored = serialize_error(error)
    cls = type(error)
    type_path = f"{cls.__module__}:{cls.__qualname__}"
    args = _json_or_none(list(error.args))
    attributes = _json_or_none(dict(getattr(error, "__dict__", {})))
    faithful = (
        isinstance(args, list)
        and isinstance(attributes, dict)
        and _resolve(type_path) is cls
        and (rebuilt := _construct(cls, args, attributes)) is not None
        and type(rebuilt) is cls
        and str(rebuilt) == str(error)
    )
    stored[MARKER] = {
        "final": True,
        "raise": _ORIGINAL if faithful else _FALLBACK,
        "type": type_path,
        "args": args if faithful else [],
        "attributes": attributes if faithful else {},
    }
    return stored


def raised_on_first_pass(error: BaseException, stored: JsonValue) -> BaseException:
    """What the first pass raises: the error itself if replays can rebuild it, else the fallback."""
    failure = final_failure_of_error(stored)
    if failure is None or failure.raise_as == _ORIGINAL:
        return error
    return failure.rebuild()


def final_failure_of(attempt: StepAttempt) -> FinalFailure | None:
    """The memoized final failure a failed attempt stored, if it is one."""
    if attempt.status != StepAttemptStatus.FAILED:
        return None
    return final_failure_of_error(attempt.error)


def final_failure_of_error(error: JsonValue) -> FinalFailure | None:
    """Read the memo from a stored error (None for an ordinary, retried failure)."""
    if not isinstance(error, dict):
        return None
    memo = error.get(MARKER)
    if not isinstance(memo, dict) or memo.get("final") is not True:
        return None
    args = memo.get("args")
    attributes = memo.get("attributes")
    return FinalFailure(
        name=str(error.get("name") or "Error"),
        message=str(error.get("message") or ""),
        raise_as=str(memo.get("raise") or _FALLBACK),
        type_path=str(memo.get("type") or ""),
        args=args if isinstance(args, list) else [],
        attributes=attributes if isinstance(attributes, dict) else {},
    )


def deferral_json(error: BaseException) -> dict[str, Any]:
    """The stored error of a :class:`~openworkflow.RetryAfter`: not counted as an attempt."""
    stored = serialize_error(error)
    stored[MARKER] = {"retryAfter": True}
    return stored


def is_deferral(attempt: StepAttempt) -> bool:
    """Whether a failed attempt was a ``RetryAfter`` (it spends none of the step's attempts)."""
    error = attempt.error
    memo = error.get(MARKER) if isinstance(error, dict) else None
    return isinstance(memo, dict) and memo.get("retryAfter") is True


def _json_or_none(value: object) -> JsonValue:
    try:
        return to_json_value(value)
    except JsonConversionError:
        return None


def _resolve(type_path: str) -> type[BaseException] | None:
    """The exception class named ``module:qualname``, among modules already imported."""
    module_name, _, qualname = type_path.partition(":")
    target: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        if target is None or part == "<locals>":
            return None
        target = getattr(target, part, None)
    if isinstance(target, type) and issubclass(target, Exception):
        return target
    return None


def _construct(
    cls: type[BaseException], args: list[Any], attributes: dict[str, Any]
) -> BaseException | None:
    """An instance with these ``args`` and attributes, made without running ``__init__``."""
    try:
        rebuilt = cls.__new__(cls, *args)
        rebuilt.args = tuple(args)
        for name, value in attributes.items():
            setattr(rebuilt, name, value)
    except Exception:  # a class that cannot be made this way: not rebuildable
        return None
    return rebuilt
