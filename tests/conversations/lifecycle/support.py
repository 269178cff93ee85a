"""Helpers of the lifecycle tests: rows and versions before and after, activities, events."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import child_url

BASE = "/api/v2/conversations"


def url(conversation_id: object, suffix: str = "") -> str:
    return f"{BASE}/{conversation_id}{suffix}"


async def new_conversation(
    client: httpx.AsyncClient, auth: dict[str, str], **fields: Any
) -> dict[str, Any]:
    response = await client.post(BASE, json={"subject": "Parent", **fields}, headers=auth)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def new_child(
    client: httpx.AsyncClient, auth: dict[str, str], parent_id: str, subject: str = "Child"
) -> dict[str, Any]:
    response = await client.post(child_url(parent_id), json={"subject": subject}, headers=auth)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def snapshot(engine: AsyncEngine, workspace: str) -> dict[str, Any]:
    """Everything a refusal must leave as it was: each conversation row, and row counts."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT id, version, status, parent_id, deleted_at, n_children, "
                    "n_open_children, n_activities, updated_at, archived_at, is_spam, subject "
                    "FROM conversations WHERE workspace_id = :w ORDER BY id"
                ),
                {"w": workspace},
            )
        ).all()
        counts = {}
        for table in ("activities", "events", "messages"):
            result = await conn.execute(
                text(f"SELECT count(*) FROM {table} WHERE workspace_id = :w"), {"w": workspace}
            )
            counts[table] = int(result.scalar_one())
    return {"rows": [tuple(r) for r in rows], **counts}


async def activities(engine: AsyncEngine, workspace: str, cid: str) -> list[tuple[str, Any]]:
    """(kind, payload) of a conversation's activities, oldest first."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT kind, payload FROM activities WHERE workspace_id = :w "
                    "AND conversation_id = :c ORDER BY created_at, id"
                ),
                {"w": workspace, "c": uuid.UUID(cid)},
            )
        ).all()
    return [(r.kind, r.payload) for r in rows]


async def events(engine: AsyncEngine, workspace: str) -> list[tuple[str, dict[str, Any]]]:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT type, data FROM events WHERE workspace_id = :w ORDER BY txid, id"),
                {"w": workspace},
            )
        ).all()
    return [(r.type, r.data) for r in rows]


async def get(client: httpx.AsyncClient, auth: dict[str, str], cid: str) -> dict[str, Any]:
    response = await client.get(url(cid), headers=auth)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data
