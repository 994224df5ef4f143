"""Declaring workflows: ``@workflow``, ``declare_workflow`` and ``WorkflowSpec.implement``.

A workflow is a spec (name, version, input schema, retry policy) plus an
``async def`` implementation whose parameters are injected by name from
``input``, ``step``, ``run`` and ``version``. Nothing is registered globally;
workers receive the workflows they run.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, overload

from pydantic import TypeAdapter, ValidationError

from openworkflow.core.concurrency import Concurrency, resolve_concurrency
from openworkflow.core.flow_control import DEFAULT_PRIORITY, RateLimit, check_priority
from openworkflow.core.json import (
    JsonConversionError,
    JsonValue,
    PayloadLimits,
    check_name,
    to_json_value,
)
from openworkflow.core.retry import RetryPolicy
from openworkflow.core.schedule import Schedule, schedule_names
from openworkflow.errors import InputValidationError, PayloadError, WorkflowDefinitionError

INJECTABLE_PARAMETERS = ("input", "step", "run", "version")

#: The step attempts a run may record unless its workflow says otherwise (the original's limit).
DEFAULT_MAX_STEP_ATTEMPTS = 1000
#: The most ``max_step_attempts`` may allow: every pass reads the run's whole history.
MAX_STEP_ATTEMPTS_CEILING = 1_000_000

WorkflowFn = Callable[..., Awaitable[Any]]


class _Unset:
    def __repr__(self) -> str:
        return "<from the input annotation>"


_UNSET: Any = _Unset()


@dataclass(frozen=True, slots=True, kw_only=True)
class RunInfo:
    """Facts about the run being executed, stable across replays of one attempt."""

    id: str
    workflow_name: str
    created_at: datetime
    started_at: datetime | None
    #: The schedule tick this run serves (aware, UTC); None for runs not started by a schedule.
    scheduled_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class WorkflowSpec:
    """A workflow's identity and contract, without an implementation.

    Create one with :func:`declare_workflow` to start runs from a service that
    does not import the code; attach the code with :meth:`implement`.
    """

    name: str
    version: str | None = None
    schema: Any = None
    retry_policy: RetryPolicy | None = None
    priority: int = DEFAULT_PRIORITY
    #: The cron schedules that start this workflow's runs (see :class:`Schedule`).
    schedules: tuple[Schedule, ...] = ()
    #: How many of its runs (per key) may execute at once; None for no limit.
    #: An integer ``N`` given here is stored as ``Concurrency(limit=N)``.
    concurrency: Concurrency | None = None
    #: How often its runs may start (a sliding window, per key); None for no limit.
    rate_limit: RateLimit | None = None
    #: How many step attempts one run may record (each child of a fan-out is one).
    max_step_attempts: int = DEFAULT_MAX_STEP_ATTEMPTS
    _adapter: TypeAdapter[Any] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise WorkflowDefinitionError(
                f"workflow name must be a non-empty string, got {self.name!r}"
            )
        if self.version is not None and not isinstance(self.version, str):
            raise WorkflowDefinitionError(
                f"workflow {self.name!r}: version must be a string or None, got {self.version!r}"
            )
        check_name(self.name, "workflow name")  # InvalidNameError: NUL, surrogates, too long
        if self.version is not None:
            check_name(self.version, "workflow version")
        if self.retry_policy is not None and not isinstance(self.retry_policy, RetryPolicy):
            raise WorkflowDefinitionError(
                f"workflow {self.name!r}: retry_policy must be a RetryPolicy, got "
                f"{type(self.retry_policy).__name__}"
            )
        try:
            check_priority(self.priority, "priority")
        except (TypeError, ValueError) as error:
            raise WorkflowDefinitionError(f"workflow {self.name!r}: {error}") from None
        self._check_schedules()
        self._check_concurrency()
        _check_max_step_attempts(self.name, self.max_step_attempts)
        if self.schema is not None:
            try:
                object.__setattr__(self, "_adapter", TypeAdapter(self.schema))
            except Exception as error:
                raise WorkflowDefinitionError(
                    f"workflow {self.name!r}: schema {self.schema!r} is not a type pydantic can "
                    f"validate: {error}"
                ) from error

    def _check_schedules(self) -> None:
        schedules = tuple(self.schedules)
        for item in schedules:
            if not isinstance(item, Schedule):
                raise WorkflowDefinitionError(
                    f"workflow {self.name!r}: schedules must be Schedule objects, got "
                    f"{type(item).__name__}; write Schedule({item!r}) for a cron string"
                )
        object.__setattr__(self, "schedules", schedules)
        schedule_names(self.name, schedules)  # InvalidScheduleError: two with one name

    def _check_concurrency(self) -> None:
        option: Any = self.concurrency
        try:
            resolved = resolve_concurrency(option, "concurrency")
        except TypeError as error:
            raise WorkflowDefinitionError(f"workflow {self.name!r}: {error}") from None
        except ValueError as error:
            raise ValueError(f"workflow {self.name!r}: {error}") from None
        object.__setattr__(self, "concurrency", resolved)
        if self.rate_limit is not None and not isinstance(self.rate_limit, RateLimit):
            raise WorkflowDefinitionError(
                f"workflow {self.name!r}: rate_limit must be a RateLimit, got "
                f"{type(self.rate_limit).__name__}; write RateLimit(limit, per=...)"
            )

    @property
    def schedule_names(self) -> list[str]:
        """The name of each schedule, in order (explicit names, else the workflow's)."""
        return schedule_names(self.name, self.schedules)

    def implement(self, fn: WorkflowFn) -> Workflow:
        """Attach an implementation to this spec (usable as a decorator)."""
        return Workflow(spec=self, fn=fn)

    def validate_input(self, value: Any, limits: PayloadLimits | None = None) -> JsonValue:
        """Validate ``value`` against the schema and return the JSON to store.

        With ``limits``, the stored JSON is also checked against the payload sizes.

        Raises:
            InputValidationError: the schema rejected the value.
            PayloadError: the value (without a schema) is not plain JSON.
            PayloadTooLargeError: larger than ``limits.max_size``.
        """
        return self.validate_input_value(value, limits)[1]

    def validate_input_value(
        self, value: Any, limits: PayloadLimits | None = None
    ) -> tuple[Any, JsonValue]:
        """Like :meth:`validate_input`, also returning the validated value itself.

        The first item is what the schema made of ``value`` (e.g. a model
        instance; ``value`` unchanged without a schema): what a concurrency
        key function receives.
        """
        validated = value
        if self._adapter is not None:
            try:
                validated = self._adapter.validate_python(value)
            except ValidationError as error:
                raise InputValidationError(
                    f"invalid input for workflow {self.name!r}: {pydantic_message(error)}",
                    workflow_name=self.name,
                    errors=error.errors(include_url=False),
                ) from None
            try:
                dumped = self._adapter.dump_python(validated, mode="json")
            except ValueError as error:  # e.g. bytes that are not UTF-8
                raise PayloadError(
                    f"input for workflow {self.name!r} cannot be stored as JSON: {error}"
                ) from None
            value = dumped
        try:
            stored = to_json_value(value, f"input for workflow {self.name!r}", limits=limits)
        except JsonConversionError as error:
            raise PayloadError(
                f"input for workflow {self.name!r} cannot be stored as JSON: {error}"
            ) from None
        return validated, stored

    def parse_input(self, stored: JsonValue) -> Any:
        """Rebuild the validated input (e.g. a model instance) from stored JSON."""
        if self._adapter is None:
            return stored
        try:
            return self._adapter.validate_python(stored)
        except ValidationError as error:
            raise InputValidationError(
                f"stored input of workflow {self.name!r} does not match its schema: "
                f"{pydantic_message(error)}",
                workflow_name=self.name,
                errors=error.errors(include_url=False),
            ) from None


def pydantic_message(error: ValidationError) -> str:
    """One line naming each field pydantic rejected and why."""
    parts = []
    for item in error.errors(include_url=False):
        location = ".".join(str(part) for part in item["loc"])
        parts.append(f"{location}: {item['msg']}" if location else item["msg"])
    return "; ".join(parts) or "Validation failed"


class Workflow:
    """A workflow spec with its implementation, as made by ``@workflow``.

    Attributes:
        spec: The workflow's :class:`WorkflowSpec`.
        fn: The ``async def`` implementation.
        parameters: The injected parameter names the function declares.
        source: ``file:line`` where the function is defined, for error messages.
    """

    __slots__ = ("fn", "parameters", "source", "spec")

    def __init__(self, *, spec: WorkflowSpec, fn: WorkflowFn) -> None:
        self.parameters = _check_function(fn)
        self.spec = spec
        self.fn = fn
        self.source = describe_source(fn)

    @property
    def name(self) -> str:
        """The workflow name."""
        return self.spec.name

    @property
    def version(self) -> str | None:
        """The workflow version (None when unversioned)."""
        return self.spec.version

    def __repr__(self) -> str:
        version = f", version={self.spec.version!r}" if self.spec.version else ""
        return f"<Workflow {self.spec.name!r}{version} at {self.source}>"


def describe_source(fn: Callable[..., Any]) -> str:
    """``path:line`` of a function's definition (best effort)."""
    code = getattr(inspect.unwrap(fn), "__code__", None)
    if code is None:
        return getattr(fn, "__qualname__", repr(fn))
    return f"{code.co_filename}:{code.co_firstlineno}"


def _check_function(fn: WorkflowFn) -> tuple[str, ...]:
    label = getattr(fn, "__qualname__", repr(fn))
    if not inspect.iscoroutinefunction(fn):
        raise WorkflowDefinitionError(f"workflow function {label} must be defined with 'async def'")
    names = []
    for parameter in inspect.signature(fn).parameters.values():
        if parameter.name not in INJECTABLE_PARAMETERS or parameter.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
            inspect.Parameter.POSITIONAL_ONLY,
        ):
            raise WorkflowDefinitionError(
                f"workflow function {label} has parameter {parameter.name!r}; "
                f"workflow parameters are injected by name and may only be "
                f"{', '.join(INJECTABLE_PARAMETERS)}"
            )
        names.append(parameter.name)
    return tuple(names)


