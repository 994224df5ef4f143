"""The client side of signals: checking a signal's name, key and data, and sending to one run.

Shared by :meth:`OpenWorkflow.send_signal` (the original's broadcast) and
:meth:`OpenWorkflow.signal` (a message kept for one run until its
``wait_for_signal`` consumes it), so both refuse the same arguments alike.
"""

from __future__ import annotations

from typing import Any

from openworkflow.core.json import JsonConversionError, JsonValue, check_name
from openworkflow.core.messages import MessageStore, SendRunMessageParams
from openworkflow.errors import PayloadError
from openworkflow.payload import to_stored_json


def checked_signal_data(signal: str, data: Any, idempotency_key: str | None) -> JsonValue:
    """``data`` as stored JSON, once the signal's name and idempotency key are checked.

    Raises:
        TypeError: the name is not a non-empty string, or the key not a string.
        InvalidNameError: the signal or key cannot be stored.
        PayloadError: ``data`` cannot be stored as JSON, or is over the size limit.
    """
    if not isinstance(signal, str) or not signal:
        raise TypeError(f"signal must be a non-empty string, got {signal!r}")
    check_name(signal, "signal")
    if idempotency_key is not None:
        if not isinstance(idempotency_key, str):
            raise TypeError(f"idempotency_key must be a string, got {type(idempotency_key)!r}")
        check_name(idempotency_key, "idempotency_key", allow_empty=True)
    try:
        return to_stored_json(data, f"data of signal {signal[:40]!r}")
    except JsonConversionError as error:
        raise PayloadError(f"signal {signal!r} data cannot be stored as JSON: {error}") from None


async def send_run_message(
    store: MessageStore, run_id: str, signal: str, data: Any, idempotency_key: str | None
) -> None:
    """Check the arguments, then keep the message for run ``run_id`` (``OpenWorkflow.signal``)."""
    if not isinstance(run_id, str) or not run_id:
        raise TypeError(f"run_id must be a non-empty string, got {run_id!r}")
    payload = checked_signal_data(signal, data, idempotency_key)
    await store.send_run_message(
        SendRunMessageParams(
            workflow_run_id=run_id, signal=signal, data=payload, idempotency_key=idempotency_key
        )
    )
