"""Coalesced child creation (service.create_child, Turns.together): plain children requested
at the same time by one caller go together, in fewer statements than requests, and yet each
request is answered exactly as if it had come alone.

What these tests guarantee, on a real PostgreSQL with requests really in flight together:
every child, parent version, counter, activity, event and stored Idempotency-Key response is
what one-by-one requests would have left; a refusal inside a group (the children limit, an
archived, deleted, spam, merged or child parent) answers only its own requests and writes
nothing for them; a key sent twice at once makes one child (the other replays it, or is a 422
if its body differs); a resolved parent is reopened once; requests that cannot be coalesced
(overrides, a message, If-Match) mixed in change nothing; two callers whose groups lock the
same parents in different orders do not deadlock; a locked parent holds up neither the free
parents' requests in its group nor the caller's requests behind it, and its own requests get
their bounded 503.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import (
    Sent,
    TokenFactory,
    activity_kinds,
    assert_counters_exact,
    child_url,
    client_with,
    count_rows,
    parent_locked,
    set_state,
    traced_client,
)

# How the statements are told apart in what was sent: as PostgreSQL got them, or (on Citus) as
# aurion_delegate got them (traced_client records a delegated call's statement), whose tables
# and parameters are written otherwise. A CTE only the grouped statement has; an activity only
# statements that create children write.
TOGETHER = "group_out AS ("
CHILD_WRITE = "'created_from_parent'"


def child_writes(sent: Sent) -> list[str]:
    """The statements that created children for the single-child route: alone, or together."""
    return [s for s in sent if CHILD_WRITE in s]


Request = tuple[str, dict[str, Any], dict[str, str]]  # parent id, body, headers


def keyed(auth: dict[str, str], key: str) -> dict[str, str]:
    return {**auth, "Idempotency-Key": key}


async def new_parent(c: httpx.AsyncClient, auth: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = await c.post("/api/v2/conversations", json={"subject": "p", **fields}, headers=auth)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def burst(c: httpx.AsyncClient, requests: Sequence[Request]) -> list[httpx.Response]:
    """All ``requests`` at once (one event loop: they really are in flight together)."""
    return list(
        await asyncio.gather(
            *(c.post(child_url(pid), json=body, headers=headers) for pid, body, headers in requests)
        )
    )


async def get(c: httpx.AsyncClient, auth: dict[str, str], cid: str) -> dict[str, Any]:
    response = await c.get(f"/api/v2/conversations/{cid}", headers=auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


async def events(engine: AsyncEngine, workspace: str) -> list[Any]:
    """The workspace's events in feed order (type, data)."""
    return await rows(
        engine,
        "SELECT type, data FROM events WHERE workspace_id = :w ORDER BY txid, id",
        w=workspace,
    )


async def activities(engine: AsyncEngine, workspace: str, kind: str) -> list[Any]:
    return await rows(
        engine,
        "SELECT conversation_id::text AS cid, actor, payload FROM activities "
        "WHERE workspace_id = :w AND kind = :k",
        w=workspace,
        k=kind,
    )


async def stored_keys(engine: AsyncEngine, workspace: str) -> set[str]:
    found = await rows(
        engine, "SELECT key FROM idempotency_keys WHERE workspace_id = :w", w=workspace
    )
    return {r.key for r in found}


def together_sent(sent: Sent) -> int:
    return sum(1 for s in sent if TOGETHER in s)


def assert_created(response: httpx.Response, parent_id: str, subject: str) -> dict[str, Any]:
    """A fresh 201 for a child of ``parent_id``, with its Location and ETag."""
    assert response.status_code == 201, response.text
    child: dict[str, Any] = response.json()
    assert child["parent_id"] == parent_id
    assert child["subject"] == subject
    assert child["version"] == 1
    assert response.headers["location"] == f"/api/v2/conversations/{child['id']}"
    assert response.headers["etag"] == '"1"'
    assert "idempotent-replayed" not in response.headers
    return child


def assert_refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


# ------------------------------------------------------------------------------ a burst


def subject(i: int) -> str:
    """Subjects that JSON and SQL must carry intact (the group's items travel as JSON)."""
    odd = [
        '"quoted"',
        "back\\slash",
        "ünïcødé «»",
        "emoji 😀",
        "sep\u2028arator",
        "'; --",
        "x" * 490,
    ]
    return f"child {i} {odd[i % len(odd)]}"


