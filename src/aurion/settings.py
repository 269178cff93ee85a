"""Service settings: every knob is an environment variable with the ``AURION_`` prefix."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Used only for local development; refused when AURION_ENV=production.
DEV_JWT_SECRET = "aurion-dev-secret-change-me-0123456789abcdef"
MIN_PRODUCTION_SECRET_LENGTH = 32
# Token algorithms the service can verify; "none" is not among them and never will be.
KNOWN_JWT_ALGORITHMS = (
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512",
)  # fmt: skip


class ConfigurationError(ValueError):
    """The settings are unusable; the message is one line naming the variable to fix."""


def _list_from_env(value: Any) -> Any:
    """A list setting from the environment: a JSON list or a comma-separated string."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """All configuration of the service, read once from the environment."""

    model_config = SettingsConfigDict(env_prefix="AURION_", extra="ignore")

    env: Literal["development", "test", "production"] = "development"

    # DATABASE_URL is the conventional name, so it is read without the prefix.
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "AURION_DATABASE_URL")
    )
    data_dir: str = ".data"
    # A fixed pool: overflow connections are closed on check-in and reopened under load, which
    # costs PostgreSQL a connection start-up per burst (make bench: +11 % requests/s without).
    db_pool_size: int = Field(default=20, ge=1, le=200)
    db_max_overflow: int = Field(default=0, ge=0, le=200)
    db_pool_timeout_seconds: float = Field(default=3.0, gt=0)
    db_connect_timeout_seconds: float = Field(default=3.0, gt=0)
    db_statement_timeout_ms: int = Field(default=5000, ge=0)
    # The database URL points at PgBouncer in transaction pooling mode (docs/scaling.md).
    db_pgbouncer: bool = False
    # Bounds every row-lock wait (a parent under heavy concurrency, a duplicate Idempotency-Key).
    db_lock_timeout_ms: int = Field(default=3000, ge=0)
    # Groups of coalesced child creations (README "Concurrent creations go together") of one
    # caller that may run at once in a process.
    coalesce_lanes: int = Field(default=2, ge=1, le=8)
    # The cyclic garbage collector runs when this many more container objects have been
    # allocated than freed (Python's default: 700). The requests' objects are freed by
    # reference counting, but those of the requests in flight at once outnumber 700: with the
    # default, a worker at concurrency 32 collected 1,000-1,600 times in ~15,000 child
    # creations, 4-7 % of its CPU, and freed next to nothing. 0 keeps Python's default.
    gc_gen0_threshold: int = Field(default=50_000, ge=0)
    # FastAPI's native OpenTelemetry (spans, metrics, logs through the global providers the
    # operator configures). Off by default: even with no provider configured, FastAPI asks the
    # OpenTelemetry API on every request whether one is (about 3 µs of CPU a request, measured).
    opentelemetry: bool = False

    jwt_secret: str | None = DEV_JWT_SECRET
    jwt_public_key: str | None = None
    jwks_url: str | None = None
    jwks_file: str | None = None
    jwt_algorithms: Annotated[list[str], NoDecode] = ["HS256", "RS256", "ES256"]
    jwt_workspace_claim: str = "workspace_id"
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = 30

    max_children_per_parent: int = Field(default=50, ge=0)
    # Resolving or closing a parent that has open children (SPEC §8.2): refuse (409
    # open_children) or resolve the children with it.
    parent_close_policy: Literal["block", "cascade"] = "block"
    # Resolve a parent when its last open child is resolved or closed (SPEC §8.3).
    auto_resolve_parent: bool = False
    max_body_bytes: int = 1024 * 1024
    idempotency_ttl_hours: int = Field(default=24, ge=1)
    # How often each process purges expired keys (0: never; then run `aurion db purge-keys`).
    idempotency_purge_interval_seconds: int = Field(default=3600, ge=0)

    cors_origins: Annotated[list[str], NoDecode] = []
    log_level: str = "INFO"
    # json: one object a line, for a log pipeline; text: a line a person reads. By default
    # json in production, text in development and test.
    log_format: Literal["json", "text"] | None = None

    @property
    def logs_as_json(self) -> bool:
        return (self.log_format or ("json" if self.env == "production" else "text")) == "json"

    # Webhook delivery (SPEC §10). Each process of the service delivers (a background task)
    # unless this is off; `aurion worker` delivers on its own.
    webhook_delivery: bool = True
    # Lifts the https-only and public-address-only rules on webhook URLs (development, tests).
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # Delays before each retry of a failed delivery (±10 % jitter); after the last, it fails.
    # About 24 h in all: 5 s, 30 s, 2 min, 10 min, 1 h, 2 h, then 3 h seven times.
    webhook_retry_schedule_seconds: Annotated[list[float], NoDecode] = [
        5, 30, 120, 600, 3600, 7200, *([10800] * 7)
    ]  # fmt: skip
    # Deliveries a process sends at once (a slow receiver holds one of these, nothing else).
    webhook_concurrency: int = Field(default=10, ge=1, le=1000)
    # How often a process looks for new events and due retries when it found none.
    webhook_poll_interval_seconds: float = Field(default=1.0, gt=0, le=60)

    @field_validator("webhook_retry_schedule_seconds", mode="before")
    @classmethod
    def _parse_schedule(cls, value: Any) -> Any:
        return _list_from_env(value)

    @field_validator("webhook_retry_schedule_seconds")
    @classmethod
    def _schedule(cls, value: list[float]) -> list[float]:
        if any(delay < 0 for delay in value):
            raise ValueError("retry delays must not be negative")
        return value

    @field_validator("jwt_algorithms", "cors_origins", mode="before")
    @classmethod
    def _parse_list(cls, value: Any) -> Any:
        return _list_from_env(value)

    @field_validator("jwt_algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        algorithms = [a.strip().upper() for a in value]
        unknown = [a for a in algorithms if a not in KNOWN_JWT_ALGORITHMS]
        if unknown:
            raise ValueError(
                f"unsupported JWT algorithm(s) {', '.join(unknown)}; "
                f"choose from {', '.join(KNOWN_JWT_ALGORITHMS)}"
            )
        if not algorithms:
            raise ValueError("at least one JWT algorithm must be allowed")
        return algorithms

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com")
        return [origin.rstrip("/") for origin in value]

    @model_validator(mode="after")
    def _refuse_weak_keys_in_production(self) -> Settings:
        if self.env != "production":
            return self
        if self.jwt_secret == DEV_JWT_SECRET:
            if "jwt_secret" in self.model_fields_set:
                raise ValueError(
                    "AURION_JWT_SECRET is the development secret; set a real one in production"
                )
            # Not set at all: production never falls back to the published development secret.
            self.jwt_secret = None
        hmac = any(a.startswith("HS") for a in self.jwt_algorithms)
        asymmetric = any(not a.startswith("HS") for a in self.jwt_algorithms)
        has_secret = hmac and bool(self.jwt_secret)
        has_public = asymmetric and bool(self.jwt_public_key or self.jwks_url or self.jwks_file)
        if not (has_secret or has_public):
            raise ValueError(
                "no token verification key is configured: set AURION_JWT_SECRET (HS256), "
                "AURION_JWT_PUBLIC_KEY, AURION_JWKS_URL or AURION_JWKS_FILE (RS256/ES256)"
            )
        if has_secret and len(self.jwt_secret or "") < MIN_PRODUCTION_SECRET_LENGTH:
            raise ValueError(
                f"AURION_JWT_SECRET must be at least {MIN_PRODUCTION_SECRET_LENGTH} characters "
                "in production (HS256 with a short secret can be brute-forced)"
            )
        return self


def _one_line(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    loc = ".".join(str(part) for part in first.get("loc", ()))
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    name = "DATABASE_URL" if loc == "database_url" else f"AURION_{loc.upper()}"
    where = f"{name}: " if loc else ""
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return " ".join(f"invalid configuration: {where}{message}{more}".split())


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (read once); ``ConfigurationError`` in one line if unusable."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigurationError(_one_line(exc)) from None
