"""Record ids: time-ordered UUIDv7 strings, unique, in creation order."""

from __future__ import annotations

import uuid

from openworkflow.core.ids import new_id


def test_ids_are_version_7_uuids_in_creation_order() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    for value in ids[:50]:
        parsed = uuid.UUID(value)
        assert len(value) == 36 and str(parsed) == value
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