async def test_a_burst_over_four_parents_goes_in_fewer_statements_each_answered_as_alone(
    database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str]
) -> None:
    async with traced_client(database_url, idempotency_purge_interval_seconds=0) as (c, sent):
        parents = [
            await new_parent(c, auth, subject=f"p{n}", priority="high", tags=[f"t{n}"])
            for n in range(4)
        ]
        requests: list[Request] = [
            (parents[i % 4]["id"], {"subject": subject(i)}, keyed(auth, f"burst-{i}"))
            for i in range(40)
        ]
        sent.clear()
        responses = await burst(c, requests)
        writes = child_writes(sent)

        children = [
            assert_created(r, pid, body["subject"])
            for r, (pid, body, _) in zip(responses, requests, strict=True)
        ]
        assert len({child["id"] for child in children}) == 40
        for child, (pid, _, _) in zip(children, requests, strict=True):
            parent = next(p for p in parents if p["id"] == pid)
            # A plain child inherits its parent's context.
            assert (child["priority"], child["tags"]) == (parent["priority"], parent["tags"])
            assert child["tab_counts"] == {
                "activities": 1,
                "has_resolution": False,
                "messages": 0,
                "related": 1,
            }
        groups = together_sent(sent)
        assert groups >= 1, "no group formed: nothing was coalesced"
        assert len(writes) < 40, f"{len(writes)} write statements for 40 requests"

        for parent in parents:
            after = await get(c, auth, parent["id"])
            assert after["version"] == 1 + 10, "one new version per child"
            assert after["tab_counts"] == {
                "activities": 1 + 10,
                "has_resolution": False,
                "messages": 0,
                "related": 10,
            }

        # One activity of each side per child, naming the right conversations.
        expected_pairs = {
            (pid, child["id"]) for child, (pid, _, _) in zip(children, requests, strict=True)
        }
        nothing_else: dict[str, list[str]] = {"overridden_fields": [], "copied_message_ids": []}
        subject_of = {child["id"]: child["subject"] for child in children}
        made = await activities(engine, workspace, "child_created")
        assert sorted((a.cid, a.payload["child_id"]) for a in made) == sorted(expected_pairs)
        for a in made:
            child_id = a.payload["child_id"]
            assert a.payload == {
                "child_id": child_id,
                "subject": subject_of[child_id],
                **nothing_else,
            }
            assert a.actor == "agent-1"
        made_from = await activities(engine, workspace, "created_from_parent")
        assert sorted((a.payload["parent_id"], a.cid) for a in made_from) == sorted(expected_pairs)
        for a in made_from:
            assert a.payload == {"parent_id": a.payload["parent_id"], **nothing_else}
        assert await activity_kinds(engine, workspace) == {
            "created": 4,
            "child_created": 40,
            "created_from_parent": 40,
        }
        # One child.created event per child, carrying the very object the request got back.
        recorded = await events(engine, workspace)
        assert Counter(e.type for e in recorded) == {"conversation.created": 4, "child.created": 40}
        by_child = {
            e.data["conversation_id"]: e.data for e in recorded if e.type == "child.created"
        }
        for child, r in zip(children, responses, strict=True):
            assert by_child[child["id"]] == {
                "conversation_id": child["id"],
                "parent_id": child["parent_id"],
                "conversation": r.json(),
            }
        assert await assert_counters_exact(engine, workspace) == 44
        assert await stored_keys(engine, workspace) == {f"burst-{i}" for i in range(40)}
        # Each key's response is its child's child.created event: the object is stored once.
        stored = await rows(
            engine,
            "SELECT r.key, r.body IS NULL AS by_reference, e.type, "
            "e.data ->> 'conversation_id' AS child_id FROM idempotency_responses r "
            "LEFT JOIN events e ON e.workspace_id = r.workspace_id AND e.id = r.event_id "
            "WHERE r.workspace_id = :w",
            w=workspace,
        )
        assert {r.key: (r.by_reference, r.type, r.child_id) for r in stored} == {
            f"burst-{i}": (True, "child.created", child["id"]) for i, child in enumerate(children)
        }

        # Replays (at once too): the very same bytes and headers, and nothing written.
        before = await count_rows(engine, workspace)
        replays = await burst(c, requests)
        for first, again in zip(responses, replays, strict=True):
            assert again.status_code == 201
            assert again.content == first.content
            assert again.headers["idempotent-replayed"] == "true"
            assert again.headers["location"] == first.headers["location"]
            assert again.headers["etag"] == first.headers["etag"]
        assert await count_rows(engine, workspace) == before
        for parent in parents:
            assert (await get(c, auth, parent["id"]))["version"] == 11


