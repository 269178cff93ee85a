"""The companion endpoints (SPEC §3): create, get, and list children."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import READ, Factory, TokenFactory
from tests.conversations.test_create_child import FULL_PARENT, SEED
from tests.support import child_url, count_rows


class TestCreateConversation:
    async def test_unauthenticated_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/api/v2/conversations", json={"subject": "x"})
        assert response.status_code == 401

    async def test_read_scope_is_403(
        self, client: httpx.AsyncClient, token_for: TokenFactory, workspace: str
    ) -> None:
        response = await client.post(
            "/api/v2/conversations",
            json={"subject": "x"},
            headers={"Authorization": f"Bearer {token_for(workspace, READ)}"},
        )
        assert response.status_code == 403

    async def test_created_with_every_writable_field(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        response = await client.post("/api/v2/conversations", json=FULL_PARENT, headers=auth)
        assert response.status_code == 201
        body = response.json()
        assert response.headers["location"] == f"/api/v2/conversations/{body['id']}"
        assert response.headers["etag"] == '"1"'
        assert set(body) == set(SEED["conversation"])
        for field, value in FULL_PARENT.items():
            if field != "messages":
                assert body[field] == value, field
        assert body["parent_id"] is None
        assert body["version"] == 1
        assert body["assigned_at"] == body["created_at"]
        assert [m["body"] for m in body["messages"]] == [m["body"] for m in FULL_PARENT["messages"]]
        assert body["tab_counts"] == {
            "activities": 1,
            "has_resolution": False,
            "messages": 2,
            "related": 0,
        }
        fetched = await client.get(f"/api/v2/conversations/{body['id']}", headers=auth)
        assert fetched.json() == body

    @pytest.mark.parametrize(
        "field",
        [
            "id",
            "version",
            "created_at",
            "updated_at",
            "parent_id",
            "deleted_at",
            "merged_into_id",
            "is_spam",
            "archived_at",
            "tab_counts",
            "ai_category",
            "ai_sentiment",
        ],
    )
    async def test_server_owned_fields_are_422(
        self, client: httpx.AsyncClient, auth: dict[str, str], engine: AsyncEngine,
        workspace: str, field: str,
    ) -> None:  # fmt: skip
        response = await client.post(
            "/api/v2/conversations", json={"subject": "x", field: None}, headers=auth
        )
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", field]
        assert (await count_rows(engine, workspace))["conversations"] == 0

    @pytest.mark.parametrize(
        ("body", "loc"),
        [
            ({"subject": "x", "status": "done"}, ["body", "status"]),
            ({"subject": "x", "priority": "critical"}, ["body", "priority"]),
            ({"subject": "x", "tags": ["t"] * 51}, ["body", "tags"]),
            ({"subject": "x", "tags": ["x" * 65]}, ["body", "tags", 0]),
            ({"subject": "x", "company_name": "x" * 256}, ["body", "company_name"]),
            ({"subject": "x", "company_name": "a\x00b"}, ["body", "company_name"]),
            ({"subject": "x", "custom_attrs": {"k": "v" * 17000}}, ["body", "custom_attrs"]),
            ({"subject": "x", "custom_attrs": {"k": "nul\x00"}}, ["body", "custom_attrs"]),
            ({"subject": "x", "custom_attrs": [1]}, ["body", "custom_attrs"]),
            ({"subject": "x", "sla_resolution_due": "2030-01-01T00:00:00"},
             ["body", "sla_resolution_due"]),
            ({"subject": "x", "planned_effort_minutes": -1}, ["body", "planned_effort_minutes"]),
            ({"subject": "x", "messages": [{"body": "m"}] * 101}, ["body", "messages"]),
            ({"subject": "x", "messages": [{"body": ""}]}, ["body", "messages", 0, "body"]),
            ({"subject": "x", "messages": [{"body": "b" * 65537}]},
             ["body", "messages", 0, "body"]),
            ({"subject": "x", "messages": [{"body": "m", "id": "x"}]},
             ["body", "messages", 0, "id"]),
        ],
    )  # fmt: skip
    async def test_invalid_fields_are_422(
        self, client: httpx.AsyncClient, auth: dict[str, str], engine: AsyncEngine,
        workspace: str, body: dict[str, Any], loc: list[Any],
    ) -> None:  # fmt: skip
        response = await client.post("/api/v2/conversations", json=body, headers=auth)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == loc
        assert (await count_rows(engine, workspace))["conversations"] == 0

    async def test_deeply_nested_attributes_are_422(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        nested: dict[str, Any] = {}
        for _ in range(40):
            nested = {"k": nested}
        response = await client.post(
            "/api/v2/conversations", json={"subject": "x", "custom_attrs": nested}, headers=auth
        )
        assert response.status_code == 422

    async def test_message_bodies_keep_newlines(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        body = "Line one\n\tLine two\r\n"
        response = await client.post(
            "/api/v2/conversations",
            json={"subject": "x", "messages": [{"body": body, "metadata": {"a": [1, 2]}}]},
            headers=auth,
        )
        assert response.status_code == 201
        assert response.json()["messages"][0]["body"] == body
        assert response.json()["messages"][0]["metadata"] == {"a": [1, 2]}


class TestGetConversation:
    async def test_unauthenticated_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.get(f"/api/v2/conversations/{uuid.uuid4()}")
        assert response.status_code == 401

    async def test_other_workspace_is_404(
        self, client: httpx.AsyncClient, create_parent: Factory, token_for: TokenFactory
    ) -> None:
        parent = await create_parent()
        stranger = {"Authorization": f"Bearer {token_for('ws_' + uuid.uuid4().hex, READ)}"}
        response = await client.get(f"/api/v2/conversations/{parent['id']}", headers=stranger)
        assert response.status_code == 404
        assert response.json()["code"] == "conversation_not_found"

    async def test_invalid_id_is_422(self, client: httpx.AsyncClient, auth: dict[str, str]) -> None:
        response = await client.get("/api/v2/conversations/not-a-uuid", headers=auth)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["path", "conversation_id"]

    async def test_read_scope_is_enough(
        self, client: httpx.AsyncClient, create_parent: Factory, token_for: TokenFactory,
        workspace: str,
    ) -> None:  # fmt: skip
        parent = await create_parent()
        reader = {"Authorization": f"Bearer {token_for(workspace, READ)}"}
        response = await client.get(f"/api/v2/conversations/{parent['id']}", headers=reader)
        assert response.status_code == 200
        assert response.headers["etag"] == '"1"'

    async def test_embeds_the_newest_200_messages_oldest_first(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str],
        engine: AsyncEngine, workspace: str,
    ) -> None:  # fmt: skip
        parent = await create_parent(messages=[{"body": f"m{i}"} for i in range(100)])
        # Add 150 more, later in time, straight into the table (no endpoint adds messages yet),
        # keeping the conversation's message counter as every writer must.
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "WITH added AS (INSERT INTO messages "
                    "(workspace_id, id, conversation_id, body, created_at) "
                    "SELECT :w, gen_random_uuid(), :c, 'n' || g, now() + g * interval '1 ms' "
                    "FROM generate_series(0, 149) g RETURNING 1) "
                    "UPDATE conversations "
                    "SET n_messages = n_messages + (SELECT count(*) FROM added) "
                    "WHERE workspace_id = :w AND id = :c"
                ),
                {"w": workspace, "c": uuid.UUID(parent["id"])},
            )
        got = (await client.get(f"/api/v2/conversations/{parent['id']}", headers=auth)).json()
        bodies = [m["body"] for m in got["messages"]]
        assert got["tab_counts"]["messages"] == 250
        assert len(bodies) == 200
        assert bodies[-1] == "n149"
        assert bodies[:50] == [f"m{i}" for i in range(50, 100)]


class TestListChildren:
    async def test_unauthenticated_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.get(child_url(uuid.uuid4()))
        assert response.status_code == 401

    async def test_missing_or_foreign_parent_is_404(
        self, client: httpx.AsyncClient, create_parent: Factory, token_for: TokenFactory,
        auth: dict[str, str],
    ) -> None:  # fmt: skip
        parent = await create_parent()
        stranger = {"Authorization": f"Bearer {token_for('ws_' + uuid.uuid4().hex, READ)}"}
        assert (await client.get(child_url(parent["id"]), headers=stranger)).status_code == 404
        assert (await client.get(child_url(uuid.uuid4()), headers=auth)).status_code == 404

    @pytest.mark.parametrize(
        "query",
        ["limit=0", "limit=101", "limit=abc", "limit=99999999999999999999", "cursor=%%%",
         "cursor=short", "cursor=" + "A" * 200],
    )  # fmt: skip
    async def test_bad_query_is_422(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str], query: str
    ) -> None:
        parent = await create_parent()
        response = await client.get(f"{child_url(parent['id'])}?{query}", headers=auth)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"][0] == "query"

    async def test_pages_newest_first_until_the_end(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str]
    ) -> None:
        parent = await create_parent(**{**FULL_PARENT, "messages": []})
        created = []
        for i in range(5):
            response = await client.post(
                child_url(parent["id"]), json={"subject": f"c{i}"}, headers=auth
            )
            created.append(response.json())
        seen: list[dict[str, Any]] = []
        cursor = None
        pages = 0
        while True:
            url = f"{child_url(parent['id'])}?limit=2" + (f"&cursor={cursor}" if cursor else "")
            page = await client.get(url, headers=auth)
            assert page.status_code == 200
            body = page.json()
            assert set(body) == {"items", "next_cursor", "summary"}
            seen.extend(body["items"])
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert pages == 3
        assert [c["subject"] for c in seen] == ["c4", "c3", "c2", "c1", "c0"]
        assert seen == list(reversed(created))  # the same objects the creations returned
        assert set(seen[0]) == set(SEED["conversation"])

    async def test_default_limit_is_20(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str]
    ) -> None:
        parent = await create_parent()
        for i in range(21):
            await client.post(child_url(parent["id"]), json={"subject": f"c{i}"}, headers=auth)
        body = (await client.get(child_url(parent["id"]), headers=auth)).json()
        assert len(body["items"]) == 20
        assert body["next_cursor"] is not None

    async def test_no_children_is_an_empty_page(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str]
    ) -> None:
        parent = await create_parent()
        body = (await client.get(child_url(parent["id"]), headers=auth)).json()
        assert body == {
            "items": [],
            "next_cursor": None,
            "summary": {
                "total": 0,
                "by_status": dict.fromkeys(
                    ("new", "open", "pending", "on_hold", "resolved", "closed"), 0
                ),
                "percent_resolved": 0,
            },
        }
