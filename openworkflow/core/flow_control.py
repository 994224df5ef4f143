"""Flow control that is not SQL: priorities, routing keys, rate limits, and their backend params.

A run's priority orders the claim among due pending runs: higher first, then
the earliest due. It is a 32-bit integer so every backend stores it as is.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from openworkflow.core.duration import Duration, parse_duration_ms
from openworkflow.core.json import check_name
from openworkflow.core.workflow_run import WorkflowRun

DEFAULT_PRIORITY = 0
"""A run's priority unless its workflow or its ``run()`` call says otherwise."""

MIN_PRIORITY = -(2**31)
MAX_PRIORITY = 2**31 - 1


def check_priority(value: object, where: str) -> int:
    """``value`` if it is a usable priority, else a ``TypeError``/``ValueError`` saying why.

    ``where`` names the caller's argument in the message (``"priority"``,
    ``"@workflow(priority=...)"``).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where} must be an integer, got {value!r}")
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise ValueError(
            f"{where} must be between {MIN_PRIORITY} and {MAX_PRIORITY} (higher runs first), "
            f"got {value}"
        )
    return value


WorkflowKey = tuple[str, str | None]
"""A workflow implementation's (name, version); a None version matches unversioned runs only."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SetWorkflowRunPriorityParams:
    """Input of :meth:`Backend.set_workflow_run_priority`."""

    workflow_run_id: str
    priority: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RequeueWorkflowRunParams:
    """Input of :meth:`FlowControlStore.requeue_workflow_run`.

    ``available_at`` None means due now; the concurrency columns are set
    when given (both), else kept.
    """

    workflow_run_id: str
    worker_id: str
    available_at: datetime | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    #: The start's reserved grant (a start rate limit), kept on the run.
    start_granted_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SetWorkflowRunSuccessorParams:
    """Input of :meth:`FlowControlStore.set_workflow_run_successor`."""

    workflow_run_id: str
    worker_id: str
    successor_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PausedWorkflow:
    """A workflow name whose runs workers do not claim (every version, in the namespace)."""

    workflow_name: str
    paused_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerRegistration:
    """Input of :meth:`Backend.register_worker`: a live worker and what it runs.

    ``worker_id`` names the worker process (not a slot); the registration is
    live until ``ttl_ms`` after the last call.
    """

    worker_id: str
    workflows: Sequence[WorkflowKey]
    ttl_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimUnroutedWorkflowRunsParams:
    """Input of :meth:`Backend.claim_unrouted_workflow_runs`.

    Claims due runs (pending, parked and due, or with an expired lease) whose
    (name, version) no live registered worker runs and whose workflow is not
    paused, among the ``scan_limit`` oldest due runs of the three kinds
    together, one per worker id, so a worker can say that nobody knows them.
    """

    worker_ids: Sequence[str]
    lease_duration_ms: int
    scan_limit: int = 1000


class FlowControlStore(Protocol):
    """The storage side of flow control, part of every :class:`~openworkflow.core.backend.Backend`.

    This port's own: TypeScript workers sharing the database ignore priorities,
    pauses and registrations.
    """

    async def set_workflow_run_priority(self, params: SetWorkflowRunPriorityParams) -> WorkflowRun:
        """Change an active run's priority (higher is claimed first); return the run.

        Raises :class:`~openworkflow.errors.WorkflowRunNotFoundError` for an
        unknown run and :class:`~openworkflow.errors.InvalidRunStateError` for
        a finished one.
        """
        ...

    async def pause_workflow(self, workflow_name: str) -> PausedWorkflow:
        """Stop claims of the workflow's runs (every version); idempotent."""
        ...

    async def resume_workflow(self, workflow_name: str) -> bool:
        """Let claims take the workflow's runs again; False if it was not paused."""
        ...

    async def list_paused_workflows(self) -> list[PausedWorkflow]:
        """The paused workflow names, by name."""
        ...

    async def register_worker(self, params: WorkerRegistration) -> None:
        """Record (or refresh) a live worker and the workflows it runs."""
        ...

    async def unregister_worker(self, worker_id: str) -> None:
        """Forget a worker that stopped (idempotent)."""
        ...

    async def claim_unrouted_workflow_runs(
        self, params: ClaimUnroutedWorkflowRunsParams
    ) -> list[WorkflowRun]:
        """Claim due runs no live worker registered for (see the params)."""
        ...

    async def requeue_workflow_run(self, params: RequeueWorkflowRunParams) -> WorkflowRun:
        """Fenced: put an owned run back in the queue as if never claimed (pass and lease undone).

        Before any of its code runs: a run of a limited workflow created
        without its concurrency key gets it (the next claim admits it by its
        limit), and a start over its workflow's rate limit waits until its
        reserved instant (``available_at``).
        """
        ...

    async def set_workflow_run_successor(
        self, params: SetWorkflowRunSuccessorParams
    ) -> WorkflowRun:
        """Fenced: record the run an owned run continues as (it completes right after)."""
        ...

    async def reserve_rate_limit(self, params: AcquireRateLimitParams) -> RateLimitGrant:
        """Take a token of the bucket now, or reserve one at the earliest instant the window allows.

        Granted: a token was free. Refused: a token is reserved at
        ``retry_at`` (the caller waits until then and does not ask again),
        later callers queueing behind it. Grants, present and reserved, never
        exceed ``params.limit`` in any interval of ``params.per_ms``.
        """
        ...

    async def acquire_rate_limit(self, params: AcquireRateLimitParams) -> RateLimitGrant:
        """Take a token of the bucket and key now, or say when the window has room.

        One statement (PostgreSQL) or one ``BEGIN IMMEDIATE`` transaction
        (SQLite), timed by the database clock. Grants never exceed
        ``params.limit`` in any half-open interval of ``params.per_ms``,
        whatever the number of racing callers.
        """
        ...


