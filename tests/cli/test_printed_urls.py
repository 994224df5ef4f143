"""A database URL that ``ow`` prints can be pasted back into ``OPENWORKFLOW_BACKEND_URL``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from openworkflow.redaction import redact_url
from tests.cli.helpers import clean_env, ow, sqlite_project


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////tmp/abs/backend.db",
        "sqlite:///relative/backend.db",
        "sqlite:///:memory:",
        "postgresql://app@db:5432/app?schema=ow",
    ],
)
def test_printing_a_url_without_secrets_leaves_it_as_it_was(url: str) -> None:
    assert redact_url(url) == url


def test_the_sqlite_url_doctor_prints_round_trips(tmp_path: Path) -> None:
    project = sqlite_project(tmp_path)
    first = ow(project, "doctor")
    assert first.returncode == 0, first.stdout + first.stderr
    (printed,) = re.findall(r"sqlite:\S+", first.stdout)
    assert printed == f"sqlite:///{project / 'openworkflow' / 'backend.db'}"
    again = ow(project, "doctor", env=clean_env(OPENWORKFLOW_BACKEND_URL=printed))
    assert again.returncode == 0, again.stdout + again.stderr
    assert printed in again.stdout
