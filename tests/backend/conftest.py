"""Backend conformance suite: let pytest rewrite the asserts inside the shared helpers."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("tests.backend.helpers")
