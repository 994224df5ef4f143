"""What a run exchanges with its callers besides input and output: the storage protocols.

Messages to one run (``ow.signal``), its events (``step.set_event``) and its
streams (``step.stream``), and runs created in batches (``ow.run_many``),
gathered as one base of
:class:`~openworkflow.core.backend.Backend`.
"""

from __future__ import annotations

from typing import Protocol

from openworkflow.core.events import EventStore
from openworkflow.core.messages import MessageStore
from openworkflow.core.run_batch import RunBatchStore
from openworkflow.core.streams import StreamStore


class RunDataStore(MessageStore, EventStore, StreamStore, RunBatchStore, Protocol):
    """Messages to, events of and streams of one run; runs created in batches."""
