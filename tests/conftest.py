"""Shared fixtures: one ``backend`` fixture parametrized over every backend."""

from __future__ import annotations

pytest_plugins = ["tests.fixtures.backends", "tests.fixtures.clock", "tests.faults.parallel"]
