"""``openworkflow.config.py``: what the CLI and ``ow dev`` run, and how it is found.

A project describes itself once::

    from openworkflow import define_config

    config = define_config(
        backend="sqlite:///openworkflow/backend.db",
        dirs=["./openworkflow"],
        worker={"concurrency": 10},
    )

:func:`find_config` searches upward from the working directory;
:func:`load_config` loads ``.env`` first, runs the file under a private module
name (with its folder importable), and returns a :class:`LoadedConfig`.
Effective values follow one precedence: CLI flag > environment
(``OPENWORKFLOW_*``) > config file > default (:func:`resolve_settings`).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dotenv import load_dotenv
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from openworkflow.core.backend import Backend
from openworkflow.core.duration import parse_duration_ms
from openworkflow.errors import OpenWorkflowError

CONFIG_FILE_NAME = "openworkflow.config.py"
DEFAULT_DIRS = ("./openworkflow",)
DEFAULT_SQLITE_URL = "sqlite:///openworkflow/backend.db"
DEFAULT_IGNORE_PATTERNS = ("**/*_test.py", "**/test_*.py", "**/__pycache__/**", "**/*.run.*")


class ConfigError(OpenWorkflowError, ValueError):
    """A configuration that cannot be used; ``problems`` lists each field and its source."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        details = "".join(f"\n  - {problem}" for problem in problems)
        super().__init__(message + details)
        self.problems = list(problems)


class WorkerOptions(BaseModel):
    """Worker settings of a config (``worker={...}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency: int = Field(default=1, ge=1, le=10_000)
    lease_duration: str | float = "30s"
    shutdown_timeout: str | float = "30s"

    @field_validator("lease_duration", "shutdown_timeout")
    @classmethod
    def _duration(cls, value: str | float) -> str | float:
        parse_duration_ms(value)  # raises InvalidDurationError (a ValueError) on nonsense
        return value


class Config(BaseModel):
    """A validated project configuration (built by :func:`define_config`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    backend: str | Any | None = None
    dirs: tuple[str, ...] = DEFAULT_DIRS
    ignore_patterns: tuple[str, ...] = ()
    namespace_id: str | None = Field(default=None, min_length=1)
    schema_name: str | None = Field(default=None, min_length=1)
    worker: WorkerOptions = WorkerOptions()

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: object) -> object:
        if value is None or isinstance(value, (str, Backend)):
            return value
        raise ValueError(f"expected a database URL or a backend object, got {type(value).__name__}")

    @field_validator("dirs", "ignore_patterns", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, str | Path) else value


def define_config(
    *,
    backend: str | Backend | None = None,
    dirs: str | Sequence[str] = DEFAULT_DIRS,
    ignore_patterns: Sequence[str] = (),
    worker: Mapping[str, Any] | WorkerOptions | None = None,
    namespace_id: str | None = None,
    schema: str | None = None,
) -> Config:
    """Describe a project: its backend, where workflows live, and worker settings.

    Args:
        backend: A database URL, a backend object, or None to take it from the
            environment (``OPENWORKFLOW_BACKEND_URL`` / ``OPENWORKFLOW_POSTGRES_URL``),
            else SQLite at ``openworkflow/backend.db`` next to the config.
        dirs: Folders (relative to the config file) scanned for workflow files.
        ignore_patterns: Globs to skip, in addition to the defaults (tests, ``*.run.*``).
        worker: ``{"concurrency": N, "lease_duration": "30s", "shutdown_timeout": "30s"}``.
        namespace_id: The namespace (default ``"default"``).
        schema: The PostgreSQL schema (default ``"openworkflow"``).

    Raises:
        ConfigError: a value is invalid; every problem is listed with its field.
    """
    try:
        return Config(
            backend=backend,
            dirs=dirs,  # type: ignore[arg-type]
            ignore_patterns=ignore_patterns,  # type: ignore[arg-type]
            worker=worker if worker is not None else WorkerOptions(),  # type: ignore[arg-type]
            namespace_id=namespace_id,
            schema_name=schema,
        )
    except ValidationError as error:
        raise ConfigError("invalid configuration:", _problems(error, "define_config()")) from None


def _problems(error: ValidationError, source: str) -> list[str]:
    problems = []
    for item in error.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"]) or "(config)"
        value = item.get("input")
        shown = "" if isinstance(value, dict | BaseModel) else f" (got {value!r})"
        problems.append(f"{field}: {item['msg']}{shown} [from {source}]")
    return problems


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A config file and what it defined."""

    path: Path | None
    config: Config

    @property
    def folder(self) -> Path:
        """The folder relative paths are resolved against (the config's, or the cwd)."""
        return self.path.parent if self.path is not None else Path.cwd()


def find_config(start: Path | None = None) -> Path | None:
    """The nearest ``openworkflow.config.py`` at or above ``start`` (default: cwd)."""
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        path = candidate / CONFIG_FILE_NAME
        if path.is_file():
            return path
    return None


def load_config(path: str | Path | None = None, *, cwd: Path | None = None) -> LoadedConfig:
    """Load ``.env`` then the config file (given, or found upward); no file means defaults.

    The file must define ``config = define_config(...)``. Its folder is put
    on ``sys.path`` so it and the workflow files can import the project's
    own modules.

    Raises:
        ConfigError: the file is missing, fails to run, or defines no valid ``config``.
    """
    base = (cwd or Path.cwd()).resolve()
    if path is not None:
        resolved = (base / Path(path)).resolve()
        if not resolved.is_file():
            raise ConfigError(
                f"config file {resolved} does not exist",
                ["pass an existing file to --config, or run `ow init` to create one"],
            )
    else:
        resolved_or_none = find_config(base)
        load_dotenv(base / ".env", override=False)
        if resolved_or_none is None:
            return LoadedConfig(path=None, config=Config())
        resolved = resolved_or_none
    load_dotenv(resolved.parent / ".env", override=False)
    _make_importable(resolved.parent)
    namespace = _run_file(resolved)
    config = namespace.get("config")
    if not isinstance(config, Config):
        raise ConfigError(
            f"{resolved} does not define `config`",
            ["add `config = define_config(backend=..., dirs=[...])` to the file"],
        )
    return LoadedConfig(path=resolved, config=config)


def _make_importable(folder: Path) -> None:
    text = str(folder)
    if text not in sys.path:
        sys.path.insert(0, text)


def _run_file(path: Path) -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location("_openworkflow_config", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load {path} as Python")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ConfigError as error:
        raise ConfigError(f"invalid configuration in {path}:", error.problems) from None
    except Exception as error:
        raise ConfigError(
            f"failed to load config file {path}: {type(error).__name__}: {error}",
            [f"at {location}" for location in _error_location(error, path)],
        ) from error
    return vars(module)


def _error_location(error: BaseException, path: Path) -> list[str]:
    if isinstance(error, SyntaxError) and error.filename:
        return [f"{error.filename}:{error.lineno}"]
    frames = []
    traceback = error.__traceback__
    while traceback is not None:
        if Path(traceback.tb_frame.f_code.co_filename) == path:
            frames.append(f"{path}:{traceback.tb_lineno}")
        traceback = traceback.tb_next
    return frames[-1:]
