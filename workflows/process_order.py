"""Order processing: parallel steps and a step that fails once, then succeeds on retry."""

from __future__ import annotations

import asyncio
import random

from pydantic import BaseModel, Field

from openworkflow import RetryPolicy, RunInfo, Step, workflow


class OrderItem(BaseModel):
    sku: str
    quantity: int = Field(gt=0)
    unit_price: float = Field(ge=0)


class Order(BaseModel):
    order_id: str
    items: list[OrderItem]


_charge_attempts: dict[str, int] = {}


def charge_card(order_id: str, amount: float) -> dict[str, object]:
    """Pretend payment gateway that times out on the first try for every order."""
    attempt = _charge_attempts[order_id] = _charge_attempts.get(order_id, 0) + 1
    if attempt == 1:
        raise TimeoutError(f"payment gateway timed out for order {order_id}")
    return {"charge_id": f"ch_{order_id}_{random.randint(1000, 9999)}", "amount": amount}


@workflow(name="process-order", version="v1")
async def process_order(input: Order, step: Step, run: RunInfo) -> dict[str, object]:
    # Reserve every line item in parallel; each branch is memoized on its own.
    reservations = await asyncio.gather(
        *(
            step.run(f"reserve-{item.sku}", lambda item=item: {"sku": item.sku, "ok": True})
            for item in input.items
        )
    )
    total = round(sum(item.quantity * item.unit_price for item in input.items), 2)
    charge = await step.run(
        "charge-card",
        lambda: charge_card(input.order_id, total),
        retry_policy=RetryPolicy(initial_interval="200ms", maximum_attempts=3),
    )
    await step.run("send-receipt", lambda: print(f"receipt for {input.order_id}: {total}"))
    return {"run_id": run.id, "reserved": len(reservations), "charge": charge, "total": total}