async def test_a_burst_without_keys_is_coalesced_too(
    database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str]
) -> None:
    async with traced_client(database_url, idempotency_purge_interval_seconds=0) as (c, sent):
        parents = [await new_parent(c, auth) for _ in range(3)]
        requests: list[Request] = [
            (parents[i % 3]["id"], {"subject": f"c{i}"}, auth) for i in range(30)
        ]
        sent.clear()
        responses = await burst(c, requests)
        groups = together_sent(sent)
        assert groups >= 1, "no group formed"
        assert len(child_writes(sent)) < 30
        for r, (pid, body, _) in zip(responses, requests, strict=True):
            assert_created(r, pid, body["subject"])
        for parent in parents:
            assert (await get(c, auth, parent["id"]))["version"] == 11
    assert await stored_keys(engine, workspace) == set()
    assert await assert_counters_exact(engine, workspace) == 33


# ------------------------------------------------------------------ refusals in a group


async def test_the_children_limit_inside_a_group_answers_each_request_as_alone(
    database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str]
) -> None:
    async with traced_client(
        database_url, max_children_per_parent=10, idempotency_purge_interval_seconds=0
    ) as (c, sent):
        parent = await new_parent(c, auth)
        requests: list[Request] = [
            (parent["id"], {"subject": f"c{i}"}, keyed(auth, f"limit-{i}")) for i in range(25)
        ]
        sent.clear()
        responses = await burst(c, requests)
        groups = together_sent(sent)
        assert groups >= 1, "no group formed"
        assert Counter(r.status_code for r in responses) == {201: 10, 409: 15}
        created_keys, refused_keys = set(), []
        for r, (_, body, headers) in zip(responses, requests, strict=True):
            if r.status_code == 201:
                assert_created(r, parent["id"], body["subject"])
                created_keys.add(headers["Idempotency-Key"])
            else:
                refusal = assert_refused(r, 409, "children_limit_reached")
                assert refusal["detail"] == (
                    "The conversation already has the maximum of 10 children."
                )
                refused_keys.append(headers["Idempotency-Key"])
        after = await get(c, auth, parent["id"])
        assert after["version"] == 11
        assert after["tab_counts"]["related"] == 10
        assert await assert_counters_exact(engine, workspace) == 11
        assert await activity_kinds(engine, workspace) == {
            "created": 1,
            "child_created": 10,
            "created_from_parent": 10,
        }
        # A refusal stores nothing under its key ...
        assert await stored_keys(engine, workspace) == created_keys
        # ... so the key is free: the same request again is refused again (not replayed),
        again = await c.post(
            child_url(parent["id"]), json={"subject": "x"}, headers=keyed(auth, refused_keys[0])
        )
        assert_refused(again, 409, "children_limit_reached")
        assert "idempotent-replayed" not in again.headers
        # and under a parent with room it creates a child.
        roomy = await new_parent(c, auth)
        retried = await c.post(
            child_url(roomy["id"]), json={"subject": "x"}, headers=keyed(auth, refused_keys[0])
        )
        assert_created(retried, roomy["id"], "x")
    assert await stored_keys(engine, workspace) == created_keys | {refused_keys[0]}


