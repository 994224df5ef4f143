"""``ow init``: the files it writes, and that it never overwrites without asking."""

from __future__ import annotations

from pathlib import Path

from tests.cli.helpers import ow, write


def test_init_yes_creates_the_project_and_a_rerun_skips_existing_files(tmp_path: Path) -> None:
    first = ow(tmp_path, "init", "--yes")
    assert first.returncode == 0, first.stderr
    config = (tmp_path / "openworkflow.config.py").read_text()
    assert 'backend="sqlite:///openworkflow/backend.db"' in config
    assert "define_config(" in config
    hello = (tmp_path / "openworkflow" / "hello_world.py").read_text()
    assert '@workflow(name="hello-world")' in hello
    assert 'step.run("greet"' in hello and 'step.sleep("pause", "1s")' in hello
    gitignore = (tmp_path / ".gitignore").read_text().splitlines()
    assert "openworkflow/backend.db*" in gitignore and ".env" in gitignore
    env = (tmp_path / ".env").read_text()  # every setting there, commented out
    assert all(line.startswith("#") for line in env.splitlines() if line)
    for key in ("BACKEND_URL", "WORKER_CONCURRENCY", "WORKER_LEASE_DURATION", "NAMESPACE_ID"):
        assert f"# OPENWORKFLOW_{key}=" in env
    assert "created" in first.stdout and ".env" in first.stdout
    for step in ("ow worker start", "ow run hello-world --wait", "ow dev"):
        assert step in first.stdout

    (tmp_path / "openworkflow" / "hello_world.py").write_text("# mine\n")
    second = ow(tmp_path, "init", "--yes", "--backend", "postgres")
    assert second.returncode == 0, second.stderr
    assert "skipped" in second.stdout and "openworkflow.config.py" in second.stdout
    assert (tmp_path / "openworkflow" / "hello_world.py").read_text() == "# mine\n"
    assert 'backend="sqlite' in (tmp_path / "openworkflow.config.py").read_text()
    # Appending files are completed, never duplicated.
    assert (tmp_path / ".gitignore").read_text().count("openworkflow/backend.db*") == 1
    env = (tmp_path / ".env").read_text()
    assert "OPENWORKFLOW_POSTGRES_URL=postgresql://user:password@localhost:5432/openworkflow" in env


def test_init_postgres_and_both_write_the_env_file_once(tmp_path: Path) -> None:
    postgres = tmp_path / "pg"
    postgres.mkdir()
    write(postgres / ".env", "OPENWORKFLOW_POSTGRES_URL=postgresql://me@db/app\nOTHER=1")
    write(postgres / ".gitignore", "node_modules/\n.env\n")
    result = ow(postgres, "init", "--yes", "--backend", "postgres")
    assert result.returncode == 0, result.stderr
    assert "backend=" not in (postgres / "openworkflow.config.py").read_text()
    assert (postgres / ".env").read_text() == (
        "OPENWORKFLOW_POSTGRES_URL=postgresql://me@db/app\nOTHER=1"
    )
    gitignore = (postgres / ".gitignore").read_text()
    assert gitignore.startswith("node_modules/\n.env\n") and gitignore.count(".env") == 1
    assert "openworkflow/backend.db*" in gitignore

    both = tmp_path / "both"
    both.mkdir()
    result = ow(both, "init", "--yes", "--backend", "both", "--force")
    assert result.returncode == 0, result.stderr
    assert (
        'backend="sqlite:///openworkflow/backend.db"'
        in (both / "openworkflow.config.py").read_text()
    )
    env = (both / ".env").read_text()
    assert "OPENWORKFLOW_BACKEND_URL" in env and "overrides" in env
    assert all(line.startswith("#") for line in env.splitlines() if line)


def test_init_asks_before_overwriting(tmp_path: Path) -> None:
    write(tmp_path / "openworkflow.config.py", "# my config\n")
    # Backend choice, then: overwrite the config? no.
    result = ow(tmp_path, "init", input="sqlite\nn\n")
    assert result.returncode == 0, result.stderr
    assert "Overwrite it?" in result.stdout
    assert (tmp_path / "openworkflow.config.py").read_text() == "# my config\n"
    assert (tmp_path / "openworkflow" / "hello_world.py").exists()

    forced = ow(tmp_path, "init", "--yes", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "define_config(" in (tmp_path / "openworkflow.config.py").read_text()
