"""Delivery by real `aurion serve` processes: a pending retry survives a kill and a restart,
and two processes never send the same attempt twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks.webhooks import Webhook as Verifier

from harness.server import Server, serve_aurion
from tests.support import TEST_SECRET, TokenFactory, child_url
from tests.webhooks.receiver import receiver

EVERY = "conversations:read conversations:write events:read webhooks:write"
FAST = {
    "AURION_WEBHOOK_DELIVERY": "true",
    "AURION_WEBHOOK_ALLOW_PRIVATE": "true",
    "AURION_WEBHOOK_POLL_INTERVAL_SECONDS": "0.05",
}


@pytest.fixture
def every(token_for: TokenFactory, workspace: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(workspace, EVERY)}"}


@pytest.fixture
def every_client(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The session's in-process client: its app does not deliver (make_settings)."""
    return client


def start_server(database_url: str, workers: int, log: Path, **env: str) -> Server:
    """``aurion serve`` with ``workers`` processes (1: the server process itself)."""
    environment = {
        "AURION_ENV": "test",
        "AURION_JWT_SECRET": TEST_SECRET,
        "AURION_LOG_LEVEL": "WARNING",
        **env,
    }
    return serve_aurion(
        database_url,
        log_path=log,
        env=environment,
        workers=workers if workers > 1 else None,
        args=["--graceful-timeout", "2"],
    )


def spawn(command: list[str], env: dict[str, str], out: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def log_of(server: Server, headers: dict[str, str], hook_id: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{server.base_url}/api/v2/webhooks/{hook_id}/deliveries",
        params={"limit": 100},
        headers=headers,
        timeout=10,
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def kill(server: Server) -> None:
    """SIGKILL: no graceful shutdown, no chance to finish or record anything."""
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(10)


def test_a_pending_retry_is_delivered_after_a_restart(
    database_url: str, tmp_path: Path, token_for: TokenFactory, workspace: str
) -> None:
    headers = {"Authorization": f"Bearer {token_for(workspace, EVERY)}"}
    env = {**FAST, "AURION_WEBHOOK_RETRY_SCHEDULE_SECONDS": "[4]"}
    with receiver(statuses=[500]) as hook_receiver:
        first = start_server(database_url, 1, tmp_path / "first.log", **env)
        try:
            hook = httpx.post(
                f"{first.base_url}/api/v2/webhooks",
                json={"url": hook_receiver.url, "types": ["child.created"]},
                headers=headers,
            ).json()
            parent = httpx.post(
                f"{first.base_url}/api/v2/conversations", json={"subject": "p"}, headers=headers
            ).json()
            created = httpx.post(
                f"{first.base_url}{child_url(parent['id'])}", json={"subject": "c"}, headers=headers
            )
            assert created.status_code == 201
            (failed,) = hook_receiver.wait_for(1)
            deadline = time.monotonic() + 10
            while [e["status"] for e in log_of(first, headers, hook["id"])] != [
                "pending",
                "failed",
            ]:
                assert time.monotonic() < deadline, log_of(first, headers, hook["id"])
                time.sleep(0.05)
        finally:
            kill(first)
        assert len(hook_receiver.received) == 1, "the retry was still pending at the kill"

        second = start_server(database_url, 1, tmp_path / "second.log", **env)
        try:
            retried = hook_receiver.wait_for(2)[1]
            assert retried.headers["webhook-id"] == failed.headers["webhook-id"]
            deadline = time.monotonic() + 10
            while log_of(second, headers, hook["id"])[0]["status"] != "succeeded":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            log = log_of(second, headers, hook["id"])
            assert [(e["attempt"], e["status"], e["http_status"]) for e in log] == [
                (2, "succeeded", 200),
                (1, "failed", 500),
            ]
        finally:
            second.stop()


async def test_two_processes_never_send_one_attempt_twice(
    database_url: str,
    tmp_path: Path,
    token_for: TokenFactory,
    workspace: str,
    engine: AsyncEngine,
) -> None:
    headers = {"Authorization": f"Bearer {token_for(workspace, EVERY)}"}
    with receiver() as hook_receiver:
        server = await asyncio.to_thread(start_server, database_url, 2, tmp_path / "s.log", **FAST)
        try:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
                hook = (
                    await client.post(
                        "/api/v2/webhooks",
                        json={"url": hook_receiver.url, "types": ["child.created"]},
                        headers=headers,
                    )
                ).json()
                parents = [
                    (
                        await client.post(
                            "/api/v2/conversations", json={"subject": "p"}, headers=headers
                        )
                    ).json()["id"]
                    for _ in range(4)
                ]

                async def create(n: int) -> None:
                    response = await client.post(
                        child_url(parents[n % 4]), json={"subject": f"c{n}"}, headers=headers
                    )
                    assert response.status_code == 201, response.text

                await asyncio.gather(*(create(n) for n in range(40)))
                await asyncio.to_thread(hook_receiver.wait_for, 40)
                await asyncio.sleep(1.5)  # time for a duplicate, if there were one

                ids = [r.headers["webhook-id"] for r in hook_receiver.received]
                async with engine.connect() as conn:
                    events = (
                        await conn.execute(
                            text(
                                "SELECT id::text FROM events "
                                "WHERE workspace_id = :w AND type = 'child.created'"
                            ),
                            {"w": workspace},
                        )
                    ).scalars()
                    expected = sorted(events)
                assert sorted(ids) == expected, "each event exactly once"
                log = (
                    await client.get(
                        f"/api/v2/webhooks/{hook['id']}/deliveries",
                        params={"limit": 100},
                        headers=headers,
                    )
                ).json()["items"]
                async with engine.connect() as conn:  # what went wrong, if anything
                    retried = (
                        await conn.execute(
                            text(
                                "SELECT attempt, status, error FROM webhook_deliveries "
                                "WHERE workspace_id = :w AND (attempt, status) <> (1, 'succeeded')"
                            ),
                            {"w": workspace},
                        )
                    ).all()
                assert len(log) == 40, retried
                assert {(e["attempt"], e["status"]) for e in log} == {(1, "succeeded")}, retried
        finally:
            server.stop()


async def test_aurion_worker_delivers_on_its_own(
    database_url: str, tmp_path: Path, every_client: httpx.AsyncClient, every: dict[str, str]
) -> None:
    """The service with delivery off, and `aurion worker` beside it."""
    log = tmp_path / "worker.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "AURION_ENV": "test",
        "AURION_JWT_SECRET": TEST_SECRET,
        **FAST,
    }
    with receiver() as hook_receiver, log.open("wb") as out:
        worker = spawn([str(Path(sys.executable).with_name("aurion")), "worker"], env, out)
        try:
            hook = await every_client.post(
                "/api/v2/webhooks",
                json={"url": hook_receiver.url, "types": ["conversation.created"]},
                headers=every,
            )
            assert hook.status_code == 201
            created = await every_client.post(
                "/api/v2/conversations", json={"subject": "w"}, headers=every
            )
            (got,) = await hook_receiver.arrived(1)
            assert (
                Verifier(hook.json()["secret"]).verify(got.body, got.headers)["data"][
                    "conversation"
                ]
                == created.json()
            )
        finally:
            worker.terminate()
            assert worker.wait(15) == 0, log.read_text()
