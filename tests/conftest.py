"""Test harness: a real PostgreSQL (embedded, or DATABASE_URL), schema built by Alembic.

Isolation: every test works in a workspace of its own (a fresh random id). Every query of the
service filters on the workspace, so tests cannot see each other's rows — and the writes are
real commits, which is what the concurrency tests need anyway. This replaces the outer
transaction + savepoint pattern: it tests the commit path itself and lets tests run in parallel.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from aurion.app import create_app
from aurion.auth.tokens import mint_token
from aurion.db.engine import create_engine
from aurion.db.migrate import upgrade
from aurion.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
READ = "conversations:read"
WRITE = "conversations:write"
READ_WRITE = f"{READ} {WRITE}"
TEST_SECRET = "test-secret-0123456789abcdef0123456789abcdef"


def _test_database_url() -> tuple[str, Callable[[], None]]:
    """A fresh database for this test session and a function that drops it."""
    external = os.environ.get("DATABASE_URL")
    if external:
        return external, lambda: None
    from aurion.db.embedded import EmbeddedPostgres

    cluster = EmbeddedPostgres(ROOT / ".data" / "test-postgres", fast_unsafe=True)
    name = f"aurion_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = cluster.start(name)
    return url, lambda: cluster.drop_database(name)


@pytest.fixture(scope="session")
def database_url() -> Any:
    url, drop = _test_database_url()
    upgrade(url)
    yield url
    drop()


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "env": "test",
        "jwt_secret": TEST_SECRET,
        "log_level": "WARNING",
        # Webhooks: tests that deliver turn delivery on in an app of their own; receivers
        # listen on 127.0.0.1.
        "webhook_delivery": False,
        "webhook_allow_private": True,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


async def started_app(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async for started in started_app(settings):
        yield started


@asynccontextmanager
async def asgi_client(
    app: FastAPI, base_url: str = "http://testserver", **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client calling ``app`` in this process (no server, no socket)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=base_url, **options) as c:
        yield c


@asynccontextmanager
async def app_client(
    settings: Settings, base_url: str = "http://testserver", **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app of its own, started (lifespan and all) with ``settings``."""
    async for app in started_app(settings):
        async with asgi_client(app, base_url, **options) as c:
            yield c


@pytest.fixture(scope="session")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as c:
        yield c


@pytest.fixture(scope="session")
async def engine(settings: Settings, database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(settings, database_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def workspace() -> str:
    return f"ws_{uuid.uuid4().hex[:12]}"


TokenFactory = Callable[..., str]


@pytest.fixture
def token_for(settings: Settings) -> TokenFactory:
    def make(workspace: str, scopes: str = READ_WRITE, subject: str = "agent-1") -> str:
        return mint_token(settings, workspace=workspace, subject=subject, scopes=scopes)

    return make


@pytest.fixture
def auth(token_for: TokenFactory, workspace: str) -> dict[str, str]:
    """Headers with a read+write token of this test's workspace."""
    return {"Authorization": f"Bearer {token_for(workspace)}"}


Factory = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def create_parent(client: httpx.AsyncClient, auth: dict[str, str]) -> Factory:
    """Create a conversation through the API; returns its body."""

    async def make(headers: dict[str, str] | None = None, **fields: Any) -> dict[str, Any]:
        body = {"subject": "Parent conversation", **fields}
        response = await client.post("/api/v2/conversations", json=body, headers=headers or auth)
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()
        return data

    return make


def is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def database_name(url: str) -> str:
    return str(make_url(url).database)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.get_event_loop().run_until_complete(coro)
