"""Operating a deployment for months: tags, retention and forks, as one protocol base.

Gathered as one base of :class:`~openworkflow.core.backend.Backend`.
"""

from __future__ import annotations

from typing import Protocol

from openworkflow.core.forks import ForkStore
from openworkflow.core.retention import RetentionStore
from openworkflow.core.tags import TagStore


class OperationsStore(TagStore, RetentionStore, ForkStore, Protocol):
    """Tags of runs, pruning of finished runs, forks of runs."""
