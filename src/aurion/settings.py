"""Service settings: every knob is an environment variable with the ``AURION_`` prefix."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Used only for local development; refused when AURION_ENV=production.
DEV_JWT_SECRET = "aurion-dev-secret-change-me-0123456789abcdef"


class Settings(BaseSettings):
    """All configuration of the service, read once from the environment."""

    model_config = SettingsConfigDict(env_prefix="AURION_", extra="ignore")

    env: Literal["development", "test", "production"] = "development"

    # DATABASE_URL is the conventional name, so it is read without the prefix.
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "AURION_DATABASE_URL")
    )
    data_dir: str = ".data"
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=10, ge=0, le=200)
    db_pool_timeout_seconds: float = Field(default=3.0, gt=0)
    db_connect_timeout_seconds: float = Field(default=3.0, gt=0)
    db_statement_timeout_ms: int = Field(default=5000, ge=0)
    # The database URL points at PgBouncer in transaction pooling mode (docs/scaling.md).
    db_pgbouncer: bool = False
    # Bounds every row-lock wait (a parent under heavy concurrency, a duplicate Idempotency-Key).
    db_lock_timeout_ms: int = Field(default=3000, ge=0)

    jwt_secret: str | None = DEV_JWT_SECRET
    jwt_public_key: str | None = None
    jwks_url: str | None = None
    jwks_file: str | None = None
    jwt_algorithms: list[str] = ["HS256", "RS256", "ES256"]
    jwt_workspace_claim: str = "workspace_id"
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = 30

    max_children_per_parent: int = Field(default=50, ge=0)
    max_body_bytes: int = 1024 * 1024
    idempotency_ttl_hours: int = Field(default=24, ge=1)
    # How often each process purges expired keys (0: never; then run `aurion db purge-keys`).
    idempotency_purge_interval_seconds: int = Field(default=3600, ge=0)

    cors_origins: list[str] = []
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _refuse_dev_secret_in_production(self) -> Settings:
        if self.env == "production":
            if self.jwt_secret == DEV_JWT_SECRET:
                raise ValueError(
                    "AURION_JWT_SECRET is the development secret; set a real one in production"
                )
            has_key = self.jwt_secret or self.jwt_public_key or self.jwks_url or self.jwks_file
            if not has_key:
                raise ValueError("no token verification key is configured (AURION_JWT_*)")
            if self.jwt_secret and len(self.jwt_secret) < 32:
                raise ValueError("AURION_JWT_SECRET must be at least 32 characters in production")
        return self


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return Settings()