async def test_a_bad_parent_in_a_group_answers_only_its_own_requests_and_writes_nothing(
    database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str]
) -> None:
    async with traced_client(database_url, idempotency_purge_interval_seconds=0) as (c, sent):
        fine = [await new_parent(c, auth, subject=f"fine {n}") for n in range(2)]
        archived, deleted, spam, merged = [await new_parent(c, auth) for _ in range(4)]
        child_parent = (
            await c.post(child_url(fine[0]["id"]), json={"subject": "k"}, headers=auth)
        ).json()
        await set_state(engine, workspace, archived["id"], "archived_at = now()")
        await set_state(engine, workspace, deleted["id"], "deleted_at = now()")
        await set_state(engine, workspace, spam["id"], "is_spam = true")
        await set_state(
            engine,
            workspace,
            merged["id"],
            f"merged_into_id = '{fine[1]['id']}', merged_at = now()",
        )
        missing = str(uuid.uuid4())
        expected = {
            fine[0]["id"]: (201, None),
            fine[1]["id"]: (201, None),
            archived["id"]: (409, "parent_archived"),
            deleted["id"]: (404, "conversation_not_found"),
            spam["id"]: (409, "parent_is_spam"),
            merged["id"]: (409, "parent_merged"),
            child_parent["id"]: (409, "parent_is_child"),
            missing: (404, "conversation_not_found"),
        }
        before = await rows(
            engine,
            "SELECT id::text AS id, version, n_children, n_activities FROM conversations "
            "WHERE workspace_id = :w",
            w=workspace,
        )
        requests: list[Request] = [
            (pid, {"subject": f"c{i}"}, keyed(auth, f"bad-{i}-{n}"))
            for i in range(4)
            for n, pid in enumerate(expected)
        ]
        sent.clear()
        responses = await burst(c, requests)
        groups = together_sent(sent)
        assert groups >= 1, "no group formed"
        created_keys = set()
        for r, (pid, body, headers) in zip(responses, requests, strict=True):
            status, code = expected[pid]
            if status == 201:
                assert_created(r, pid, body["subject"])
                created_keys.add(headers["Idempotency-Key"])
            else:
                refusal = assert_refused(r, status, code or "")
                if code == "parent_merged":
                    assert fine[1]["id"] in refusal["detail"]
                if code == "parent_is_child":
                    assert fine[0]["id"] in refusal["detail"]
        # Nothing partial: the bad parents are as they were, the fine ones got 4 each.
        after = {
            r.id: r
            for r in await rows(
                engine,
                "SELECT id::text AS id, version, n_children, n_activities FROM conversations "
                "WHERE workspace_id = :w",
                w=workspace,
            )
        }
        for was in before:
            now = after[was.id]
            grown = 4 if was.id in (fine[0]["id"], fine[1]["id"]) else 0
            assert (now.version, now.n_children, now.n_activities) == (
                was.version + grown,
                was.n_children + grown,
                was.n_activities + grown,
            ), was.id
        assert len(after) == len(before) + 8
        assert await stored_keys(engine, workspace) == created_keys
        recorded = await events(engine, workspace)
        created_under = Counter(e.data["parent_id"] for e in recorded if e.type == "child.created")
        assert created_under == {fine[0]["id"]: 1 + 4, fine[1]["id"]: 4}
        assert await assert_counters_exact(engine, workspace) == len(after)


# ------------------------------------------------------------ Idempotency-Key in a group


