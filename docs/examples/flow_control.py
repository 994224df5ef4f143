"""Flow control: concurrency and rate limits, priorities, deadlines, idempotency, bulk starts."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

# --8<-- [start:limits]
from openworkflow import Concurrency, RateLimit, Step, workflow


class Order(BaseModel):
    order_id: str
    customer_id: str


def fetch_profile(customer_id: str) -> dict[str, str]:
    return {"customer": customer_id, "tier": "gold"}


@workflow(
    name="process-customer-order",
    # one run per customer at a time, across every worker on the database
    concurrency=Concurrency(1, key=lambda order: order.customer_id),
)
async def process_customer_order(input: Order, step: Step) -> str:
    profile = await step.run(
        "fetch-profile",
        fetch_profile,
        input.customer_id,
        # the CRM allows 100 calls a minute: stay under it, across all runs and workers
        rate_limit=RateLimit(95, per="1m", name="crm"),
    )
    return f"{input.order_id} for a {profile['tier']} customer"


# --8<-- [end:limits]


async def example() -> None:
    """Start runs with a priority, a deadline and an idempotency key, then many at once."""
    from openworkflow.testing import WorkflowEnvironment

    async with WorkflowEnvironment(workflows=[process_customer_order]) as env:
        ow = env.client
        # --8<-- [start:options]
        order = {"order_id": "o-1", "customer_id": "c-1"}
        first = await ow.run(
            process_customer_order,
            order,
            idempotency_key="order:o-1",  # a second run() with this key returns this run
            priority=10,  # claimed before waiting runs of lower priority
            deadline_at="1h",  # failed if it has not finished within the hour
            tags={"customer": "c-1"},
        )
        again = await ow.run(process_customer_order, order, idempotency_key="order:o-1")
        assert again.id == first.id
        # --8<-- [end:options]
        assert await env.result(first) == "o-1 for a gold customer"
        runs = await ow.list_runs(tags={"customer": "c-1"})
        assert [run.id for run in runs.data] == [first.id]
        await bulk_start(ow, first.id)


async def bulk_start(ow: Any, first_id: str) -> None:
    """Start many runs with one call."""
    # --8<-- [start:run_many]
    from openworkflow import RunRequest

    orders = [{"order_id": f"o-{n}", "customer_id": f"c-{n}"} for n in range(2, 5)]
    handles = await ow.run_many(
        process_customer_order,
        [
            *orders,  # an input: the run takes the options of the call
            RunRequest(  # or a request with its own options
                input={"order_id": "o-1", "customer_id": "c-1"},
                idempotency_key="order:o-1",  # o-1 was started above: its run comes back
                priority=10,
            ),
        ],
        tags={"batch": "nightly"},  # options for every item (a request's own win)
    )
    assert len(handles) == 4  # one handle per item, in order; all written, or none
    # --8<-- [end:run_many]
    assert handles[3].id == first_id
