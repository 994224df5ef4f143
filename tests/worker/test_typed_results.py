"""Typed step results: the stored JSON validated back into the body's return annotation (SPEC §12).

The types the step bodies return live at module level: this module uses
``from __future__ import annotations``, so their names are resolved from the
module's globals, as they would be in a user's workflow module. Workflows park
on a durable sleep after the step so the step is also seen on replay.
"""

from __future__ import annotations

import asyncio
import functools
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields, is_dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel
from typing_extensions import TypedDict

from openworkflow import (
    OpenWorkflow,
    RetryPolicy,
    Step,
    workflow,
)
from openworkflow.errors import PayloadError
from tests.worker.helpers import FAST_RETRY, get_run, list_steps, running_worker

ONE_ATTEMPT = RetryPolicy(maximum_attempts=1)
ISSUED = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)


class Invoice(BaseModel):
    number: str
    amount_cents: int
    issued_at: datetime


@dataclass
class Parcel:
    tracking: str
    weight_grams: int


@dataclass
class Delivery:
    parcel: Parcel
    delivered_at: datetime


class Address(TypedDict):
    street: str
    city: str


class Contact(typing.TypedDict, total=False):
    """A ``typing`` TypedDict: pydantic wants ``typing_extensions``' before Python 3.12."""

    name: typing.Required[str]
    address: Address


# -- typed results ------------------------------------------------------------------


def make_invoice() -> Invoice:
    return Invoice(number="INV-1", amount_cents=1250, issued_at=ISSUED)


def make_parcel() -> Parcel:
    return Parcel(tracking="TRK-9", weight_grams=750)


def make_delivery() -> Delivery:
    return Delivery(parcel=make_parcel(), delivered_at=ISSUED)


def make_address() -> Address:
    return {"street": "1 Main St", "city": "Lyon"}


async def list_invoices() -> list[Invoice]:
    return [make_invoice(), Invoice(number="INV-2", amount_cents=99, issued_at=ISSUED)]


def make_contacts() -> list[Contact] | None:
    return [{"name": "Ada"}, {"name": "Grace", "address": make_address()}]


def shipped_at() -> datetime:
    return ISSUED


def coordinates() -> tuple[float, float]:
    return (45.76, 4.84)


@pytest.mark.parametrize(
    "body",
    [
        make_invoice,
        make_parcel,
        make_delivery,
        make_address,
        make_contacts,
        list_invoices,
        shipped_at,
        coordinates,
    ],
    ids=[
        "pydantic",
        "dataclass",
        "dataclass-with-datetime",
        "typeddict",
        "typing-typeddict",
        "list",
        "datetime",
        "tuple",
    ],
)
async def test_a_typed_result_is_the_same_type_on_the_first_pass_and_on_replay(
    backend: Any, body: Callable[[], Any]
) -> None:
    expected = await body() if asyncio.iscoroutinefunction(body) else body()
    seen: list[Any] = []

    @workflow(name="typed-result")
    async def caller(step: Step) -> str:
        value = await step.run("make", body)
        seen.append(value)
        await step.sleep("nap", "10ms")
        return type(value).__name__

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [caller]):
        handle = await ow.run(caller)
        assert await handle.result(timeout="10s") == type(expected).__name__
    assert len(seen) == 2, "the first pass and one replay"
    assert [shape(value) for value in seen] == [shape(expected)] * 2
    assert seen == [expected, expected]


def shape(value: Any) -> Any:
    """The types in ``value``, nested ones included (equality alone would not tell)."""
    if isinstance(value, BaseModel):
        return type(value), {key: shape(item) for key, item in value}
    if is_dataclass(value):
        return type(value), {
            field.name: shape(getattr(value, field.name)) for field in fields(value)
        }
    if isinstance(value, dict):
        return dict, {key: shape(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value), [shape(item) for item in value]
    if isinstance(value, datetime):
        return datetime, value.utcoffset()
    return type(value)


async def invoice_for(number: str, amount_cents: int) -> Invoice:
    return Invoice(number=number, amount_cents=amount_cents, issued_at=ISSUED)


class Billing:
    def __init__(self, number: str) -> None:
        self.number = number

    def invoice(self) -> Invoice:
        return Invoice(number=self.number, amount_cents=700, issued_at=ISSUED)

    async def invoice_later(self) -> Invoice:
        await asyncio.sleep(0)
        return self.invoice()


class Invoicer:
    """A callable object whose async ``__call__`` is annotated."""

    async def __call__(self, number: str) -> Invoice:
        return Invoice(number=number, amount_cents=700, issued_at=ISSUED)


CALL_FORMS: dict[str, Callable[[Step], Awaitable[Any]]] = {
    "args": lambda step: step.run("invoice", invoice_for, "INV-7", 700),
    "partial": lambda step: step.run("invoice", functools.partial(invoice_for, "INV-7"), 700),
    "bound-method": lambda step: step.run("invoice", Billing("INV-7").invoice),
    "async-bound-method": lambda step: step.run("invoice", Billing("INV-7").invoice_later),
    "async-callable-object": lambda step: step.run("invoice", Invoicer(), "INV-7"),
}


@pytest.mark.parametrize("form", list(CALL_FORMS))
async def test_every_kind_of_callable_gets_its_annotated_type(backend: Any, form: str) -> None:
    seen: list[Any] = []

    @workflow(name="callable-forms")
    async def caller(step: Step) -> None:
        seen.append(await CALL_FORMS[form](step))
        await step.sleep("nap", "10ms")

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [caller]):
        handle = await ow.run(caller)
        await handle.result(timeout="10s")
    expected = Invoice(number="INV-7", amount_cents=700, issued_at=ISSUED)
    assert [(type(value), value) for value in seen] == [(Invoice, expected)] * 2


