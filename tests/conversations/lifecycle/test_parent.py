"""PUT /api/v2/conversations/{id}/parent — setConversationParent (SPEC §8.4)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import READ, TokenFactory
from tests.conversations.lifecycle.support import (
    activities,
    events,
    get,
    new_child,
    new_conversation,
    snapshot,
    url,
)
from tests.support import assert_counters_exact, client_with, set_state


def parent_url(cid: object) -> str:
    return url(cid, "/parent")


async def put_parent(
    client: httpx.AsyncClient, auth: dict[str, str], cid: str, parent_id: str | None
) -> httpx.Response:
    return await client.put(parent_url(cid), json={"parent_id": parent_id}, headers=auth)


class TestRefusals:
    async def test_no_token_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.put(parent_url(uuid.uuid4()), json={"parent_id": None})
        assert response.status_code == 401

    async def test_read_scope_is_403(
        self, client: httpx.AsyncClient, token_for: TokenFactory, workspace: str
    ) -> None:
        headers = {"Authorization": f"Bearer {token_for(workspace, READ)}"}
        response = await client.put(
            parent_url(uuid.uuid4()), json={"parent_id": None}, headers=headers
        )
        assert response.status_code == 403

    @pytest.mark.parametrize(
        ("body", "loc"),
        [({}, ["body", "parent_id"]), ({"parent_id": "x"}, ["body", "parent_id"]),
         ({"parent_id": None, "x": 1}, ["body", "x"])],
    )  # fmt: skip
    async def test_invalid_bodies_are_422(
        self, client: httpx.AsyncClient, auth: dict[str, str], body: Any, loc: list[str]
    ) -> None:
        mine = await new_conversation(client, auth)
        response = await client.put(parent_url(mine["id"]), json=body, headers=auth)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == loc

    async def test_itself_is_422_and_writes_nothing(
        self, client: httpx.AsyncClient, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        mine = await new_conversation(client, auth)
        before = await snapshot(engine, workspace)
        response = await put_parent(client, auth, mine["id"], mine["id"])
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "parent_id"]
        assert await snapshot(engine, workspace) == before

    @pytest.mark.parametrize(
        ("state", "code"),
        [
            ("is_spam = true", "parent_is_spam"),
            ("archived_at = now()", "parent_archived"),
            ("deleted_at = now()", "conversation_not_found"),
        ],
    )
    async def test_the_new_parent_is_refused_as_in_child_creation(
        self,
        client: httpx.AsyncClient,
        engine: AsyncEngine,
        workspace: str,
        auth: dict[str, str],
        state: str,
        code: str,
    ) -> None:
        mine = await new_conversation(client, auth)
        target = await new_conversation(client, auth)
        await set_state(engine, workspace, target["id"], state)
        before = await snapshot(engine, workspace)
        response = await put_parent(client, auth, mine["id"], target["id"])
        assert response.json()["code"] == code
        assert response.status_code == (404 if code == "conversation_not_found" else 409)
        assert await snapshot(engine, workspace) == before

    async def test_merged_and_child_parents_are_refused_naming_the_other(
        self, client: httpx.AsyncClient, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        mine = await new_conversation(client, auth)
        into = await new_conversation(client, auth)
        merged = await new_conversation(client, auth)
        await set_state(engine, workspace, merged["id"], f"merged_into_id = '{into['id']}'")
        child = await new_child(client, auth, into["id"])
        before = await snapshot(engine, workspace)
        response = await put_parent(client, auth, mine["id"], merged["id"])
        assert (response.status_code, response.json()["code"]) == (409, "parent_merged")
        assert into["id"] in response.json()["detail"]
        response = await put_parent(client, auth, mine["id"], child["id"])
        assert (response.status_code, response.json()["code"]) == (409, "parent_is_child")
        assert into["id"] in response.json()["detail"]
        missing = await put_parent(client, auth, mine["id"], str(uuid.uuid4()))
        assert (missing.status_code, missing.json()["code"]) == (404, "conversation_not_found")
        assert await snapshot(engine, workspace) == before

    async def test_a_conversation_with_children_cannot_become_a_child(
        self, client: httpx.AsyncClient, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        mine = await new_conversation(client, auth)
        await new_child(client, auth, mine["id"])
        target = await new_conversation(client, auth)
        before = await snapshot(engine, workspace)
        response = await put_parent(client, auth, mine["id"], target["id"])
        assert (response.status_code, response.json()["code"]) == (
            409,
            "conversation_has_children",
        )
        assert await snapshot(engine, workspace) == before

    async def test_a_full_parent_and_a_stale_if_match_are_refused(
        self, database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        async with client_with(database_url, max_children_per_parent=1) as client:
            full = await new_conversation(client, auth)
            await new_child(client, auth, full["id"])
            mine = await new_conversation(client, auth)
            before = await snapshot(engine, workspace)
            response = await put_parent(client, auth, mine["id"], full["id"])
            assert (response.status_code, response.json()["code"]) == (
                409,
                "children_limit_reached",
            )
            stale = await client.put(
                parent_url(mine["id"]),
                json={"parent_id": None},
                headers={**auth, "If-Match": '"9"'},
            )
            assert stale.status_code == 412
            assert await snapshot(engine, workspace) == before

    async def test_another_workspace_is_404(
        self,
        client: httpx.AsyncClient,
        engine: AsyncEngine,
        workspace: str,
        auth: dict[str, str],
        token_for: TokenFactory,
    ) -> None:
        mine = await new_conversation(client, auth)
        other_auth = {"Authorization": f"Bearer {token_for('ws_other_' + workspace)}"}
        theirs = await new_conversation(client, other_auth)
        before = await snapshot(engine, workspace)
        into_theirs = await put_parent(client, auth, mine["id"], theirs["id"])
        assert into_theirs.status_code == 404
        mine_from_there = await put_parent(client, other_auth, mine["id"], None)
        assert mine_from_there.status_code == 404
        assert await snapshot(engine, workspace) == before


class TestMoves:
    async def test_attach_move_detach(
        self, client: httpx.AsyncClient, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        first = await new_conversation(client, auth, status="pending")
        second = await new_conversation(client, auth)
        mine = await new_conversation(client, auth, source="email", tags=["mine"])

        attached = await put_parent(client, auth, mine["id"], first["id"])
        assert attached.status_code == 200, attached.text
        assert attached.headers["etag"] == '"2"'
        body = attached.json()
        assert body["parent_id"] == first["id"]
        assert body["tags"] == ["mine"], "inherited fields are not copied"
        assert body["source"] == "email"
        assert (await get(client, auth, first["id"]))["tab_counts"]["related"] == 1

        moved = (await put_parent(client, auth, mine["id"], second["id"])).json()
        assert moved["parent_id"] == second["id"]
        assert moved["version"] == 3
        assert (await get(client, auth, first["id"]))["tab_counts"]["related"] == 0

        same = await put_parent(client, auth, mine["id"], second["id"])
        assert same.status_code == 200
        assert same.json() == moved, "the same parent: nothing changes"

        detached = (await put_parent(client, auth, mine["id"], None)).json()
        assert detached["parent_id"] is None
        assert detached["source"] == "email"
        assert detached["version"] == 4

        assert [a for a in await activities(engine, workspace, mine["id"])][1:] == [
            ("parent_changed", {"from": None, "to": first["id"]}),
            ("parent_changed", {"from": first["id"], "to": second["id"]}),
            ("parent_changed", {"from": second["id"], "to": None}),
        ]
        assert (await activities(engine, workspace, first["id"]))[1:] == [
            ("child_attached", {"child_id": mine["id"]}),
            ("child_detached", {"child_id": mine["id"]}),
        ]
        first_now = await get(client, auth, first["id"])
        assert first_now["version"] == first["version"] + 2
        assert first_now["status"] == "pending"
        assert [(t, d) for t, d in await events(engine, workspace) if t.startswith("child.")] == [
            ("child.attached", {"conversation_id": mine["id"], "parent_id": first["id"]}),
            ("child.detached", {"conversation_id": mine["id"], "parent_id": first["id"]}),
            ("child.attached", {"conversation_id": mine["id"], "parent_id": second["id"]}),
            ("child.detached", {"conversation_id": mine["id"], "parent_id": second["id"]}),
        ]
        await assert_counters_exact(engine, workspace)

    async def test_an_open_child_reopens_a_resolved_parent(
        self, client: httpx.AsyncClient, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        resolved = await new_conversation(client, auth, status="resolved")
        closed_child = await new_conversation(client, auth, status="closed")
        await put_parent(client, auth, closed_child["id"], resolved["id"])
        assert (await get(client, auth, resolved["id"]))["status"] == "resolved"
        mine = await new_conversation(client, auth)
        await put_parent(client, auth, mine["id"], resolved["id"])
        now = await get(client, auth, resolved["id"])
        assert now["status"] == "open"
        assert (await activities(engine, workspace, resolved["id"]))[-1] == (
            "reopened",
            {"reason": "child_attached", "child_id": mine["id"], "from_status": "resolved"},
        )
        assert (await events(engine, workspace))[-1][0] == "parent.reopened"
        await assert_counters_exact(engine, workspace)


class TestConcurrency:
    async def test_twenty_attaches_into_room_for_one(
        self, database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        async with client_with(database_url, max_children_per_parent=3) as client:
            parent = await new_conversation(client, auth)
            for _ in range(2):
                await new_child(client, auth, parent["id"])
            loose = [await new_conversation(client, auth) for _ in range(20)]
            results = await asyncio.gather(
                *(put_parent(client, auth, c["id"], parent["id"]) for c in loose)
            )
        codes = sorted(r.status_code for r in results)
        assert codes == [200] + [409] * 19, [r.text for r in results if r.status_code >= 500]
        assert {r.json()["code"] for r in results if r.status_code == 409} == {
            "children_limit_reached"
        }
        await assert_counters_exact(engine, workspace)

    async def test_moves_back_and_forth_in_opposite_directions(
        self, database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        async with client_with(database_url, max_children_per_parent=6) as client:
            a = await new_conversation(client, auth)
            b = await new_conversation(client, auth)
            on_a = [await new_child(client, auth, a["id"]) for _ in range(4)]
            on_b = [await new_child(client, auth, b["id"]) for _ in range(4)]
            await client.patch(url(on_a[0]["id"]), json={"status": "resolved"}, headers=auth)
            statuses: list[int] = []
            for round_ in range(4):
                to_b = b["id"] if round_ % 2 == 0 else a["id"]
                to_a = a["id"] if round_ % 2 == 0 else b["id"]
                results = await asyncio.gather(
                    *(put_parent(client, auth, c["id"], to_b) for c in on_a),
                    *(put_parent(client, auth, c["id"], to_a) for c in on_b),
                )
                statuses += [r.status_code for r in results]
                bad = [r.text for r in results if r.status_code not in (200, 409)]
                assert bad == []
        assert 200 in statuses
        await assert_counters_exact(engine, workspace)
        for parent in (a, b):
            async with client_with(database_url) as client:
                assert (await get(client, auth, parent["id"]))["tab_counts"]["related"] <= 6
