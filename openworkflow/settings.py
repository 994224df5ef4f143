"""Settings read from the environment (prefix ``OPENWORKFLOW_``), as in the original.

``OPENWORKFLOW_POSTGRES_URL``, ``OPENWORKFLOW_NAMESPACE_ID`` and
``OPENWORKFLOW_SCHEMA`` keep the TypeScript original's names.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from openworkflow.core.backend import DEFAULT_NAMESPACE_ID
from openworkflow.postgres.schema import DEFAULT_SCHEMA


class BackendSettings(BaseSettings):
    """Where the backend lives, from ``OPENWORKFLOW_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="OPENWORKFLOW_", extra="ignore")

    postgres_url: str | None = Field(default=None, repr=False)
    namespace_id: str = Field(default=DEFAULT_NAMESPACE_ID, min_length=1)
    schema_name: str = Field(
        default=DEFAULT_SCHEMA, validation_alias="OPENWORKFLOW_SCHEMA", min_length=1
    )
