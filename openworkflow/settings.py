"""Settings from the environment (prefix ``OPENWORKFLOW_``) and their precedence.

``OPENWORKFLOW_POSTGRES_URL``, ``OPENWORKFLOW_NAMESPACE_ID`` and
``OPENWORKFLOW_SCHEMA`` keep the TypeScript original's names. Effective
values follow one rule: CLI flag > environment > config file > default
(:func:`resolve_settings`); the backend URL additionally falls back to
``OPENWORKFLOW_POSTGRES_URL`` when neither a flag, ``OPENWORKFLOW_BACKEND_URL``
nor the config names one, and then to SQLite next to the config.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from openworkflow.core.backend import DEFAULT_NAMESPACE_ID, Backend
from openworkflow.core.database_url import DEFAULT_SCHEMA, split_schema_parameter
from openworkflow.core.duration import setting_duration
from openworkflow.core.json import (
    DEFAULT_MAX_SIZE,
    DEFAULT_WARN_SIZE,
    PayloadLimits,
    check_name,
    parse_size,
)
from openworkflow.core.retention import parse_retention
from openworkflow.payload import set_payload_limits

if TYPE_CHECKING:
    from openworkflow.config import LoadedConfig, PayloadOptions

ENV_PREFIX = "OPENWORKFLOW_"


class BackendSettings(BaseSettings):
    """Where the backend lives, from ``OPENWORKFLOW_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    postgres_url: str | None = Field(default=None, repr=False)
    namespace_id: str = Field(default=DEFAULT_NAMESPACE_ID, min_length=1)
    schema_name: str = Field(
        default=DEFAULT_SCHEMA, validation_alias="OPENWORKFLOW_SCHEMA", min_length=1
    )

    @field_validator("namespace_id")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return check_name(value, "namespace_id")


