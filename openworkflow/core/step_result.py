"""Typed step results: the stored JSON validated back into the body's return annotation.

A step's output is stored as JSON. When the body declares what it returns
(``-> Invoice``, a dataclass, a TypedDict, ``list[int]``), workflow code gets
that type back, built from the stored JSON, on the first pass and on every
replay alike, so the two can never differ. A body without a return
annotation (a lambda) or annotated ``Any``/``object`` gives plain JSON.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

from pydantic import TypeAdapter, ValidationError

from openworkflow.errors import PayloadError

_adapters: dict[tuple[object, object], TypeAdapter[Any] | None] = {}
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


def _annotated_callable(fn: Callable[..., Any]) -> Any:
    target: Any = fn
    while isinstance(target, functools.partial):
        target = target.func
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
    if annotation is Any or annotation is object:
        return None
    if typing.get_origin(annotation) in (Awaitable, Coroutine):
        annotation = typing.get_args(annotation)[-1]
    try:
        return TypeAdapter(cast(Any, annotation))
    except Exception as error:
        raise TypeError(
            f"step {step_name!r}: the return annotation {annotation!r} is not a type a "
            f"step result can be validated into ({error}); use a pydantic model, a "
            "dataclass, a TypedDict or builtin types, or remove the annotation"
        ) from None


def _type_label(adapter: TypeAdapter[Any]) -> str:
    core_type = getattr(adapter, "_type", None)
    return getattr(core_type, "__name__", None) or repr(core_type)
