"""Retention settings: ``define_config(retention={...})`` and ``OPENWORKFLOW_RETENTION``.

Ages are validated where they are given, each problem naming the status and
where it came from; the environment replaces the file's policy as a whole.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from openworkflow import define_config
from openworkflow.config import ConfigError, LoadedConfig
from openworkflow.core.retention import parse_retention
from openworkflow.retention import retention_cutoffs
from openworkflow.settings import resolve_settings


def _loaded(tmp_path: Path, **config: object) -> LoadedConfig:
    return LoadedConfig(path=tmp_path / "openworkflow.config.py", config=define_config(**config))


def test_a_policy_is_kept_as_given_and_parsed_to_ages() -> None:
    policy = {"completed": "7d", "failed": 30 * 86400, "canceled": timedelta(hours=12)}
    config = define_config(retention=policy)
    assert config.retention == policy
    assert parse_retention(config.retention) == {
        "completed": timedelta(days=7),
        "failed": timedelta(days=30),
        "canceled": timedelta(hours=12),
    }
    assert define_config().retention == {}
    # None keeps a status forever; a bare number string is seconds, as in every setting.
    assert parse_retention({"completed": None, "failed": "60"}) == {"failed": timedelta(minutes=1)}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"running": "1d"}, "cannot prune runs with status 'running'"),
        ({"pending": "1d"}, "only finished runs"),
        ({"completed": "soon"}, "completed: invalid duration"),
        ({"failed": "0s"}, "failed: the age must be positive"),
        ({"canceled": -5}, "canceled: the age must be positive"),
        ({"completed": True}, "completed"),
    ],
)
def test_define_config_rejects_a_bad_policy(policy: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        define_config(retention=policy)  # type: ignore[arg-type]
    assert any(
        problem.startswith("retention") and expected in problem for problem in raised.value.problems
    ), raised.value.problems


def test_settings_take_the_file_policy_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENWORKFLOW_RETENTION", raising=False)
    loaded = _loaded(tmp_path, retention={"completed": "7d"})
    assert resolve_settings(loaded).retention == {"completed": "7d"}

    monkeypatch.setenv("OPENWORKFLOW_RETENTION", '{"failed": "30d", "canceled": "1d"}')
    assert resolve_settings(loaded).retention == {"failed": "30d", "canceled": "1d"}

    monkeypatch.setenv("OPENWORKFLOW_RETENTION", "{}")  # pruning off, whatever the file says
    assert resolve_settings(loaded).retention == {}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7d", "must be a JSON object"),
        ("[1]", "must be a JSON object"),
        ('{"running": "1d"}', "only finished runs"),
        ('{"completed": "a week"}', "completed: invalid duration"),
    ],
)
def test_a_bad_environment_policy_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    monkeypatch.setenv("OPENWORKFLOW_RETENTION", value)
    with pytest.raises(ConfigError) as raised:
        resolve_settings(_loaded(tmp_path))
    (problem,) = raised.value.problems
    assert problem.startswith("OPENWORKFLOW_RETENTION:")
    assert expected in problem


def test_cutoffs_per_status() -> None:
    from datetime import UTC, datetime

    base = datetime(2026, 1, 31, tzinfo=UTC)
    assert retention_cutoffs({"completed": "1d", "failed": None}, now=base) == {
        "completed": datetime(2026, 1, 30, tzinfo=UTC)
    }
    assert retention_cutoffs("2d", ["failed"], now=base) == {
        "failed": datetime(2026, 1, 29, tzinfo=UTC)
    }
    assert retention_cutoffs({"completed": "1d", "failed": "2d"}, ["failed"], now=base) == {
        "failed": datetime(2026, 1, 29, tzinfo=UTC)
    }
    with pytest.raises(ValueError, match="running"):
        retention_cutoffs("1d", ["running"], now=base)
