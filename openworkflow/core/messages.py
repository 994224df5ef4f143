"""Messages to one run (``ow.signal``): the backend params, results and protocol.

Unlike the original's broadcast signals (delivered only to the waits running
at the time of the send, and lost otherwise), a message is addressed to one
run and kept until that run's ``wait_for_signal`` of the same name consumes
it: messages of one (run, name) are consumed oldest first, each by exactly one
wait step attempt. This port's own storage (``run_messages``): a TypeScript
worker sharing the database never reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from openworkflow.core.json import JsonValue
from openworkflow.errors import InvalidRunStateError, WorkflowRunNotFoundError

FINISHED_STATUSES = frozenset({"completed", "succeeded", "failed", "canceled"})
"""Statuses of a run that can no longer consume a message (``succeeded`` is the legacy name)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SendRunMessageParams:
    """Input of :meth:`MessageStore.send_run_message`."""

    workflow_run_id: str
    signal: str
    data: JsonValue = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TakeRunMessageParams:
    """Input of :meth:`MessageStore.take_run_message` (fenced by ``worker_id``)."""

    workflow_run_id: str
    worker_id: str
    signal: str
    step_attempt_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TakenMessage:
    """What a wait took: ``found`` False when no message was there (``data`` may be None)."""

    found: bool
    data: JsonValue = None


NOT_TAKEN = TakenMessage(found=False)


def check_message_target(workflow_run_id: str, status: str | None) -> None:
    """Raise unless a run of ``status`` (None: missing) can still receive a message."""
    if status is None:
        raise WorkflowRunNotFoundError(workflow_run_id)
    if status in FINISHED_STATUSES:
        raise InvalidRunStateError(
            f"Cannot signal workflow run {workflow_run_id}: it is {status}"
            " (only a run that has not finished can receive a signal)"
        )


class MessageStore(Protocol):
    """Storage of messages to one run, part of every :class:`~openworkflow.core.backend.Backend`."""

    async def send_run_message(self, params: SendRunMessageParams) -> None:
        """Keep a message for one run, and wake the run if it is parked waiting on its name.

        A repeated ``idempotency_key`` (same run, same name) stores nothing.

        Raises:
            WorkflowRunNotFoundError: no such run in the namespace.
            InvalidRunStateError: the run has finished (completed, failed, canceled).
        """
        ...

    async def take_run_message(self, params: TakeRunMessageParams) -> TakenMessage:
        """Fenced: the message this wait attempt consumed, else consume the oldest one.

        The attempt id binds the message, so a pass that crashed after taking it
        gets the same message back and never consumes a second one.

        Raises:
            WriteConflictError: the run is not running and owned by ``worker_id``.
        """
        ...
