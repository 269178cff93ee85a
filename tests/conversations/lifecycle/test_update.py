"""PATCH /api/v2/conversations/{id} — updateConversation (SPEC §8.1)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import READ, TokenFactory
from tests.conversations.lifecycle.support import (
    activities,
    events,
    get,
    new_conversation,
    snapshot,
    url,
)


class TestRefusals:
    async def test_no_token_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.patch(url(uuid.uuid4()), json={"subject": "x"})
        assert response.status_code == 401

    async def test_read_scope_is_403(
        self, client: httpx.AsyncClient, token_for: TokenFactory, workspace: str
    ) -> None:
        headers = {"Authorization": f"Bearer {token_for(workspace, READ)}"}
        response = await client.patch(url(uuid.uuid4()), json={"subject": "x"}, headers=headers)
        assert response.status_code == 403
        assert response.json()["code"] == "insufficient_scope"

    async def test_another_workspace_is_404_and_untouched(
        self,
        client: httpx.AsyncClient,
        engine: AsyncEngine,
        workspace: str,
        auth: dict[str, str],
        token_for: TokenFactory,
    ) -> None:
        mine = await new_conversation(client, auth)
        before = await snapshot(engine, workspace)
        other = {"Authorization": f"Bearer {token_for('ws_other_' + workspace)}"}
        response = await client.patch(url(mine["id"]), json={"subject": "x"}, headers=other)
        assert response.status_code == 404
        assert response.json()["code"] == "conversation_not_found"
        assert await snapshot(engine, workspace) == before

    @pytest.mark.parametrize(
        ("body", "loc"),
        [
            ({}, ["body"]),
            ({"subject": None}, ["body", "subject"]),
            ({"status": None}, ["body", "status"]),
            ({"tags": None}, ["body", "tags"]),
            ({"custom_attrs": None}, ["body", "custom_attrs"]),
            ({"is_spam": None}, ["body", "is_spam"]),
            ({"archived": None}, ["body", "archived"]),
            ({"archived": "yes"}, ["body", "archived"]),
            ({"status": "done"}, ["body", "status"]),
            ({"subject": "   "}, ["body", "subject"]),
            ({"source": "email"}, ["body", "source"]),
            ({"version": 3}, ["body", "version"]),
            ({"parent_id": None}, ["body", "parent_id"]),
            ({"tags": ["x"] * 51}, ["body", "tags"]),
        ],
    )
    async def test_invalid_bodies_are_422_and_write_nothing(
        self,
        client: httpx.AsyncClient,
        engine: AsyncEngine,
        workspace: str,
        auth: dict[str, str],
        body: dict[str, object],
        loc: list[str],
    ) -> None:
        mine = await new_conversation(client, auth)
        before = await snapshot(engine, workspace)
        response = await client.patch(url(mine["id"]), json=body, headers=auth)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == loc
        assert await snapshot(engine, workspace) == before

    async def test_stale_if_match_is_412_and_writes_nothing(
        self, client: httpx.AsyncClient, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        mine = await new_conversation(client, auth)
        before = await snapshot(engine, workspace)
        response = await client.patch(
            url(mine["id"]), json={"subject": "x"}, headers={**auth, "If-Match": '"7"'}
        )
        assert response.status_code == 412
        assert response.json()["code"] == "precondition_failed"
        assert await snapshot(engine, workspace) == before


class TestUpdate:
    async def test_changes_fields_logs_old_and_new_and_bumps_the_version(
        self, client: httpx.AsyncClient, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        mine = await new_conversation(client, auth, tags=["a"], priority="low")
        response = await client.patch(
            url(mine["id"]),
            json={
                "subject": "  Renamed  ",
                "tags": ["x", "y"],
                "priority": None,
                "custom_attrs": {"k": [1, 2]},
                "sla_resolution_due": "2030-01-03T19:00:00+02:00",
                "planned_effort_minutes": 30,
            },
            headers={**auth, "If-Match": '"1"'},
        )
        assert response.status_code == 200, response.text
        assert response.headers["etag"] == '"2"'
        body = response.json()
        assert set(body) == set(mine)
        assert body["subject"] == "Renamed"
        assert body["tags"] == ["x", "y"]
        assert body["priority"] is None
        assert body["custom_attrs"] == {"k": [1, 2]}
        assert body["sla_resolution_due"] == "2030-01-03T17:00:00Z"
        assert body["version"] == 2
        assert body["tab_counts"]["activities"] == 2
        assert body == await get(client, auth, mine["id"])
        kind, payload = (await activities(engine, workspace, mine["id"]))[-1]
        assert kind == "updated"
        assert payload == {
            "changes": {
                "subject": {"old": "Parent", "new": "Renamed"},
                "tags": {"old": ["a"], "new": ["x", "y"]},
                "priority": {"old": "low", "new": None},
                "custom_attrs": {"old": {}, "new": {"k": [1, 2]}},
                "sla_resolution_due": {"old": None, "new": "2030-01-03T17:00:00Z"},
                "planned_effort_minutes": {"old": None, "new": 30},
            }
        }
        event_type, data = (await events(engine, workspace))[-1]
        assert event_type == "conversation.updated"
        assert data == {
            "conversation_id": mine["id"],
            "changes": payload["changes"],
            "conversation": body,
        }

    async def test_a_patch_that_changes_nothing_writes_nothing(
        self, client: httpx.AsyncClient, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        mine = await new_conversation(client, auth, tags=["a"], priority="low")
        before = await snapshot(engine, workspace)
        response = await client.patch(
            url(mine["id"]),
            json={"tags": ["a"], "priority": "low", "archived": False, "is_spam": False},
            headers=auth,
        )
        assert response.status_code == 200
        assert response.headers["etag"] == '"1"'
        assert response.json() == mine
        assert await snapshot(engine, workspace) == before

    async def test_archive_spam_and_back(
        self, client: httpx.AsyncClient, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        mine = await new_conversation(client, auth)
        archived = (
            await client.patch(url(mine["id"]), json={"archived": True}, headers=auth)
        ).json()
        assert archived["archived_at"] is not None
        again = await client.patch(url(mine["id"]), json={"archived": True}, headers=auth)
        assert again.json() == archived, "archiving an archived conversation changes nothing"
        spam = (await client.patch(url(mine["id"]), json={"is_spam": True}, headers=auth)).json()
        assert spam["is_spam"] is True
        assert spam["version"] == 3
        back = (
            await client.patch(
                url(mine["id"]), json={"archived": False, "is_spam": False}, headers=auth
            )
        ).json()
        assert back["archived_at"] is None
        assert back["is_spam"] is False
        kinds = [k for k, _ in await activities(engine, workspace, mine["id"])]
        assert kinds == ["created", "updated", "updated", "updated"]
        _, payload = (await activities(engine, workspace, mine["id"]))[-1]
        assert payload["changes"]["archived_at"]["new"] is None
        assert payload["changes"]["is_spam"] == {"old": True, "new": False}

    async def test_assigned_at_is_set_when_an_assignee_changes(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        mine = await new_conversation(client, auth)
        assert mine["assigned_at"] is None
        renamed = await client.patch(url(mine["id"]), json={"subject": "s"}, headers=auth)
        assert renamed.json()["assigned_at"] is None
        assigned = await client.patch(
            url(mine["id"]), json={"assignee_team_id": "team_a"}, headers=auth
        )
        assert assigned.json()["assigned_at"] is not None
