"""Typed step results: the stored JSON validated back into the body's return annotation.

A step's output is stored as JSON. When the body declares what it returns
(``-> Invoice``, a dataclass, a TypedDict, ``list[int]``), workflow code gets
that type back, built from the stored JSON, on the first pass and on every
replay alike, so the two can never differ. A body without a return
annotation (a lambda) or annotated ``Any``/``object`` gives plain JSON (and
one annotated ``NoReturn``/``Never`` has no result to type).
"""

from __future__ import annotations

import functools
import sys
import types
import typing
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

import typing_extensions
from pydantic import TypeAdapter, ValidationError

from openworkflow.core.json import JsonConversionError, JsonValue
from openworkflow.errors import PayloadError

ToJson = Callable[[Any, str], JsonValue]
"""Converts a value to storable JSON under the payload limits in force (what, for errors)."""

_adapters: dict[tuple[object, object], TypeAdapter[Any] | None] = {}
_PLAIN_JSON: tuple[object, ...] = (Any, object, typing.NoReturn, typing_extensions.Never)
_MAX_CACHED = 4096


def result_adapter(fn: Callable[..., Any], step_name: str) -> TypeAdapter[Any] | None:
    """The adapter for ``fn``'s return annotation, or None when it returns plain JSON.

    Raises:
        TypeError: the annotation names something that cannot be resolved (a
            class defined inside a function under ``from __future__ import
            annotations``), so the step could not return a stable type.
    """
    target = _annotated_callable(fn)
    annotations = getattr(target, "__annotations__", None)
    if not annotations or "return" not in annotations:
        return None
    annotation = annotations["return"]
    key = (getattr(target, "__code__", target), annotation)
    try:
        if key in _adapters:
            return _adapters[key]
    except TypeError:  # an unhashable annotation: build it each time
        return _build_adapter(target, annotation, step_name)
    adapter = _build_adapter(target, annotation, step_name)
    if len(_adapters) >= _MAX_CACHED:
        _adapters.clear()
    _adapters[key] = adapter
    return adapter


def typed_result(adapter: TypeAdapter[Any] | None, output: Any, step_name: str) -> Any:
    """``output`` (stored JSON) as the step body's declared return type.

    Raises:
        PayloadError: the JSON does not validate into that type (the body
            returned something else, or the annotation changed since the
            output was stored).
    """
    if adapter is None:
        return output
    try:
        return adapter.validate_python(output)
    except ValidationError as error:
        raise PayloadError(
            f"the output of step {step_name!r} does not match the return annotation of its "
            f"function ({_type_label(adapter)}): {error}"
        ) from None


def stored_output(
    adapter: TypeAdapter[Any] | None, value: Any, what: str, to_json: ToJson
) -> JsonValue:
    """``value`` as the JSON to store for a step's output (``to_json`` applies the limits).

    With a return annotation, what plain JSON cannot hold (a ``datetime``, a
    dataclass with one, ``UUID``, ``bytes``) is dumped by the annotation's
    adapter, as a pydantic model dumps its fields; :func:`typed_result` then
    builds the declared type back from that JSON.

    Raises:
        JsonConversionError: the value cannot be stored (the plain-JSON reason).
        PayloadTooLargeError: its JSON is larger than the maximum size.
    """
    try:
        return to_json(value, what)
    except JsonConversionError as error:
        if adapter is None:
            raise
        refused = error
    try:
        dumped = adapter.dump_python(value, mode="json", warnings=False)
    except Exception:  # pydantic cannot serialize it either: the plain reason says why
        raise refused from None
    return to_json(dumped, what)


def _annotated_callable(fn: Callable[..., Any]) -> Any:
    target: Any = fn
    while isinstance(target, functools.partial):
        target = target.func
    if isinstance(target, type):  # a class called as the body: no return annotation
        return None
    if not hasattr(target, "__code__"):
        # A callable object (or a bound method of one): its __call__ is annotated.
        call = getattr(target, "__call__", None)  # noqa: B004 - not a callable() check
        if call is not None and hasattr(call, "__code__"):
            return call
    return target


def _build_adapter(target: Any, annotation: object, step_name: str) -> TypeAdapter[Any] | None:
    if isinstance(annotation, str):
        try:
            annotation = typing.get_type_hints(target).get("return", Any)
        except Exception as error:
            raise TypeError(
                f"step {step_name!r}: the return annotation {annotation!r} of "
                f"{getattr(target, '__qualname__', target)!r} cannot be resolved ({error}); "
                "define the type at module level, or remove the annotation to get plain JSON"
            ) from None
    if any(annotation is plain for plain in _PLAIN_JSON):  # never returns: nothing to type
        return None
    if typing.get_origin(annotation) in (Awaitable, Coroutine):
        annotation = typing.get_args(annotation)[-1]
    try:
        return TypeAdapter(cast(Any, _portable(annotation)))
    except Exception as error:
        raise TypeError(
            f"step {step_name!r}: the return annotation {annotation!r} is not a type a "
            f"step result can be validated into ({error}); use a pydantic model, a "
            "dataclass, a TypedDict or builtin types, or remove the annotation"
        ) from None


def _type_label(adapter: TypeAdapter[Any]) -> str:
    core_type = getattr(adapter, "_type", None)
    return getattr(core_type, "__name__", None) or repr(core_type)


def _portable(annotation: Any) -> Any:
    """``annotation`` with each ``typing.TypedDict`` in it made one pydantic accepts.

    Before Python 3.12 pydantic refuses ``typing.TypedDict`` (it wants the
    ``typing_extensions`` one); the result is a plain dict either way, so the
    same fields are declared on a ``typing_extensions.TypedDict``.
    """
    if sys.version_info >= (3, 12):
        return annotation
    if typing.is_typeddict(annotation) and type(annotation).__module__ == "typing":
        optional = annotation.__optional_keys__
        fields = {
            key: typing_extensions.NotRequired[_portable(hint)]
            if key in optional
            else typing_extensions.Required[_portable(hint)]
            for key, hint in typing.get_type_hints(annotation).items()
        }
        return typing_extensions.TypedDict(annotation.__name__, fields)  # type: ignore[operator]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    converted = tuple(_portable(arg) for arg in args)
    if origin is None or converted == args:
        return annotation
    if origin in (typing.Union, types.UnionType):
        return typing.Union[converted]  # noqa: UP007 - built from a tuple of members
    return origin[converted]
