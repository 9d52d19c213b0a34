"""The collector's settings, each declared once: command-line flag > ``AGENTWATCH_*`` variable > default.
Built in ``main`` (never at import), validated at start with errors that name the setting."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class CollectorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTWATCH_", extra="ignore")

    data_dir: Path = Field(Path(".agentwatch"), description="embedded store, spool and keys file")
    clickhouse_url: str | None = Field(None, description="ClickHouse server URL; unset = embedded chDB")
    host: str = Field("127.0.0.1", description="bind address")
    port: int = Field(4318, ge=0, le=65535, description="HTTP port (OTLP/HTTP and read API)")
    api_keys: str | None = Field(None, description="bootstrap keys: key:project:role, comma-separated")
    price_file: Path | None = Field(None, description="YAML file of custom model prices")
    rules: Path | None = Field(None, description="alert rules YAML file")
    ttl_days: int | None = Field(None, ge=1, le=3650, description="drop spans older than this many days")
    max_body_bytes: int = Field(64 << 20, ge=1024, description="request body limit, after decompression")
    max_inflight_bytes: int = Field(256 << 20, ge=1 << 20, description="bodies being decoded at once")
    spool_max_bytes: int = Field(2 << 30, ge=1 << 20, description="spool size at which ingest answers 503")
    spool_fsync: bool = Field(False, description="fsync each accepted request (survives power loss)")
    flush_interval: float = Field(0.25, gt=0, le=60, description="seconds between writer drains")
    max_attribute_bytes: int = Field(1 << 20, ge=256, description="longer attribute values are cut")
    retry_after_seconds: int = Field(5, ge=1, le=300, description="Retry-After on 503")
    summary_interval: float = Field(2.0, gt=0, le=3600, description="seconds between task summary passes")
    summary_lag: float = Field(
        4.0, ge=0, le=3600, description="ClickHouse server: spans younger than this wait for the next pass"
    )
    log_json: bool = Field(False, description="JSON log lines")

    @field_validator("clickhouse_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and v.strip() and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https:// (e.g. http://user:pass@host:8123/agentwatch)")
        return v.strip() or None if v is not None else None

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"
