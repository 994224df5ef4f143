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

import ast
import importlib.util
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from dotenv import load_dotenv
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from openworkflow.core.backend import Backend
from openworkflow.core.duration import setting_duration
from openworkflow.core.json import check_name, parse_size
from openworkflow.core.retention import parse_retention
from openworkflow.errors import OpenWorkflowError
from openworkflow.worker.context import (
    DEFAULT_CONCURRENCY,
    DEFAULT_LEASE_DURATION,
    DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_STEP_CRASH_LIMIT,
)

CONFIG_FILE_NAME = "openworkflow.config.py"
DEFAULT_DIRS = ("./openworkflow",)
DEFAULT_SQLITE_URL = "sqlite:///openworkflow/backend.db"
DEFAULT_IGNORE_PATTERNS = ("**/*_test.py", "**/test_*.py", "**/__pycache__/**", "**/*.run.*")


class ConfigError(OpenWorkflowError, ValueError):
    """A configuration that cannot be used; ``problems`` lists each field and its source.

    ``location`` is ``file:line`` when the config file itself failed to run.
    """

    def __init__(
        self, message: str, problems: Sequence[str] = (), *, location: str | None = None
    ) -> None:
        details = "".join(f"\n  - {problem}" for problem in problems)
        super().__init__(message + details)
        self.problems = list(problems)
        self.location = location


class WorkerOptions(BaseModel):
    """Worker settings of a config (``worker={...}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency: int = Field(default=DEFAULT_CONCURRENCY, ge=1, le=10_000)
    lease_duration: str | float = DEFAULT_LEASE_DURATION
    shutdown_timeout: str | float = DEFAULT_SHUTDOWN_TIMEOUT
    step_crash_limit: int = Field(default=DEFAULT_STEP_CRASH_LIMIT, ge=1)
    metrics_port: int | None = Field(default=None, ge=0, le=65_535)
    metrics_host: str = Field(default="127.0.0.1", min_length=1)

    @field_validator("lease_duration", "shutdown_timeout")
    @classmethod
    def _duration(cls, value: str | float) -> str | float:
        # A bare number is seconds, "500ms" keeps its unit; nonsense raises (a ValueError).
        return setting_duration(value)


class PayloadOptions(BaseModel):
    """Payload size limits of a config (``payload={...}``); None means "not set here".

    Sizes are bytes or text such as ``"256KiB"``, ``"2MiB"``, ``"2MB"``; ``"off"``
    removes a limit. Defaults: warn above 256 KiB, refuse above 2 MiB.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    warn_size: int | str | None = None
    max_size: int | str | None = None

    @field_validator("warn_size", "max_size")
    @classmethod
    def _size(cls, value: int | str | None) -> int | str | None:
        check_size(value)  # raises ValueError on nonsense
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
    payload: PayloadOptions = PayloadOptions()
    retention: dict[str, str | float | timedelta | None] = Field(default_factory=dict)

    @field_validator("retention", mode="before")
    @classmethod
    def _retention(cls, value: object) -> object:
        # Before pydantic's coercion, which would take True for one second.
        if isinstance(value, Mapping):
            parse_retention(value)  # ValueError naming the status on nonsense
        return value

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: object) -> object:
        if value is None or isinstance(value, (str, Backend)):
            return value
        raise ValueError(f"expected a database URL or a backend object, got {type(value).__name__}")

    @field_validator("namespace_id")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value, "namespace_id")

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
    payload: Mapping[str, Any] | PayloadOptions | None = None,
    retention: Mapping[str, str | float | timedelta | None] | None = None,
) -> Config:
    """Describe a project: its backend, where workflows live, and worker settings.

    Args:
        backend: A database URL, a backend object, or None to take it from the
            environment (``OPENWORKFLOW_BACKEND_URL`` / ``OPENWORKFLOW_POSTGRES_URL``),
            else SQLite at ``openworkflow/backend.db`` next to the config.
        dirs: Folders (relative to the config file) scanned for workflow files.
        ignore_patterns: Globs to skip, in addition to the defaults (tests, ``*.run.*``).
        worker: ``{"concurrency": N, "lease_duration": "30s", "shutdown_timeout": "30s",
            "step_crash_limit": 3, "metrics_port": 9464, "metrics_host": "127.0.0.1"}``
            (``metrics_port``: serve worker metrics there; 0 picks a free port).
        namespace_id: The namespace (default ``"default"``).
        schema: The PostgreSQL schema (default ``"openworkflow"``).
        payload: ``{"warn_size": "256KiB", "max_size": "2MiB"}``: inputs, step
            outputs and workflow outputs larger than ``max_size`` (as stored
            JSON) are refused before anything is written, and those above
            ``warn_size`` are logged. ``"off"`` removes a limit.
        retention: Age per finished status, e.g. ``{"completed": "7d", "failed":
            "30d", "canceled": "7d"}``: workers prune finished runs older than
            that (a status left out, or None, is kept forever; default: none).

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
            payload=payload if payload is not None else PayloadOptions(),  # type: ignore[arg-type]
            retention=dict(retention or {}),
        )
    except ValidationError as error:
        raise ConfigError("invalid configuration:", _problems(error, "define_config()")) from None


def check_size(value: object) -> None:
    """Raise ValueError (for pydantic, which shows the value itself) unless ``value`` is a size."""
    try:
        parse_size(value)
    except ValueError:
        raise ValueError("must be a size such as 262144, '256KiB', '2MiB' or 'off'") from None


def shorten(value: object) -> str:
    """``repr(value)``, cut to a readable length for error messages."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:45]}... ({len(text)} chars)"