def _input_annotation(fn: WorkflowFn) -> Any:
    signature = inspect.signature(fn)
    parameter = signature.parameters.get("input")
    if parameter is None or parameter.annotation is inspect.Parameter.empty:
        return None
    try:
        hints = typing.get_type_hints(fn)
    except Exception as error:
        raise WorkflowDefinitionError(
            f"cannot resolve the annotation of 'input' on workflow function "
            f"{fn.__qualname__} ({error}); define the type at module level or pass "
            "schema= to @workflow"
        ) from error
    annotation = hints.get("input")
    return None if annotation is Any else annotation


def _default_name(fn: WorkflowFn) -> str:
    return fn.__name__.replace("_", "-")


@overload
def workflow(fn: WorkflowFn, /) -> Workflow: ...


@overload
def workflow(
    *,
    name: str | None = None,
    version: str | None = None,
    schema: Any = _UNSET,
    retry_policy: RetryPolicy | None = None,
    priority: int = DEFAULT_PRIORITY,
    schedule: str | None = None,
    schedules: Sequence[Schedule] | None = None,
    concurrency: int | Concurrency | None = None,
    rate_limit: RateLimit | None = None,
    max_step_attempts: int = DEFAULT_MAX_STEP_ATTEMPTS,
) -> Callable[[WorkflowFn], Workflow]: ...


