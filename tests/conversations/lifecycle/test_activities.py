"""GET /api/v2/conversations/{id}/activities — listConversationActivities (SPEC §8.7)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from aurion.conversations.lifecycle.schemas import ACTIVITY_KINDS
from tests.conftest import ROOT, TokenFactory
from tests.conversations.lifecycle.support import new_child, new_conversation, url


def activities_url(cid: object) -> str:
    return url(cid, "/activities")


async def test_no_token_is_401(client: httpx.AsyncClient) -> None:
    assert (await client.get(activities_url(uuid.uuid4()))).status_code == 401


async def test_another_workspace_and_deleted_are_404(
    client: httpx.AsyncClient, auth: dict[str, str], token_for: TokenFactory, workspace: str
) -> None:
    mine = await new_conversation(client, auth)
    other = {"Authorization": f"Bearer {token_for('ws_other_' + workspace)}"}
    assert (await client.get(activities_url(mine["id"]), headers=other)).status_code == 404
    await client.delete(url(mine["id"]), headers=auth)
    response = await client.get(activities_url(mine["id"]), headers=auth)
    assert response.status_code == 404
    assert response.json()["code"] == "conversation_not_found"


async def test_bad_limit_and_cursor_are_422(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    mine = await new_conversation(client, auth)
    for params in ({"limit": 0}, {"limit": 101}, {"cursor": "x"}):
        response = await client.get(activities_url(mine["id"]), params=params, headers=auth)
        assert response.status_code == 422


async def test_newest_first_page_by_page(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    parent = await new_conversation(client, auth)
    child = await new_child(client, auth, parent["id"])
    for subject in ("a", "b", "c"):
        await client.patch(url(parent["id"]), json={"subject": subject}, headers=auth)
    await client.delete(url(child["id"]), headers=auth)
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await client.get(activities_url(parent["id"]), params=params, headers=auth)
        assert page.status_code == 200
        body = page.json()
        assert set(body) == {"items", "next_cursor"}
        seen += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [a["kind"] for a in seen] == [
        "child_deleted", "updated", "updated", "updated", "child_created", "created",
    ]  # fmt: skip
    assert seen[1]["payload"] == {"changes": {"subject": {"old": "b", "new": "c"}}}
    assert seen[0]["actor"] == "agent-1"
    assert set(seen[0]) == {"id", "kind", "actor", "payload", "created_at"}
    assert seen[0]["created_at"].endswith("Z")
    assert len({a["id"] for a in seen}) == 6
    total = (await client.get(url(parent["id"]), headers=auth)).json()["tab_counts"]
    assert total["activities"] == 6


def test_every_kind_is_in_the_enum_and_explained() -> None:
    document = json.loads((ROOT / "openapi.json").read_text())
    operation = document["paths"]["/api/v2/conversations/{conversation_id}/activities"]["get"]
    kind = document["components"]["schemas"]["Activity"]["properties"]["kind"]
    assert kind["enum"] == list(ACTIVITY_KINDS)
    for name in ACTIVITY_KINDS:
        assert f"`{name}`:" in operation["description"]
