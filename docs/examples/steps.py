"""Steps: retries, errors that end a step for good, typed results, timeouts and sleeps."""

from __future__ import annotations

from datetime import timedelta

# --8<-- [start:retries]
from openworkflow import NonRetryableError, RetryPolicy, Step, workflow

calls: dict[str, int] = {}


def charge_card(order_id: str) -> str:
    calls[order_id] = calls.get(order_id, 0) + 1
    if calls[order_id] < 3:
        raise ConnectionError("the payment API timed out")  # retried by the policy
    return f"charge-{order_id}"


def reserve_stock(order_id: str) -> None:
    raise NonRetryableError(f"{order_id} is out of stock")  # fails the step at once


@workflow(name="checkout")
async def checkout(input: str, step: Step) -> dict[str, str]:
    charge = await step.run(
        "charge",
        charge_card,
        input,
        retry_policy=RetryPolicy(initial_interval="1s", maximum_attempts=5),
    )
    try:
        await step.run("reserve", reserve_stock, input)
    except NonRetryableError as error:  # reached only once the step failed for good
        await step.run("refund", lambda: f"refunded {charge}")
        return {"status": "refunded", "reason": str(error)}
    return {"status": "shipped", "charge": charge}


# --8<-- [end:retries]

# --8<-- [start:typed]
from pydantic import BaseModel  # noqa: E402

from openworkflow import step_context  # noqa: E402


class Quote(BaseModel):
    sku: str
    cents: int


def fetch_quote(sku: str) -> Quote:  # the return annotation types the stored JSON
    context = step_context()  # run id, step name, attempt, deadline, cancel_requested
    print(f"{context.step_name} attempt {context.attempt} of run {context.run_id}")
    return Quote(sku=sku, cents=1250)


@workflow(name="price-reminder")
async def price_reminder(input: str, step: Step) -> int:
    # A Quote on the first pass and on every replay.
    quote: Quote = await step.run("quote", fetch_quote, input, timeout="10s")
    await step.sleep("wait-a-week", "7d")  # parks the run; no worker is busy meanwhile
    again: Quote = await step.run("quote-again", fetch_quote, input, timeout="10s")
    return again.cents - quote.cents


# --8<-- [end:typed]


async def example() -> None:
    """Run both workflows in the testing kit: the retries and the week pass at once."""
    from openworkflow.testing import WorkflowEnvironment

    async with WorkflowEnvironment(workflows=[checkout, price_reminder]) as env:
        outcome = await env.run(checkout, "o-1")
        assert outcome == {"status": "refunded", "reason": "o-1 is out of stock"}, outcome
        assert calls["o-1"] == 3
        started = env.now()
        assert await env.run(price_reminder, "sku-9") == 0
        assert env.now() - started >= timedelta(days=7)
