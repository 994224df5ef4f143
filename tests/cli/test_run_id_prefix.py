"""``ow runs show|cancel|retry`` take a unique id prefix, as git does."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.helpers import ow, sqlite_project


def _common_prefix(first: str, second: str) -> str:
    length = 0
    while length < min(len(first), len(second)) and first[length] == second[length]:
        length += 1
    return first[:length]


def test_a_unique_prefix_names_the_run_and_an_ambiguous_one_is_refused(tmp_path: Path) -> None:
    project = sqlite_project(tmp_path)
    ids = [ow(project, "run", "hello-world").stdout.strip() for _ in range(2)]
    assert all(len(run_id) == 36 for run_id in ids), ids
    shared = _common_prefix(*ids)
    unique = ids[0][: len(shared) + 1]

    shown = ow(project, "runs", "show", unique, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["run"]["id"] == ids[0]

    if shared:
        ambiguous = ow(project, "runs", "show", shared)
        assert ambiguous.returncode == 1, ambiguous.stderr
        assert "matches several runs" in ambiguous.stderr and "more characters" in ambiguous.stderr

    canceled = ow(project, "runs", "cancel", unique, "--json")
    assert canceled.returncode == 0, canceled.stderr
    assert json.loads(canceled.stdout)["status"] == "canceled"
    retried = ow(project, "runs", "retry", unique.upper(), "--json")
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["id"] == ids[0]

    for missing in ("ffffffff", "not-an-id"):
        result = ow(project, "runs", "show", missing)
        assert result.returncode == 1 and "does not exist" in result.stderr, result.stderr
