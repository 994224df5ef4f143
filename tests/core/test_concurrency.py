"""Concurrency limits that are not SQL: validation, options and key computation."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from openworkflow import Concurrency, declare_workflow, workflow
from openworkflow.core.concurrency import (
    MAX_CONCURRENCY_KEY_CHARS,
    MAX_CONCURRENCY_LIMIT,
    concurrency_columns,
    concurrency_key_of,
    resolve_concurrency,
)
from openworkflow.core.workflow_definition import WorkflowSpec
from openworkflow.errors import InvalidNameError, WorkflowDefinitionError


class Order(BaseModel):
    user: str
    shard: int = 0


# -- Concurrency ---------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 5, MAX_CONCURRENCY_LIMIT])
def test_a_limit_from_1_to_the_32_bit_maximum_is_accepted(limit: int) -> None:
    assert Concurrency(limit).limit == limit
    assert Concurrency(limit).key is None


@pytest.mark.parametrize("limit", [0, -1, MAX_CONCURRENCY_LIMIT + 1])
def test_a_limit_out_of_range_is_a_value_error(limit: int) -> None:
    with pytest.raises(ValueError, match=rf"Concurrency limit must be between 1 and .*got {limit}"):
        Concurrency(limit)


@pytest.mark.parametrize("limit", [True, 1.0, "3", None])
def test_a_limit_that_is_not_an_integer_is_a_type_error(limit: Any) -> None:
    with pytest.raises(TypeError, match="Concurrency limit must be an integer"):
        Concurrency(limit)


@pytest.mark.parametrize("key", ["user", 3, object()])
def test_a_key_that_is_not_callable_is_a_type_error(key: Any) -> None:
    with pytest.raises(TypeError, match=r"Concurrency key must be a callable .* got"):
        Concurrency(1, key=key)


def test_concurrency_is_frozen() -> None:
    limit = Concurrency(2)
    with pytest.raises(AttributeError):
        limit.limit = 3  # type: ignore[misc]


# -- resolve_concurrency -------------------------------------------------------------


def test_resolve_turns_an_integer_into_a_limit_with_one_shared_key() -> None:
    assert resolve_concurrency(4, "concurrency") == Concurrency(limit=4)
    assert resolve_concurrency(None, "concurrency") is None
    given = Concurrency(2, key=str)
    assert resolve_concurrency(given, "concurrency") is given


def test_resolve_names_the_option_in_its_errors() -> None:
    with pytest.raises(ValueError, match=r"^@workflow\(concurrency=...\): Concurrency limit"):
        resolve_concurrency(0, "@workflow(concurrency=...)")
    with pytest.raises(TypeError, match=r"^where must be an integer limit or a Concurrency"):
        resolve_concurrency("5", "where")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got bool"):
        resolve_concurrency(True, "where")


# -- concurrency_key_of --------------------------------------------------------------


def test_no_key_function_means_the_shared_empty_key() -> None:
    assert concurrency_key_of(Concurrency(1), Order(user="ann")) == ""


def test_the_key_function_gets_the_validated_input() -> None:
    seen: list[Any] = []

    def key(order: Order) -> str:
        seen.append(order)
        return order.user

    order = Order(user="ann")
    assert concurrency_key_of(Concurrency(1, key=key), order) == "ann"
    assert seen == [order]


def test_an_integer_key_becomes_its_text() -> None:
    assert (
        concurrency_key_of(Concurrency(1, key=lambda order: order.shard), Order(user="a", shard=7))
        == "7"
    )


def test_a_key_function_returning_none_means_the_shared_key() -> None:
    assert concurrency_key_of(Concurrency(1, key=lambda _: None), Order(user="ann")) == ""


def test_a_long_key_is_cut_to_255_characters() -> None:
    key = concurrency_key_of(Concurrency(1, key=lambda _: "x" * 300 + "y"), None)
    assert key == "x" * MAX_CONCURRENCY_KEY_CHARS


def test_a_key_the_database_cannot_store_is_refused() -> None:
    with pytest.raises(InvalidNameError, match="concurrency key"):
        concurrency_key_of(Concurrency(1, key=lambda _: "a\x00b"), None)


def test_an_exception_from_the_key_function_propagates_unchanged() -> None:
    class Boom(Exception):
        pass

    def key(_: object) -> str:
        raise Boom("no key")

    with pytest.raises(Boom, match="no key"):
        concurrency_key_of(Concurrency(1, key=key), None)


def test_columns_are_both_none_without_a_limit() -> None:
    assert concurrency_columns(None, Order(user="ann")) == (None, None)
    limited = Concurrency(3, key=lambda order: order.user)
    assert concurrency_columns(limited, Order(user="ann")) == ("ann", 3)


# -- @workflow(concurrency=...) and declare_workflow -----------------------------------


def test_workflow_takes_an_integer_or_a_concurrency() -> None:
    @workflow(concurrency=5)
    async def five() -> None:
        return None

    by_user = Concurrency(1, key=lambda order: order.user)

    @workflow(concurrency=by_user)
    async def one_per_user(input: Order) -> None:
        return None

    @workflow
    async def unlimited() -> None:
        return None

    assert five.spec.concurrency == Concurrency(limit=5)
    assert one_per_user.spec.concurrency is by_user
    assert unlimited.spec.concurrency is None


def test_declare_workflow_takes_a_concurrency_too() -> None:
    assert declare_workflow("declared", concurrency=2).concurrency == Concurrency(2)
    assert declare_workflow("declared").concurrency is None


def test_a_bad_limit_fails_at_decoration_naming_the_workflow() -> None:
    with pytest.raises(ValueError, match=r"workflow 'too-few': concurrency: Concurrency limit"):

        @workflow(name="too-few", concurrency=0)
        async def too_few() -> None:
            return None

    with pytest.raises(WorkflowDefinitionError, match=r"workflow 'wrong-type': concurrency must"):

        @workflow(name="wrong-type", concurrency="5")  # type: ignore[call-overload,untyped-decorator]
        async def wrong_type() -> None:
            return None

    with pytest.raises(TypeError, match=r"workflow 'declared': concurrency must"):
        declare_workflow("declared", concurrency=2.5)  # type: ignore[arg-type]


def test_validate_input_value_returns_the_model_and_its_json() -> None:
    spec = WorkflowSpec(name="orders", schema=Order)
    validated, stored = spec.validate_input_value({"user": "ann", "shard": "3"})
    assert validated == Order(user="ann", shard=3)
    assert stored == {"user": "ann", "shard": 3}
    assert spec.validate_input({"user": "ann", "shard": "3"}) == stored
    assert WorkflowSpec(name="plain").validate_input_value([1]) == ([1], [1])
