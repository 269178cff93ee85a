"""PostgreSQL failing under the service: 503 + Retry-After, no partial writes, self-recovery.

These tests stop, crash and restart a PostgreSQL server, so they run a private embedded
cluster of their own rather than the shared test server.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from aurion.db.embedded import EmbeddedPostgres
from aurion.db.engine import async_url
from aurion.db.migrate import upgrade
from harness.server import serve_aurion
from tests.conftest import READ_WRITE, TEST_SECRET, asgi_client, make_settings, started_app
from tests.support import activity_kinds, assert_unavailable, parent_locked


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    # Durable settings: the crash test checks that every acknowledged commit survives.
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("faulty-postgres"))
    url = pg.start("aurion")
    upgrade(url)
    yield pg
    pg.stop("immediate")


@pytest.fixture(scope="module")
def fault_url(cluster: EmbeddedPostgres) -> str:
    return cluster.url("aurion")


@pytest.fixture
async def fault_app(fault_url: str) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        fault_url,
        db_connect_timeout_seconds=2,
        db_pool_timeout_seconds=2,
        db_statement_timeout_ms=3000,
        db_lock_timeout_ms=5000,
        max_children_per_parent=10_000,
    )
    async for app in started_app(settings):
        yield app


@pytest.fixture
async def fault_client(fault_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(fault_app, "http://t", timeout=30) as c:
        yield c


@pytest.fixture
async def direct(fault_url: str) -> AsyncIterator[AsyncEngine]:
    """A connection pool of the test's own, for setting up locks and checking rows."""
    engine = create_async_engine(async_url(fault_url), pool_pre_ping=True)
    yield engine
    await engine.dispose()


@pytest.fixture
def headers(fault_app: FastAPI, workspace: str) -> dict[str, str]:
    from aurion.auth.tokens import mint_token

    token = mint_token(
        fault_app.state.settings, workspace=workspace, subject="u", scopes=READ_WRITE
    )
    return {"Authorization": f"Bearer {token}"}


