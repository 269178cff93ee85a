"""Resolving a parent with open children, reopening, automatic resolution (SPEC §8.2, §8.3)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conversations.lifecycle.support import (
    activities,
    events,
    get,
    new_child,
    new_conversation,
    snapshot,
    url,
)
from tests.support import assert_counters_exact, child_url, client_with

RESOLVED = ("resolved", "closed")


async def assert_no_resolved_parent_has_open_children(engine: AsyncEngine, workspace: str) -> None:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT p.id, k.id AS child FROM conversations p JOIN conversations k "
                    "ON k.workspace_id = p.workspace_id AND k.parent_id = p.id "
                    "WHERE p.workspace_id = :w AND p.status IN ('resolved', 'closed') "
                    "AND k.deleted_at IS NULL AND k.status NOT IN ('resolved', 'closed')"
                ),
                {"w": workspace},
            )
        ).all()
    assert rows == []


async def family(
    client: httpx.AsyncClient, auth: dict[str, str], n: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    parent = await new_conversation(client, auth)
    children = [await new_child(client, auth, parent["id"], f"c{i}") for i in range(n)]
    return await get(client, auth, parent["id"]), children


class TestBlockPolicy:
    async def test_open_children_refuse_and_name_them(
        self, client: httpx.AsyncClient, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        parent, children = await family(client, auth, 3)
        await client.patch(url(children[0]["id"]), json={"status": "resolved"}, headers=auth)
        before = await snapshot(engine, workspace)
        for status in RESOLVED:
            response = await client.patch(url(parent["id"]), json={"status": status}, headers=auth)
            assert response.status_code == 409
            body = response.json()
            assert body["code"] == "open_children"
            assert body["open_child_ids"] == sorted(c["id"] for c in children[1:])
            assert set(body) == {"detail", "code", "open_child_ids"}
        assert await snapshot(engine, workspace) == before

    async def test_resolved_children_let_the_parent_resolve(
        self, client: httpx.AsyncClient, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        parent, children = await family(client, auth, 2)
        for child in children:
            await client.patch(url(child["id"]), json={"status": "closed"}, headers=auth)
        response = await client.patch(url(parent["id"]), json={"status": "resolved"}, headers=auth)
        assert response.status_code == 200
        assert response.json()["status"] == "resolved"
        await assert_counters_exact(engine, workspace)


class TestCascade:
    async def test_children_resolve_asks_for_the_cascade(
        self, client: httpx.AsyncClient, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        parent, children = await family(client, auth, 3)
        done = await client.patch(url(children[0]["id"]), json={"status": "resolved"}, headers=auth)
        response = await client.patch(
            url(parent["id"], "?children=resolve"), json={"status": "closed"}, headers=auth
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "closed"
        assert response.json()["version"] == parent["version"] + 1
        untouched = await get(client, auth, children[0]["id"])
        assert untouched == done.json(), "a resolved child keeps its status and version"
        for child in children[1:]:
            now = await get(client, auth, child["id"])
            assert now["status"] == "closed"
            assert now["version"] == child["version"] + 1
            assert (await activities(engine, workspace, child["id"]))[-1] == (
                "resolved_with_parent",
                {"parent_id": parent["id"], "from_status": "open"},
            )
        cascade_events = [
            data for kind, data in await events(engine, workspace)
            if kind == "child.resolved_with_parent"
        ]  # fmt: skip
        assert sorted(e["conversation_id"] for e in cascade_events) == sorted(
            c["id"] for c in children[1:]
        )
        await assert_counters_exact(engine, workspace)
        await assert_no_resolved_parent_has_open_children(engine, workspace)

    async def test_the_policy_setting_cascades_without_asking(
        self, database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        async with client_with(database_url, parent_close_policy="cascade") as client:
            parent, children = await family(client, auth, 2)
            response = await client.patch(
                url(parent["id"]), json={"status": "resolved"}, headers=auth
            )
            assert response.status_code == 200
            for child in children:
                assert (await get(client, auth, child["id"]))["status"] == "resolved"
        await assert_counters_exact(engine, workspace)

    async def test_invalid_children_mode_is_422(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        parent = await new_conversation(client, auth)
        response = await client.patch(
            url(parent["id"], "?children=all"), json={"status": "resolved"}, headers=auth
        )
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", "children"]

    async def test_cascade_racing_child_creation_keeps_the_invariant(
        self, database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        async with client_with(database_url, parent_close_policy="cascade") as client:
            for _ in range(4):
                parent, _ = await family(client, auth, 3)
                creations = [
                    client.post(child_url(parent["id"]), json={"subject": "new"}, headers=auth)
                    for _ in range(6)
                ]
                resolve = client.patch(url(parent["id"]), json={"status": "resolved"}, headers=auth)
                results = await asyncio.gather(resolve, *creations)
                assert [r.status_code for r in results] == [200] + [201] * 6, [
                    r.text for r in results if r.status_code >= 300
                ]
                await assert_no_resolved_parent_has_open_children(engine, workspace)
        await assert_counters_exact(engine, workspace)


class TestReopen:
    async def test_a_reopened_child_reopens_its_parent(
        self, client: httpx.AsyncClient, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        parent, children = await family(client, auth, 2)
        await client.patch(
            url(parent["id"], "?children=resolve"), json={"status": "resolved"}, headers=auth
        )
        resolved = await get(client, auth, parent["id"])
        response = await client.patch(
            url(children[0]["id"]), json={"status": "pending"}, headers=auth
        )
        assert response.status_code == 200
        now = await get(client, auth, parent["id"])
        assert now["status"] == "open"
        assert now["version"] == resolved["version"] + 1
        assert (await activities(engine, workspace, parent["id"]))[-1] == (
            "reopened",
            {"reason": "child_reopened", "child_id": children[0]["id"], "from_status": "resolved"},
        )
        assert (await events(engine, workspace))[-1] == (
            "parent.reopened",
            {
                "conversation_id": parent["id"],
                "reason": "child_reopened",
                "child_id": children[0]["id"],
            },
        )
        await assert_counters_exact(engine, workspace)
        await assert_no_resolved_parent_has_open_children(engine, workspace)

    async def test_a_child_status_change_under_an_open_parent_leaves_it_alone(
        self, client: httpx.AsyncClient, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        parent, children = await family(client, auth, 2)
        for status in ("resolved", "open", "closed", "pending"):
            await client.patch(url(children[0]["id"]), json={"status": status}, headers=auth)
            await assert_counters_exact(engine, workspace)
        assert await get(client, auth, parent["id"]) == parent


class TestAutoResolve:
    async def test_off_by_default(
        self, client: httpx.AsyncClient, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        parent, children = await family(client, auth, 1)
        await client.patch(url(children[0]["id"]), json={"status": "resolved"}, headers=auth)
        assert (await get(client, auth, parent["id"]))["status"] == "open"

    async def test_the_last_open_child_resolves_the_parent(
        self, database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        async with client_with(database_url, auto_resolve_parent=True) as client:
            parent, children = await family(client, auth, 2)
            await client.patch(url(children[0]["id"]), json={"status": "closed"}, headers=auth)
            assert (await get(client, auth, parent["id"]))["status"] == "open"
            await client.patch(url(children[1]["id"]), json={"status": "resolved"}, headers=auth)
            now = await get(client, auth, parent["id"])
            assert now["status"] == "resolved"
            assert now["version"] == parent["version"] + 1
        assert (await activities(engine, workspace, parent["id"]))[-1] == (
            "resolved_automatically",
            {"reason": "all_children_resolved", "child_id": children[1]["id"]},
        )
        assert (await events(engine, workspace))[-1][0] == "parent.resolved_automatically"
        await assert_counters_exact(engine, workspace)

    @pytest.mark.parametrize("attempt", range(3))
    async def test_two_last_children_at_once_give_one_transition(
        self, database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str],
        attempt: int,
    ) -> None:  # fmt: skip
        async with client_with(database_url, auto_resolve_parent=True) as client:
            parent, children = await family(client, auth, 2)
            results = await asyncio.gather(
                *(
                    client.patch(url(c["id"]), json={"status": "resolved"}, headers=auth)
                    for c in children
                )
            )
            assert [r.status_code for r in results] == [200, 200]
            now = await get(client, auth, parent["id"])
        assert now["status"] == "resolved"
        assert now["version"] == parent["version"] + 1
        kinds = [k for k, _ in await activities(engine, workspace, parent["id"])]
        assert kinds.count("resolved_automatically") == 1
        types = [t for t, _ in await events(engine, workspace)]
        assert types.count("parent.resolved_automatically") == 1
        await assert_counters_exact(engine, workspace)
