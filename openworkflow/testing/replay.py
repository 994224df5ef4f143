"""Replay tests: does today's workflow code still replay the runs it recorded?

:func:`replay` re-executes a workflow function against an exported run
history (:mod:`openworkflow.testing.history`) and raises
:class:`~openworkflow.errors.ReplayDivergenceError` naming the first step
where the code no longer matches it, or returns quietly.

How: the history is loaded into a fresh in-memory SQLite database, as a
running run owned by a replay worker, and the worker's own machinery runs
one pass over it (the same step naming, memoization, replay checks and
recorded outputs or errors as in production), with two differences:

- the replay checks are strict
  (:class:`~openworkflow.worker.replay.StrictReplayMonitor`): every recorded
  step counts, a step's kind and child workflow are compared too, and the
  first divergence ends the pass;
- nothing runs past the history: a step that would record a new attempt
  ends the pass before its body runs, and so does any other write the
  engine would make (a due sleep completing, a child or signal wait
  resolving). A recorded run that was still in flight when exported
  therefore replays up to where it was, then stops quietly.

A step body never runs, so a replay has no side effects. ``step.stream``
items are appended to the throwaway database only.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, cast

from openworkflow.core import clock
from openworkflow.core import json as ow_json
from openworkflow.core.backend import Backend, GetWorkflowRunParams
from openworkflow.core.duration import Duration
from openworkflow.core.step_attempt import StepAttempt, StepKind
from openworkflow.core.workflow_definition import Workflow, WorkflowRef, spec_of
from openworkflow.core.workflow_run import NOT_COLUMNS, WorkflowRun, WorkflowRunStatus
from openworkflow.errors import ReplayDivergenceError
from openworkflow.sqlite import SqliteBackend
from openworkflow.testing.history import HistorySource, RunHistory, load_run_history
from openworkflow.worker.attempts import AttemptRecorder
from openworkflow.worker.context import PassContext
from openworkflow.worker.execution import _workflow_arguments, load_step_history
from openworkflow.worker.function_steps import FunctionSteps
from openworkflow.worker.interrupts import (
    ContinueAsNew,
    EngineFault,
    RateLimited,
    StaleBranch,
    StepRetry,
    Suspend,
)
from openworkflow.worker.replay import (
    Divergence,
    ReplayDiverged,
    ReplayEnded,
    StrictReplayMonitor,
)
from openworkflow.worker.step import StepExecutor
from openworkflow.worker.stream_steps import StreamSteps
from openworkflow.worker.wait_steps import WaitSteps

REPLAY_WORKER_ID = "openworkflow-replay"
"""The worker that owns a run while it is replayed (in the replay's own database)."""

_ENDED = (ReplayEnded, Suspend, RateLimited, StepRetry, StaleBranch)
"""How a pass ends when the replay reaches the end of the recorded history."""

# Backend calls a replay may make: reads, and stream appends (not steps, so a
# replay goes on past them; they land in the throwaway database).
_READ_PREFIXES = ("get_", "list_", "count_", "find_")
_ALLOWED = frozenset({"append_run_stream", "stop"})


def replay(workflow: Workflow, history: HistorySource | RunHistory) -> None:
    """Re-execute ``workflow``'s code against a recorded run; raise if it diverges.

    No step body runs: recorded steps return their recorded outputs (or raise
    their recorded errors) as on any replay, and the replay stops quietly
    where the history ends (a run exported while in flight). Sync; it may be
    called from async code (it then runs on a thread of its own).

    Args:
        workflow: The workflow as the code defines it today (its name must be
            the recorded run's; its version is not compared).
        history: An exported history: the parsed JSON document, or the path
            of a file written by ``ow runs export``.

    Raises:
        ReplayDivergenceError: the code diverges from the history; it names
            the first step where it does (see its ``kind``).
        ValueError: the history is not a valid run history, or is a run of
            another workflow.
        Exception: what the workflow code raised, when the recorded run did
            not fail (its step failures replayed, or any error recorded on
            the run, are expected and not raised).
    """
    loaded = load_run_history(history)
    if loaded.run.workflow_name != workflow.name:
        raise ValueError(
            f"{_label(loaded)} is a run of workflow {loaded.run.workflow_name!r}, "
            f"not of {workflow.name!r}"
        )
    _run_sync(_replay(workflow, loaded))


def replay_many(
    workflow: Workflow | Sequence[Workflow],
    histories: HistorySource | Iterable[HistorySource | RunHistory],
) -> int:
    """Replay many histories, for CI; raise one error listing every one that diverges.

    Args:
        workflow: The workflow, or several: each history is replayed by the
            one of its run's workflow name (and version, when several match).
        histories: A folder (every ``*.json`` file in it, by name), a file,
            a parsed document, or a list of any of these.

    Returns:
        How many histories were replayed.

    Raises:
        ReplayDivergenceError: some diverge; the message lists each, and
            ``errors`` holds each one's error, in order.
        ValueError: a history is invalid, no workflow matches one, or a folder
            holds no ``*.json`` file. Every history is read before any replays.
        Exception: what a workflow raised (see :func:`replay`), with a note
            naming the history.
    """
    loaded = [load_run_history(source) for source in _sources(histories)]
    failures: list[ReplayDivergenceError] = []
    for history in loaded:
        try:
            replay(_workflow_for(workflow, history), history)
        except ReplayDivergenceError as error:
            failures.append(error)
        except Exception as error:
            error.add_note(f"while replaying {_label(history)}")
            raise
    if failures:
        raise _many(failures, len(loaded))
    return len(loaded)


# -- one replay --------------------------------------------------------------------------


async def _replay(workflow: Workflow, history: RunHistory) -> None:
    backend = SqliteBackend(":memory:", namespace_id=history.run.namespace_id)
    try:
        run = await _load(backend, history)
        step_history = await load_step_history(backend, run.id, workflow.spec.max_step_attempts)
        monitor = StrictReplayMonitor(
            step_history,
            run,
            finished=_finished(history.run),
            child_workflow_names=history.child_workflow_names_by_step(),
        )
        context = PassContext(
            backend=cast(Backend, _HistoryOnly(backend)), worker_id=REPLAY_WORKER_ID
        )
        recorder = AttemptRecorder(context, run, step_history, monitor)
        step = ReplayStepExecutor(
            monitor=monitor,
            recorder=recorder,
            replay=monitor,
            functions=FunctionSteps(
                context,
                run,
                recorder,
                workflow_input=lambda: workflow.spec.parse_input(run.input),
            ),
            waits=WaitSteps(context, run, recorder, workflow.spec),
            streams=StreamSteps(context, run),
        )
        raised = await _one_pass(workflow, run, step, monitor)
        _verdict(history, monitor, recorder, raised)
    finally:
        await backend.stop()


async def _one_pass(
    workflow: Workflow, run: WorkflowRun, step: StepExecutor, monitor: StrictReplayMonitor
) -> BaseException | None:
    """Call the workflow function once; what it raised (None if it returned)."""
    before = asyncio.all_tasks()
    raised: BaseException | None = None
    try:
        await workflow.fn(**_workflow_arguments(workflow, run, step))
    except asyncio.CancelledError:
        raise
    except BaseException as error:
        raised = error
    monitor.stop()  # parallel branches still going find nothing "first" any more
    # Branches the workflow left running (asyncio.gather does not cancel them).
    leftover = asyncio.all_tasks() - before - {asyncio.current_task()}
    for task in leftover:
        task.cancel()
    await asyncio.gather(*leftover, return_exceptions=True)
    return raised


def _verdict(
    history: RunHistory,
    monitor: StrictReplayMonitor,
    recorder: AttemptRecorder,
    raised: BaseException | None,
) -> None:
    """Raise what the pass found: a divergence, an unexpected error; or nothing."""
    leaves = [] if raised is None else _leaves(raised)
    if monitor.first is not None:
        raise _divergence_error(monitor.first, history) from None
    faults = [leaf for leaf in leaves if isinstance(leaf, EngineFault)]
    if faults:
        raise faults[0].error  # the replay's own database failed
    if any(isinstance(leaf, _ENDED) for leaf in leaves):
        return  # the history ends here
    errors = [leaf for leaf in leaves if not isinstance(leaf, ContinueAsNew | ReplayDiverged)]
    first_error = errors[0] if errors else None
    divergence = monitor.completion()
    if divergence is not None:
        raise _divergence_error(divergence, history) from first_error
    if first_error is None:
        return
    if recorder.failed_step_of(first_error) is not None or history.run.error is not None:
        return  # a recorded step failure, or a run that failed (or is retried) anyway
    raise first_error


def _leaves(error: BaseException) -> list[BaseException]:
    if not isinstance(error, BaseExceptionGroup):
        return [error]
    leaves: list[BaseException] = []
    for item in error.exceptions:
        leaves.extend(_leaves(item))
    return leaves


def _finished(run: WorkflowRun) -> bool:
    """Whether the recorded run ended on its own (so no step may follow its last)."""
    status = WorkflowRunStatus.parse(run.status)
    return status.is_completed or status == WorkflowRunStatus.FAILED


def _divergence_error(divergence: Divergence, history: RunHistory) -> ReplayDivergenceError:
    run = history.run
    return ReplayDivergenceError(
        f"Replay of {_label(history)} diverges at step {divergence.step_name!r} "
        f"({divergence.kind}): {divergence.message}",
        kind=divergence.kind,
        step_name=divergence.step_name,
        workflow_name=run.workflow_name,
        workflow_run_id=run.id,
        source=history.source,
    )


def _label(history: RunHistory) -> str:
    where = f" from {history.source}" if history.source is not None else ""
    return f"run {history.run.id} ({history.run.workflow_name}){where}"


# -- the replay's database -----------------------------------------------------------------

_LEASE = timedelta(days=1)


async def _load(backend: SqliteBackend, history: RunHistory) -> WorkflowRun:
    """Store the history as a running run owned by the replay worker; that run."""
    run = history.run
    run_row = {
        **_columns(run),
        "status": str(WorkflowRunStatus.RUNNING),
        "worker_id": REPLAY_WORKER_ID,
        "available_at": clock.to_iso(clock.now() + _LEASE),
    }
    step_rows = [_columns(attempt) for attempt in history.step_attempts]

    def insert(connection: Any) -> None:
        # Child runs and a parent's step attempt are not in the history.
        connection.execute("PRAGMA foreign_keys = OFF")
        try:
            connection.execute("BEGIN")
            try:
                _insert(connection, "workflow_runs", run_row)
                for row in step_rows:
                    _insert(connection, "step_attempts", row)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        finally:
            connection.execute("PRAGMA foreign_keys = ON")

    # The backend's own connection: an in-memory database has no other.
    await backend._run(insert)
    loaded = await backend.get_workflow_run(GetWorkflowRunParams(workflow_run_id=run.id))
    assert loaded is not None  # just inserted
    return loaded


_JSON_COLUMNS = frozenset({"config", "context", "input", "output", "error"})


def _columns(record: WorkflowRun | StepAttempt) -> dict[str, Any]:
    """A run's or attempt's stored columns, by name (JSON as text, times as ISO)."""
    values: dict[str, Any] = {}
    for item in fields(record):
        if item.name in NOT_COLUMNS:
            continue
        value = getattr(record, item.name)
        if item.name == "config":
            value = ow_json.dumps({} if value is None else value)  # NOT NULL
        elif item.name in _JSON_COLUMNS:
            value = ow_json.dumps_or_none(value)
        elif isinstance(value, datetime):
            value = clock.to_iso(value)
        values[item.name] = value
    return values


def _insert(connection: Any, table: str, row: Mapping[str, Any]) -> None:
    columns = ", ".join(f'"{name}"' for name in row)
    marks = ", ".join(f":{name}" for name in row)
    connection.execute(f'INSERT INTO "{table}" ({columns}) VALUES ({marks})', dict(row))


class _HistoryOnly:
    """The replay's backend: reads pass through; a write means the replay left the history.

    Any write the engine would make (a new step attempt, a sleep or wait
    resolving, a child started) ends the pass with
    :class:`~openworkflow.worker.replay.ReplayEnded` instead.
    """

    def __init__(self, backend: SqliteBackend) -> None:
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._backend, name)
        if not callable(attribute) or name.startswith(_READ_PREFIXES) or name in _ALLOWED:
            return attribute

        async def past_the_history(*_args: Any, **_kwargs: Any) -> NoReturn:
            raise ReplayEnded(f"the recorded history ends here (the engine would {name})")

        return past_the_history


