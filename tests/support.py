"""Plain helpers shared by the tests (fixtures live in conftest.py): settings and apps, URLs,
row counts, states the API cannot produce, locks, the counters check."""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, get_args

import httpx
import orjson
from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from aurion.app import create_app
from aurion.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
TEST_SECRET = "test-secret-0123456789abcdef0123456789abcdef"

# A factory fixture's type: create_parent(**fields) -> the created conversation's body.
Factory = Callable[..., Awaitable[dict[str, Any]]]
# token_for(workspace, scopes=READ_WRITE, subject="agent-1") -> a signed token.
TokenFactory = Callable[..., str]


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """Test settings (the test secret, quiet logs) with ``overrides``."""
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


async def started_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """An app with its lifespan running (engine open), for ``async for app in ...``."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


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


def is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


@contextmanager
def server_data_dir(prefix: str) -> Iterator[Path]:
    """A fresh folder for an embedded PostgreSQL a test starts, removed afterwards.

    Not under pytest's temporary folder: another pytest session of the same user makes that
    folder private again (0700), and the server, which runs as another user, then loses its
    own files (initdb fails, or the server PANICs at shutdown).
    """
    folder = Path(tempfile.mkdtemp(prefix=f"aurion-{prefix}-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def child_url(conversation_id: object) -> str:
    return f"/api/v2/conversations/{conversation_id}/children"


async def set_state(engine: AsyncEngine, workspace: str, cid: str, assignments: str) -> None:
    """Put a conversation into a state the API cannot produce yet (merged, spam, ...)."""
    async with engine.begin() as conn:
        await conn.execute(
            text(f"UPDATE conversations SET {assignments} WHERE workspace_id = :w AND id = :i"),
            {"w": workspace, "i": uuid.UUID(cid)},
        )


async def count_rows(engine: AsyncEngine, workspace: str) -> dict[str, int]:
    """Rows of each table in a workspace."""
    counts = {}
    async with engine.connect() as conn:
        for table in ("conversations", "messages", "activities"):
            result = await conn.execute(
                text(f"SELECT count(*) FROM {table} WHERE workspace_id = :w"), {"w": workspace}
            )
            counts[table] = int(result.scalar_one())
    return counts


async def activity_kinds(engine: AsyncEngine, workspace: str) -> dict[str, int]:
    """How many activities of each kind a workspace has."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT kind, count(*) FROM activities WHERE workspace_id = :w GROUP BY kind"),
            {"w": workspace},
        )
        return {kind: int(n) for kind, n in rows.all()}


@asynccontextmanager
async def parent_locked(engine: AsyncEngine, workspace: str, parent_id: str) -> AsyncIterator[None]:
    """Hold a conversation's row lock (as a slow concurrent writer would) for the block."""
    async with engine.connect() as blocker:
        await blocker.execute(
            text("SELECT 1 FROM conversations WHERE workspace_id = :w AND id = :i FOR UPDATE"),
            {"w": workspace, "i": uuid.UUID(parent_id)},
        )
        yield
        await blocker.rollback()


@asynccontextmanager
async def client_with(database_url: str, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app started with some settings changed."""
    async with app_client(make_settings(database_url, **overrides), "http://t", timeout=60) as c:
        yield c


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == {
        "detail": "The database is unavailable; retry shortly.",
        "code": "database_unavailable",
    }
    assert int(response.headers["retry-after"]) >= 1


# Each counter on the conversation row and the count(*) it must equal.
_COUNTERS = """
SELECT c.id,
    c.n_children, (SELECT count(*) FROM conversations k WHERE k.workspace_id = :w
                   AND k.parent_id = c.id AND k.deleted_at IS NULL) AS children,
    c.n_open_children, (SELECT count(*) FROM conversations k
                        WHERE k.workspace_id = :w AND k.parent_id = c.id
                          AND k.deleted_at IS NULL
                          AND k.status NOT IN ('resolved', 'closed')) AS open_children,
    c.n_messages, (SELECT count(*) FROM messages m WHERE m.workspace_id = :w
                   AND m.conversation_id = c.id) AS messages,
    c.n_activities, (SELECT count(*) FROM activities a WHERE a.workspace_id = :w
                     AND a.conversation_id = c.id) AS activities
FROM conversations c WHERE c.workspace_id = :w
"""


async def assert_counters_exact(engine: AsyncEngine, workspace: str) -> int:
    """Every conversation's counters equal what they count; the number of rows checked."""
    async with engine.connect() as conn:
        rows = (await conn.execute(text(_COUNTERS), {"w": workspace})).all()
    wrong = [
        r
        for r in rows
        if (r.n_children, r.n_open_children, r.n_messages, r.n_activities)
        != (r.children, r.open_children, r.messages, r.activities)
    ]
    assert wrong == [], wrong
    return len(rows)


# How the API writes a time: ISO 8601 UTC to the second.
API_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def assert_shaped_as(model: type[BaseModel], raw: bytes) -> dict[str, Any]:
    """``raw`` is a ``model`` exactly: it validates strictly, has the model's keys and no
    others (nested models too), and writes its times as the API does. Returns it parsed."""
    model.model_validate_json(raw, strict=True)
    data: dict[str, Any] = orjson.loads(raw)
    _assert_keys(model, data, model.__name__)
    return data


def _assert_keys(model: type[BaseModel], data: dict[str, Any], where: str) -> None:
    assert set(data) == set(model.model_fields), (
        f"{where}: extra {set(data) - set(model.model_fields)}, "
        f"missing {set(model.model_fields) - set(data)}"
    )
    for name, field in model.model_fields.items():
        value, kinds = data[name], (field.annotation, *get_args(field.annotation))
        if value is None:
            continue
        if datetime in kinds:
            assert API_TIME.match(value), f"{where}.{name} = {value!r}"
        for inner in kinds:
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                for i, item in enumerate(value if isinstance(value, list) else [value]):
                    _assert_keys(inner, item, f"{where}.{name}[{i}]")


Sent = list[str]


@asynccontextmanager
async def traced_client(
    database_url: str, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Sent]]:
    """A client of an app whose statements are recorded in ``Sent``: a query logger on each
    driver connection of the pool (asyncpg calls it once per statement, failed ones included)."""
    sent: Sent = []
    async for app in started_app(make_settings(database_url, **overrides)):

        @event.listens_for(app.state.engine.sync_engine, "connect")
        def trace(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.driver_connection.add_query_logger(
                lambda query: sent.append(_statement_of(query))
            )

        # The connection of the start-up's probe (aurion.db.driver) predates the logger.
        await greenlet_spawn(app.state.engine.sync_engine.pool.dispose)

        async with asgi_client(app, "http://t") as client:
            yield client, sent


def _statement_of(query: Any) -> str:
    """The statement a query ran: on Citus, a call of aurion_delegate runs the statement that is
    its fourth argument (aurion.db.delegation)."""
    if "aurion_delegate(" in query.query and len(query.args or ()) >= 4:
        return str(query.args[3])
    return str(query.query)


async def statements_sent(sent: Sent, call: Any) -> tuple[httpx.Response, Sent]:
    """The response to ``call`` and the statements it sent (SETs of the session left out)."""
    sent.clear()
    response = await call
    return response, [s for s in sent if s.strip() and not s.lstrip().upper().startswith("SET")]