async def new_parent(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    response = await client.post("/api/v2/conversations", json={"subject": "p"}, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def check_invariants(engine: AsyncEngine, workspace: str, parent_id: str) -> int:
    """Every child has its activities and its parent's version bump; the number of children."""
    async with engine.connect() as conn:
        children = (
            (
                await conn.execute(
                    text("SELECT id FROM conversations WHERE workspace_id = :w AND parent_id = :p"),
                    {"w": workspace, "p": uuid.UUID(parent_id)},
                )
            )
            .scalars()
            .all()
        )
        version = (
            await conn.execute(
                text("SELECT version FROM conversations WHERE workspace_id = :w AND id = :p"),
                {"w": workspace, "p": uuid.UUID(parent_id)},
            )
        ).scalar_one()
    by_kind = await activity_kinds(engine, workspace)
    assert version == 1 + len(children)
    assert by_kind.get("child_created", 0) == len(children)
    assert by_kind.get("created_from_parent", 0) == len(children)
    return len(children)


async def wait_until_created(
    client: httpx.AsyncClient, parent_id: str, headers: dict[str, str], seconds: float
) -> float:
    """Seconds until a child creation succeeds again."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        response = await client.post(
            f"/api/v2/conversations/{parent_id}/children", json={"subject": "r"}, headers=headers
        )
        if response.status_code == 201:
            return time.monotonic() - started
        assert_unavailable(response)
        await asyncio.sleep(0.2)
    raise AssertionError(f"the service did not recover within {seconds} s")


class TestTerminatedBackend:
    async def test_backend_killed_mid_request_is_503_and_writes_nothing(
        self,
        fault_client: httpx.AsyncClient,
        direct: AsyncEngine,
        headers: dict[str, str],
        workspace: str,
    ) -> None:
        parent_id = await new_parent(fault_client, headers)
        async with parent_locked(direct, workspace, parent_id):
            request = asyncio.create_task(
                fault_client.post(
                    f"/api/v2/conversations/{parent_id}/children",
                    json={"subject": "doomed"},
                    headers=headers,
                )
            )
            # Find the request's backend, waiting on the parent's row lock, and kill it.
            for _ in range(100):
                async with direct.connect() as admin:
                    terminated = (
                        await admin.execute(
                            text(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE application_name = 'aurion' AND wait_event_type = 'Lock'"
                            )
                        )
                    ).all()
                if terminated:
                    break
                await asyncio.sleep(0.02)
            assert terminated, "the request never waited on the lock"
            response = await request
        assert_unavailable(response)
        assert await check_invariants(direct, workspace, parent_id) == 0
        # the pool replaces the dead connection by itself
        await wait_until_created(fault_client, parent_id, headers, seconds=5)
        assert await check_invariants(direct, workspace, parent_id) == 1


class TestServerDown:
    async def test_stopped_server_gives_fast_503s_and_recovery(
        self,
        cluster: EmbeddedPostgres,
        fault_client: httpx.AsyncClient,
        direct: AsyncEngine,
        headers: dict[str, str],
        workspace: str,
    ) -> None:
        parent_id = await new_parent(fault_client, headers)
        cluster.stop("fast")
        try:
            for _ in range(3):
                started = time.monotonic()
                response = await fault_client.post(
                    f"/api/v2/conversations/{parent_id}/children",
                    json={"subject": "while down"},
                    headers=headers,
                )
                assert_unavailable(response)
                assert time.monotonic() - started < 5  # bounded by the connect timeout
            ready = await fault_client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["code"] == "database_unavailable"
            got = await fault_client.get(f"/api/v2/conversations/{parent_id}", headers=headers)
            assert_unavailable(got)
        finally:
            cluster.start("aurion")
        recovered_after = await wait_until_created(fault_client, parent_id, headers, seconds=10)
        assert recovered_after < 10
        assert (await fault_client.get("/readyz")).status_code == 200
        assert await check_invariants(direct, workspace, parent_id) == 1

    async def test_crash_restart_under_load_loses_and_doubles_nothing(
        self,
        cluster: EmbeddedPostgres,
        fault_client: httpx.AsyncClient,
        direct: AsyncEngine,
        headers: dict[str, str],
        workspace: str,
    ) -> None:
        parent_id = await new_parent(fault_client, headers)
        statuses: list[int] = []
        created: set[str] = set()
        stop = asyncio.Event()

        async def load(worker: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                response = await fault_client.post(
                    f"/api/v2/conversations/{parent_id}/children",
                    json={"subject": f"w{worker}-{n}"},
                    headers={**headers, "Idempotency-Key": f"w{worker}-{n}"},
                )
                statuses.append(response.status_code)
                if response.status_code == 201:
                    created.add(response.json()["id"])
                else:
                    assert_unavailable(response)
                    await asyncio.sleep(0.05)

        workers = [asyncio.create_task(load(i)) for i in range(4)]
        await asyncio.sleep(0.7)
        await asyncio.to_thread(cluster.stop, "immediate")  # a crash: no clean shutdown
        await asyncio.sleep(0.5)
        await asyncio.to_thread(cluster.start, "aurion")
        await asyncio.sleep(1.5)
        stop.set()
        await asyncio.gather(*workers)

        assert 500 not in statuses
        assert statuses.count(503) > 0  # the outage was seen ...
        # ... and the service recovers by itself (bounded; a loaded machine restarts slowly)
        await wait_until_created(fault_client, parent_id, headers, seconds=15)
        children = await check_invariants(direct, workspace, parent_id)
        # every acknowledged child exists; an unacknowledged commit may exist too (its client
        # saw a 503 and would retry with the same key and get the replay)
        assert len(created) == statuses.count(201)
        assert children >= len(created)
        async with direct.connect() as conn:
            ids = (
                await conn.execute(
                    text("SELECT id::text FROM conversations WHERE workspace_id = :w"),
                    {"w": workspace},
                )
            ).scalars()
            assert created <= set(ids)


class TestGracefulShutdown:
    async def test_sigterm_lets_in_flight_requests_finish(
        self, fault_url: str, direct: AsyncEngine, workspace: str, tmp_path: Path
    ) -> None:
        env = {"AURION_JWT_SECRET": TEST_SECRET, "AURION_LOG_LEVEL": "WARNING"}
        # /healthz, not /readyz: the server must be up, whatever the faulty proxy does.
        log = tmp_path / "server.log"
        live = await asyncio.to_thread(
            serve_aurion, fault_url, log_path=log, env=env, ready_path="/healthz"
        )
        server = live.process
        settings = make_settings(fault_url)
        from aurion.auth.tokens import mint_token

        token = mint_token(settings, workspace=workspace, subject="u", scopes=READ_WRITE)
        auth = {"Authorization": f"Bearer {token}"}
        try:
            async with httpx.AsyncClient(base_url=live.base_url, timeout=30) as client:
                parent_id = await new_parent(client, auth)
                async with parent_locked(direct, workspace, parent_id):
                    in_flight = asyncio.create_task(
                        client.post(
                            f"/api/v2/conversations/{parent_id}/children",
                            json={"subject": "finishes"},
                            headers=auth,
                        )
                    )
                    await asyncio.sleep(0.3)
                    server.send_signal(signal.SIGTERM)
                    await asyncio.sleep(0.3)
                    assert server.poll() is None  # still draining
                response = await in_flight
            assert response.status_code == 201, response.text
            # uvicorn re-raises the signal once it has drained, so "killed by SIGTERM" it is
            assert await asyncio.to_thread(server.wait, 15) in (0, -signal.SIGTERM)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        assert await check_invariants(direct, workspace, parent_id) == 1