class ReplayStepExecutor(StepExecutor):
    """The ``step`` of a replay: also tells the monitor what kind of step each call is."""

    def __init__(self, *, monitor: StrictReplayMonitor, **parts: Any) -> None:
        super().__init__(**parts)
        self._monitor = monitor
        self._calling: tuple[str, str | None] = (StepKind.FUNCTION, None)

    def _resolve(self, base: str) -> str:
        step_name = super()._resolve(base)
        kind, child = self._calling
        self._calling = (StepKind.FUNCTION, None)
        self._monitor.step_kind(step_name, kind, child)
        return step_name

    def _as(self, kind: str, child: str | None, call: Any) -> Any:
        self._calling = (kind, child)
        try:
            return call()
        finally:
            self._calling = (StepKind.FUNCTION, None)

    def sleep(self, name: str, duration: Duration) -> Any:
        """See :meth:`openworkflow.Step.sleep`."""
        return self._as(StepKind.SLEEP, None, lambda: StepExecutor.sleep(self, name, duration))

    def run_workflow(
        self,
        workflow: WorkflowRef,
        input: Any = None,
        *,
        name: str | None = None,
        timeout: datetime | Duration | None = None,
    ) -> Any:
        """See :meth:`openworkflow.Step.run_workflow`."""
        return self._as(
            StepKind.WORKFLOW,
            spec_of(workflow).name,
            lambda: StepExecutor.run_workflow(self, workflow, input, name=name, timeout=timeout),
        )

    def send_signal(self, signal: str, data: Any = None, *, name: str | None = None) -> Any:
        """See :meth:`openworkflow.Step.send_signal`."""
        return self._as(
            StepKind.SIGNAL_SEND,
            None,
            lambda: StepExecutor.send_signal(self, signal, data, name=name),
        )

    def wait_for_signal(
        self,
        signal: str,
        *,
        name: str | None = None,
        timeout: datetime | Duration | None = None,
        schema: Any = None,
    ) -> Any:
        """See :meth:`openworkflow.Step.wait_for_signal`."""
        return self._as(
            StepKind.SIGNAL_WAIT,
            None,
            lambda: StepExecutor.wait_for_signal(
                self, signal, name=name, timeout=timeout, schema=schema
            ),
        )


