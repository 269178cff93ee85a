"""Richer child creation (SPEC §9): overrides, a first message, copied messages, batches."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import READ, Factory, TokenFactory
from tests.conversations.test_create_child import COPIED, FULL_PARENT
from tests.support import assert_counters_exact, child_url, client_with, count_rows, set_state

MESSAGE_FIELDS = ("body", "body_html", "content_type", "sender_type", "sender_id",
                  "is_internal", "metadata")  # fmt: skip


def batch_url(conversation_id: object) -> str:
    return child_url(conversation_id) + "/batch"


async def get(client: httpx.AsyncClient, cid: str, auth: dict[str, str]) -> dict[str, Any]:
    response = await client.get(f"/api/v2/conversations/{cid}", headers=auth)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def activities(engine: AsyncEngine, workspace: str) -> list[Any]:
    async with engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    text(
                        "SELECT conversation_id::text AS cid, kind, payload FROM activities "
                        "WHERE workspace_id = :w ORDER BY id"
                    ),
                    {"w": workspace},
                )
            ).all()
        )


async def events(engine: AsyncEngine, workspace: str) -> list[Any]:
    async with engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    text("SELECT type, data FROM events WHERE workspace_id = :w ORDER BY txid, id"),
                    {"w": workspace},
                )
            ).all()
        )


async def parent_with_messages(
    create_parent: Factory, engine: AsyncEngine, workspace: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A parent with four varied messages whose time order is the reverse of their id order,
    so "the parent's order" (by time) cannot be confused with the order of ids."""
    parent = await create_parent(
        **{
            **FULL_PARENT,
            "messages": [
                {"body": "First, from the customer.", "sender_type": "contact",
                 "sender_id": "contact_jo", "metadata": {"mail": {"id": "<a@x>"}}},
                {"body": "Second: an internal note.", "body_html": "<p>Second</p>",
                 "content_type": "text/html", "sender_type": "agent", "sender_id": "user_dana",
                 "is_internal": True},
                {"body": "Third, a reply.", "sender_type": "agent", "sender_id": "user_dana"},
                {"body": "Fourth, the customer again.", "sender_type": "contact",
                 "sender_id": "contact_jo", "metadata": {"n": 4}},
            ],
        }
    )  # fmt: skip
    ids = [m["id"] for m in parent["messages"]]
    for age, mid in enumerate(ids):  # the first id gets the newest time
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE messages SET created_at = now() - make_interval(mins => :age) "
                    "WHERE workspace_id = :w AND id = :i"
                ),
                {"age": age + 1, "w": workspace, "i": uuid.UUID(mid)},
            )
    # parent["messages"] in the parent's (time) order: the reverse of creation
    return parent, list(reversed(parent["messages"]))