async def test_a_key_sent_twice_at_once_makes_one_child_and_two_identical_answers(
    database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str]
) -> None:
    async with traced_client(database_url, idempotency_purge_interval_seconds=0) as (c, sent):
        parents = [await new_parent(c, auth) for _ in range(2)]
        # Keys used before the burst: one live, one expired (the burst takes it over).
        live = await c.post(
            child_url(parents[0]["id"]), json={"subject": "live"}, headers=keyed(auth, "live")
        )
        assert live.status_code == 201
        expired = await c.post(
            child_url(parents[0]["id"]), json={"subject": "old"}, headers=keyed(auth, "expired")
        )
        assert expired.status_code == 201
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' "
                    "WHERE workspace_id = :w AND key = 'expired'"
                ),
                {"w": workspace},
            )
        pairs: list[Request] = [
            (parents[i % 2]["id"], {"subject": f"twin {i}"}, keyed(auth, f"twin-{i}"))
            for i in range(10)
        ]
        rivals: list[Request] = [
            (parents[i % 2]["id"], {"subject": f"rival {i} {side}"}, keyed(auth, f"rival-{i}"))
            for i in range(3)
            for side in ("a", "b")
        ]
        # The same key under the other parent: another path, so another request.
        elsewhere: list[Request] = [
            (parents[0]["id"], {"subject": "where"}, keyed(auth, "where")),
            (parents[1]["id"], {"subject": "where"}, keyed(auth, "where")),
        ]
        old_keys: list[Request] = [
            (parents[0]["id"], {"subject": "live"}, keyed(auth, "live")),
            (parents[0]["id"], {"subject": "not live"}, keyed(auth, "live")),
            (parents[1]["id"], {"subject": "new"}, keyed(auth, "expired")),
        ]
        requests = [*pairs, *rivals, *pairs, *elsewhere, *old_keys]
        before = await count_rows(engine, workspace)
        sent.clear()
        responses = await burst(c, requests)
        groups = together_sent(sent)
        assert groups >= 1, "no group formed"
        answer = dict(zip(range(len(requests)), responses, strict=True))

        # Twins: one child each, both answers byte-identical, exactly one of them replayed.
        for i in range(10):
            first, second = answer[i], answer[10 + 6 + i]
            assert first.status_code == second.status_code == 201
            assert first.content == second.content
            assert first.headers["location"] == second.headers["location"]
            assert first.headers["etag"] == second.headers["etag"] == '"1"'
            replayed = [r.headers.get("idempotent-replayed") for r in (first, second)]
            assert Counter(replayed) == Counter(["true", None]), replayed
            assert first.json()["subject"] == f"twin {i}"
        # Rivals: the same key, two bodies: one child, and a 422 for the other.
        for i in range(3):
            a, b = answer[10 + 2 * i], answer[10 + 2 * i + 1]
            assert sorted([a.status_code, b.status_code]) == [201, 422], (a.text, b.text)
            winner, loser = (a, b) if a.status_code == 201 else (b, a)
            assert "idempotent-replayed" not in winner.headers
            assert_refused(loser, 422, "idempotency_key_reused")
        where_a, where_b = answer[26], answer[27]
        assert sorted([where_a.status_code, where_b.status_code]) == [201, 422]
        # A live key: the same body replays the first response, another body is a 422.
        assert answer[28].status_code == 201
        assert answer[28].content == live.content
        assert answer[28].headers["idempotent-replayed"] == "true"
        assert_refused(answer[29], 422, "idempotency_key_reused")
        # An expired key is taken over: a new child, and its replay is that child.
        renewed = assert_created(answer[30], parents[1]["id"], "new")
        assert renewed["id"] != expired.json()["id"]

        new_children = 10 + 3 + 1 + 1
        after = await count_rows(engine, workspace)
        assert after["conversations"] == before["conversations"] + new_children
        assert await assert_counters_exact(engine, workspace) == after["conversations"]
        versions = [(await get(c, auth, p["id"]))["version"] for p in parents]
        assert sum(versions) == 2 + 2 + new_children
        recorded = await events(engine, workspace)
        assert Counter(e.type for e in recorded)["child.created"] == 2 + new_children

        # Each key's stored response is the winner's: replays give the same bytes.
        for i, (pid, body, headers) in enumerate(requests):
            first = answer[i]
            if first.status_code != 201:
                continue
            again = await c.post(child_url(pid), json=body, headers=headers)
            assert again.content == first.content, (i, body)
            assert again.headers["idempotent-replayed"] == "true"
        assert await count_rows(engine, workspace) == after


# ------------------------------------------------------------------ a resolved parent


