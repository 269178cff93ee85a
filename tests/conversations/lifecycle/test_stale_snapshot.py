"""A statement whose snapshot went stale while it waited for its locks runs again.

A writer (here a raw transaction, as a concurrent request's statement would) holds a row lock,
the API request starts and waits for it, and the writer then changes the family before it
commits: a child added under the parent being resolved, or the child being updated moved to
another parent. The request must see the change (retry) and act on the latest state.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tests.conversations.lifecycle.support import get, new_child, new_conversation, url
from tests.support import assert_counters_exact


async def _lock(conn: AsyncConnection, workspace: str, *ids: str) -> None:
    """Lock conversations as every write statement does: in one go, in id order."""
    await conn.execute(
        text(
            "SELECT 1 FROM conversations WHERE workspace_id = :w AND id = ANY(:i) "
            "ORDER BY id FOR NO KEY UPDATE"
        ),
        {"w": workspace, "i": [uuid.UUID(i) for i in ids]},
    )


async def _wait_for_a_lock_wait(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        # On Citus the statement waits on the worker of its workspace: the cluster's view.
        citus = (await conn.execute(text("SELECT to_regclass('citus_stat_activity')"))).scalar()
        activity = "citus_stat_activity" if citus else "pg_stat_activity"
        for _ in range(200):
            waiting = await conn.execute(
                text(
                    f"SELECT count(*) FROM {activity} "
                    "WHERE wait_event_type = 'Lock' AND query LIKE '%snap AS%'"
                )
            )
            if waiting.scalar_one() > 0:
                return
            # pg_stat_activity is read once per transaction: a new one sees new waits.
            await conn.rollback()
            await asyncio.sleep(0.02)
    raise AssertionError("the request never waited for the lock")


async def test_a_child_added_while_the_cascade_waited_is_resolved_too(
    client: httpx.AsyncClient, engine: AsyncEngine, workspace: str, auth: dict[str, str]
) -> None:
    parent = await new_conversation(client, auth)
    first = await new_child(client, auth, parent["id"])
    late = uuid.uuid4()
    async with engine.connect() as writer:
        await _lock(writer, workspace, parent["id"])
        request = asyncio.create_task(
            client.patch(
                url(parent["id"], "?children=resolve"), json={"status": "resolved"}, headers=auth
            )
        )
        await _wait_for_a_lock_wait(engine)
        # What a child creation commits: the child, and the parent's counters.
        now = datetime.now(UTC)
        await writer.execute(
            text(
                "INSERT INTO conversations (workspace_id, id, parent_id, subject, status, "
                "version, created_at, updated_at, source) "
                "VALUES (:w, :c, :p, 'late', 'open', 1, :now, :now, 'child')"
            ),
            {"w": workspace, "c": late, "p": uuid.UUID(parent["id"]), "now": now},
        )
        await writer.execute(
            text(
                "UPDATE conversations SET n_children = n_children + 1, "
                "n_open_children = n_open_children + 1 WHERE workspace_id = :w AND id = :p"
            ),
            {"w": workspace, "p": uuid.UUID(parent["id"])},
        )
        await writer.commit()
    response = await request
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "resolved"
    for child_id in (first["id"], str(late)):
        assert (await get(client, auth, child_id))["status"] == "resolved"
    await assert_counters_exact(engine, workspace)


async def test_a_child_moved_while_its_update_waited_changes_its_new_parent(
    client: httpx.AsyncClient, engine: AsyncEngine, workspace: str, auth: dict[str, str]
) -> None:
    old = await new_conversation(client, auth)
    new = await new_conversation(client, auth)
    child = await new_child(client, auth, old["id"])
    async with engine.connect() as writer:
        await _lock(writer, workspace, old["id"], new["id"], child["id"])
        request = asyncio.create_task(
            client.patch(url(child["id"]), json={"status": "resolved"}, headers=auth)
        )
        await _wait_for_a_lock_wait(engine)
        # What a move commits: the child's parent, and both parents' counters.
        await writer.execute(
            text("UPDATE conversations SET parent_id = :n WHERE workspace_id = :w AND id = :c;"),
            {"w": workspace, "n": uuid.UUID(new["id"]), "c": uuid.UUID(child["id"])},
        )
        for parent_id, delta in ((old["id"], -1), (new["id"], 1)):
            await writer.execute(
                text(
                    "UPDATE conversations SET n_children = n_children + :d, "
                    "n_open_children = n_open_children + :d "
                    "WHERE workspace_id = :w AND id = :p"
                ),
                {"w": workspace, "p": uuid.UUID(parent_id), "d": delta},
            )
        await writer.commit()
    response = await request
    assert response.status_code == 200, response.text
    assert response.json()["parent_id"] == new["id"]
    await assert_counters_exact(engine, workspace)
