"""Every wait on the database is bounded: pool, statement and lock timeouts answer 503."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import assert_unavailable, client_with, parent_locked


async def test_exhausted_pool_is_503_after_the_pool_timeout(
    database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str]
) -> None:
    async with client_with(
        database_url, db_pool_size=1, db_max_overflow=0, db_pool_timeout_seconds=0.3
    ) as c:
        parent = (await c.post("/api/v2/conversations", json={"subject": "p"}, headers=auth)).json()
        async with parent_locked(engine, workspace, parent["id"]):
            holder = asyncio.create_task(
                c.post(f"/api/v2/conversations/{parent['id']}/children", json={"subject": "a"},
                       headers=auth)
            )  # fmt: skip
            await asyncio.sleep(0.2)  # the only pooled connection now waits on the lock
            started = time.monotonic()
            starved = await c.get(f"/api/v2/conversations/{parent['id']}", headers=auth)
            waited = time.monotonic() - started
        assert_unavailable(starved)
        assert waited < 2
        assert (await holder).status_code == 201  # the lock holder finishes normally


async def test_statement_timeout_is_503(
    database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str]
) -> None:
    async with client_with(database_url, db_statement_timeout_ms=300, db_lock_timeout_ms=0) as c:
        parent = (await c.post("/api/v2/conversations", json={"subject": "p"}, headers=auth)).json()
        async with parent_locked(engine, workspace, parent["id"]):
            started = time.monotonic()
            response = await c.post(
                f"/api/v2/conversations/{parent['id']}/children", json={"subject": "a"},
                headers=auth,
            )  # fmt: skip
            waited = time.monotonic() - started
        assert_unavailable(response)
        assert waited < 2
        after = (await c.get(f"/api/v2/conversations/{parent['id']}", headers=auth)).json()
        assert after["version"] == 1
        assert after["tab_counts"]["related"] == 0