# -- running it, and many ------------------------------------------------------------------


def _run_sync(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run the replay to its end, also when called from a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coroutine)
        return
    # This thread's loop is busy running the caller: use a thread of our own.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="openworkflow-replay") as pool:
        pool.submit(asyncio.run, coroutine).result()


def _sources(
    histories: HistorySource | Iterable[HistorySource | RunHistory],
) -> list[HistorySource | RunHistory]:
    if isinstance(histories, Mapping):
        return [histories]
    if isinstance(histories, str | os.PathLike):
        path = Path(histories)
        if not path.is_dir():
            return [path]
        files = sorted(path.glob("*.json"))
        if not files:
            raise ValueError(f"no run history (*.json) in folder {str(path)!r}")
        return list(files)
    return list(histories)


def _workflow_for(workflow: Workflow | Sequence[Workflow], history: RunHistory) -> Workflow:
    if isinstance(workflow, Workflow):
        return workflow
    name, version = history.run.workflow_name, history.run.version
    named = [candidate for candidate in workflow if candidate.name == name]
    exact = [candidate for candidate in named if candidate.version == version]
    if len(exact) == 1:
        return exact[0]
    if len(named) == 1:
        return named[0]
    known = ", ".join(sorted({repr(candidate.name) for candidate in workflow}))
    what = "no workflow" if not named else f"several versions but none {version!r}"
    raise ValueError(f"{_label(history)}: {what} named {name!r} among the workflows ({known})")


def _many(failures: list[ReplayDivergenceError], count: int) -> ReplayDivergenceError:
    lines = [f"{len(failures)} of {count} run histories diverge from today's code:"]
    lines.extend(f"  - {error}" for error in failures)
    first = failures[0]
    return ReplayDivergenceError(
        "\n".join(lines),
        kind=first.kind,
        step_name=first.step_name,
        workflow_name=first.workflow_name,
        workflow_run_id=first.workflow_run_id,
        source=first.source,
        errors=tuple(failures),
    )