# -- rate limits -----------------------------------------------------------------------

MAX_RATE_KEY_CHARS = 255
"""A rate-limit key longer than this is cut to this many characters."""

RateKey = str | Callable[[Any], object] | None
"""A rate limit's key: one fixed string, a callable of the workflow's validated input, or None."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``limit`` calls in any sliding window of length ``per``, across all runs and workers.

    ``step.run(name, fn, rate_limit=RateLimit(limit=100, per="1m"))`` makes
    sure that no interval of length ``per`` holds more than ``limit`` starts of
    the step's body (the strict promise an external API expects). Over the
    limit the run parks until the window has room: nothing fails and no retry
    attempt is used.

    ``key`` splits the limit: a string, or a callable that receives the
    workflow's **validated input** (the model object, before JSON
    serialization) and returns a ``str`` or ``int``; each distinct key has its
    own ``limit``. ``None`` (the default) means one shared limit.

    ``name`` names the limit's bucket: steps whose rate limits have the same
    name share one limit, whatever workflow they are in. By default the bucket
    is the workflow name plus the step function's ``__qualname__`` (not the
    step name, so steps named in a loop share their limit).

    Grants are timed by the database clock, a few milliseconds before the
    body's call reaches the outside world; leave a margin (``limit=95`` for
    an API allowing 100) if its own clock is strict to the millisecond.
    """

    limit: int
    per: Duration
    key: RateKey = None
    name: str | None = field(default=None, kw_only=True)
    per_ms: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int):
            raise TypeError(f"RateLimit limit must be an integer, got {self.limit!r}")
        if self.limit < 1:
            raise ValueError(f"RateLimit limit must be at least 1, got {self.limit}")
        try:
            per_ms = parse_duration_ms(self.per)
        except (TypeError, ValueError) as error:
            raise TypeError(f"RateLimit per must be a duration: {error}") from None
        if not 0 < per_ms <= MAX_RATE_PER_MS:
            raise ValueError(
                f"RateLimit per must be positive and at most 100 years, got {self.per!r}"
            )
        if self.key is not None and not isinstance(self.key, str) and not callable(self.key):
            raise TypeError(
                "RateLimit key must be a string, a callable of the workflow input, or None; "
                f"got {type(self.key).__name__}"
            )
        if self.name is not None:
            check_name(self.name, "RateLimit name")
        object.__setattr__(self, "per_ms", max(1, math.ceil(per_ms)))


MAX_RATE_PER_MS = 100 * 31_557_600_000
"""100 years: a window must still end at a datetime."""

_step_buckets: dict[str, tuple[int, int]] = {}
_step_buckets_lock = threading.Lock()


def start_rate_bucket(workflow_name: str, rate_limit: RateLimit) -> str:
    """The bucket a workflow's starts take tokens from: ``start:`` + its name (or the limit's).

    Raises ``ValueError`` like :func:`step_rate_bucket` for a bucket already
    used with another ``(limit, per)`` in this process.
    """
    return _registered(f"start:{rate_limit.name or workflow_name}", rate_limit)


def step_rate_bucket(workflow_name: str, fn: Callable[..., Any], rate_limit: RateLimit) -> str:
    """The bucket a step's calls take tokens from: ``step:`` + its name.

    Raises ``ValueError`` when another ``(limit, per)`` already uses the
    bucket in this process: two limits on one bucket would each be broken.
    """
    if rate_limit.name is not None:
        bucket = f"step:{rate_limit.name}"
    else:
        while isinstance(fn, functools.partial):
            fn = fn.func
        qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
        bucket = f"step:{workflow_name}:{qualname}"
    return _registered(bucket, rate_limit)


def _registered(bucket: str, rate_limit: RateLimit) -> str:
    shape = (rate_limit.limit, rate_limit.per_ms)
    with _step_buckets_lock:
        known = _step_buckets.setdefault(bucket, shape)
    if known != shape:
        raise ValueError(
            f"rate limit bucket {bucket!r} is already used with limit={known[0]} "
            f"per={known[1]}ms; got limit={shape[0]} per={shape[1]}ms (give it its own name=)"
        )
    return bucket


def rate_key_of(rate_limit: RateLimit, workflow_input: Callable[[], Any]) -> str:
    """The key of one call: ``''`` (shared), the fixed string, or the callable's result.

    ``workflow_input`` gives the validated input, and is only called for a
    callable key.
    """
    key = rate_limit.key
    if key is None:
        return ""
    value = key if isinstance(key, str) else key(workflow_input())
    if value is None:
        return ""
    text = str(value)[:MAX_RATE_KEY_CHARS]
    return check_name(text, "rate limit key", allow_empty=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class AcquireRateLimitParams:
    """Input of :meth:`FlowControlStore.acquire_rate_limit`."""

    bucket: str
    key: str
    limit: int
    per_ms: int
    workflow_run_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitGrant:
    """What :meth:`FlowControlStore.acquire_rate_limit` answered.

    Granted: ``granted_at`` is the grant's instant (database clock). Refused:
    ``retry_at`` is the instant the window has room again.
    """

    granted: bool
    granted_at: datetime | None = None
    retry_at: datetime | None = None
