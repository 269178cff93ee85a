"""Small helpers shared by the tests: URLs, row counts, states the API cannot produce, locks."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import app_client, asgi_client, make_settings, started_app


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
                lambda query: sent.append(query.query)
            )

        async with asgi_client(app, "http://t") as client:
            yield client, sent


async def statements_sent(sent: Sent, call: Any) -> tuple[httpx.Response, Sent]:
    """The response to ``call`` and the statements it sent (SETs of the session left out)."""
    sent.clear()
    response = await call
    return response, [s for s in sent if s.strip() and not s.lstrip().upper().startswith("SET")]