async def test_resolved_and_closed_parents_are_reopened_once_by_a_group(
    database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str]
) -> None:
    async with traced_client(database_url, idempotency_purge_interval_seconds=0) as (c, sent):
        resolved, closed, still_open = [await new_parent(c, auth) for _ in range(3)]
        await set_state(engine, workspace, resolved["id"], "status = 'resolved'")
        await set_state(engine, workspace, closed["id"], "status = 'closed'")
        v0 = {p["id"]: (await get(c, auth, p["id"]))["version"] for p in (resolved, closed)}
        # The first request (alone) goes to the open parent: the reopenings are in groups.
        parents = (still_open, resolved, closed)
        requests: list[Request] = [
            (parents[i % 3]["id"], {"subject": f"c{i}"}, auth) for i in range(30)
        ]
        sent.clear()
        responses = await burst(c, requests)
        groups = together_sent(sent)
        assert groups >= 1, "no group formed"
        children_of: dict[str, set[str]] = {p["id"]: set() for p in parents}
        for r, (pid, body, _) in zip(responses, requests, strict=True):
            children_of[pid].add(assert_created(r, pid, body["subject"])["id"])

        for parent in (resolved, closed):
            after = await get(c, auth, parent["id"])
            assert after["status"] == "open"
            assert after["version"] == v0[parent["id"]] + 10
            assert after["tab_counts"]["activities"] == 1 + 10 + 1
            assert after["tab_counts"]["has_resolution"] is False
        assert (await get(c, auth, still_open["id"]))["version"] == 11

    reopened = await activities(engine, workspace, "reopened")
    assert sorted(a.cid for a in reopened) == sorted([resolved["id"], closed["id"]])
    for a in reopened:
        assert a.payload["from_status"] == ("resolved" if a.cid == resolved["id"] else "closed")
        assert a.payload["reason"] == "child_created"
        assert a.payload["child_id"] in children_of[a.cid]
    recorded = await events(engine, workspace)
    reopenings = [(n, e.data) for n, e in enumerate(recorded) if e.type == "parent.reopened"]
    assert sorted(data["conversation_id"] for _, data in reopenings) == sorted(
        [resolved["id"], closed["id"]]
    )
    for n, data in reopenings:
        activity = next(a for a in reopened if a.cid == data["conversation_id"])
        assert data == {
            "conversation_id": activity.cid,
            "reason": "child_created",
            "child_id": activity.payload["child_id"],
        }
        # In the feed, after the creation of the child that reopened it.
        created_at = next(
            m
            for m, e in enumerate(recorded)
            if e.type == "child.created" and e.data["conversation_id"] == data["child_id"]
        )
        assert created_at < n
    assert Counter(e.type for e in recorded)["child.created"] == 30
    assert await assert_counters_exact(engine, workspace) == 33


# ----------------------------------------------------------- mixed with other requests


async def test_plain_requests_mixed_with_overrides_messages_and_if_match(
    database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str]
) -> None:
    async with traced_client(database_url, idempotency_purge_interval_seconds=0) as (c, sent):
        parents = [await new_parent(c, auth, priority="low") for _ in range(2)]
        for p in parents:  # version 2: an If-Match of "1" is stale
            first = await c.post(child_url(p["id"]), json={"subject": "first"}, headers=auth)
            assert first.status_code == 201
        any_version = ", ".join(f'"{v}"' for v in range(2, 80))
        kinds: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
            "plain": ({"subject": "plain"}, {}),
            "plain keyed": ({"subject": "plain keyed"}, {"Idempotency-Key": ""}),
            "override": ({"subject": "override", "priority": "urgent"}, {}),
            "override keyed": (
                {"subject": "override keyed", "priority": "urgent"},
                {"Idempotency-Key": ""},
            ),
            "message": ({"subject": "message", "message": {"body": "why"}}, {}),
            "if-match": ({"subject": "if-match"}, {"If-Match": any_version}),
            "if-match *": ({"subject": "if-match *"}, {"If-Match": "*"}),
            "stale": ({"subject": "stale"}, {"If-Match": '"1"'}),
        }
        requests: list[Request] = []
        labels: list[str] = []
        for i in range(4):
            for p in parents:
                for label, (body, extra) in kinds.items():
                    headers = {**auth, **extra}
                    if "Idempotency-Key" in headers:
                        headers["Idempotency-Key"] = f"mixed-{i}-{p['id']}-{label}"
                    requests.append((p["id"], body, headers))
                    labels.append(label)
        sent.clear()
        responses = await burst(c, requests)
        groups = together_sent(sent)
        assert groups >= 1, "no group formed"
        created: Counter[str] = Counter()
        for r, label, (pid, body, _) in zip(responses, labels, requests, strict=True):
            if label == "stale":
                refusal = assert_refused(r, 412, "precondition_failed")
                assert refusal["detail"].startswith("The conversation is at version ")
                continue
            child = assert_created(r, pid, body["subject"])
            created[pid] += 1
            assert child["priority"] == ("urgent" if "override" in label else "low"), label
            messages = [m["body"] for m in child["messages"]]
            assert messages == (["why"] if label == "message" else []), label
        for p in parents:
            assert created[p["id"]] == 4 * 7
            after = await get(c, auth, p["id"])
            assert after["version"] == 2 + created[p["id"]], "the 412s wrote nothing"
            assert after["tab_counts"]["related"] == 1 + created[p["id"]]
            assert after["tab_counts"]["activities"] == 1 + 1 + created[p["id"]]
    assert await assert_counters_exact(engine, workspace) == 2 + 2 + 2 * 4 * 7
    kinds_made = await activity_kinds(engine, workspace)
    assert kinds_made == {"created": 2, "child_created": 58, "created_from_parent": 58}


