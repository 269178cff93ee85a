"""The write path's shape: one statement per request, refusals and replays included.

Every statement the request path sends goes over the driver connections of the engine's pool;
a query logger on each of them records what a request sent (asyncpg calls it once per
statement, failed ones included).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import (
    Sent,
    assert_counters_exact,
    child_url,
    client_with,
    parent_locked,
    set_state,
    traced_client,
)
from tests.support import statements_sent as _statements


@pytest.fixture
async def traced(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Sent]]:
    async with traced_client(
        database_url, max_children_per_parent=1, idempotency_purge_interval_seconds=0
    ) as traced:
        yield traced


@pytest.fixture
async def traced_roomy(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Sent]]:
    async with traced_client(
        database_url, max_children_per_parent=50, idempotency_purge_interval_seconds=0
    ) as traced:
        yield traced


async def test_each_request_is_one_statement(
    traced: tuple[httpx.AsyncClient, Sent], auth: dict[str, str]
) -> None:
    client, sent = traced
    # A new connection introspects types on first use (once per connection): warm it up.
    warm = (await client.post("/api/v2/conversations", json={"subject": "w"}, headers=auth)).json()
    warm_key = {**auth, "Idempotency-Key": str(uuid.uuid4())}
    await client.post(child_url(warm["id"]), json={"subject": "w"}, headers=warm_key)
    await client.post(child_url(warm["id"]), json={"subject": "w"}, headers=warm_key)
    await client.get(child_url(warm["id"]), headers=auth)

    key = {**auth, "Idempotency-Key": str(uuid.uuid4())}
    created, statements = await _statements(
        sent, client.post("/api/v2/conversations", json={"subject": "p"}, headers=key)
    )
    assert created.status_code == 201
    assert len(statements) == 1
    parent = created.json()["id"]

    child_key = {**auth, "Idempotency-Key": str(uuid.uuid4())}
    child, statements = await _statements(
        sent, client.post(child_url(parent), json={"subject": "c"}, headers=child_key)
    )
    assert child.status_code == 201
    assert len(statements) == 1, "claim, lock, checks, writes and response: one round trip"

    refused, statements = await _statements(
        sent, client.post(child_url(parent), json={"subject": "d"}, headers=auth)
    )
    assert refused.status_code == 409
    assert refused.json()["code"] == "children_limit_reached"
    assert len(statements) == 1, "a refusal is diagnosed by the same statement"

    replay, statements = await _statements(
        sent, client.post(child_url(parent), json={"subject": "c"}, headers=child_key)
    )
    assert replay.status_code == 201
    assert replay.content == child.content, "a replay returns the very same bytes"
    assert len(statements) == 2, "the write finds the key taken, then the stored response"

    for path in (f"/api/v2/conversations/{parent}", child_url(parent)):
        read, statements = await _statements(sent, client.get(path, headers=auth))
        assert read.status_code == 200
        assert len(statements) == 1


async def test_richer_children_are_one_statement_however_many_copies_and_children(
    traced_roomy: tuple[httpx.AsyncClient, Sent], auth: dict[str, str]
) -> None:
    client, sent = traced_roomy
    warm = (await client.post("/api/v2/conversations", json={"subject": "w"}, headers=auth)).json()
    for url in (child_url(warm["id"]), child_url(warm["id"]) + "/batch"):
        body = {"subject": "w"} if url.endswith("children") else {"children": [{"subject": "w"}]}
        warm_key = {**auth, "Idempotency-Key": str(uuid.uuid4())}
        await client.post(url, json=body, headers=warm_key)
        await client.post(url, json=body, headers=warm_key)
    messages = [{"body": f"m{i}", "sender_type": "contact"} for i in range(20)]
    parent = (
        await client.post(
            "/api/v2/conversations", json={"subject": "p", "messages": messages}, headers=auth
        )
    ).json()
    ids = [m["id"] for m in parent["messages"]]
    split = {
        "subject": "c",
        "priority": "urgent",
        "assignee_team_id": "team_billing",
        "tags": ["split"],
        "custom_attrs": {"why": "refund"},
        "message": {"body": "Split off", "is_internal": True},
        "copy_message_ids": ids,
    }
    key = {**auth, "Idempotency-Key": str(uuid.uuid4())}
    child, statements = await _statements(
        sent, client.post(child_url(parent["id"]), json=split, headers=key)
    )
    assert child.status_code == 201, child.text
    assert len(child.json()["messages"]) == 21
    assert len(statements) == 1, "overrides, a message and 20 copies: still one round trip"

    stray = {**split, "copy_message_ids": [*ids[:5], str(uuid.uuid4())]}
    refused, statements = await _statements(
        sent, client.post(child_url(parent["id"]), json=stray, headers=auth)
    )
    assert refused.status_code == 422
    assert len(statements) == 1, "a stray copy is diagnosed by the same statement"

    batch = {"children": [{**split, "copy_message_ids": ids[:5]}] * 10}
    batch_key = {**auth, "Idempotency-Key": str(uuid.uuid4())}
    created, statements = await _statements(
        sent, client.post(child_url(parent["id"]) + "/batch", json=batch, headers=batch_key)
    )
    assert created.status_code == 201, created.text
    assert len(created.json()["items"]) == 10
    assert len(statements) == 1, "a batch of ten is one round trip, not ten"

    replay, statements = await _statements(
        sent, client.post(child_url(parent["id"]) + "/batch", json=batch, headers=batch_key)
    )
    assert replay.content == created.content
    assert len(statements) == 2, "the write finds the key taken, then the stored response"


async def test_the_write_records_its_events_and_a_refusal_none(
    client: httpx.AsyncClient, engine: AsyncEngine, workspace: str, auth: dict[str, str]
) -> None:
    parent = (
        await client.post("/api/v2/conversations", json={"subject": "p"}, headers=auth)
    ).json()
    await set_state(engine, workspace, parent["id"], "status = 'resolved'")
    child = await client.post(child_url(parent["id"]), json={"subject": "c"}, headers=auth)
    assert child.status_code == 201
    await set_state(engine, workspace, parent["id"], "is_spam = true")
    refused = await client.post(child_url(parent["id"]), json={"subject": "d"}, headers=auth)
    assert refused.status_code == 409
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT type, data FROM events WHERE workspace_id = :w ORDER BY txid, id"),
                {"w": workspace},
            )
        ).all()
    assert [r.type for r in rows] == ["conversation.created", "child.created", "parent.reopened"]
    assert rows[0].data["conversation"] == parent
    assert rows[1].data == {
        "conversation_id": child.json()["id"],
        "parent_id": parent["id"],
        "conversation": child.json(),
    }
    assert rows[2].data == {
        "conversation_id": parent["id"],
        "reason": "child_created",
        "child_id": child.json()["id"],
    }


async def test_children_of_one_parent_take_turns_and_a_stuck_row_is_a_bounded_503(
    database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str]
) -> None:
    async with client_with(database_url, db_lock_timeout_ms=300) as c:
        parent = (await c.post("/api/v2/conversations", json={"subject": "p"}, headers=auth)).json()
        async with parent_locked(engine, workspace, parent["id"]):
            started = asyncio.get_running_loop().time()
            stuck = await asyncio.gather(
                *[
                    c.post(child_url(parent["id"]), json={"subject": "s"}, headers=auth)
                    for _ in range(6)
                ]
            )
            waited = asyncio.get_running_loop().time() - started
        assert [r.status_code for r in stuck] == [503] * 6
        # One waits on the row (300 ms), the others on their turn (300 ms): not 6 × 300 ms.
        assert waited < 1.5
        burst = await asyncio.gather(
            *[
                c.post(child_url(parent["id"]), json={"subject": f"c{i}"}, headers=auth)
                for i in range(30)
            ]
        )
    assert [r.status_code for r in burst] == [201] * 30
    assert await assert_counters_exact(engine, workspace) == 31


async def test_a_created_object_is_stored_once_and_replayed_from_its_event(
    client: httpx.AsyncClient, engine: AsyncEngine, workspace: str, auth: dict[str, str]
) -> None:
    def keyed() -> dict[str, str]:
        return {**auth, "Idempotency-Key": str(uuid.uuid4())}

    parent_key, batch_key = keyed(), keyed()
    parent = await client.post("/api/v2/conversations", json={"subject": "p"}, headers=parent_key)
    url = child_url(parent.json()["id"])
    requests = {
        "conversation": ("/api/v2/conversations", {"subject": "p"}, parent_key),
        "child": (url, {"subject": "c"}, keyed()),
        "rich child": (url, {"subject": "r", "priority": "low", "tags": []}, keyed()),
        "batch": (url + "/batch", {"children": [{"subject": "b"}] * 2}, batch_key),
    }
    first = {"conversation": parent}
    for name, (path, body, headers) in requests.items():
        if name not in first:
            first[name] = await client.post(path, json=body, headers=headers)
        assert first[name].status_code == 201, first[name].text

    async with engine.connect() as conn:
        stored = {
            r.key: r
            for r in (
                await conn.execute(
                    text(
                        "SELECT r.key, r.body, e.type, e.data ->> 'conversation_id' AS object "
                        "FROM idempotency_responses r LEFT JOIN events e "
                        "ON e.workspace_id = r.workspace_id AND e.id = r.event_id "
                        "WHERE r.workspace_id = :w"
                    ),
                    {"w": workspace},
                )
            ).all()
        }
    # The object is in its event only; a batch's {"items": [...]} is no event's: kept as sent.
    for name, event_type in (
        ("conversation", "conversation.created"),
        ("child", "child.created"),
        ("rich child", "child.created"),
    ):
        row = stored[requests[name][2]["Idempotency-Key"]]
        assert (row.body, row.type, row.object) == (None, event_type, first[name].json()["id"])
    batch_row = stored[batch_key["Idempotency-Key"]]
    assert (bytes(batch_row.body), batch_row.type) == (first["batch"].content, None)

    for name, (path, body, headers) in requests.items():
        again = await client.post(path, json=body, headers=headers)
        assert again.status_code == 201
        assert again.headers["idempotent-replayed"] == "true"
        assert again.content == first[name].content, f"{name}: the very same bytes"
        for header in ("location", "etag"):
            assert again.headers.get(header) == first[name].headers.get(header)
