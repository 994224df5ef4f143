"""Creating many runs in one write: the storage protocol and its pure rules.

``ow.run_many`` starts a batch of runs with one call, and concurrent
``ow.run`` calls of one backend share one write (a group commit). Both store
runs exactly as :meth:`~openworkflow.core.backend.Backend.create_workflow_run`
would, one at a time and in order: an idempotency key returns the run of the
same workflow and key created in the last 24 h, whether that run was created
earlier, by another client at the same moment, or by an earlier item of the
same batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

from openworkflow.core.json import JsonValue
from openworkflow.core.workflow_run import WorkflowRun

Item = TypeVar("Item")

RUN_BATCH_CHUNK = 1000
"""Most runs one statement inserts; a larger batch is written in chunks."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateWorkflowRunParams:
    """Input of :meth:`Backend.create_workflow_run`. ``available_at=None`` means now."""

    workflow_name: str
    version: str | None = None
    idempotency_key: str | None = None
    config: JsonValue = field(default_factory=dict)
    context: JsonValue = None
    input: JsonValue = None
    parent_step_attempt_namespace_id: str | None = None
    parent_step_attempt_id: str | None = None
    available_at: datetime | None = None
    deadline_at: datetime | None = None
    priority: int = 0
    #: The schedule tick this run serves (this port's column); None for other runs.
    scheduled_at: datetime | None = None
    #: This port's columns, both set or both None (no limit); ``''`` is the shared key.
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    tags: Mapping[str, str] | None = None  # checked by core.tags.check_tags; this port's table


class RunBatchStore(Protocol):
    """Creating many runs at once."""

    async def create_workflow_runs(
        self, params: Sequence[CreateWorkflowRunParams]
    ) -> list[WorkflowRun]:
        """Create every run of ``params``, as ``create_workflow_run`` would in order.

        All or nothing: the runs are written in one transaction (one statement
        per :data:`RUN_BATCH_CHUNK` runs), so an error writes none of them.
        Returns one run per item, in order; items sharing an idempotency key
        (same workflow name) get the same run. Nothing is written for ``[]``.
        """
        ...


def representatives(params: Sequence[CreateWorkflowRunParams]) -> list[int]:
    """For each item, the index of the first item of the batch with its idempotency scope.

    An item without a key is its own representative. Only representatives
    are written; the others get their representative's run, as a second
    ``create_workflow_run`` with the same key would.
    """
    first: dict[tuple[str, str], int] = {}
    chosen: list[int] = []
    for index, item in enumerate(params):
        if item.idempotency_key is None:
            chosen.append(index)
        else:
            chosen.append(first.setdefault((item.workflow_name, item.idempotency_key), index))
    return chosen


def spread(chosen: Sequence[int], results: Sequence[Item]) -> list[Item]:
    """One result per item, from the results of the representatives (in their order)."""
    position = {first: number for number, first in enumerate(sorted(set(chosen)))}
    return [results[position[first]] for first in chosen]


def chunks(items: Sequence[Item], size: int = RUN_BATCH_CHUNK) -> list[Sequence[Item]]:
    """``items`` cut into consecutive pieces of at most ``size``."""
    return [items[start : start + size] for start in range(0, len(items), size)]
