"""Settings: the one object that reads the environment (`VOLTCLOUD_` prefix) and an optional TOML file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

TracingExporter = Literal["none", "console", "otlp"]


class Settings(BaseSettings):
    """Platform settings. Precedence: explicit arguments > environment > TOML file > defaults."""

    model_config = SettingsConfigDict(env_prefix="VOLTCLOUD_", extra="forbid")

    listen: str = Field("127.0.0.1:50051", description="HOST:PORT the gRPC server binds; port 0 picks one.")
    data_dir: Path = Field(Path("data"), description="Where the embedded database and the dev key live.")
    database_url: str | None = Field(None, description="SQLAlchemy async URL; default sqlite+aiosqlite in data_dir.")
    jwt_key: str | None = Field(None, description="HS256 signing key; default a dev key in data_dir.")
    jwt_issuer: str = "voltcloud"
    token_ttl_s: int = Field(24 * 3600, gt=0)
    grace_period_s: float = Field(10.0, ge=0, description="How long in-flight calls may finish on shutdown.")
    drain_s: float = Field(
        0.5,
        ge=0,
        description="On shutdown, how long to keep accepting calls after health turns NOT_SERVING, so calls "
        "already on the wire are served rather than cancelled.",
    )
    tracing_exporter: TracingExporter = "none"
    otlp_endpoint: str = "http://127.0.0.1:4317"
    service_name: str = "voltcloud"
    seed_demo: bool = Field(False, description="Seed the demo world when the database is empty.")
    demo_seed: int = 7
    log_level: str = "INFO"
    db_pool_size: int = Field(10, gt=0)

    @field_validator("listen")
    @classmethod
    def _listen_has_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"listen must be HOST:PORT, got {value!r}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file path itself comes from the environment, the only bootstrap exception.
        toml_file = os.environ.get("VOLTCLOUD_CONFIG_FILE")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'voltcloud.db').resolve()}"
