"""``ow runs cancel|retry`` with filters: count the matching runs, ask, then act on them.

The work is :mod:`openworkflow.bulk` (batches, one short transaction per
run); this module adds the options, the confirmation and the output.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import click

from openworkflow.bulk import (
    ALLOWED_STATUSES,
    BulkAction,
    BulkPlan,
    BulkResult,
    RunFilter,
    action_filter,
    bulk_cancel,
    bulk_retry,
    parse_moment,
    plan_bulk,
)
from openworkflow.cli import common, console, failure
from openworkflow.cli.run import parse_tag_options
from openworkflow.client import OpenWorkflow
from openworkflow.core import clock
from openworkflow.errors import DatabaseNotFoundError, InvalidDurationError
from openworkflow.settings import EffectiveSettings

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_DONE = {"cancel": "canceled", "retry": "retried"}
_ALLOWING = {"cancel": "cancelable", "retry": "failed or canceled"}
_FILTERS = ("statuses", "workflow_name", "tags", "created_before", "created_after")


def _moment_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return parse_moment(value)
    except InvalidDurationError as error:
        raise click.BadParameter(
            f"{error} (give a time such as 2026-01-31T09:00:00Z, or an age such as 2h or 7d)",
            ctx=ctx,
            param=param,
        ) from None


def bulk_options(action: BulkAction) -> Callable[[F], F]:
    """The filter options of ``ow runs cancel|retry`` and ``--yes``."""
    statuses = ALLOWED_STATUSES[action]

    def decorate(fn: F) -> F:
        for option in reversed(
            [
                click.option(
                    "--status",
                    "statuses",
                    multiple=True,
                    type=click.Choice(statuses),
                    help=f"Only runs with this status (repeatable; default: {' '.join(statuses)}).",
                ),
                click.option(
                    "--workflow",
                    "workflow_name",
                    metavar="NAME",
                    help="Only runs of this workflow.",
                ),
                click.option(
                    "--tag",
                    "tags",
                    multiple=True,
                    metavar="KEY=VALUE",
                    callback=parse_tag_options,
                    help="Only runs with this tag (repeatable: runs with every one).",
                ),
                click.option(
                    "--created-before",
                    metavar="TIME|AGE",
                    callback=_moment_option,
                    help="Only runs created before this time, or longer ago than this age (2h).",
                ),
                click.option(
                    "--created-after",
                    metavar="TIME|AGE",
                    callback=_moment_option,
                    help="Only runs created at or after this time, or within this age (2h).",
                ),
                click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation."),
            ]
        ):
            fn = option(fn)
        return fn

    return decorate


def single_run_id(run_id: str | None, options: dict[str, Any]) -> str | None:
    """The run ID to act on alone, or None to act on the runs matching the filter options.

    Raises:
        CliError: both an ID and filters, or neither (exit code 2).
    """
    filtered = any(options.get(name) for name in _FILTERS)
    if run_id is not None and filtered:
        raise failure.usage_error(
            "give either a run ID or filters, not both",
            hint="drop the ID to act on every run matching the filters",
        )
    if run_id is None and not filtered:
        raise failure.usage_error(
            "give a run ID, or filters (--status, --workflow, --tag, --created-before, "
            "--created-after) to act on every matching run"
        )
    return run_id


def run_bulk(action: BulkAction, options: dict[str, Any]) -> None:
    """Count the runs matching the options, confirm, act, and print the counts."""
    run_filter = RunFilter(
        status=tuple(options["statuses"]) or None,
        workflow_name=options["workflow_name"],
        tags=options["tags"] or None,
        created_before=options["created_before"],
        created_after=options["created_after"],
    )
    _, settings = common.load()
    try:
        plan = _on_client(settings, lambda client: plan_bulk(client, action, run_filter))
    except DatabaseNotFoundError as error:
        console.say(str(error).capitalize() + ".", style="yellow")
        plan = BulkPlan(action, 0, run_filter)
    if plan.matched == 0:
        console.say(f"No runs match these filters; nothing to {action}.")
        _report(action, BulkResult(0, 0, 0))
        return
    runs = _runs(plan.matched)
    question = f"{action.capitalize()} {runs} ({describe(action_filter(action, run_filter))})?"
    if not options["yes"] and not click.confirm(question, default=False, err=True):
        raise failure.CliError(f"Nothing was {_DONE[action]}: not confirmed.")
    apply = bulk_cancel if action == "cancel" else bulk_retry
    result = _on_client(settings, lambda client: apply(client, plan.run_filter))
    _report(action, result)


def describe(run_filter: RunFilter) -> str:
    """The filter in words, for the confirmation question."""
    parts = [" or ".join(run_filter.statuses()) or "any status"]
    if run_filter.workflow_name is not None:
        parts.append(f"workflow {run_filter.workflow_name!r}")
    parts.extend(f"tag {key}={value}" for key, value in (run_filter.tags or {}).items())
    if run_filter.created_after is not None:
        parts.append(f"created at or after {_time(run_filter.created_after)}")
    if run_filter.created_before is not None:
        parts.append(f"created before {_time(run_filter.created_before)}")
    return "; ".join(parts)


def _time(moment: datetime) -> str:
    return clock.to_iso(moment)


def _runs(count: int) -> str:
    return f"{count} run" if count == 1 else f"{count} runs"


def _on_client(settings: EffectiveSettings, action: Callable[[OpenWorkflow], Awaitable[T]]) -> T:
    return common.run_async(common.with_client(settings, action, create=False))


def _report(action: BulkAction, result: BulkResult) -> None:
    if console.wants_json():
        console.print_json(
            {"matched": result.matched, _DONE[action]: result.done, "skipped": result.skipped}
        )
        return
    if result.matched == 0:
        return
    skipped = f" ({result.skipped} skipped: no longer {_ALLOWING[action]})"
    done = f"{_DONE[action].capitalize()} {_runs(result.done)}"
    console.out().print(done + (skipped if result.skipped else "") + ".")