# ------------------------------------------------------------------- several callers


async def test_two_callers_locking_the_same_parents_in_opposite_orders_do_not_deadlock(
    database_url: str, engine: AsyncEngine, workspace: str, token_for: TokenFactory
) -> None:
    one = {"Authorization": f"Bearer {token_for(workspace, subject='agent-1')}"}
    two = {"Authorization": f"Bearer {token_for(workspace, subject='agent-2')}"}
    async with traced_client(
        database_url, max_children_per_parent=1000, idempotency_purge_interval_seconds=0
    ) as (c, sent):
        parents = [(await new_parent(c, one))["id"] for _ in range(6)]
        requests: list[Request] = []
        for i in range(120):
            requests.append((parents[i % 6], {"subject": f"one {i}"}, one))
            requests.append((parents[5 - i % 6], {"subject": f"two {i}"}, two))
        sent.clear()
        responses = await burst(c, requests)
        assert [r.status_code for r in responses] == [201] * 240, {r.text for r in responses}
        groups = together_sent(sent)
        assert groups >= 2, "each caller's requests went in groups"
        for pid in parents:
            assert (await get(c, one, pid))["version"] == 1 + 40
    assert await assert_counters_exact(engine, workspace) == 6 + 240


# ------------------------------------------------ a locked parent in a group, or behind it


async def test_a_locked_parent_in_a_group_is_still_a_bounded_503(
    database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str]
) -> None:
    # Alone (or before coalescing), each request on the locked parent gets its 503 within
    # about 2 x 200 ms (its wait for a turn, then for the row), and the free parent's 201
    # comes at once.
    async with client_with(database_url, db_lock_timeout_ms=200) as c:
        stuck, free = [await new_parent(c, auth) for _ in range(2)]
        await c.post(child_url(free["id"]), json={"subject": "warm"}, headers=auth)
        loop = asyncio.get_running_loop()
        async with parent_locked(engine, workspace, stuck["id"]):
            started = loop.time()

            async def timed(pid: str) -> tuple[int, float]:
                r = await c.post(child_url(pid), json={"subject": "s"}, headers=auth)
                return r.status_code, loop.time() - started

            answers = await asyncio.gather(
                timed(free["id"]), *(timed(stuck["id"]) for _ in range(10)), timed(free["id"])
            )
    statuses = [status for status, _ in answers]
    assert statuses == [201] + [503] * 10 + [201]
    slowest = max(took for _, took in answers)
    assert slowest < 1.0, f"answered after {slowest:.2f} s (lock timeout 0.2 s)"


async def test_a_locked_parent_does_not_hold_up_the_callers_other_parents(
    database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str]
) -> None:
    async with client_with(database_url, db_lock_timeout_ms=200) as c:
        stuck, free = [await new_parent(c, auth) for _ in range(2)]
        await c.post(child_url(free["id"]), json={"subject": "warm"}, headers=auth)
        async with parent_locked(engine, workspace, stuck["id"]):

            async def post(pid: str, after: float) -> int:
                await asyncio.sleep(after)
                r = await c.post(child_url(pid), json={"subject": "s"}, headers=auth)
                return r.status_code

            statuses = await asyncio.gather(
                post(free["id"], 0),
                *(post(stuck["id"], 0) for _ in range(5)),
                post(free["id"], 0),
                *(post(free["id"], 0.1) for _ in range(5)),
            )
    assert statuses[:7] == [201] + [503] * 5 + [201]
    assert statuses[7:] == [201] * 5, "requests to a free parent, sent 0.1 s later"