class TestOverrides:
    async def test_given_fields_replace_the_inherited_ones_and_null_clears(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str]
    ) -> None:
        parent = await create_parent(**FULL_PARENT)
        overrides = {
            "priority": "low",
            "assignee_team_id": "team_billing",
            "assignee_team_name": "Billing",
            "assignee_user_id": None,
            "assignee_user_name": None,
            "contact_phone": None,
            "category": "billing",
            "sla_resolution_due": "2031-01-01T02:00:00+02:00",
            "sla_state": None,
        }
        response = await client.post(
            child_url(parent["id"]), json={"subject": "Refund", **overrides}, headers=auth
        )
        assert response.status_code == 201, response.text
        child = response.json()
        assert child["sla_resolution_due"] == "2031-01-01T00:00:00Z"
        for field in COPIED:
            expected = overrides.get(field, parent[field])
            if field != "sla_resolution_due":
                assert child[field] == expected, field
        assert child["assigned_at"] == child["created_at"]  # a team is still assigned
        assert await get(client, child["id"], auth) == child

    async def test_assigned_at_follows_the_resulting_assignee(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str]
    ) -> None:
        assigned = await create_parent(**FULL_PARENT)
        cleared = await client.post(
            child_url(assigned["id"]),
            json={"subject": "s", "assignee_team_id": None, "assignee_user_id": None},
            headers=auth,
        )
        assert cleared.json()["assigned_at"] is None
        unassigned = await create_parent(subject="Nobody's")
        given = await client.post(
            child_url(unassigned["id"]),
            json={"subject": "s", "assignee_user_id": "user_7", "assignee_user_name": "Dana"},
            headers=auth,
        )
        assert given.json()["assigned_at"] == given.json()["created_at"]
        assert given.json()["assignee_user_id"] == "user_7"

    async def test_tags_and_custom_attrs_overrides_are_deep_values_of_their_own(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str],
        engine: AsyncEngine, workspace: str,
    ) -> None:  # fmt: skip
        parent = await create_parent(**FULL_PARENT)
        attrs = {"order": {"id": "B-2002", "lines": [3]}, "refund": {"eur": 12.5}}
        one = (
            await client.post(
                child_url(parent["id"]),
                json={"subject": "a", "tags": ["refund"], "custom_attrs": attrs},
                headers=auth,
            )
        ).json()
        two = (
            await client.post(
                child_url(parent["id"]),
                json={"subject": "b", "tags": ["refund"], "custom_attrs": attrs},
                headers=auth,
            )
        ).json()
        assert one["tags"] == ["refund"]
        assert one["custom_attrs"] == attrs
        # Deep edits of the parent and of one child show nowhere else.
        await set_state(
            engine, workspace, parent["id"],
            "tags = array_append(tags, 'edited'), "
            "custom_attrs = jsonb_set(custom_attrs, '{order,id}', '\"P\"')",
        )  # fmt: skip
        await set_state(
            engine, workspace, one["id"],
            "tags = array_append(tags, 'one'), "
            "custom_attrs = jsonb_set(custom_attrs, '{order,lines,0}', '99')",
        )  # fmt: skip
        assert (await get(client, two["id"], auth))["custom_attrs"] == attrs
        assert (await get(client, two["id"], auth))["tags"] == ["refund"]
        assert (await get(client, one["id"], auth))["custom_attrs"]["order"] == {
            "id": "B-2002", "lines": [99]
        }  # fmt: skip
        after = await get(client, parent["id"], auth)
        assert after["tags"] == [*FULL_PARENT["tags"], "edited"]
        assert after["custom_attrs"]["order"]["lines"] == [1, 2]

    async def test_empty_tags_and_custom_attrs_clear_them(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str]
    ) -> None:
        parent = await create_parent(**FULL_PARENT)
        child = await client.post(
            child_url(parent["id"]),
            json={"subject": "s", "tags": [], "custom_attrs": {}},
            headers=auth,
        )
        assert (child.json()["tags"], child.json()["custom_attrs"]) == ([], {})

    @pytest.mark.parametrize(
        ("fields", "loc"),
        [
            ({"priority": "extreme"}, ["body", "priority"]),
            ({"tags": None}, ["body", "tags"]),
            ({"tags": [""]}, ["body", "tags", 0]),
            ({"tags": ["t"] * 51}, ["body", "tags"]),
            ({"custom_attrs": None}, ["body", "custom_attrs"]),
            ({"custom_attrs": {"big": "x" * 17000}}, ["body", "custom_attrs"]),
            ({"custom_attrs": ["not", "an", "object"]}, ["body", "custom_attrs"]),
            ({"company_id": "x" * 256}, ["body", "company_id"]),
            ({"contact_name": "tab\there"}, ["body", "contact_name"]),
            ({"sla_resolution_due": "tomorrow"}, ["body", "sla_resolution_due"]),
            ({"sla_resolution_due": 0}, ["body", "sla_resolution_due"]),
            ({"sla_first_response_due": "2030-01-01T09:00:00"}, ["body", "sla_first_response_due"]),
            # not in the inheritance table: still unknown fields
            ({"status": "pending"}, ["body", "status"]),
            ({"source": "email"}, ["body", "source"]),
            ({"source_thread_id": "t"}, ["body", "source_thread_id"]),
            ({"planned_start": "2030-01-01T09:00:00Z"}, ["body", "planned_start"]),
            ({"messages": []}, ["body", "messages"]),
            ({"parent_id": str(uuid.uuid4())}, ["body", "parent_id"]),
            ({"version": 3}, ["body", "version"]),
            ({"message": {"body": ""}}, ["body", "message", "body"]),
            ({"message": {"body": "x", "is_internal": "yes"}}, ["body", "message", "is_internal"]),
            ({"message": {"body": "x", "id": str(uuid.uuid4())}}, ["body", "message", "id"]),
            ({"copy_message_ids": ["not-a-uuid"]}, ["body", "copy_message_ids", 0]),
            ({"copy_message_ids": [str(uuid.uuid4()) for _ in range(21)]},
             ["body", "copy_message_ids"]),
        ],
    )  # fmt: skip
    async def test_validated_as_in_create_conversation(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str],
        engine: AsyncEngine, workspace: str, fields: dict[str, Any], loc: list[Any],
    ) -> None:  # fmt: skip
        parent = await create_parent()
        before = await count_rows(engine, workspace)
        response = await client.post(
            child_url(parent["id"]), json={"subject": "s", **fields}, headers=auth
        )
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == loc
        assert await count_rows(engine, workspace) == before

    async def test_repeated_copy_id_is_422(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str]
    ) -> None:
        parent = await create_parent(**FULL_PARENT)
        mid = parent["messages"][0]["id"]
        response = await client.post(
            child_url(parent["id"]),
            json={"subject": "s", "copy_message_ids": [mid, parent["messages"][1]["id"], mid]},
            headers=auth,
        )
        assert response.status_code == 422
        detail = response.json()["detail"][0]
        assert detail["loc"] == ["body", "copy_message_ids"]
        assert "index 0" in detail["msg"]
        assert "index 2" in detail["msg"]

    async def test_payloads_name_the_overridden_fields_and_the_copies(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str],
        engine: AsyncEngine, workspace: str,
    ) -> None:  # fmt: skip
        parent = await create_parent(**FULL_PARENT)
        copies = [parent["messages"][1]["id"], parent["messages"][0]["id"]]
        child = (
            await client.post(
                child_url(parent["id"]),
                json={"subject": "s", "tags": ["x"], "priority": None, "copy_message_ids": copies},
                headers=auth,
            )
        ).json()
        plain = (
            await client.post(child_url(parent["id"]), json={"subject": "p"}, headers=auth)
        ).json()
        rows = await activities(engine, workspace)
        change = {"overridden_fields": ["priority", "tags"], "copied_message_ids": copies}
        [from_parent] = [r.payload for r in rows if r.cid == child["id"]]
        assert from_parent == {"parent_id": parent["id"], **change}
        created = [r.payload for r in rows if r.kind == "child_created"]
        assert {"child_id": child["id"], "subject": "s", **change} in created
        assert {"child_id": plain["id"], "subject": "p", "overridden_fields": [],
                "copied_message_ids": []} in created  # fmt: skip


