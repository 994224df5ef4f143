"""JSON values as stored in the database, and the strict conversion into them.

Stored JSON must be readable by the TypeScript original and storable by both
backends, so only plain JSON is accepted: no NaN or infinities, string keys
only, no arbitrary objects, no NUL characters (PostgreSQL ``jsonb`` and
``text`` refuse them), no lone surrogates (not encodable as UTF-8), and no
integers beyond ±(2**53 - 1) (JavaScript numbers would silently round them).

Given :class:`PayloadLimits`, a converted value is also checked against them:
above the warning size a warning is logged, above the maximum size the value is
refused before anything is written. Which limits are in force (defaults,
environment, config, ``set_payload_limits``) is decided outside ``core``, in
:mod:`openworkflow.payload`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from dataclasses import dataclass
from typing import Any, TypeAlias

from pydantic import BaseModel

from openworkflow.errors import InvalidNameError

logger = logging.getLogger("openworkflow.payload")

JsonValue: TypeAlias = Any
"""A value made of dicts with string keys, lists, strings, numbers, booleans and None."""

MAX_SAFE_INTEGER = 2**53 - 1
"""JavaScript's ``Number.MAX_SAFE_INTEGER``: larger integers lose precision in TypeScript."""

MAX_DEPTH = 256
"""How deeply lists and dicts may nest in a stored value."""

MAX_NAME_BYTES = 512
"""Longest name (workflow, version, step, namespace, signal, idempotency key) in UTF-8 bytes.

PostgreSQL indexes these columns together and refuses index rows above about
2.7 KB, so longer names are refused up front, on every backend alike.
"""

DEFAULT_WARN_SIZE = 256 * 1024
DEFAULT_MAX_SIZE = 2 * 1024 * 1024
HARD_MAX_SIZE = 256 * 1024 * 1024 - 1
"""PostgreSQL ``jsonb`` cannot hold more than this; the maximum size may not exceed it."""

_UNSTORABLE_CHARACTERS = re.compile("[\x00\ud800-\udfff]")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "ki": 1024,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gi": 1024**3,
    "gib": 1024**3,
}
_DISABLED = frozenset({"off", "none", "unlimited"})


class JsonConversionError(TypeError):
    """A value cannot be stored as JSON; ``path`` says where inside it."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class PayloadTooLargeError(JsonConversionError):
    """A value's JSON is larger than the maximum payload size; nothing was written.

    Attributes:
        size: The value's size as stored (UTF-8 bytes of its JSON).
        limit: The maximum size in force.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"its JSON is {format_size(size)} ({size} bytes), over the {format_size(limit)} "
            f"({limit} bytes) payload limit; store large data elsewhere (a file or an object "
            "store) and pass a reference, or raise the limit with OPENWORKFLOW_PAYLOAD_MAX_SIZE, "
            "define_config(payload={'max_size': ...}) or "
            "openworkflow.settings.set_payload_limits(max_size=...)",
            "$",
        )
        self.size = size
        self.limit = limit


# -- serialization ---------------------------------------------------------------------------

# A JSON string (skipped as a whole) or a float printed with a positive exponent.
_STRING_OR_EXPONENT = re.compile(r'"(?:[^"\\]|\\.)*"|(-?\d+(?:\.\d+)?e\+\d+)')
# "\u0000" escapes that are not themselves an escaped backslash followed by "u0000".
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")
_SURROGATE = re.compile("[\ud800-\udfff]")


def dumps(value: JsonValue) -> str:
    """Serialize a JSON value compactly, as JavaScript's ``JSON.stringify`` does.

    Two adjustments keep what is read back identical on every backend:
    floats of 1e16 and more are written in full with a decimal point
    (PostgreSQL's ``jsonb`` would otherwise store ``1e+16`` as the integer
    10000000000000000, and it would read back as an ``int``); and text that
    the databases cannot hold (NUL, lone surrogates), which only reaches
    here through engine-made values such as error messages because payloads
    are refused earlier by :func:`to_json_value`, is replaced by U+FFFD.
    """
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if "e+" in text:
        text = _STRING_OR_EXPONENT.sub(_expand_exponent, text)
    if "\\u0000" in text:
        text = _NUL_ESCAPE.sub(lambda match: match.group(1) + "\\ufffd", text)
    if _SURROGATE.search(text):
        text = _SURROGATE.sub("\ufffd", text)
    return text


def _expand_exponent(match: re.Match[str]) -> str:
    number = match.group(1)
    if number is None:
        return match.group(0)
    return f"{int(float(number))}.0"  # floats printed with e+ are integral (>= 1e16)


def dumps_or_none(value: JsonValue) -> str | None:
    """Serialize for a nullable column: ``None`` is SQL NULL, not the JSON ``null``."""
    return None if value is None else dumps(value)


def loads(text: str | bytes | None) -> JsonValue:
    """Parse stored JSON; SQL NULL reads as ``None``."""
    return None if text is None else json.loads(text)