def workflow(
    fn: WorkflowFn | None = None,
    /,
    *,
    name: str | None = None,
    version: str | None = None,
    schema: Any = _UNSET,
    retry_policy: RetryPolicy | None = None,
    priority: int = DEFAULT_PRIORITY,
    schedule: str | None = None,
    schedules: Sequence[Schedule] | None = None,
    concurrency: int | Concurrency | None = None,
    rate_limit: RateLimit | None = None,
    max_step_attempts: int = DEFAULT_MAX_STEP_ATTEMPTS,
) -> Workflow | Callable[[WorkflowFn], Workflow]:
    """Turn an ``async def`` into a durable workflow.

    Works bare (``@workflow``) or with options. The name defaults to the
    function name with ``_`` replaced by ``-``; the schema defaults to the
    annotation of the ``input`` parameter (``schema=None`` turns validation off).
    ``priority`` is its runs' default priority (higher is claimed first; an
    ``ow.run(..., priority=)`` overrides it). ``schedule="*/5 * * * *"`` starts
    a run at every tick of a cron expression (UTC, default policies);
    ``schedules=[Schedule(...), ...]`` gives several, with time zones, inputs
    and policies. Workers running the workflow create each tick's run once.
    ``concurrency=5`` (or ``Concurrency(limit=1, key=lambda input: input.user_id)``)
    lets at most that many of its runs (per key) execute at once across every
    worker (see :class:`~openworkflow.core.concurrency.Concurrency`).
    ``rate_limit=RateLimit(100, per="1m")`` lets at most that many of its runs
    start in any sliding window of ``per`` (per key); the others wait queued.
    ``max_step_attempts=20_000`` lets one run record that many step attempts
    (default 1000, the original's limit; each child of a fan-out is one).

    Example:
        ``@workflow(name="process-order", version="v2")``
    """
    resolved_schedules = _schedules_option(schedule, schedules)

    def decorate(function: WorkflowFn) -> Workflow:
        _check_function(function)
        resolved_schema = _input_annotation(function) if schema is _UNSET else schema
        spec = WorkflowSpec(
            name=name if name is not None else _default_name(function),
            version=version,
            schema=resolved_schema,
            retry_policy=retry_policy,
            priority=priority,
            schedules=resolved_schedules,
            concurrency=_concurrency_option(concurrency),
            rate_limit=rate_limit,
            max_step_attempts=max_step_attempts,
        )
        return Workflow(spec=spec, fn=function)

    if fn is not None:
        return decorate(fn)
    return decorate