def _problems(error: ValidationError, source: str) -> list[str]:
    problems = []
    for item in error.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"]) or "(config)"
        value = item.get("input")
        shown = "" if isinstance(value, dict | BaseModel) else f" (got {shorten(value)})"
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
        line = _assignment_line(resolved, "config")
        where = f"{resolved}:{line}" if line is not None else str(resolved)
        found = "" if "config" not in namespace else f" (it is a {type(config).__name__})"
        raise ConfigError(
            f"{where} does not define `config` with define_config(...){found}",
            ["add `config = define_config(backend=..., dirs=[...])` to the file"],
            location=where if line is not None else None,
        )
    return LoadedConfig(path=resolved, config=config)


def _assignment_line(path: Path, name: str) -> int | None:
    """The line of the last top-level assignment to ``name`` in the file, if any."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return None
    line = None
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign | ast.AugAssign)
            else []
        )
        if any(isinstance(target, ast.Name) and target.id == name for target in targets):
            line = node.lineno
    return line


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
        location = _error_location(error, path)
        raise ConfigError(
            f"invalid configuration at {location or path}:", error.problems, location=location
        ) from None
    except (Exception, SystemExit) as error:
        location = _error_location(error, path) or str(path)
        raise ConfigError(
            f"{location}: {_one_line(error)}",
            location=location,
        ) from error
    return vars(module)


def _one_line(error: BaseException) -> str:
    """``Type: message`` on one line, shortened (the traceback is for ``--debug``)."""
    if isinstance(error, SystemExit):
        return f"the config file called exit({error.code!r}) while loading"
    text = (error.msg or "invalid syntax") if isinstance(error, SyntaxError) else str(error)
    text = " ".join(text.split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _error_location(error: BaseException, path: Path) -> str | None:
    """``file:line`` of the failure inside the config file, if it can be told."""
    if isinstance(error, SyntaxError) and error.filename and error.lineno:
        return f"{error.filename}:{error.lineno}"
    line = None
    traceback = error.__traceback__
    while traceback is not None:
        if Path(traceback.tb_frame.f_code.co_filename) == path:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    if line is None and isinstance(error, SyntaxError | ValueError):
        line = _first_nul_line(path)  # "source code cannot contain null bytes"
    return None if line is None else f"{path}:{line}"


def _first_nul_line(path: Path) -> int | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    index = data.find(b"\x00")
    return None if index < 0 else data.count(b"\n", 0, index) + 1
