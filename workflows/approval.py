"""An expense approval: wait (durably, up to a deadline) for a human's decision.

The run parks on ``step.wait_for_signal`` and frees its worker slot. Any
process sends the decision with ``ow.send_signal("expense-approval:<id>",
{"approved": True, "by": "ana"})``; without an answer before the timeout the
wait returns ``None`` and the expense is escalated.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from openworkflow import Step, workflow


class Expense(BaseModel):
    """What is being approved."""

    expense_id: str
    amount_cents: int


class Decision(BaseModel):
    """The approver's answer, carried by the signal."""

    approved: bool
    by: str


def approval_signal(expense_id: str) -> str:
    """The signal an approver sends for one expense."""
    return f"expense-approval:{expense_id}"


@workflow(name="approve-expense")
async def approve_expense(input: Expense, step: Step) -> dict[str, Any]:
    """Ask for approval, wait up to three days, then book or escalate."""
    await step.run("notify-approver", lambda: {"notified": input.expense_id})
    answer = await step.wait_for_signal(
        approval_signal(input.expense_id), name="decision", timeout="3d", schema=Decision
    )
    if answer is None:
        return {"expense_id": input.expense_id, "status": "escalated"}
    decision: Decision = answer["data"]
    status = "booked" if decision.approved else "rejected"
    await step.run("record-decision", lambda: {"status": status, "by": decision.by})
    return {"expense_id": input.expense_id, "status": status, "by": decision.by}
