"""Many simultaneous creations under one parent: nothing lost, nothing doubled, no deadlock."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import activity_kinds, assert_counters_exact, client_with


async def test_200_simultaneous_children_of_one_parent(
    database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str]
) -> None:
    async with client_with(
        database_url,
        max_children_per_parent=1000,
        db_pool_size=30,
        db_max_overflow=0,
        db_pool_timeout_seconds=60,
        db_lock_timeout_ms=30_000,
    ) as c:
        parent = (await c.post("/api/v2/conversations", json={"subject": "p"}, headers=auth)).json()
        responses = await asyncio.gather(
            *[
                c.post(
                    f"/api/v2/conversations/{parent['id']}/children",
                    json={"subject": f"child {i}"},
                    headers={**auth, "Idempotency-Key": f"k{i}"},
                )
                for i in range(200)
            ]
        )
        after = (await c.get(f"/api/v2/conversations/{parent['id']}", headers=auth)).json()
    assert [r.status_code for r in responses] == [201] * 200
    assert len({r.json()["id"] for r in responses}) == 200
    assert after["version"] == 1 + 200
    assert after["tab_counts"]["related"] == 200
    assert after["tab_counts"]["activities"] == 1 + 200
    kinds = await activity_kinds(engine, workspace)
    async with engine.connect() as conn:
        keys = (
            await conn.execute(
                text("SELECT count(*) FROM idempotency_keys WHERE workspace_id = :w"),
                {"w": workspace},
            )
        ).scalar_one()
    assert kinds == {"created": 1, "child_created": 200, "created_from_parent": 200}
    assert keys == 200
    assert await assert_counters_exact(engine, workspace) == 201