def untyped_invoice():  # type: ignore[no-untyped-def]  # deliberately unannotated
    return make_invoice()


def any_invoice() -> Any:
    return make_invoice()


@pytest.mark.parametrize(
    "body",
    [lambda: make_invoice(), untyped_invoice, any_invoice],
    ids=["lambda", "no-annotation", "annotated-any"],
)
async def test_without_a_usable_annotation_the_result_is_plain_json(
    backend: Any, body: Callable[[], Any]
) -> None:
    seen: list[Any] = []

    @workflow(name="plain-result")
    async def caller(step: Step) -> None:
        seen.append(await step.run("make", body))
        await step.sleep("nap", "10ms")

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [caller]):
        handle = await ow.run(caller)
        await handle.result(timeout="10s")
    plain = {"number": "INV-1", "amount_cents": 1250, "issued_at": "2026-03-14T09:26:53Z"}
    assert seen == [plain, plain]


@pytest.mark.parametrize("speed", ["quick", "slow"])
async def test_a_result_not_matching_its_annotation_fails_for_good(
    backend: Any, speed: str
) -> None:
    calls: list[int] = []
    seen: list[tuple[str, str]] = []

    async def half_an_invoice() -> Invoice:
        calls.append(1)
        if speed == "slow":  # past the one-write fast path: the running attempt is failed
            await asyncio.sleep(0.1)
        return {"number": "INV-1"}  # type: ignore[return-value]  # the bug under test

    @workflow(name="mismatch")
    async def caller(step: Step) -> int:
        try:
            await step.run("make", half_an_invoice, retry_policy=FAST_RETRY)
        except PayloadError as error:
            seen.append((type(error).__name__, str(error)))
        await step.sleep("nap", "10ms")
        return len(seen)

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [caller]):
        handle = await ow.run(caller)
        assert await handle.result(timeout="10s") == 2
    assert len(calls) == 1, "not retried"
    assert seen[0] == seen[1], "the same error on the first pass and on replay"
    assert seen[0][0] == "PayloadError"
    assert "does not match the return annotation" in seen[0][1]
    made = [a for a in await list_steps(backend, handle.id) if a.step_name == "make"]
    assert [a.status for a in made] == ["failed"]


def decline_card() -> typing.NoReturn:
    raise ValueError("card declined")


async def test_a_body_annotated_never_returning_fails_with_its_own_error(backend: Any) -> None:
    @workflow(name="never-returns")
    async def caller(step: Step) -> str:
        try:
            await step.run("charge", decline_card, retry_policy=ONE_ATTEMPT)
        except ValueError as error:
            return str(error)
        return "charged"

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [caller]):
        handle = await ow.run(caller)
        assert await handle.result(timeout="10s") == "card declined"


async def test_an_unresolvable_annotation_is_a_clear_type_error(backend: Any) -> None:
    calls: list[int] = []

    class Receipt(BaseModel):  # local: its name cannot be resolved from the module
        total: int

    def make_receipt() -> Receipt:
        calls.append(1)
        return Receipt(total=1)

    @workflow(name="unresolvable")
    async def caller(step: Step) -> None:
        await step.run("make", make_receipt)

    ow = OpenWorkflow(backend)
    async with running_worker(backend, [caller]):
        handle = await ow.run(caller)
        with pytest.raises(Exception, match="cannot be resolved"):
            await handle.result(timeout="10s")
    run = await get_run(backend, handle.id)
    assert run.error is not None and run.error["name"] == "TypeError"
    assert "'Receipt'" in run.error["message"]
    assert calls == []
