"""Delivery to a real receiver on 127.0.0.1: signed, retried with the same webhook-id, logged;
refused at delivery time when the URL points somewhere private (DNS rebinding)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks.webhooks import Webhook as Verifier

from tests.support import TokenFactory, child_url, client_with, make_settings
from tests.webhooks.receiver import receiver

HOOKS = "/api/v2/webhooks"
EVERY = "conversations:read conversations:write events:read webhooks:write"
FAST = {
    "webhook_delivery": True,
    "webhook_poll_interval_seconds": 0.1,
    "webhook_retry_schedule_seconds": [0.3, 0.3],
}


@pytest.fixture
def every(token_for: TokenFactory, workspace: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(workspace, EVERY)}"}


@pytest.fixture
async def delivering(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app that delivers webhooks, quickly."""
    async with client_with(database_url, **FAST) as client:
        yield client


async def make_child(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    parent = await client.post("/api/v2/conversations", json={"subject": "p"}, headers=headers)
    child = await client.post(
        child_url(parent.json()["id"]), json={"subject": "c"}, headers=headers
    )
    assert child.status_code == 201, child.text
    result: dict[str, Any] = child.json()
    return result


async def deliveries_log(
    client: httpx.AsyncClient, headers: dict[str, str], hook_id: str, count: int
) -> list[dict[str, Any]]:
    """The log once it has ``count`` entries, none of them pending (polls for a while)."""
    for _ in range(200):
        items: list[dict[str, Any]] = (
            await client.get(f"{HOOKS}/{hook_id}/deliveries", headers=headers)
        ).json()["items"]
        if len(items) >= count and all(i["status"] != "pending" for i in items):
            return items
        await asyncio.sleep(0.05)
    raise AssertionError(f"deliveries log: {items}")


async def test_child_created_arrives_signed(
    delivering: httpx.AsyncClient, every: dict[str, str]
) -> None:
    with receiver() as hook_receiver:
        hook = (
            await delivering.post(
                HOOKS, json={"url": hook_receiver.url, "types": ["child.created"]}, headers=every
            )
        ).json()
        child = await make_child(delivering, every)

        (got,) = await hook_receiver.arrived(1)
        payload = Verifier(hook["secret"]).verify(got.body, got.headers)

        feed = (
            await delivering.get("/api/v2/events", params={"types": "child.created"}, headers=every)
        ).json()
        assert payload == feed["items"][0]
        assert payload["data"]["conversation"] == child
        assert got.headers["webhook-id"] == payload["id"]
        assert got.headers["content-type"] == "application/json"
        assert got.headers["webhook-signature"].startswith("v1,")

        (entry,) = await deliveries_log(delivering, every, hook["id"], 1)
        assert entry["event_id"] == payload["id"]
        assert entry["attempt"] == 1
        assert entry["status"] == "succeeded"
        assert entry["http_status"] == 200
        assert entry["next_attempt_at"] is None
        assert entry["duration_ms"] >= 0
        # conversation.created was not asked for: nothing else arrives.
        await asyncio.sleep(0.5)
        assert len(hook_receiver.received) == 1


async def test_a_failing_receiver_gets_the_same_webhook_id_until_it_succeeds(
    delivering: httpx.AsyncClient, every: dict[str, str]
) -> None:
    with receiver(statuses=[500, 503]) as hook_receiver:
        hook = (
            await delivering.post(
                HOOKS, json={"url": hook_receiver.url, "types": ["child.created"]}, headers=every
            )
        ).json()
        await make_child(delivering, every)

        received = await hook_receiver.arrived(3)
        assert len({r.headers["webhook-id"] for r in received}) == 1
        for r in received:  # every attempt is signed afresh, and verifies
            Verifier(hook["secret"]).verify(r.body, r.headers)

        log = await deliveries_log(delivering, every, hook["id"], 3)
        assert [(e["attempt"], e["status"], e["http_status"]) for e in log] == [
            (3, "succeeded", 200),
            (2, "failed", 503),
            (1, "failed", 500),
        ]
        assert log[1]["next_attempt_at"] is not None
        assert log[2]["next_attempt_at"] is not None
        assert log[0]["next_attempt_at"] is None


async def test_gives_up_after_the_schedule(
    delivering: httpx.AsyncClient, every: dict[str, str]
) -> None:
    with receiver(statuses=[500, 500, 500, 500]) as hook_receiver:
        hook = (
            await delivering.post(
                HOOKS, json={"url": hook_receiver.url, "types": ["child.created"]}, headers=every
            )
        ).json()
        await make_child(delivering, every)
        log = await deliveries_log(delivering, every, hook["id"], 3)
        assert [(e["attempt"], e["status"]) for e in log] == [
            (3, "failed"),
            (2, "failed"),
            (1, "failed"),
        ]
        assert log[0]["next_attempt_at"] is None, "two retries, then given up"
        await asyncio.sleep(0.8)
        assert len(hook_receiver.received) == 3


async def test_a_deleted_webhook_gets_nothing_more(
    delivering: httpx.AsyncClient, every: dict[str, str]
) -> None:
    with receiver() as hook_receiver:
        hook = (
            await delivering.post(
                HOOKS, json={"url": hook_receiver.url, "types": ["child.created"]}, headers=every
            )
        ).json()
        await delivering.delete(f"{HOOKS}/{hook['id']}", headers=every)
        await make_child(delivering, every)
        await asyncio.sleep(0.6)
        assert hook_receiver.received == []


async def test_a_url_turned_private_is_refused_at_delivery(
    database_url: str, engine: AsyncEngine, workspace: str, every: dict[str, str]
) -> None:
    """Registered while allowed; by delivery time the rules apply (as when DNS now answers a
    private address): the attempt fails without a request, and is logged."""
    with receiver() as hook_receiver:
        async with client_with(database_url) as client:
            hook = (
                await client.post(
                    HOOKS,
                    json={"url": hook_receiver.url, "types": ["child.created"]},
                    headers=every,
                )
            ).json()
            await make_child(client, every)
        strict = {**FAST, "webhook_allow_private": False, "webhook_retry_schedule_seconds": []}
        async with client_with(database_url, **strict) as client:
            (entry,) = await deliveries_log(client, every, hook["id"], 1)
        assert entry["status"] == "failed"
        assert entry["http_status"] is None
        assert hook_receiver.received == []
        async with engine.connect() as conn:
            error = (
                await conn.execute(
                    text("SELECT error FROM webhook_deliveries WHERE workspace_id = :w"),
                    {"w": workspace},
                )
            ).scalar_one()
        assert error == "The URL must use https."  # the same checks as at registration


def test_settings_read_the_schedule_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    monkeypatch.setenv("AURION_WEBHOOK_RETRY_SCHEDULE_SECONDS", json.dumps([1, 2.5]))
    from aurion.settings import Settings

    assert Settings().webhook_retry_schedule_seconds == [1, 2.5]
    assert make_settings(database_url).webhook_delivery is False


def test_the_default_schedule_spans_about_a_day_with_jitter() -> None:
    from aurion.settings import Settings
    from aurion.webhooks.delivery import retry_delay

    schedule = Settings(env="test").webhook_retry_schedule_seconds
    assert schedule[:5] == [5, 30, 120, 600, 3600]
    assert 23 * 3600 <= sum(schedule) <= 25 * 3600
    delays = [retry_delay(1, schedule) for _ in range(200)]
    assert all(d is not None and 4.5 <= d <= 5.5 for d in delays)
    assert len(set(delays)) > 100, "jittered"
    assert retry_delay(len(schedule), schedule) is not None
    assert retry_delay(len(schedule) + 1, schedule) is None