def _check_max_step_attempts(name: str, value: object) -> None:
    """``max_step_attempts`` is an int from 1 to :data:`MAX_STEP_ATTEMPTS_CEILING`."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise WorkflowDefinitionError(
            f"workflow {name!r}: max_step_attempts must be an int, got {type(value).__name__}"
        )
    if not 1 <= value <= MAX_STEP_ATTEMPTS_CEILING:
        raise WorkflowDefinitionError(
            f"workflow {name!r}: max_step_attempts must be between 1 and "
            f"{MAX_STEP_ATTEMPTS_CEILING:,}, got {value}"
        )


def _schedules_option(
    schedule: str | None, schedules: Sequence[Schedule] | None
) -> tuple[Schedule, ...]:
    """The schedules ``@workflow(schedule=...)`` or ``@workflow(schedules=[...])`` declares."""
    if schedule is not None and schedules is not None:
        raise WorkflowDefinitionError(
            "@workflow takes schedule= or schedules=, not both: put every schedule in "
            'schedules=[Schedule("*/5 * * * *"), Schedule(...)]'
        )
    if schedule is not None:
        if isinstance(schedule, Schedule):
            return (schedule,)
        if not isinstance(schedule, str):
            raise WorkflowDefinitionError(
                f'@workflow(schedule=...) must be a cron string such as "*/5 * * * *", got '
                f"{type(schedule).__name__}; use schedules=[Schedule(...)] for more options"
            )
        return (Schedule(schedule),)
    if schedules is None:
        return ()
    if isinstance(schedules, str | Schedule):
        raise WorkflowDefinitionError(
            "@workflow(schedules=...) takes a list of Schedule objects; for one cron string "
            'write schedule="..."'
        )
    return tuple(schedules)


def declare_workflow(
    name: str,
    version: str | None = None,
    schema: Any = None,
    retry_policy: RetryPolicy | None = None,
    priority: int = DEFAULT_PRIORITY,
    concurrency: int | Concurrency | None = None,
    rate_limit: RateLimit | None = None,
) -> WorkflowSpec:
    """Declare a workflow without its code, to start runs of it from anywhere.

    Attach the implementation later with ``@spec.implement``. Give it the
    implementation's ``concurrency`` too: runs started from this spec carry
    the limit it declares (and none without one).
    """
    return WorkflowSpec(
        name=name,
        version=version,
        schema=schema,
        retry_policy=retry_policy,
        priority=priority,
        concurrency=_concurrency_option(concurrency),
        rate_limit=rate_limit,
    )


def _concurrency_option(option: int | Concurrency | None) -> Concurrency | None:
    """What ``concurrency=`` gives the spec: an integer stays one, checked by the spec."""
    # The spec checks and converts (so its messages name the workflow); only
    # the static type differs here.
    return typing.cast(Concurrency | None, option)


WorkflowRef = Workflow | WorkflowSpec | str
"""Anything that names a workflow: a workflow, a spec, or a plain name."""


def spec_of(ref: WorkflowRef) -> WorkflowSpec:
    """Return the spec behind a workflow reference."""
    if isinstance(ref, Workflow):
        return ref.spec
    if isinstance(ref, WorkflowSpec):
        return ref
    if isinstance(ref, str):
        return WorkflowSpec(name=ref)
    raise TypeError(
        f"expected a workflow, a WorkflowSpec or a workflow name, got {type(ref).__name__}"
    )