# -- conversion ------------------------------------------------------------------------------


def to_json_value(
    value: object, what: str | None = None, *, limits: PayloadLimits | None = None
) -> JsonValue:
    """Convert ``value`` to plain JSON, or raise :class:`JsonConversionError`.

    The result is exactly what reading the stored value back gives, so a
    step sees the same types on its first run and on every replay: pydantic
    models are dumped in JSON mode, dataclasses become dicts, tuples lists,
    ``str``/``int``/``float`` subclasses (enums, numpy floats) their plain
    values, and ``-0.0`` becomes ``0.0``. Anything JSON cannot represent
    faithfully is refused rather than silently coerced. With ``limits``, the
    value is then checked against them; ``what`` (e.g. "input for workflow
    'x'") names it in the warning logged above the warning size.

    Raises:
        JsonConversionError: the value cannot be stored (the message says
            where inside it and how to fix it).
        PayloadTooLargeError: its JSON is larger than the maximum size.
    """
    try:
        converted = _convert(value, "$", 0)
    except RecursionError:
        raise JsonConversionError(
            "the value contains itself or is nested too deeply to store as JSON", "$"
        ) from None
    if limits is not None:
        check_payload_size(converted, limits, what)
    return converted


_NOT_SCALAR = object()


def _convert(value: object, path: str, depth: int) -> JsonValue:
    scalar = _scalar(value, path)
    if scalar is not _NOT_SCALAR:
        return scalar
    if depth >= MAX_DEPTH:
        where = _where(path)
        raise JsonConversionError(
            f"the value at {where} nests more than {MAX_DEPTH} levels deep (or contains itself)",
            path,
        )
    if isinstance(value, dict):
        out: dict[str, JsonValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise JsonConversionError(
                    f"dict key {_short(key)} at {_where(path)} is a {type(key).__name__}; JSON "
                    "keys must be str (convert the keys, e.g. {str(k): v for k, v in d.items()})",
                    path,
                )
            text_key = _text(key, f"{path} (a key)")
            out[text_key] = _convert(item, f"{path}.{text_key}", depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_convert(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, BaseModel):
        try:
            dumped = value.model_dump(mode="json")
        except ValueError as error:  # e.g. bytes that are not UTF-8
            raise JsonConversionError(
                f"the {type(value).__name__} model at {_where(path)} cannot be dumped as "
                f"JSON: {error}",
                path,
            ) from None
        return _convert(dumped, path, depth)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _convert(dataclasses.asdict(value), path, depth)
    raise JsonConversionError(
        f"a value of type {type(value).__name__} at {_where(path)} cannot be stored as JSON; "
        f"{_hint_for(value)}",
        path,
    )


def _scalar(value: object, path: str) -> JsonValue:
    """The plain JSON scalar for ``value``, or ``_NOT_SCALAR`` for anything else."""
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        return _text(value, path)
    if isinstance(value, int):
        number = int(value)
        if not -MAX_SAFE_INTEGER <= number <= MAX_SAFE_INTEGER:
            raise JsonConversionError(
                f"integer {_short(number)} at {_where(path)} is beyond ±(2**53 - 1), the largest "
                "integer JavaScript (and TypeScript readers) can hold exactly; store it as a "
                "string",
                path,
            )
        return number
    if isinstance(value, float):
        if not math.isfinite(value):
            raise JsonConversionError(
                f"{value!r} at {_where(path)} is not a finite number, and JSON has no NaN or "
                "Infinity; use None or a string",
                path,
            )
        return float(value) if value != 0 else 0.0
    return _NOT_SCALAR


def _text(value: str, path: str) -> str:
    plain = str.__str__(value)  # a str subclass (a str enum) becomes its plain value
    bad = _UNSTORABLE_CHARACTERS.search(plain)
    if bad is not None:
        character = bad.group()
        what = "a NUL character (\\u0000)" if character == "\x00" else "a lone surrogate"
        raise JsonConversionError(
            f"the string at {_where(path)} contains {what} at index {bad.start()}, which "
            "PostgreSQL (and UTF-8) cannot store; remove it or encode the text (e.g. base64)",
            path,
        )
    return plain


def _where(path: str) -> str:
    """A path for messages: long ones (deep nesting, huge keys) keep their two ends."""
    return path if len(path) <= 80 else f"{path[:38]}...{path[-38:]}"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _hint_for(value: object) -> str:
    if isinstance(value, set | frozenset):
        return "convert it to a list (e.g. sorted(...))"
    if isinstance(value, bytes | bytearray | memoryview):
        return "encode bytes as text first (e.g. base64.b64encode(data).decode())"
    if hasattr(value, "isoformat"):
        return "convert it to a string with .isoformat() (include a timezone)"
    if type(value).__module__ == "numpy" or hasattr(value, "item"):
        return "convert it to a plain Python value (e.g. .item() or .tolist())"
    if type(value).__name__ == "Decimal":
        return "convert it to a string (exact) or a float"
    return "use dicts with str keys, lists, str, int, float, bool, None or a pydantic model"


# -- names -----------------------------------------------------------------------------------


def is_storable_text(value: object) -> bool:
    """Whether ``value`` is a string both databases can store (no NUL, no lone surrogate)."""
    return isinstance(value, str) and _UNSTORABLE_CHARACTERS.search(value) is None


def check_name(value: object, field: str, *, allow_empty: bool = False) -> str:
    """Return ``value`` if the database can store it as a name, else raise ``InvalidNameError``.

    Names (workflow names, versions, step names, namespaces, signals,
    idempotency keys) are stored byte for byte and compared exactly; they
    must be strings without NUL characters or lone surrogates, of at most
    :data:`MAX_NAME_BYTES` UTF-8 bytes.
    """
    if not isinstance(value, str):
        raise InvalidNameError(f"{field} must be a string, got {type(value).__name__}", field)
    if not value and not allow_empty:
        raise InvalidNameError(f"{field} must not be empty", field)
    bad = _UNSTORABLE_CHARACTERS.search(value)
    if bad is not None:
        what = "a NUL character (\\x00)" if bad.group() == "\x00" else "a lone surrogate"
        raise InvalidNameError(
            f"{field} {_short(value)} contains {what} at index {bad.start()}, which the "
            "database cannot store",
            field,
        )
    size = len(value.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise InvalidNameError(
            f"{field} is {size} bytes long; at most {MAX_NAME_BYTES} UTF-8 bytes are allowed "
            f"(it starts {_short(value[:20])})",
            field,
        )
    return value


# -- payload size limits ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PayloadLimits:
    """Payload sizes (UTF-8 bytes of the stored JSON): warn above one, refuse above the other.

    ``None`` turns a threshold off.
    """

    warn_size: int | None = DEFAULT_WARN_SIZE
    max_size: int | None = DEFAULT_MAX_SIZE

    def __post_init__(self) -> None:
        for name in ("warn_size", "max_size"):
            size = getattr(self, name)
            if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
                raise ValueError(f"payload {name} must be a number of bytes or None, got {size!r}")
            if size is not None and size < 1:
                raise ValueError(f"payload {name} must be at least 1 byte, got {size}")
        if self.max_size is not None and self.max_size > HARD_MAX_SIZE:
            raise ValueError(
                f"payload max_size {format_size(self.max_size)} is above "
                f"{format_size(HARD_MAX_SIZE + 1)}, the most PostgreSQL jsonb can hold"
            )
        if (
            self.warn_size is not None
            and self.max_size is not None
            and self.warn_size > self.max_size
        ):
            raise ValueError(
                f"payload warn_size ({format_size(self.warn_size)}) must not exceed max_size "
                f"({format_size(self.max_size)})"
            )


def parse_size(value: object, source: str = "size") -> int | None:
    """Read a size: bytes (int), or text such as ``"256KiB"``, ``"2MiB"``, ``"2MB"``, ``"off"``.

    ``KiB``/``MiB``/``GiB`` are powers of 1024, ``KB``/``MB``/``GB`` of 1000.
    ``"off"`` (or ``None``) means no limit.

    Raises:
        ValueError: the value is not a size; the message names ``source``.
    """
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"{source} must be at least 1 byte, got {value}")
        return value
    if isinstance(value, str):
        if value.strip().lower() in _DISABLED:
            return None
        match = _SIZE.fullmatch(value)
        if match is not None:
            number, unit = match.groups()
            size = int(float(number) * _UNITS[(unit or "").lower()])
            if size >= 1:
                return size
    raise ValueError(
        f"{source} must be a size such as 262144, '256KiB', '2MiB' or 'off', got {value!r}"
    )


def format_size(size: int) -> str:
    """``2 MiB``, ``256 KiB``, ``1.5 MiB``, ``300 bytes``: for messages."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            amount = size / factor
            return f"{amount:.0f} {unit}" if amount == int(amount) else f"{amount:.1f} {unit}"
    return f"{size} bytes"


def check_payload_size(value: JsonValue, limits: PayloadLimits, what: str | None = None) -> int:
    """Measure ``value`` as stored; warn or raise according to ``limits``. Returns the size.

    Raises:
        PayloadTooLargeError: larger than the maximum size.
    """
    if limits.warn_size is None and limits.max_size is None:
        return -1
    size = len(dumps(value).encode("utf-8"))
    if limits.max_size is not None and size > limits.max_size:
        raise PayloadTooLargeError(size, limits.max_size)
    if limits.warn_size is not None and size > limits.warn_size:
        logger.warning(
            "%s of %s is over the %s payload warning size (it is refused above %s); large "
            "values slow every replay of the run: consider storing them elsewhere "
            "(the threshold is %s)",
            what or "a payload",
            format_size(size),
            format_size(limits.warn_size),
            "no limit" if limits.max_size is None else format_size(limits.max_size),
            "OPENWORKFLOW_PAYLOAD_WARN_SIZE",
        )
    return size
