"""POST /api/v2/conversations/{id}/children — the seed operation (SPEC §2)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from aurion.settings import Settings
from tests.conftest import READ, Factory, TokenFactory, is_uuid
from tests.support import assert_counters_exact, child_url, client_with, count_rows, set_state

SEED = json.loads((Path(__file__).parents[1] / "fixtures" / "seed_examples.json").read_text())

FULL_PARENT: dict[str, Any] = {
    "subject": "Order #1001 arrived damaged",
    "status": "pending",
    "priority": "urgent",
    "urgency": "high",
    "impact": "many_users",
    "category": "shipping",
    "sub_category": "damaged_item",
    "channel": "email",
    "source": "email",
    "source_thread_id": "thread-123",
    "conversation_type": "incident",
    "company_id": "comp_acme",
    "company_name": "Acme Corp",
    "contact_id": "contact_jo",
    "contact_name": "Jo Customer",
    "contact_email": "jo@acme.example",
    "contact_phone": "+1 555 0100",
    "contact_role": "buyer",
    "department_id": "dept_support",
    "assignee_team_id": "team_logistics",
    "assignee_team_name": "Logistics",
    "assignee_user_id": "user_dana",
    "assignee_user_name": "Dana Agent",
    "tags": ["vip", "shipping"],
    "custom_attrs": {"order": {"id": "A-1001", "lines": [1, 2]}, "value": 249.5},
    "ai_language": "de",
    "sla_first_response_due": "2030-01-01T09:00:00Z",
    "sla_resolution_due": "2030-01-03T17:00:00Z",
    "sla_state": "active",
    "planned_start": "2030-01-01T08:00:00Z",
    "planned_end": "2030-01-02T08:00:00Z",
    "planned_effort_minutes": 90,
    "messages": [
        {"body": "It arrived cracked.", "sender_type": "contact", "sender_id": "contact_jo"},
        {"body": "Sorry! A photo please?", "sender_type": "agent", "sender_id": "user_dana"},
    ],
}

COPIED = [
    "company_id", "company_name", "contact_id", "contact_name", "contact_email",
    "contact_phone", "contact_role", "channel", "conversation_type", "category",
    "sub_category", "priority", "urgency", "impact", "department_id", "assignee_team_id",
    "assignee_team_name", "assignee_user_id", "assignee_user_name", "tags", "custom_attrs",
    "ai_language", "sla_first_response_due", "sla_resolution_due", "sla_state",
]  # fmt: skip


def json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


class TestAuthentication:
    async def test_no_token_is_401_with_challenge(self, client: httpx.AsyncClient) -> None:
        response = await client.post(child_url(uuid.uuid4()), json={"subject": "x"})
        assert response.status_code == 401
        assert response.json()["code"] == "not_authenticated"
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "error=" not in response.headers["www-authenticate"]

    async def test_bad_token_is_401_invalid_token(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            child_url(uuid.uuid4()),
            json={"subject": "x"},
            headers={"Authorization": "Bearer not.a.jwt"},
        )
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_token"
        assert 'error="invalid_token"' in response.headers["www-authenticate"]

    async def test_expired_token_is_401(
        self, client: httpx.AsyncClient, settings: Settings, workspace: str
    ) -> None:
        from jose import jwt

        claims = {"sub": "u", "workspace_id": workspace, "scope": "conversations:write",
                  "exp": int(datetime.now(UTC).timestamp()) - 120}  # fmt: skip
        token = jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
        response = await client.post(
            child_url(uuid.uuid4()),
            json={"subject": "x"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 401
        assert response.json()["detail"] == "The token has expired."

    async def test_read_scope_cannot_create(
        self, client: httpx.AsyncClient, create_parent: Factory, token_for: TokenFactory,
        workspace: str,
    ) -> None:  # fmt: skip
        parent = await create_parent()
        response = await client.post(
            child_url(parent["id"]),
            json={"subject": "x"},
            headers={"Authorization": f"Bearer {token_for(workspace, READ)}"},
        )
        assert response.status_code == 403
        assert response.json()["code"] == "insufficient_scope"
        challenge = response.headers["www-authenticate"]
        assert 'error="insufficient_scope"' in challenge
        assert 'scope="conversations:write"' in challenge

    async def test_other_workspace_is_404_like_missing(
        self, client: httpx.AsyncClient, create_parent: Factory, token_for: TokenFactory,
        engine: AsyncEngine, workspace: str,
    ) -> None:  # fmt: skip
        parent = await create_parent()
        intruder = {"Authorization": f"Bearer {token_for('ws_other_' + uuid.uuid4().hex)}"}
        foreign = await client.post(
            child_url(parent["id"]), json={"subject": "x"}, headers=intruder
        )
        missing = await client.post(
            child_url(uuid.uuid4()), json={"subject": "x"}, headers=intruder
        )
        assert foreign.status_code == missing.status_code == 404
        assert foreign.json() == missing.json() == {
            "detail": "Conversation not found.", "code": "conversation_not_found"
        }  # fmt: skip
        assert set(foreign.headers) - {"x-request-id"} == set(missing.headers) - {"x-request-id"}
        assert (await count_rows(engine, workspace))["conversations"] == 1


class TestValidation:
    @pytest.mark.parametrize(
        ("body", "loc"),
        [
            ({}, ["body", "subject"]),
            ({"subject": ""}, ["body", "subject"]),
            ({"subject": "   "}, ["body", "subject"]),
            ({"subject": "x" * 501}, ["body", "subject"]),
            ({"subject": "nul\x00byte"}, ["body", "subject"]),
            ({"subject": "bell\x07"}, ["body", "subject"]),
            ({"subject": "line\nbreak"}, ["body", "subject"]),
            ({"subject": "lone \ud800 surrogate"}, ["body", "subject"]),
            ({"subject": 42}, ["body", "subject"]),
            ({"subject": None}, ["body", "subject"]),
            ({"subject": ["a"]}, ["body", "subject"]),
            ({"subject": "ok", "status": "closed"}, ["body", "status"]),
            ({"subject": "ok", "parent_id": str(uuid.uuid4())}, ["body", "parent_id"]),
        ],
    )
    async def test_bad_body_is_422(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str],
        engine: AsyncEngine, workspace: str, body: dict[str, Any], loc: list[str],
    ) -> None:  # fmt: skip
        parent = await create_parent()
        # json.dumps escapes non-ASCII, so a lone surrogate travels as the text "\\ud800".
        response = await client.post(
            child_url(parent["id"]),
            content=json.dumps(body).encode(),
            headers={**auth, "Content-Type": "application/json"},
        )
        assert response.status_code == 422
        detail = response.json()["detail"]
        assert detail[0]["loc"] == loc
        assert set(detail[0]) == {"loc", "msg", "type"}
        assert (await count_rows(engine, workspace))["conversations"] == 1

    async def test_malformed_json_is_422(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str]
    ) -> None:
        parent = await create_parent()
        response = await client.post(
            child_url(parent["id"]),
            content=b'{"subject": "unterminated',
            headers={**auth, "Content-Type": "application/json"},
        )
        assert response.status_code == 422
        assert response.json()["detail"][0]["type"] == "json_invalid"

    async def test_not_a_uuid_is_422_on_the_path(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        response = await client.post(child_url("string"), json={"subject": "x"}, headers=auth)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["path", "conversation_id"]

    async def test_subject_is_trimmed_and_500_characters_fit(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str]
    ) -> None:
        parent = await create_parent()
        trimmed = await client.post(
            child_url(parent["id"]), json={"subject": "  Follow up  "}, headers=auth
        )
        longest = await client.post(
            child_url(parent["id"]), json={"subject": "é" * 500}, headers=auth
        )
        assert trimmed.status_code == 201
        assert trimmed.json()["subject"] == "Follow up"
        assert longest.status_code == 201
        assert longest.json()["subject"] == "é" * 500


class TestSuccess:
    async def test_response_matches_the_seed_contract(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str]
    ) -> None:
        parent = await create_parent(**FULL_PARENT)
        response = await client.post(
            child_url(parent["id"]), json={"subject": "Refund"}, headers=auth
        )
        assert response.status_code == 201
        child = response.json()
        seed = SEED["conversation"]
        assert set(child) == set(seed)
        for key, value in child.items():
            if value is not None:
                assert json_kind(value) == json_kind(seed[key]), key
        assert set(child["tab_counts"]) == set(seed["tab_counts"])
        assert response.headers["location"] == f"/api/v2/conversations/{child['id']}"
        assert response.headers["etag"] == '"1"'
        assert response.headers["content-type"] == "application/json"

        # the parent's embedded messages have exactly the seed message's fields and types
        got = await client.get(f"/api/v2/conversations/{parent['id']}", headers=auth)
        message = got.json()["messages"][0]
        assert set(message) == set(seed["messages"][0])
        for key, value in message.items():
            if value is not None:
                assert json_kind(value) == json_kind(seed["messages"][0][key]), key

    async def test_inheritance_table_row_by_row(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str]
    ) -> None:
        parent = await create_parent(**FULL_PARENT)
        before = datetime.now(UTC).replace(microsecond=0)
        response = await client.post(
            child_url(parent["id"]), json={"subject": "Refund the charge"}, headers=auth
        )
        child = response.json()
        assert response.status_code == 201
        # new identity
        assert is_uuid(child["id"])
        assert uuid.UUID(child["id"]).version == 7
        assert child["id"] != parent["id"]
        assert child["parent_id"] == parent["id"]
        assert child["subject"] == "Refund the charge"
        assert child["status"] == "open"
        assert child["version"] == 1
        created = datetime.fromisoformat(child["created_at"])
        assert created >= before
        assert child["updated_at"] == child["created_at"]
        assert child["messages"] == []
        # copied fields
        for field in COPIED:
            assert child[field] == parent[field], field
        assert child["assigned_at"] == child["created_at"]
        assert child["source"] == "child"
        # never copied
        assert child["source_thread_id"] is None
        for field in ("planned_start", "planned_end", "planned_effort_minutes",
                      "sla_last_escalation_at", "archived_at", "deleted_at", "merged_at",
                      "merged_by", "merged_into_id", "ai_analysis_generated_at",
                      "ai_category", "ai_classification_source", "ai_classified_at",
                      "ai_confidence", "ai_conversation_type", "ai_priority", "ai_sentiment",
                      "ai_triage_hint", "ai_triage_hint_type", "current_sentiment_label",
                      "current_sentiment_score", "initial_sentiment_label",
                      "sentiment_trend", "assignment_reason"):  # fmt: skip
            assert child[field] is None, field
        assert child["is_spam"] is False
        assert child["auto_resolved_by_ai"] is False
        assert child["ai_analysis_stale"] is False
        assert child["ai_analysis_message_count"] == 0
        assert child["total_time_spent_minutes"] == 0
        for field in ("ai_copilot_context", "ai_suggested_reply", "ai_suggestion",
                      "ai_suggestion_field_states"):  # fmt: skip
            assert child[field] == {}, field
        assert child["ai_topic_tags"] == []
        assert child["tab_counts"] == {
            "activities": 1, "has_resolution": False, "messages": 0, "related": 1
        }  # fmt: skip

    async def test_child_read_back_equals_the_response(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str]
    ) -> None:
        parent = await create_parent(**FULL_PARENT)
        created = await client.post(child_url(parent["id"]), json={"subject": "s"}, headers=auth)
        fetched = await client.get(f"/api/v2/conversations/{created.json()['id']}", headers=auth)
        assert fetched.status_code == 200
        assert fetched.json() == created.json()
        assert fetched.headers["etag"] == '"1"'

    async def test_no_assignee_means_no_assigned_at(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str]
    ) -> None:
        parent = await create_parent(subject="Unassigned")
        child = await client.post(child_url(parent["id"]), json={"subject": "s"}, headers=auth)
        assert child.json()["assigned_at"] is None
        assert child.json()["tags"] == []
        assert child.json()["custom_attrs"] == {}

    async def test_copies_are_deep(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str],
        engine: AsyncEngine, workspace: str,
    ) -> None:  # fmt: skip
        parent = await create_parent(**FULL_PARENT)
        child = (
            await client.post(child_url(parent["id"]), json={"subject": "s"}, headers=auth)
        ).json()
        await set_state(
            engine, workspace, parent["id"],
            "tags = array_append(tags, 'edited'), "
            "custom_attrs = jsonb_set(custom_attrs, '{order,id}', '\"CHANGED\"')",
        )  # fmt: skip
        again = await client.get(f"/api/v2/conversations/{child['id']}", headers=auth)
        assert again.json()["tags"] == FULL_PARENT["tags"]
        assert again.json()["custom_attrs"] == FULL_PARENT["custom_attrs"]

    async def test_parent_side_effects(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str],
        engine: AsyncEngine, workspace: str,
    ) -> None:  # fmt: skip
        parent = await create_parent(**FULL_PARENT)
        child = (
            await client.post(child_url(parent["id"]), json={"subject": "s"}, headers=auth)
        ).json()
        got = await client.get(f"/api/v2/conversations/{parent['id']}", headers=auth)
        after = got.json()
        assert after["version"] == parent["version"] + 1 == 2
        assert got.headers["etag"] == '"2"'
        assert after["updated_at"] >= parent["updated_at"]
        assert after["status"] == "pending"  # not resolved: unchanged
        assert after["tab_counts"] == {
            "activities": 2, "has_resolution": False, "messages": 2, "related": 1
        }  # fmt: skip
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT conversation_id, kind, actor, payload FROM activities "
                        "WHERE workspace_id = :w ORDER BY created_at, kind"
                    ),
                    {"w": workspace},
                )
            ).all()
        kinds = {(str(r.conversation_id), r.kind): r for r in rows}
        on_parent = kinds[(parent["id"], "child_created")]
        on_child = kinds[(child["id"], "created_from_parent")]
        assert on_parent.actor == on_child.actor == "agent-1"
        assert on_parent.payload["child_id"] == child["id"]
        assert on_child.payload["parent_id"] == parent["id"]

    @pytest.mark.parametrize("status", ["resolved", "closed"])
    async def test_resolved_parent_is_reopened(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str],
        engine: AsyncEngine, workspace: str, status: str,
    ) -> None:  # fmt: skip
        parent = await create_parent(subject="Done", status=status)
        assert parent["tab_counts"]["has_resolution"] is True
        response = await client.post(child_url(parent["id"]), json={"subject": "s"}, headers=auth)
        assert response.status_code == 201
        after = (await client.get(f"/api/v2/conversations/{parent['id']}", headers=auth)).json()
        assert after["status"] == "open"
        assert after["tab_counts"]["has_resolution"] is False
        async with engine.connect() as conn:
            reopened = (
                await conn.execute(
                    text(
                        "SELECT payload FROM activities "
                        "WHERE workspace_id = :w AND kind = 'reopened'"
                    ),
                    {"w": workspace},
                )
            ).all()
        assert len(reopened) == 1
        assert reopened[0].payload["from_status"] == status

    async def test_if_match_current_etag_succeeds(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str]
    ) -> None:
        parent = await create_parent()
        response = await client.post(
            child_url(parent["id"]), json={"subject": "s"}, headers={**auth, "If-Match": '"1"'}
        )
        assert response.status_code == 201


class TestRefusals:
    async def refused(
        self, client: httpx.AsyncClient, engine: AsyncEngine, workspace: str,
        parent_id: str, auth: dict[str, str], status: int, code: str,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        before = await count_rows(engine, workspace)
        response = await client.post(
            child_url(parent_id), json={"subject": "s"}, headers={**auth, **(headers or {})}
        )
        assert response.status_code == status, response.text
        body: dict[str, Any] = response.json()
        assert body["code"] == code
        assert isinstance(body["detail"], str)
        assert body["detail"]
        assert await count_rows(engine, workspace) == before  # nothing written
        return body

    async def test_missing_is_404(
        self, client: httpx.AsyncClient, engine: AsyncEngine, workspace: str,
        auth: dict[str, str],
    ) -> None:  # fmt: skip
        await self.refused(client, engine, workspace, str(uuid.uuid4()), auth, 404,
                           "conversation_not_found")  # fmt: skip

    async def test_soft_deleted_is_404(
        self, client: httpx.AsyncClient, engine: AsyncEngine, workspace: str,
        auth: dict[str, str], create_parent: Factory,
    ) -> None:  # fmt: skip
        parent = await create_parent()
        await set_state(engine, workspace, parent["id"], "deleted_at = now()")
        await self.refused(client, engine, workspace, parent["id"], auth, 404,
                           "conversation_not_found")  # fmt: skip
        got = await client.get(f"/api/v2/conversations/{parent['id']}", headers=auth)
        assert got.status_code == 404

    async def test_merged_is_409_naming_the_target(
        self, client: httpx.AsyncClient, engine: AsyncEngine, workspace: str,
        auth: dict[str, str], create_parent: Factory,
    ) -> None:  # fmt: skip
        target = await create_parent(subject="Target")
        parent = await create_parent()
        await set_state(engine, workspace, parent["id"],
                        f"merged_into_id = '{target['id']}', merged_at = now()")  # fmt: skip
        body = await self.refused(client, engine, workspace, parent["id"], auth, 409,
                                  "parent_merged")  # fmt: skip
        assert target["id"] in body["detail"]

    async def test_spam_is_409(
        self, client: httpx.AsyncClient, engine: AsyncEngine, workspace: str,
        auth: dict[str, str], create_parent: Factory,
    ) -> None:  # fmt: skip
        parent = await create_parent()
        await set_state(engine, workspace, parent["id"], "is_spam = true")
        await self.refused(client, engine, workspace, parent["id"], auth, 409, "parent_is_spam")

    async def test_archived_is_409(
        self, client: httpx.AsyncClient, engine: AsyncEngine, workspace: str,
        auth: dict[str, str], create_parent: Factory,
    ) -> None:  # fmt: skip
        parent = await create_parent()
        await set_state(engine, workspace, parent["id"], "archived_at = now()")
        await self.refused(client, engine, workspace, parent["id"], auth, 409, "parent_archived")

    async def test_child_cannot_have_children(
        self, client: httpx.AsyncClient, engine: AsyncEngine, workspace: str,
        auth: dict[str, str], create_parent: Factory,
    ) -> None:  # fmt: skip
        parent = await create_parent()
        child = (
            await client.post(child_url(parent["id"]), json={"subject": "s"}, headers=auth)
        ).json()
        body = await self.refused(client, engine, workspace, child["id"], auth, 409,
                                  "parent_is_child")  # fmt: skip
        assert parent["id"] in body["detail"]

    async def test_stale_if_match_is_412(
        self, client: httpx.AsyncClient, engine: AsyncEngine, workspace: str,
        auth: dict[str, str], create_parent: Factory,
    ) -> None:  # fmt: skip
        parent = await create_parent()
        await client.post(child_url(parent["id"]), json={"subject": "s"}, headers=auth)
        await self.refused(client, engine, workspace, parent["id"], auth, 412,
                           "precondition_failed", {"If-Match": '"1"'})  # fmt: skip

    async def test_limit_reached_is_409(
        self, database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str],
    ) -> None:  # fmt: skip
        async with client_with(database_url, max_children_per_parent=2) as c:
            parent = (await c.post("/api/v2/conversations", json={"subject": "p"},
                                   headers=auth)).json()  # fmt: skip
            for _ in range(2):
                ok = await c.post(child_url(parent["id"]), json={"subject": "s"}, headers=auth)
                assert ok.status_code == 201
            body = await self.refused(c, engine, workspace, parent["id"], auth, 409,
                                      "children_limit_reached")  # fmt: skip
            assert "2" in body["detail"]


class TestConcurrency:
    async def test_limit_holds_under_100_parallel_requests(
        self, database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str],
    ) -> None:  # fmt: skip
        async with client_with(database_url, max_children_per_parent=10, db_pool_size=20,
                               db_max_overflow=0, db_pool_timeout_seconds=30) as c:  # fmt: skip
            parent = (await c.post("/api/v2/conversations", json={"subject": "p"},
                                   headers=auth)).json()  # fmt: skip
            responses = await asyncio.gather(*[
                c.post(child_url(parent["id"]), json={"subject": f"c{i}"}, headers=auth)
                for i in range(100)
            ])  # fmt: skip
            statuses = sorted(r.status_code for r in responses)
            assert statuses.count(201) == 10
            assert statuses.count(409) == 90
            assert {r.json()["code"] for r in responses if r.status_code == 409} == {
                "children_limit_reached"
            }
            after = (await c.get(f"/api/v2/conversations/{parent['id']}", headers=auth)).json()
        assert after["version"] == 11
        assert after["tab_counts"]["related"] == 10
        counts = await count_rows(engine, workspace)
        assert counts["conversations"] == 11
        assert counts["activities"] == 1 + 10 * 2
        assert await assert_counters_exact(engine, workspace) == 11
