"""Idempotency-Key on child and conversation creation (SPEC §2)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from aurion.idempotency.service import purge_expired
from tests.conftest import Factory, TokenFactory
from tests.support import (
    assert_counters_exact,
    assert_unavailable,
    child_url,
    client_with,
    count_rows,
    parent_locked,
    set_state,
)


def with_key(auth: dict[str, str], key: str) -> dict[str, str]:
    return {**auth, "Idempotency-Key": key}


async def stored_keys(engine: AsyncEngine, workspace: str) -> int:
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT count(*) FROM idempotency_keys WHERE workspace_id = :w"),
            {"w": workspace},
        )
        return int(result.scalar_one())


class TestReplay:
    async def test_retry_returns_the_first_response_and_writes_nothing(
        self,
        client: httpx.AsyncClient,
        create_parent: Factory,
        auth: dict[str, str],
        engine: AsyncEngine,
        workspace: str,
    ) -> None:
        parent = await create_parent()
        headers = with_key(auth, "retry-1")
        first = await client.post(child_url(parent["id"]), json={"subject": "s"}, headers=headers)
        before = await count_rows(engine, workspace)
        second = await client.post(child_url(parent["id"]), json={"subject": "s"}, headers=headers)
        assert first.status_code == second.status_code == 201
        assert second.json() == first.json()
        assert second.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        assert second.headers["location"] == first.headers["location"]
        assert second.headers["etag"] == first.headers["etag"]
        assert await count_rows(engine, workspace) == before
        got = await client.get(f"/api/v2/conversations/{parent['id']}", headers=auth)
        assert got.json()["version"] == 2
        assert got.json()["tab_counts"]["related"] == 1

    async def test_same_body_modulo_whitespace_is_the_same_request(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str]
    ) -> None:
        parent = await create_parent()
        headers = with_key(auth, "trim")
        first = await client.post(child_url(parent["id"]), json={"subject": "s"}, headers=headers)
        second = await client.post(
            child_url(parent["id"]), json={"subject": "  s  "}, headers=headers
        )
        assert second.headers.get("idempotent-replayed") == "true"
        assert second.json()["id"] == first.json()["id"]

    async def test_different_body_is_422_reused(
        self,
        client: httpx.AsyncClient,
        create_parent: Factory,
        auth: dict[str, str],
        engine: AsyncEngine,
        workspace: str,
    ) -> None:
        parent = await create_parent()
        headers = with_key(auth, "reuse")
        await client.post(child_url(parent["id"]), json={"subject": "first"}, headers=headers)
        before = await count_rows(engine, workspace)
        other = await client.post(
            child_url(parent["id"]), json={"subject": "second"}, headers=headers
        )
        assert other.status_code == 422
        assert other.json()["code"] == "idempotency_key_reused"
        assert await count_rows(engine, workspace) == before

    async def test_different_path_is_422_reused(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str]
    ) -> None:
        one, two = await create_parent(), await create_parent()
        headers = with_key(auth, "path")
        await client.post(child_url(one["id"]), json={"subject": "s"}, headers=headers)
        other = await client.post(child_url(two["id"]), json={"subject": "s"}, headers=headers)
        assert other.status_code == 422
        assert other.json()["code"] == "idempotency_key_reused"

    async def test_keys_are_scoped_to_the_subject_and_workspace(
        self,
        client: httpx.AsyncClient,
        create_parent: Factory,
        token_for: TokenFactory,
        workspace: str,
    ) -> None:
        parent = await create_parent()
        alice = {"Authorization": f"Bearer {token_for(workspace, subject='alice')}"}
        bob = {"Authorization": f"Bearer {token_for(workspace, subject='bob')}"}
        a = await client.post(
            child_url(parent["id"]), json={"subject": "s"}, headers=with_key(alice, "k")
        )
        b = await client.post(
            child_url(parent["id"]), json={"subject": "s"}, headers=with_key(bob, "k")
        )
        assert a.status_code == b.status_code == 201
        assert a.json()["id"] != b.json()["id"]
        assert "idempotent-replayed" not in b.headers

        # the same key in another workspace is another key (and that parent is a 404 there)
        stranger = {"Authorization": f"Bearer {token_for('ws_' + uuid.uuid4().hex)}"}
        c = await client.post(
            child_url(parent["id"]), json={"subject": "s"}, headers=with_key(stranger, "k")
        )
        assert c.status_code == 404

    async def test_create_conversation_is_idempotent_too(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        engine: AsyncEngine,
        workspace: str,
    ) -> None:
        body = {"subject": "Once", "messages": [{"body": "hello"}]}
        headers = with_key(auth, "create-once")
        first = await client.post("/api/v2/conversations", json=body, headers=headers)
        second = await client.post("/api/v2/conversations", json=body, headers=headers)
        assert first.status_code == second.status_code == 201
        assert second.json() == first.json()
        assert second.headers["idempotent-replayed"] == "true"
        counts = await count_rows(engine, workspace)
        assert counts["conversations"] == 1
        assert counts["messages"] == 1


class TestRefusalsAreNotStored:
    async def test_a_refused_request_can_be_retried_with_its_key(
        self,
        client: httpx.AsyncClient,
        create_parent: Factory,
        auth: dict[str, str],
        engine: AsyncEngine,
        workspace: str,
    ) -> None:
        parent = await create_parent()
        headers = with_key(auth, "after-fix")
        await set_state(engine, workspace, parent["id"], "is_spam = true")
        refused = await client.post(child_url(parent["id"]), json={"subject": "s"}, headers=headers)
        assert refused.status_code == 409
        assert await stored_keys(engine, workspace) == 0
        await set_state(engine, workspace, parent["id"], "is_spam = false")
        retried = await client.post(child_url(parent["id"]), json={"subject": "s"}, headers=headers)
        assert retried.status_code == 201
        assert "idempotent-replayed" not in retried.headers
        assert await stored_keys(engine, workspace) == 1

    @pytest.mark.parametrize(
        "key", ["", "x" * 256, "caf\u00e9", "tab\there", "new\nline"], ids=repr
    )
    async def test_malformed_key_is_422(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str], key: str
    ) -> None:
        parent = await create_parent()
        response = await client.post(
            child_url(parent["id"]),
            json={"subject": "s"},
            headers={**auth, "Idempotency-Key": key.encode("utf-8")},
        )
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]


class TestExpiry:
    async def test_an_expired_key_is_a_new_request(
        self,
        client: httpx.AsyncClient,
        create_parent: Factory,
        auth: dict[str, str],
        engine: AsyncEngine,
        workspace: str,
    ) -> None:
        parent = await create_parent()
        headers = with_key(auth, "old")
        first = await client.post(child_url(parent["id"]), json={"subject": "s"}, headers=headers)
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' "
                    "WHERE workspace_id = :w"
                ),
                {"w": workspace},
            )
        again = await client.post(child_url(parent["id"]), json={"subject": "s"}, headers=headers)
        assert again.status_code == 201
        assert "idempotent-replayed" not in again.headers
        assert again.json()["id"] != first.json()["id"]

    async def test_purge_deletes_only_expired_keys(
        self,
        client: httpx.AsyncClient,
        create_parent: Factory,
        auth: dict[str, str],
        engine: AsyncEngine,
        workspace: str,
    ) -> None:
        parent = await create_parent()
        for key in ("a", "b", "c"):
            response = await client.post(
                child_url(parent["id"]), json={"subject": key}, headers=with_key(auth, key)
            )
            assert response.status_code == 201
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE idempotency_keys SET expires_at = now() - interval '1 hour' "
                    "WHERE workspace_id = :w AND key IN ('a', 'b')"
                ),
                {"w": workspace},
            )
        async with engine.connect() as conn:
            deleted = await purge_expired(conn, batch=1)
        assert deleted >= 2
        assert await stored_keys(engine, workspace) == 1


class TestConcurrentDuplicates:
    async def test_fifty_parallel_requests_with_one_key_create_one_child(
        self, database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        async with client_with(
            database_url, db_pool_size=25, db_max_overflow=0, db_pool_timeout_seconds=30
        ) as c:
            parent = (
                await c.post("/api/v2/conversations", json={"subject": "p"}, headers=auth)
            ).json()
            headers = with_key(auth, "storm")
            responses = await asyncio.gather(
                *[
                    c.post(child_url(parent["id"]), json={"subject": "s"}, headers=headers)
                    for _ in range(50)
                ]
            )
            after = (await c.get(f"/api/v2/conversations/{parent['id']}", headers=auth)).json()
        created = [r for r in responses if r.status_code == 201]
        in_use = [r for r in responses if r.status_code == 409]
        assert len(created) + len(in_use) == 50
        assert len({r.json()["id"] for r in created}) == 1
        assert sum(1 for r in created if "idempotent-replayed" not in r.headers) == 1
        for r in in_use:
            assert r.json()["code"] == "idempotency_key_in_use"
            assert int(r.headers["retry-after"]) >= 1
        assert after["version"] == 2
        counts = await count_rows(engine, workspace)
        assert counts["conversations"] == 2
        assert counts["activities"] == 3  # created + child_created + created_from_parent
        assert await assert_counters_exact(engine, workspace) == 2

    async def test_a_duplicate_waiting_too_long_gets_409_in_use(
        self,
        client: httpx.AsyncClient,
        database_url: str,
        engine: AsyncEngine,
        workspace: str,
        auth: dict[str, str],
    ) -> None:
        parent = (
            await client.post("/api/v2/conversations", json={"subject": "p"}, headers=auth)
        ).json()
        headers = with_key(auth, "slow")
        # The first request goes through the patient session app, the duplicate through an
        # impatient one; the parent's row lock keeps the first in flight.
        async with client_with(database_url, db_lock_timeout_ms=200) as impatient:
            async with parent_locked(engine, workspace, parent["id"]):
                first = asyncio.create_task(
                    client.post(child_url(parent["id"]), json={"subject": "s"}, headers=headers)
                )
                await asyncio.sleep(0.1)
                duplicate = await impatient.post(
                    child_url(parent["id"]), json={"subject": "s"}, headers=headers
                )
            first_response = await first
            retry = await impatient.post(
                child_url(parent["id"]), json={"subject": "s"}, headers=headers
            )
        assert duplicate.status_code == 409
        assert duplicate.json()["code"] == "idempotency_key_in_use"
        assert duplicate.headers["retry-after"] == "1"
        assert first_response.status_code == 201
        assert retry.status_code == 201
        assert retry.headers["idempotent-replayed"] == "true"
        assert retry.json()["id"] == first_response.json()["id"]
        assert (await count_rows(engine, workspace))["conversations"] == 2

    async def test_a_parent_locked_too_long_is_503_and_writes_nothing(
        self, database_url: str, engine: AsyncEngine, workspace: str, auth: dict[str, str]
    ) -> None:
        async with client_with(database_url, db_lock_timeout_ms=200) as c:
            parent = (
                await c.post("/api/v2/conversations", json={"subject": "p"}, headers=auth)
            ).json()
            async with parent_locked(engine, workspace, parent["id"]):
                busy = await c.post(
                    child_url(parent["id"]), json={"subject": "s"}, headers=with_key(auth, "busy")
                )
        assert_unavailable(busy)
        assert (await count_rows(engine, workspace))["conversations"] == 1
        assert await stored_keys(engine, workspace) == 0
