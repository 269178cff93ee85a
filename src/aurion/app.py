"""The ASGI application: create_app() wires settings, database, auth and routes.

Nothing connects at import time; the lifespan opens the engine and closes it.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.telemetry import TelemetryConfig
from sqlalchemy import text

from aurion import __version__
from aurion.auth.tokens import TokenVerifier
from aurion.conversations.lifecycle.router import router as lifecycle_router
from aurion.conversations.router import router as conversations_router
from aurion.db.driver import Db
from aurion.db.engine import ConnectionQueue, create_engine
from aurion.db.errors import is_database_unavailable
from aurion.db.location import DatabaseLocation
from aurion.db.turns import Turns
from aurion.docs import install_docs
from aurion.errors import DatabaseUnavailable, MigrationsPending, install_error_handlers
from aurion.events.router import router as events_router
from aurion.idempotency.service import purge_periodically
from aurion.metrics import Metrics, metrics_endpoint
from aurion.middleware import (
    CORS_ALLOW_HEADERS,
    CORS_ALLOW_METHODS,
    CORS_EXPOSE_HEADERS,
    CORS_MAX_AGE_SECONDS,
    BodyLimitMiddleware,
    RequestContextMiddleware,
)
from aurion.observability import configure_logging
from aurion.settings import Settings, get_settings
from aurion.webhooks.delivery import Deliverer, delivery_engine
from aurion.webhooks.router import router as webhooks_router

logger = logging.getLogger("aurion.app")
# FastAPI's native OpenTelemetry, unless AURION_OPENTELEMETRY is set (settings.py).
_NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}

DESCRIPTION = """
The Aurion Conversations API: helpdesk conversations (support tickets with messages) and,
at its heart, **child conversations** that carry their parent's context so follow-up work can
be tracked separately.

* Authenticate with `Authorization: Bearer <JWT>`; scopes `conversations:read`,
  `conversations:write`, `events:read` (the event feed) and `webhooks:write` (webhooks). A
  conversation of another workspace answers 404, like a missing one.
* Errors are `{"detail": "...", "code": "..."}`; malformed requests are 422 in FastAPI's
  shape `{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`.
* Times are ISO 8601 UTC (`2019-08-24T14:15:22Z`); ids are UUIDs (v7, time-ordered).
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, as_json=settings.logs_as_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = DatabaseLocation(settings).url()
        app.state.engine = create_engine(settings, url)
        app.state.db = Db(
            queue=ConnectionQueue(app.state.engine, settings),
            pgbouncer=settings.db_pgbouncer,
            lock_timeout_ms=settings.db_lock_timeout_ms,
        )
        app.state.database_url = url
        try:
            await app.state.db.probe()
        except Exception as exc:  # the database is down: the first statement probes instead
            if not is_database_unavailable(exc):
                raise
            logger.warning("database unavailable at start-up: %s", type(exc).__name__)
        purger = None
        if settings.idempotency_purge_interval_seconds:
            purger = asyncio.create_task(
                purge_periodically(app.state.engine, settings.idempotency_purge_interval_seconds)
            )
        # Everything built so far lives as long as the process: out of the collector's sight,
        # so that a full collection does not walk the whole application again and again.
        gc.freeze()
        # And collections far apart: they walk the objects of the requests in flight, which
        # reference counting frees anyway (README "Performance", settings.gc_gen0_threshold).
        if settings.gc_gen0_threshold:
            gc.set_threshold(settings.gc_gen0_threshold, *gc.get_threshold()[1:])
        deliverer = None
        if settings.webhook_delivery:
            # Off the request path: its own connections, its own task, bounded concurrency.
            deliverer = Deliverer(delivery_engine(settings, url), settings)
            delivering = asyncio.create_task(deliverer.run())
        try:
            yield
        finally:
            if purger is not None:
                purger.cancel()
            if deliverer is not None:
                delivering.cancel()
                await asyncio.gather(delivering, return_exceptions=True)
                await deliverer.engine.dispose()
            await app.state.engine.dispose()

    app = FastAPI(
        title="Aurion Conversations API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        telemetry=None if settings.opentelemetry else _NO_TELEMETRY,
        # Served by install_docs: local assets, and routes the access log can name.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.turns = Turns(settings.db_lock_timeout_ms / 1000, lanes=settings.coalesce_lanes)
    app.state.metrics = Metrics(app.state)
    app.state.verifier = TokenVerifier(settings)
    install_error_handlers(app)
    # The API's routes first: a request is matched against the routes in order (the docs'
    # five routes before them cost every API request about 25 µs of CPU, bench/inprocess.py).
    app.include_router(conversations_router)
    app.include_router(events_router)
    app.include_router(webhooks_router)
    app.include_router(lifecycle_router)
    install_docs(app)
    app.add_api_route("/metrics", metrics_endpoint, include_in_schema=False)

    @app.get("/healthz", tags=["operations"], operation_id="healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], operation_id="readyz", include_in_schema=False)
    async def readyz() -> object:
        """The database answers and its schema is at the latest migration."""
        from aurion.db.migrate import current_revisions, head_revisions

        try:
            async with app.state.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
                current = await current_revisions(conn)
        except Exception as exc:
            if not is_database_unavailable(exc):
                raise
            raise DatabaseUnavailable() from exc
        if current != head_revisions(app.state.database_url):
            raise MigrationsPending()
        return {"status": "ready", "database": "ok", "migrations": sorted(current)}

    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
    if settings.cors_origins:
        # Added last, so outermost: refusals (401, 413, ...) carry the CORS headers too, and a
        # browser can read them. Bearer tokens, not cookies: no credentials mode.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=CORS_ALLOW_METHODS,
            allow_headers=CORS_ALLOW_HEADERS,
            expose_headers=CORS_EXPOSE_HEADERS,
            max_age=CORS_MAX_AGE_SECONDS,
        )
    return app


def openapi_document() -> str:
    """The OpenAPI document as committed in ``openapi.json`` (``aurion openapi`` writes it)."""
    # model_construct: the defaults, not this shell's AURION_* variables, so the file is the
    # same on every machine. Nothing connects: the lifespan does not run.
    app = create_app(Settings.model_construct())
    return json.dumps(app.openapi(), indent=2, ensure_ascii=False) + "\n"
