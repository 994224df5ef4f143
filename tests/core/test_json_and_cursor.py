from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel

from openworkflow.core import clock
from openworkflow.core.cursor import decode_cursor, decode_list_cursor, encode_cursor
from openworkflow.core.json import JsonConversionError, dumps, to_json_value


class Model(BaseModel):
    when: datetime
    tags: tuple[str, ...]


@dataclasses.dataclass
class Point:
    x: int


def test_plain_json_models_dataclasses_and_tuples_convert() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert to_json_value({"m": Model(when=when, tags=("a",)), "p": Point(1), "t": (1, 2)}) == {
        "m": {"when": "2026-01-02T03:04:05Z", "tags": ["a"]},
        "p": {"x": 1},
        "t": [1, 2],
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({1, 2}, "type set"),
        (b"x", "type bytes"),
        (float("nan"), "finite"),
        ({1: "a"}, "JSON keys must be str"),
        ({"a": [object()]}, r"\$\.a\[0\]"),
    ],
)
def test_values_json_cannot_hold_are_refused_with_their_place(value: object, message: str) -> None:
    with pytest.raises(JsonConversionError, match=message):
        to_json_value(value)


def test_dumps_is_compact_like_javascript() -> None:
    assert dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'


def test_iso_format_matches_javascript_to_iso_string() -> None:
    value = datetime(2026, 3, 4, 5, 6, 7, 89_000, tzinfo=UTC)
    assert clock.to_iso(value) == "2026-03-04T05:06:07.089Z"
    assert clock.from_iso("2026-03-04T05:06:07.089Z") == value


def test_cursor_round_trip_and_errors() -> None:
    @dataclasses.dataclass
    class Row:
        created_at: datetime
        id: str

    row = Row(datetime(2026, 1, 1, tzinfo=UTC), "abc")
    cursor = decode_cursor(encode_cursor(row))
    assert (cursor.created_at, cursor.id) == (row.created_at, "abc")
    with pytest.raises(ValueError, match="both 'after' and 'before'"):
        decode_list_cursor("a", "b")
    with pytest.raises(ValueError, match="invalid pagination cursor"):
        decode_cursor("not a cursor!")