class TestMessages:
    async def test_a_first_message(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str],
        engine: AsyncEngine, workspace: str,
    ) -> None:  # fmt: skip
        parent = await create_parent(**FULL_PARENT)
        note = {"body": "Split off: Billing refunds this.", "is_internal": True,
                "sender_type": "agent", "sender_id": "user_dana",
                "metadata": {"reason": "split", "n": [1, 2]}}  # fmt: skip
        response = await client.post(
            child_url(parent["id"]), json={"subject": "s", "message": note}, headers=auth
        )
        assert response.status_code == 201, response.text
        child = response.json()
        [message] = child["messages"]
        assert {k: message[k] for k in MESSAGE_FIELDS} == {
            "body_html": None, "content_type": "text/plain", **note
        }  # fmt: skip
        assert message["source_message_id"] is None
        assert message["conversation_version"] == 1
        assert message["id"] not in {m["id"] for m in parent["messages"]}
        assert child["tab_counts"] == {
            "activities": 1, "has_resolution": False, "messages": 1, "related": 1
        }  # fmt: skip
        assert await get(client, child["id"], auth) == child
        # the parent's messages are untouched
        assert (await get(client, parent["id"], auth))["tab_counts"]["messages"] == 2
        await assert_counters_exact(engine, workspace)

    async def test_copies_keep_the_parents_order_and_come_before_the_message(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str],
        engine: AsyncEngine, workspace: str,
    ) -> None:  # fmt: skip
        parent, in_order = await parent_with_messages(create_parent, engine, workspace)
        assert [m["id"] for m in (await get(client, parent["id"], auth))["messages"]] == [
            m["id"] for m in in_order
        ]
        asked = [in_order[3]["id"], in_order[0]["id"], in_order[2]["id"]]  # not in order
        response = await client.post(
            child_url(parent["id"]),
            json={"subject": "s", "copy_message_ids": asked, "message": {"body": "Why"}},
            headers=auth,
        )
        assert response.status_code == 201, response.text
        child = response.json()
        expected = [in_order[0], in_order[2], in_order[3]]
        assert [m["source_message_id"] for m in child["messages"]] == [
            *(m["id"] for m in expected), None
        ]  # fmt: skip
        assert child["messages"][-1]["body"] == "Why"
        for copy, original in zip(child["messages"], expected, strict=False):
            assert copy["id"] != original["id"]
            assert {k: copy[k] for k in MESSAGE_FIELDS} == {k: original[k] for k in MESSAGE_FIELDS}
            assert copy["conversation_version"] == 1
        assert child["tab_counts"]["messages"] == 4
        assert await get(client, child["id"], auth) == child
        # the originals stay where they were
        assert [m["id"] for m in (await get(client, parent["id"], auth))["messages"]] == [
            m["id"] for m in in_order
        ]
        await assert_counters_exact(engine, workspace)

    async def test_copies_of_copies_name_the_original_they_copied(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str]
    ) -> None:
        parent = await create_parent(**FULL_PARENT)
        mid = parent["messages"][0]["id"]
        one = await client.post(
            child_url(parent["id"]), json={"subject": "a", "copy_message_ids": [mid]}, headers=auth
        )
        two = await client.post(
            child_url(parent["id"]), json={"subject": "b", "copy_message_ids": [mid]}, headers=auth
        )
        a, b = one.json()["messages"][0], two.json()["messages"][0]
        assert a["source_message_id"] == b["source_message_id"] == mid
        assert a["id"] != b["id"]

    async def test_an_id_that_is_not_a_message_of_the_parent_is_422(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str],
        engine: AsyncEngine, workspace: str, token_for: TokenFactory,
    ) -> None:  # fmt: skip
        parent = await create_parent(**FULL_PARENT)
        other = await create_parent(**FULL_PARENT)
        stranger = {"Authorization": f"Bearer {token_for('ws_other_' + uuid.uuid4().hex)}"}
        foreign = await create_parent(headers=stranger, **FULL_PARENT)
        child = (
            await client.post(
                child_url(parent["id"]),
                json={"subject": "c", "copy_message_ids": [parent["messages"][0]["id"]]},
                headers=auth,
            )
        ).json()
        mine = parent["messages"][0]["id"]
        for stray in (
            other["messages"][0]["id"],  # another conversation's
            foreign["messages"][0]["id"],  # another workspace's
            child["messages"][0]["id"],  # a copy on a child of the parent
            parent["id"],  # not a message at all
            str(uuid.uuid4()),  # nothing
        ):
            before = await count_rows(engine, workspace)
            response = await client.post(
                child_url(parent["id"]),
                json={"subject": "s", "copy_message_ids": [mine, stray], "priority": "low"},
                headers=auth,
            )
            assert response.status_code == 422, response.text
            assert response.json() == {
                "detail": [
                    {
                        "loc": ["body", "copy_message_ids", 1],
                        "msg": "Not a message of the parent conversation.",
                        "type": "message_not_in_parent",
                    }
                ]
            }
            assert await count_rows(engine, workspace) == before
        assert (await get(client, parent["id"], auth))["version"] == 2
        await assert_counters_exact(engine, workspace)

    async def test_missing_parent_is_404_before_the_copies(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        response = await client.post(
            child_url(uuid.uuid4()),
            json={"subject": "s", "copy_message_ids": [str(uuid.uuid4())]},
            headers=auth,
        )
        assert response.status_code == 404
        assert response.json()["code"] == "conversation_not_found"

    async def test_the_event_carries_the_child_with_its_messages(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str],
        engine: AsyncEngine, workspace: str,
    ) -> None:  # fmt: skip
        parent = await create_parent(**FULL_PARENT)
        child = (
            await client.post(
                child_url(parent["id"]),
                json={"subject": "s", "message": {"body": "m"},
                      "copy_message_ids": [parent["messages"][1]["id"]]},
                headers=auth,
            )
        ).json()  # fmt: skip
        rows = await events(engine, workspace)
        assert [r.type for r in rows] == ["conversation.created", "child.created"]
        assert rows[1].data == {
            "conversation_id": child["id"], "parent_id": parent["id"], "conversation": child
        }  # fmt: skip


