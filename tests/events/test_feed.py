"""GET /api/v2/events: the workspace's events, in commit order, gap-free."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from aurion.auth.principal import READ_WRITE
from tests.support import Factory, TokenFactory, child_url, set_state

FEED = "/api/v2/events"
EVERY = f"{READ_WRITE} events:read webhooks:write"


@pytest.fixture
def feed_auth(token_for: TokenFactory, workspace: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(workspace, 'events:read')}"}


async def read_all(
    client: httpx.AsyncClient, headers: dict[str, str], after: str | None = None, **params: Any
) -> tuple[list[dict[str, Any]], str]:
    """Every event after ``after`` (page by page); the items and the last cursor."""
    items: list[dict[str, Any]] = []
    while True:
        query = {**params, **({"after": after} if after else {})}
        response = await client.get(FEED, params=query, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        if not page["items"]:
            return items, page["next_cursor"]
        after = page["next_cursor"]


async def table_events(engine: AsyncEngine, workspace: str) -> list[tuple[str, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT id, type FROM events WHERE workspace_id = :w ORDER BY txid, id"),
            {"w": workspace},
        )
        return [(str(r.id), r.type) for r in rows]


class TestListEvents:
    async def test_unauthenticated_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.get(FEED)
        assert response.status_code == 401
        assert response.json()["code"] == "not_authenticated"

    async def test_conversation_scopes_are_not_enough(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        response = await client.get(FEED, headers=auth)
        assert response.status_code == 403
        assert response.json()["code"] == "insufficient_scope"
        assert 'scope="events:read"' in response.headers["www-authenticate"]

    async def test_child_creation_is_in_the_feed(
        self,
        client: httpx.AsyncClient,
        create_parent: Factory,
        auth: dict[str, str],
        feed_auth: dict[str, str],
    ) -> None:
        parent = await create_parent()
        created = await client.post(child_url(parent["id"]), json={"subject": "c"}, headers=auth)
        assert created.status_code == 201
        child = created.json()

        items, _ = await read_all(client, feed_auth)

        assert [e["type"] for e in items] == ["conversation.created", "child.created"]
        assert items[0]["data"] == {"conversation_id": parent["id"], "conversation": parent}
        event = items[1]
        assert set(event) == {"id", "type", "created_at", "data"}
        assert uuid.UUID(event["id"])
        assert event["created_at"] == child["created_at"]
        assert event["data"] == {
            "conversation_id": child["id"],
            "parent_id": parent["id"],
            "conversation": child,
        }
        # events.data is json, not jsonb (migration 0007_events_json): the object as the API
        # answered it, byte for byte (same keys, same order).
        page = await client.get(FEED, params={"types": "child.created"}, headers=feed_auth)
        assert b'"conversation" : ' + created.content in page.content

    async def test_reopening_a_parent_is_an_event(
        self,
        client: httpx.AsyncClient,
        engine: AsyncEngine,
        workspace: str,
        create_parent: Factory,
        auth: dict[str, str],
        feed_auth: dict[str, str],
    ) -> None:
        parent = await create_parent()
        await set_state(engine, workspace, parent["id"], "status = 'resolved'")
        child = await client.post(child_url(parent["id"]), json={"subject": "c"}, headers=auth)
        items, _ = await read_all(client, feed_auth, types="parent.reopened")
        assert [e["data"] for e in items] == [
            {
                "conversation_id": parent["id"],
                "reason": "child_created",
                "child_id": child.json()["id"],
            }
        ]

    async def test_lifecycle_changes_are_in_the_feed(
        self,
        client: httpx.AsyncClient,
        create_parent: Factory,
        auth: dict[str, str],
        feed_auth: dict[str, str],
    ) -> None:
        parent = await create_parent()
        child = (
            await client.post(child_url(parent["id"]), json={"subject": "c"}, headers=auth)
        ).json()
        url = f"/api/v2/conversations/{parent['id']}?children=resolve"
        resolved = await client.patch(url, json={"status": "resolved"}, headers=auth)
        assert resolved.status_code == 200, resolved.text
        deleted = await client.delete(f"/api/v2/conversations/{parent['id']}", headers=auth)
        assert deleted.status_code == 204

        items, _ = await read_all(client, feed_auth)

        types = [e["type"] for e in items]
        assert types[:2] == ["conversation.created", "child.created"]
        assert "conversation.updated" in types
        assert "child.resolved_with_parent" in types
        assert types[-1] in ("conversation.deleted", "child.detached")
        assert {"conversation.deleted", "child.detached"} <= set(types)
        updated = next(e for e in items if e["type"] == "conversation.updated")
        assert updated["data"]["conversation"] == resolved.json()
        cascaded = next(e for e in items if e["type"] == "child.resolved_with_parent")
        assert cascaded["data"]["conversation_id"] == child["id"]

    async def test_pages_and_cursor(
        self, client: httpx.AsyncClient, create_parent: Factory, feed_auth: dict[str, str]
    ) -> None:
        for _ in range(5):
            await create_parent()
        first = (await client.get(FEED, params={"limit": 2}, headers=feed_auth)).json()
        assert len(first["items"]) == 2
        rest, last = await read_all(client, feed_auth, after=first["next_cursor"], limit=2)
        assert len(rest) == 3
        everything, _ = await read_all(client, feed_auth)
        assert [e["id"] for e in everything] == [e["id"] for e in first["items"] + rest]

        # Nothing new: the cursor given comes back, with no items.
        again = (await client.get(FEED, params={"after": last}, headers=feed_auth)).json()
        assert again == {"items": [], "next_cursor": last}
        await create_parent()
        newer = (await client.get(FEED, params={"after": last}, headers=feed_auth)).json()
        assert [e["type"] for e in newer["items"]] == ["conversation.created"]
        assert newer["next_cursor"] != last

    async def test_an_empty_feed_still_has_a_cursor(
        self, client: httpx.AsyncClient, feed_auth: dict[str, str], create_parent: Factory
    ) -> None:
        empty = (await client.get(FEED, headers=feed_auth)).json()
        assert empty["items"] == []
        await create_parent()
        page = await client.get(FEED, params={"after": empty["next_cursor"]}, headers=feed_auth)
        assert [e["type"] for e in page.json()["items"]] == ["conversation.created"]

    async def test_type_filter(
        self,
        client: httpx.AsyncClient,
        create_parent: Factory,
        auth: dict[str, str],
        feed_auth: dict[str, str],
    ) -> None:
        parent = await create_parent()
        await client.post(child_url(parent["id"]), json={"subject": "c"}, headers=auth)
        children, _ = await read_all(client, feed_auth, types="child.created")
        assert [e["type"] for e in children] == ["child.created"]
        both, _ = await read_all(client, feed_auth, types="child.created,conversation.created")
        assert len(both) == 2

    @pytest.mark.parametrize(
        "params",
        [
            {"types": "child.created,child.exploded"},
            {"types": ""},
            {"types": "child.created,"},
            {"limit": 0},
            {"limit": 501},
            {"after": "not-a-cursor"},
            {"after": "A" * 33},
        ],
    )
    async def test_bad_parameters_are_422(
        self, client: httpx.AsyncClient, feed_auth: dict[str, str], params: dict[str, Any]
    ) -> None:
        response = await client.get(FEED, params=params, headers=feed_auth)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"][0] == "query"

    async def test_another_workspace_is_invisible(
        self,
        client: httpx.AsyncClient,
        create_parent: Factory,
        token_for: TokenFactory,
        feed_auth: dict[str, str],
    ) -> None:
        await create_parent()
        other = {"Authorization": f"Bearer {token_for(f'ws_{uuid.uuid4().hex[:12]}', EVERY)}"}
        items, _ = await read_all(client, other)
        assert items == []
        mine, cursor = await read_all(client, feed_auth)
        assert len(mine) == 1
        # A cursor from another workspace shows nothing of this one either.
        assert (await read_all(client, other, after=cursor))[0] == []

    async def test_a_refused_change_writes_no_event(
        self,
        client: httpx.AsyncClient,
        engine: AsyncEngine,
        workspace: str,
        create_parent: Factory,
        auth: dict[str, str],
    ) -> None:
        parent = await create_parent()
        child = (
            await client.post(child_url(parent["id"]), json={"subject": "c"}, headers=auth)
        ).json()
        before = await table_events(engine, workspace)
        refused = await client.post(child_url(child["id"]), json={"subject": "g"}, headers=auth)
        assert refused.status_code == 409
        assert refused.json()["code"] == "parent_is_child"
        assert await table_events(engine, workspace) == before


class TestGapFree:
    async def test_an_older_transaction_holds_back_newer_events(
        self,
        client: httpx.AsyncClient,
        engine: AsyncEngine,
        workspace: str,
        create_parent: Factory,
        feed_auth: dict[str, str],
    ) -> None:
        """A transaction that started first and commits last is not skipped: the events
        committed after it started wait until it ends, then both appear, the older first."""
        _, start = await read_all(client, feed_auth)
        async with engine.connect() as slow:
            await slow.execute(
                text(
                    "INSERT INTO events (workspace_id, id, type, created_at, data) "
                    "VALUES (:w, :i, 'conversation.deleted', now(), '{}')"
                ),
                {"w": workspace, "i": uuid.uuid4()},
            )
            await create_parent()  # commits while the slow transaction is still open
            during, cursor = await read_all(client, feed_auth, after=start)
            assert during == []
            assert cursor == start
            await slow.commit()
        after, _ = await read_all(client, feed_auth, after=cursor)
        assert [e["type"] for e in after] == ["conversation.deleted", "conversation.created"]

    async def test_a_tight_reader_misses_nothing_during_parallel_creations(
        self,
        client: httpx.AsyncClient,
        engine: AsyncEngine,
        workspace: str,
        create_parent: Factory,
        auth: dict[str, str],
        feed_auth: dict[str, str],
    ) -> None:
        parents = [await create_parent() for _ in range(3)]
        _, cursor = await read_all(client, feed_auth)
        seen: list[str] = []
        done = asyncio.Event()

        async def reader() -> None:
            nonlocal cursor
            while True:
                finished = done.is_set()
                page = (await client.get(FEED, params={"after": cursor}, headers=feed_auth)).json()
                seen.extend(e["id"] for e in page["items"])
                cursor = page["next_cursor"]
                if finished and not page["items"]:
                    return
                await asyncio.sleep(0)

        async def create(n: int) -> None:
            parent = parents[n % len(parents)]["id"]
            response = await client.post(child_url(parent), json={"subject": f"c{n}"}, headers=auth)
            assert response.status_code == 201, response.text

        reading = asyncio.create_task(reader())
        await asyncio.gather(*(create(n) for n in range(30)))
        done.set()
        await reading

        table = await table_events(engine, workspace)
        assert len(seen) == len(set(seen)) == 30
        assert sorted(seen) == sorted(i for i, t in table if t == "child.created")
        assert seen == [i for i, _ in table][3:], "the feed's order is the table's (txid, id)"


def test_aurion_token_without_scope_grants_every_scope(capsys: pytest.CaptureFixture[str]) -> None:
    from jose import jwt

    from aurion.cli import main

    assert main(["token", "--workspace", "w", "--sub", "me"]) == 0
    claims = jwt.get_unverified_claims(capsys.readouterr().out.strip())
    assert set(claims["scope"].split()) == set(EVERY.split())
