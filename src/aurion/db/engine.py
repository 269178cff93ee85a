"""Engine and connection helpers: URL normalisation, pool limits and timeouts from settings."""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from aurion.settings import Settings


def async_url(url: str) -> str:
    """A standard ``postgresql://`` URL (socket form included) in SQLAlchemy's asyncpg form."""
    parsed = make_url(url)
    if parsed.drivername in (
        "postgresql",
        "postgres",
        "postgresql+psycopg2",
        "postgresql+psycopg",
    ):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    query = dict(parsed.query)
    # libpq's sslmode means nothing to asyncpg, whose equivalent is ``ssl``.
    if "sslmode" in query:
        query["ssl"] = query.pop("sslmode")
    return parsed.set(query=query).render_as_string(hide_password=False)


def sync_url(url: str) -> str:
    """The plain libpq form of a database URL (for psql, pgbench, Alembic's logs)."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(settings: Settings, url: str) -> AsyncEngine:
    """An engine whose every wait is bounded, so a sick database yields 503s rather than hangs."""
    return create_async_engine(
        async_url(url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args={
            "timeout": settings.db_connect_timeout_seconds,
            "command_timeout": settings.db_statement_timeout_ms / 1000 + 1
            if settings.db_statement_timeout_ms
            else None,
            "server_settings": {
                "statement_timeout": str(settings.db_statement_timeout_ms),
                "lock_timeout": str(settings.db_lock_timeout_ms),
                "idle_in_transaction_session_timeout": "30000",
                "application_name": "aurion",
            },
        },
    )
