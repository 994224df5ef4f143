"""Runs of workflows this worker has no definition for: rescheduled with a backoff."""

from __future__ import annotations

import logging

from openworkflow.core.backend import Backend, FailWorkflowRunParams
from openworkflow.core.registry import WorkflowRegistry, describe
from openworkflow.core.retry import MISSING_DEFINITION_RETRY_POLICY
from openworkflow.core.workflow_run import WorkflowRun

logger = logging.getLogger("openworkflow.worker")


class UnregisteredRuns:
    """Reschedules runs of unknown (name, version)s, warning once for each."""

    def __init__(self, backend: Backend, registry: WorkflowRegistry) -> None:
        self._backend = backend
        self._registry = registry
        # (name, version) of unknown workflows already warned about: once each, not per run.
        self._warned: set[tuple[str, str | None]] = set()

    async def reschedule(self, worker_id: str, run: WorkflowRun) -> WorkflowRun:
        """Fail the pass under the missing-definition retry policy; the run as written."""
        message = f"Workflow {describe(run.workflow_name, run.version)} is not registered"
        self._log(message, run)
        return await self._backend.fail_workflow_run(
            FailWorkflowRunParams(
                workflow_run_id=run.id,
                worker_id=worker_id,
                error={"message": message},
                retry_policy=MISSING_DEFINITION_RETRY_POLICY,
                attempts=run.attempts,
                deadline_at=run.deadline_at,
                claim_attempt=run.attempts,
            )
        )

    def _log(self, message: str, run: WorkflowRun) -> None:
        """Warn once per unknown (name, version), with a hint; later runs only at debug level."""
        key = (run.workflow_name, run.version)
        if key in self._warned:
            logger.debug("%s on this worker; rescheduling run %s", message, run.id)
            return
        self._warned.add(key)
        known = ", ".join(describe(item.name, item.version) for item in self._registry) or "none"
        logger.warning(
            "%s on this worker; rescheduling run %s and any later run of it (backing off up "
            "to 5 min each) without saying so again. This worker has: %s. If it should run "
            "here, check that its file is in the worker's workflow folders (`dirs` in "
            "openworkflow.config.py, or the config given with --config) and that the name "
            "and version match; otherwise a worker of another service has to run it.",
            message,
            run.id,
            known,
        )