class _Overrides(BaseSettings):
    """Values given by CLI flags (init arguments) or the environment; unset means "not given"."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", populate_by_name=True)

    backend_url: str | None = Field(default=None, repr=False)
    postgres_url: str | None = Field(default=None, repr=False)
    namespace_id: str | None = Field(default=None, min_length=1)
    schema_name: str | None = Field(
        default=None, validation_alias="OPENWORKFLOW_SCHEMA", min_length=1
    )
    worker_concurrency: int | None = Field(default=None, ge=1, le=10_000)
    worker_lease_duration: str | float | None = None
    worker_shutdown_timeout: str | float | None = None
    worker_step_crash_limit: int | None = Field(default=None, ge=1)
    worker_metrics_port: int | None = Field(default=None, ge=0, le=65_535)
    worker_metrics_host: str | None = Field(default=None, min_length=1)
    payload_warn_size: str | None = None
    payload_max_size: str | None = None
    retention: str | None = None

    @field_validator("namespace_id")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value, "namespace_id")

    @field_validator("worker_lease_duration", "worker_shutdown_timeout")
    @classmethod
    def _duration(cls, value: str | float | None) -> str | float | None:
        # A bare number is seconds; InvalidDurationError (a ValueError) on nonsense.
        return None if value is None else setting_duration(value)

    @field_validator("payload_warn_size", "payload_max_size")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        from openworkflow.config import check_size

        check_size(value)
        return value

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: str | None) -> str | None:
        if value is not None:
            _retention_policy(value)
        return value


_FLAGS = {
    "backend_url": "--backend",
    "namespace_id": "--namespace",
    "schema_name": "--schema",
    "worker_concurrency": "--concurrency",
    "worker_metrics_port": "--metrics-port",
    "worker_metrics_host": "--metrics-host",
}

__all__ = [
    "BackendSettings",
    "EffectiveSettings",
    "PayloadLimits",
    "resolve_settings",
    "set_payload_limits",
]


@dataclass(frozen=True, slots=True)
class EffectiveSettings:
    """What a command runs with, after precedence; ``backend_source`` says where it came from."""

    config_path: Path | None
    folder: Path
    backend: str | Backend
    backend_source: str
    namespace_id: str
    schema: str
    concurrency: int
    lease_duration: str | float
    shutdown_timeout: str | float
    step_crash_limit: int
    dirs: tuple[Path, ...]
    ignore_patterns: tuple[str, ...]
    payload_limits: PayloadLimits = field(default_factory=PayloadLimits)
    #: Age per finished status; workers prune older finished runs (empty: never).
    retention: dict[str, str | float | timedelta | None] = field(default_factory=dict)
    #: Where workers serve their metrics (None: they do not; 0 picks a free port).
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"


def resolve_settings(loaded: LoadedConfig, **flags: Any) -> EffectiveSettings:
    """Combine CLI flags, the environment and the config file (in that order of precedence).

    Flags are ``backend_url``, ``namespace_id``, ``schema_name`` and
    ``worker_concurrency``; None means "not given".

    Raises:
        ConfigError: a flag or environment value is invalid (each problem with its source).
    """
    from openworkflow.config import DEFAULT_IGNORE_PATTERNS

    given = {key: value for key, value in flags.items() if value is not None}
    overrides = _parse_overrides(given)
    config = loaded.config
    folder = loaded.folder
    file_label = str(loaded.path) if loaded.path else "defaults"

    def source_of(field: str) -> str:
        return _FLAGS[field] if field in given else _env_name(field)

    backend, backend_source = _choose_backend(overrides, config.backend, file_label, source_of)
    if isinstance(backend, str):
        backend = _anchor_sqlite_url(backend, folder)
    worker = config.worker
    url_schema = None
    if isinstance(backend, str) and backend.startswith(("postgresql:", "postgres:")):
        url_schema = split_schema_parameter(backend)[1]
    payload = _payload_limits(overrides, config.payload, file_label, source_of)
    return EffectiveSettings(
        config_path=loaded.path,
        folder=folder,
        backend=backend,
        backend_source=backend_source,
        namespace_id=overrides.namespace_id or config.namespace_id or DEFAULT_NAMESPACE_ID,
        schema=overrides.schema_name or config.schema_name or url_schema or DEFAULT_SCHEMA,
        concurrency=overrides.worker_concurrency or worker.concurrency,
        lease_duration=overrides.worker_lease_duration or worker.lease_duration,
        shutdown_timeout=overrides.worker_shutdown_timeout or worker.shutdown_timeout,
        step_crash_limit=overrides.worker_step_crash_limit or worker.step_crash_limit,
        dirs=tuple((folder / directory).resolve() for directory in config.dirs),
        ignore_patterns=(*DEFAULT_IGNORE_PATTERNS, *config.ignore_patterns),
        payload_limits=payload,
        retention=(
            _retention_policy(overrides.retention)
            if overrides.retention is not None
            else dict(config.retention)
        ),
        metrics_port=(
            overrides.worker_metrics_port
            if overrides.worker_metrics_port is not None
            else worker.metrics_port
        ),
        metrics_host=overrides.worker_metrics_host or worker.metrics_host,
    )


def _parse_overrides(given: dict[str, Any]) -> _Overrides:
    """Flags and environment, validated; each bad value reported with where it came from."""
    from openworkflow.config import ConfigError, shorten

    try:
        return _Overrides(**given)
    except ValidationError as error:
        problems = []
        for item in error.errors(include_url=False):
            field = str(item["loc"][0]) if item["loc"] else "?"
            source = _FLAGS.get(field, field) if field in given else _env_name(field)
            problems.append(f"{source}: {item['msg']} (got {shorten(item.get('input'))})")
        raise ConfigError("invalid settings:", problems) from None


def _choose_backend(
    overrides: _Overrides,
    configured: str | Backend | None,
    file_label: str,
    source_of: Callable[[str], str],
) -> tuple[str | Backend, str]:
    """The backend and where it came from: flag or environment, file, PostgreSQL URL, default."""
    from openworkflow.config import DEFAULT_SQLITE_URL

    if overrides.backend_url is not None:
        return overrides.backend_url, source_of("backend_url")
    if configured is not None:
        return configured, file_label
    if overrides.postgres_url is not None:
        return overrides.postgres_url, _env_name("postgres_url")
    return DEFAULT_SQLITE_URL, "default"


def _payload_limits(
    overrides: _Overrides,
    options: PayloadOptions,
    file_label: str,
    source_of: Callable[[str], str],
) -> PayloadLimits:
    """Warn and max payload sizes: environment > config file > default (256 KiB, 2 MiB)."""
    from openworkflow.config import ConfigError

    chosen: dict[str, tuple[object, str]] = {}
    for name in ("warn_size", "max_size"):
        given = getattr(overrides, f"payload_{name}")
        if given is not None:
            chosen[name] = (given, source_of(f"payload_{name}"))
        elif getattr(options, name) is not None:
            chosen[name] = (getattr(options, name), f"payload.{name} in {file_label}")
    sizes: dict[str, int | None] = {
        "warn_size": DEFAULT_WARN_SIZE,
        "max_size": DEFAULT_MAX_SIZE,
    }
    for name, (value, _source) in chosen.items():
        sizes[name] = parse_size(value)  # already validated where it was read
    warn, maximum = sizes["warn_size"], sizes["max_size"]
    if warn is not None and maximum is not None and warn > maximum and "warn_size" not in chosen:
        sizes["warn_size"] = maximum  # only the maximum was lowered: warn no later than it
    try:
        return PayloadLimits(**sizes)
    except ValueError as error:
        sources = ", ".join(f"{name} from {source}" for name, (_, source) in chosen.items())
        raise ConfigError("invalid settings:", [f"{error} ({sources})"]) from None


def _retention_policy(text: str) -> dict[str, str | float | timedelta | None]:
    """``OPENWORKFLOW_RETENTION``: a JSON object of ages, e.g. ``{"completed": "7d"}``.

    It replaces the config file's policy as a whole; ``{}`` turns pruning off.

    Raises:
        ValueError: not a JSON object, or an unknown status or invalid age in it.
    """
    try:
        policy = json.loads(text)
    except json.JSONDecodeError:
        policy = None
    if not isinstance(policy, dict):
        raise ValueError('must be a JSON object such as {"completed": "7d", "failed": "30d"}')
    parse_retention(policy)
    return policy


def _env_name(field: str) -> str:
    return "OPENWORKFLOW_SCHEMA" if field == "schema_name" else ENV_PREFIX + field.upper()


def _anchor_sqlite_url(url: str, folder: Path) -> str:
    """Make a relative ``sqlite:///path`` relative to the config folder, not the cwd."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url.startswith("sqlite:////") or ":memory:" in url:
        return url
    return prefix + str((folder / url[len(prefix) :]).resolve())
