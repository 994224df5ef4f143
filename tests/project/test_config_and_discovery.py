"""``define_config``, finding and loading ``openworkflow.config.py``, precedence, discovery."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from openworkflow import define_config
from openworkflow.config import ConfigError, find_config, load_config
from openworkflow.discovery import discover
from openworkflow.settings import resolve_settings


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OPENWORKFLOW_BACKEND_URL",
        "OPENWORKFLOW_POSTGRES_URL",
        "OPENWORKFLOW_NAMESPACE_ID",
        "OPENWORKFLOW_SCHEMA",
        "OPENWORKFLOW_WORKER_CONCURRENCY",
        "OPENWORKFLOW_WORKER_STEP_CRASH_LIMIT",
        "OPENWORKFLOW_WORKER_LEASE_DURATION",
        "OPENWORKFLOW_WORKER_SHUTDOWN_TIMEOUT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))


WORKFLOW_FILE = """
    from openworkflow import Step, workflow

    @workflow(name="{name}")
    async def flow(step: Step) -> str:
        return "{name}"
"""


def test_define_config_reports_every_bad_field() -> None:
    with pytest.raises(ConfigError) as caught:
        define_config(backend=42, worker={"concurrency": 0, "lease_duration": "soon"})  # type: ignore[arg-type]
    message = str(caught.value)
    assert "backend: " in message and "int" in message
    assert "worker.concurrency:" in message
    assert "worker.lease_duration:" in message
    assert len(caught.value.problems) == 3


def test_the_config_is_found_upward_and_relative_paths_follow_it(tmp_path: Path) -> None:
    write(
        tmp_path / "openworkflow.config.py",
        """
        from openworkflow import define_config
        config = define_config(
            backend="sqlite:///data/ow.db", dirs="flows", worker={"concurrency": 3}
        )
        """,
    )
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    assert find_config(nested) == tmp_path / "openworkflow.config.py"
    settings = resolve_settings(load_config(cwd=nested))
    assert settings.backend == f"sqlite:///{tmp_path / 'data' / 'ow.db'}"
    assert settings.dirs == (tmp_path / "flows",)
    assert settings.concurrency == 3
    assert settings.backend_source == str(tmp_path / "openworkflow.config.py")


def test_precedence_is_flag_then_environment_then_file_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        tmp_path / "openworkflow.config.py",
        """
        from openworkflow import define_config
        config = define_config(backend="sqlite:///file.db", namespace_id="from-file",
                               worker={"concurrency": 2, "step_crash_limit": 4})
        """,
    )
    loaded = load_config(cwd=tmp_path)
    assert resolve_settings(loaded).namespace_id == "from-file"
    assert resolve_settings(loaded).step_crash_limit == 4
    monkeypatch.setenv("OPENWORKFLOW_NAMESPACE_ID", "from-env")
    monkeypatch.setenv("OPENWORKFLOW_WORKER_CONCURRENCY", "5")
    monkeypatch.setenv("OPENWORKFLOW_WORKER_STEP_CRASH_LIMIT", "6")
    monkeypatch.setenv("OPENWORKFLOW_BACKEND_URL", "sqlite:////tmp/env.db")
    settings = resolve_settings(loaded)
    assert (settings.namespace_id, settings.concurrency) == ("from-env", 5)
    assert settings.step_crash_limit == 6
    assert settings.backend == "sqlite:////tmp/env.db"
    assert settings.backend_source == "OPENWORKFLOW_BACKEND_URL"
    flagged = resolve_settings(loaded, namespace_id="from-flag", worker_concurrency=7)
    assert (flagged.namespace_id, flagged.concurrency) == ("from-flag", 7)
    assert resolve_settings(load_config(cwd=tmp_path / "..")).schema == "openworkflow"


def test_postgres_url_from_the_environment_when_the_config_names_no_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENWORKFLOW_POSTGRES_URL", "postgresql://u:pw@db/app")
    write(
        tmp_path / "openworkflow.config.py",
        "from openworkflow import define_config\nconfig = define_config()\n",
    )
    settings = resolve_settings(load_config(cwd=tmp_path))
    assert settings.backend == "postgresql://u:pw@db/app"
    assert settings.backend_source == "OPENWORKFLOW_POSTGRES_URL"


def test_invalid_environment_values_name_their_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENWORKFLOW_WORKER_CONCURRENCY", "lots")
    with pytest.raises(ConfigError, match="OPENWORKFLOW_WORKER_CONCURRENCY"):
        resolve_settings(load_config(cwd=tmp_path))
    with pytest.raises(ConfigError, match="--concurrency"):
        resolve_settings(load_config(cwd=tmp_path), worker_concurrency=0)


def test_config_errors_name_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "openworkflow.config.py", "import os\nraise RuntimeError('nope')\n")
    with pytest.raises(ConfigError) as caught:
        load_config(cwd=tmp_path)
    assert f"{path}:2" in str(caught.value) and "RuntimeError: nope" in str(caught.value)
    write(tmp_path / "openworkflow.config.py", "config = {'backend': 'x'}\n")
    with pytest.raises(ConfigError, match="does not define `config`"):
        load_config(cwd=tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("missing.config.py", cwd=tmp_path)


def test_dotenv_is_loaded_without_overriding_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / ".env", "OPENWORKFLOW_NAMESPACE_ID=from-dotenv\n")
    # Set, then delete: monkeypatch then restores the variable's state from before
    # this test, also over the value load_dotenv writes into os.environ.
    monkeypatch.setenv("OPENWORKFLOW_NAMESPACE_ID", "before")
    monkeypatch.delenv("OPENWORKFLOW_NAMESPACE_ID")
    settings = resolve_settings(load_config(cwd=tmp_path))
    assert settings.namespace_id == "from-dotenv"
    monkeypatch.setenv("OPENWORKFLOW_NAMESPACE_ID", "from-env")
    assert resolve_settings(load_config(cwd=tmp_path)).namespace_id == "from-env"


def test_discovery_loads_by_path_so_a_user_openworkflow_folder_does_not_shadow(
    tmp_path: Path,
) -> None:
    write(tmp_path / "openworkflow" / "hello.py", WORKFLOW_FILE.format(name="hello"))
    write(tmp_path / "openworkflow" / "nested" / "deep.py", WORKFLOW_FILE.format(name="deep"))
    write(tmp_path / "openworkflow" / "hello_test.py", WORKFLOW_FILE.format(name="ignored"))
    write(tmp_path / "openworkflow" / "hello.run.py", WORKFLOW_FILE.format(name="ignored-run"))
    write(tmp_path / "openworkflow" / "skip_me.py", WORKFLOW_FILE.format(name="user-ignored"))
    found = discover(
        [tmp_path / "openworkflow"], ["**/*_test.py", "**/*.run.*", "skip_*"], tmp_path
    )
    assert sorted(w.name for w in found.workflows) == ["deep", "hello"]
    assert found.ok
    import openworkflow

    assert Path(openworkflow.__file__).parent != tmp_path / "openworkflow"


def test_an_import_error_names_file_and_line_and_other_files_still_load(tmp_path: Path) -> None:
    write(tmp_path / "flows" / "good.py", WORKFLOW_FILE.format(name="good"))
    bad = write(tmp_path / "flows" / "bad.py", "x = 1\n\nimport does_not_exist_anywhere\n")
    broken = write(tmp_path / "flows" / "broken.py", "def oops(:\n")
    found = discover([tmp_path / "flows"], [], tmp_path)
    assert [w.name for w in found.workflows] == ["good"]
    problems = {problem.path: problem for problem in found.problems}
    assert problems[bad].line == 3 and "ModuleNotFoundError" in problems[bad].message
    assert problems[broken].line == 1 and "SyntaxError" in problems[broken].message
    assert f"{bad}:3" in str(problems[bad])


def test_duplicates_name_both_places_but_imports_are_not_duplicates(tmp_path: Path) -> None:
    write(tmp_path / "flows" / "one.py", WORKFLOW_FILE.format(name="same"))
    write(tmp_path / "flows" / "two.py", WORKFLOW_FILE.format(name="same"))
    write(tmp_path / "flows" / "child.py", WORKFLOW_FILE.format(name="child"))
    write(
        tmp_path / "flows" / "parent.py",
        """
        from flows.child import flow as child_flow
        from openworkflow import Step, workflow

        @workflow(name="parent")
        async def parent(step: Step) -> str:
            return await step.run_workflow(child_flow)
        """,
    )
    found = discover([tmp_path / "flows"], [], tmp_path)
    assert sorted(w.name for w in found.workflows) == ["child", "parent", "same"]
    (duplicate,) = found.duplicates
    assert "one.py" in str(duplicate) and "two.py" in str(duplicate)


def test_missing_dirs_are_reported(tmp_path: Path) -> None:
    found = discover([tmp_path / "nowhere"], [], tmp_path)
    assert found.missing_dirs == [tmp_path / "nowhere"] and found.files == []


@pytest.mark.parametrize(
    ("text", "milliseconds"),
    [("10", 10_000.0), ("2.5", 2_500.0), ("500ms", 500.0), ("30s", 30_000.0), ("1m", 60_000.0)],
)
def test_a_bare_number_in_a_duration_setting_is_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, milliseconds: float
) -> None:
    from openworkflow.core.duration import parse_duration_ms

    write(tmp_path / "openworkflow.config.py", CONFIG_FILE_FOR_DURATIONS.format(value=text))
    from_file = resolve_settings(load_config(cwd=tmp_path))
    assert parse_duration_ms(from_file.shutdown_timeout) == milliseconds
    monkeypatch.setenv("OPENWORKFLOW_WORKER_LEASE_DURATION", text)
    from_env = resolve_settings(load_config(cwd=tmp_path))
    assert parse_duration_ms(from_env.lease_duration) == milliseconds


def test_a_nonsense_duration_setting_is_refused_with_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "openworkflow.config.py", CONFIG_FILE_FOR_DURATIONS.format(value="30s"))
    monkeypatch.setenv("OPENWORKFLOW_WORKER_LEASE_DURATION", "ten")
    with pytest.raises(ConfigError) as raised:
        resolve_settings(load_config(cwd=tmp_path))
    assert "OPENWORKFLOW_WORKER_LEASE_DURATION" in str(raised.value)


CONFIG_FILE_FOR_DURATIONS = """
from openworkflow import define_config
config = define_config(backend="sqlite:///x.db", worker={{"shutdown_timeout": "{value}"}})
"""