def splits(parent: dict[str, Any]) -> list[dict[str, Any]]:
    """Three different children of ``parent`` (made with FULL_PARENT's two messages)."""
    first, second = (m["id"] for m in parent["messages"])
    return [
        {"subject": "Refund", "assignee_team_id": "team_billing", "tags": ["refund"],
         "message": {"body": "Billing: refund it.", "is_internal": True},
         "copy_message_ids": [second, first]},
        {"subject": "Replace the item", "priority": "low", "contact_phone": None,
         "sla_resolution_due": "2031-01-01T02:00:00+02:00"},
        {"subject": "Courier claim", "copy_message_ids": [first],
         "custom_attrs": {"claim": True}},
    ]  # fmt: skip


class TestBatch:
    async def test_children_in_request_order_like_single_creations(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str],
        engine: AsyncEngine, workspace: str,
    ) -> None:  # fmt: skip
        parent = await create_parent(**FULL_PARENT)
        bodies = splits(parent)
        response = await client.post(
            batch_url(parent["id"]), json={"children": bodies}, headers=auth
        )
        assert response.status_code == 201, response.text
        assert "location" not in response.headers
        assert "etag" not in response.headers
        items = response.json()["items"]
        assert set(response.json()) == {"items"}
        assert [c["subject"] for c in items] == [b["subject"] for b in bodies]
        # each child is what createChildConversation makes of the same body
        other = await create_parent(**FULL_PARENT)
        for child, body in zip(items, splits(other), strict=True):
            single = (await client.post(child_url(other["id"]), json=body, headers=auth)).json()
            volatile = {"id", "parent_id", "created_at", "updated_at", "assigned_at", "messages"}
            assert {k: v for k, v in child.items() if k not in volatile} == {
                k: v for k, v in single.items() if k not in volatile
            }
            assert [m["body"] for m in child["messages"]] == [m["body"] for m in single["messages"]]
            assert child["parent_id"] == parent["id"]
            assert await get(client, child["id"], auth) == child
        assert items[0]["assignee_team_id"] == "team_billing"
        assert items[1]["sla_resolution_due"] == "2031-01-01T00:00:00Z"
        assert items[1]["contact_phone"] is None
        assert [m["source_message_id"] for m in items[0]["messages"]] == [
            parent["messages"][0]["id"], parent["messages"][1]["id"], None
        ]  # fmt: skip
        # the parent: one new version, one child_created per child
        after = await get(client, parent["id"], auth)
        assert after["version"] == 2
        assert after["tab_counts"]["related"] == 3
        assert after["tab_counts"]["activities"] == 1 + 3
        kinds = [(r.cid, r.kind) for r in await activities(engine, workspace)]
        assert [cid for cid, kind in kinds if kind == "child_created"].count(parent["id"]) == 3
        # events: child.created per child, in request order
        rows = [r for r in await events(engine, workspace) if r.data.get("parent_id")]
        batch_events = [r for r in rows if r.data["conversation_id"] in {c["id"] for c in items}]
        assert [r.type for r in batch_events] == ["child.created"] * 3
        assert [r.data["conversation"] for r in batch_events] == items
        await assert_counters_exact(engine, workspace)

    async def test_a_subject_alone_gives_the_same_child_alone_or_in_a_batch(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str],
        engine: AsyncEngine, workspace: str,
    ) -> None:  # fmt: skip
        # A child with nothing but a subject is made by a leaner statement than a batch item.
        parent = await create_parent(**FULL_PARENT)
        alone = (
            await client.post(child_url(parent["id"]), json={"subject": "s"}, headers=auth)
        ).json()
        [batched] = (
            await client.post(
                batch_url(parent["id"]), json={"children": [{"subject": "s"}]}, headers=auth
            )
        ).json()["items"]
        volatile = {"id", "created_at", "updated_at", "assigned_at"}
        assert {k: v for k, v in alone.items() if k not in volatile} == {
            k: v for k, v in batched.items() if k not in volatile
        }
        payloads = {}
        for row in await activities(engine, workspace):
            if row.kind in ("created_from_parent", "child_created"):
                child = row.payload.get("child_id", row.cid)
                payloads[(child == alone["id"], row.kind)] = {
                    k: v for k, v in row.payload.items() if k != "child_id"
                }
        assert payloads[(True, "child_created")] == payloads[(False, "child_created")]
        assert payloads[(True, "created_from_parent")] == payloads[(False, "created_from_parent")]
        await assert_counters_exact(engine, workspace)

    async def test_a_resolved_parent_is_reopened_once(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str],
        engine: AsyncEngine, workspace: str,
    ) -> None:  # fmt: skip
        parent = await create_parent(subject="Done", status="resolved")
        response = await client.post(
            batch_url(parent["id"]),
            json={"children": [{"subject": "a"}, {"subject": "b"}]},
            headers=auth,
        )
        assert response.status_code == 201
        first = response.json()["items"][0]["id"]
        after = await get(client, parent["id"], auth)
        assert (after["status"], after["version"]) == ("open", 2)
        reopened = [r.payload for r in await activities(engine, workspace) if r.kind == "reopened"]
        assert reopened == [{"from_status": "resolved", "reason": "child_created",
                             "child_id": first}]  # fmt: skip
        types = [r.type for r in await events(engine, workspace)]
        assert types == ["conversation.created", "child.created", "child.created",
                         "parent.reopened"]  # fmt: skip
        await assert_counters_exact(engine, workspace)

    async def test_over_the_remaining_room_writes_nothing(
        self, database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        async with client_with(database_url, max_children_per_parent=4) as c:
            parent = (
                await c.post("/api/v2/conversations", json={"subject": "p"}, headers=auth)
            ).json()
            await c.post(child_url(parent["id"]), json={"subject": "one"}, headers=auth)
            before = await count_rows(engine, workspace)
            response = await c.post(
                batch_url(parent["id"]),
                json={"children": [{"subject": str(i)} for i in range(4)]},
                headers=auth,
            )
            assert response.status_code == 409
            assert response.json() == {
                "detail": "The conversation can take 3 more children (at most 4); the batch has 4.",
                "code": "children_limit_reached",
            }
            assert await count_rows(engine, workspace) == before
            assert (await get(c, parent["id"], auth))["version"] == 2
            fits = await c.post(
                batch_url(parent["id"]),
                json={"children": [{"subject": str(i)} for i in range(3)]},
                headers=auth,
            )
            assert fits.status_code == 201
            full = await c.post(
                batch_url(parent["id"]), json={"children": [{"subject": "x"}]}, headers=auth
            )
            assert full.status_code == 409
            assert "can take 0 more" in full.json()["detail"]
        await assert_counters_exact(engine, workspace)

    @pytest.mark.parametrize(
        ("bad", "loc"),
        [
            ({"subject": ""}, ["body", "children", 1, "subject"]),
            ({"subject": "s", "priority": "extreme"}, ["body", "children", 1, "priority"]),
            ({"subject": "s", "status": "open"}, ["body", "children", 1, "status"]),
            ({"subject": "s", "message": {}}, ["body", "children", 1, "message", "body"]),
            ({"subject": "s", "copy_message_ids": ["x"]},
             ["body", "children", 1, "copy_message_ids", 0]),
        ],
    )  # fmt: skip
    async def test_one_invalid_item_writes_nothing_and_is_located(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str],
        engine: AsyncEngine, workspace: str, bad: dict[str, Any], loc: list[Any],
    ) -> None:  # fmt: skip
        parent = await create_parent()
        before = await count_rows(engine, workspace)
        response = await client.post(
            batch_url(parent["id"]),
            json={"children": [{"subject": "ok"}, bad, {"subject": "ok too"}]},
            headers=auth,
        )
        assert response.status_code == 422, response.text
        assert [d["loc"] for d in response.json()["detail"]] == [loc]
        assert await count_rows(engine, workspace) == before

    async def test_a_copy_not_in_the_parent_refuses_the_batch_and_is_located(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str],
        engine: AsyncEngine, workspace: str,
    ) -> None:  # fmt: skip
        parent = await create_parent(**FULL_PARENT)
        other = await create_parent(**FULL_PARENT)
        children = splits(parent)
        children[2]["copy_message_ids"] = [parent["messages"][1]["id"], other["messages"][0]["id"]]
        children[1]["copy_message_ids"] = [str(uuid.uuid4())]  # the first stray wins
        before = await count_rows(engine, workspace)
        response = await client.post(
            batch_url(parent["id"]), json={"children": children}, headers=auth
        )
        assert response.status_code == 422
        assert response.json()["detail"] == [
            {
                "loc": ["body", "children", 1, "copy_message_ids", 0],
                "msg": "Not a message of the parent conversation.",
                "type": "message_not_in_parent",
            }
        ]
        children[1]["copy_message_ids"] = []
        second = await client.post(
            batch_url(parent["id"]), json={"children": children}, headers=auth
        )
        assert second.json()["detail"][0]["loc"] == ["body", "children", 2, "copy_message_ids", 1]
        assert await count_rows(engine, workspace) == before

    @pytest.mark.parametrize(
        "body",
        [{}, {"children": []}, {"children": [{"subject": "s"}] * 51}, {"children": {}},
         {"children": [{"subject": "s"}], "subject": "s"}],
    )  # fmt: skip
    async def test_batch_size_and_shape(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str],
        body: dict[str, Any],
    ) -> None:  # fmt: skip
        parent = await create_parent()
        response = await client.post(batch_url(parent["id"]), json=body, headers=auth)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"][:2] in (
            ["body", "children"],
            ["body", "subject"],
        )

    async def test_fifty_children_fit(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str],
        engine: AsyncEngine, workspace: str,
    ) -> None:  # fmt: skip
        parent = await create_parent()
        response = await client.post(
            batch_url(parent["id"]),
            json={"children": [{"subject": f"c{i}"} for i in range(50)]},
            headers=auth,
        )
        assert response.status_code == 201
        assert [c["subject"] for c in response.json()["items"]] == [f"c{i}" for i in range(50)]
        assert (await count_rows(engine, workspace))["conversations"] == 51
        await assert_counters_exact(engine, workspace)

    async def test_a_replayed_batch_returns_the_same_bytes(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str],
        engine: AsyncEngine, workspace: str,
    ) -> None:  # fmt: skip
        parent = await create_parent(**FULL_PARENT)
        headers = {**auth, "Idempotency-Key": "split-1001"}
        body = {"children": splits(parent)}
        first = await client.post(batch_url(parent["id"]), json=body, headers=headers)
        assert first.status_code == 201
        before = await count_rows(engine, workspace)
        again = await client.post(batch_url(parent["id"]), json=body, headers=headers)
        assert again.status_code == 201
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"
        assert "location" not in again.headers
        assert await count_rows(engine, workspace) == before
        other = await client.post(
            batch_url(parent["id"]), json={"children": body["children"][:2]}, headers=headers
        )
        assert other.status_code == 422
        assert other.json()["code"] == "idempotency_key_reused"
        # the same key on the single-child operation is another request too
        single = await client.post(
            child_url(parent["id"]), json=body["children"][0], headers=headers
        )
        assert single.json()["code"] == "idempotency_key_reused"
        assert (await get(client, parent["id"], auth))["version"] == 2

    async def test_concurrent_duplicates_create_one_batch(
        self, database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        async with client_with(database_url) as c:
            parent = (
                await c.post("/api/v2/conversations", json={"subject": "p"}, headers=auth)
            ).json()
            body = {"children": [{"subject": f"c{i}", "priority": "low"} for i in range(5)]}
            headers = {**auth, "Idempotency-Key": "one-batch"}
            responses = await asyncio.gather(
                *[c.post(batch_url(parent["id"]), json=body, headers=headers) for _ in range(8)]
            )
            created = [r for r in responses if r.status_code == 201]
            assert {r.status_code for r in responses} <= {201, 409}
            assert {r.content for r in created} == {created[0].content}
            assert all(r.json()["code"] == "idempotency_key_in_use"
                       for r in responses if r.status_code == 409)  # fmt: skip
            assert (await get(c, parent["id"], auth))["version"] == 2
        assert (await count_rows(engine, workspace))["conversations"] == 6
        await assert_counters_exact(engine, workspace)

    async def test_an_absent_override_and_an_explicit_default_are_different_requests(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str]
    ) -> None:
        parent = await create_parent(**FULL_PARENT)
        headers = {**auth, "Idempotency-Key": "inherit-or-clear"}
        inherited = await client.post(
            child_url(parent["id"]), json={"subject": "s"}, headers=headers
        )
        cleared = await client.post(
            child_url(parent["id"]), json={"subject": "s", "tags": []}, headers=headers
        )
        assert inherited.json()["tags"] == FULL_PARENT["tags"]
        assert cleared.status_code == 422
        assert cleared.json()["code"] == "idempotency_key_reused"

    async def test_refusals_of_the_parent_refuse_the_batch(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str],
        engine: AsyncEngine, workspace: str,
    ) -> None:  # fmt: skip
        parent = await create_parent()
        body = {"children": [{"subject": "a"}, {"subject": "b"}]}
        stale = await client.post(
            batch_url(parent["id"]), json=body, headers={**auth, "If-Match": '"7"'}
        )
        assert (stale.status_code, stale.json()["code"]) == (412, "precondition_failed")
        current = await client.post(
            batch_url(parent["id"]), json=body, headers={**auth, "If-Match": '"1"'}
        )
        assert current.status_code == 201
        for state, code in (("is_spam = true", "parent_is_spam"),
                            ("archived_at = now()", "parent_archived")):  # fmt: skip
            target = await create_parent()
            await set_state(engine, workspace, target["id"], state)
            before = await count_rows(engine, workspace)
            refused = await client.post(batch_url(target["id"]), json=body, headers=auth)
            assert (refused.status_code, refused.json()["code"]) == (409, code)
            assert await count_rows(engine, workspace) == before
        child = current.json()["items"][0]["id"]
        nested = await client.post(batch_url(child), json=body, headers=auth)
        assert (nested.status_code, nested.json()["code"]) == (409, "parent_is_child")

    async def test_authentication_and_tenancy(
        self, client: httpx.AsyncClient, create_parent: Factory, token_for: TokenFactory,
        engine: AsyncEngine, workspace: str,
    ) -> None:  # fmt: skip
        parent = await create_parent()
        body = {"children": [{"subject": "a"}]}
        anonymous = await client.post(batch_url(parent["id"]), json=body)
        assert anonymous.status_code == 401
        reader = {"Authorization": f"Bearer {token_for(workspace, READ)}"}
        read_only = await client.post(batch_url(parent["id"]), json=body, headers=reader)
        assert (read_only.status_code, read_only.json()["code"]) == (403, "insufficient_scope")
        intruder = {"Authorization": f"Bearer {token_for('ws_other_' + uuid.uuid4().hex)}"}
        foreign = await client.post(batch_url(parent["id"]), json=body, headers=intruder)
        missing = await client.post(batch_url(uuid.uuid4()), json=body, headers=intruder)
        assert foreign.status_code == missing.status_code == 404
        assert foreign.json() == missing.json()
        assert (await count_rows(engine, workspace))["conversations"] == 1

    async def test_concurrent_batches_respect_the_limit(
        self, database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        async with client_with(database_url, max_children_per_parent=10) as c:
            parent = (
                await c.post("/api/v2/conversations", json={"subject": "p"}, headers=auth)
            ).json()
            responses = await asyncio.gather(
                *[
                    c.post(
                        batch_url(parent["id"]),
                        json={"children": [{"subject": f"{i}-{j}"} for j in range(3)]},
                        headers=auth,
                    )
                    for i in range(6)
                ]
            )
            statuses = sorted(r.status_code for r in responses)
            assert statuses == [201, 201, 201, 409, 409, 409]
            after = await get(c, parent["id"], auth)
        assert (after["version"], after["tab_counts"]["related"]) == (4, 9)
        assert await assert_counters_exact(engine, workspace) == 10
