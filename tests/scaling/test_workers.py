"""The real server with two worker processes: the guarantees hold across processes.

Nothing that must be shared lives in a process's memory — the row lock on the parent, the
children count, the idempotency keys are all in PostgreSQL — so two processes serving the same
parent at once behave exactly like one.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy.engine import make_url

from harness.server import Server, aurion_command
from tests.support import TokenFactory


def _client(server: Server) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
    return httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=60)


async def _parent(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    response = await client.post(
        "/api/v2/conversations", json={"subject": "Parent", "tags": ["t"]}, headers=headers
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _fire(
    client: httpx.AsyncClient, path: str, n: int, headers: Callable[[int], dict[str, str]]
) -> list[httpx.Response]:
    return list(
        await asyncio.gather(
            *(
                client.post(path, json={"subject": f"child {i}"}, headers=headers(i))
                for i in range(n)
            )
        )
    )


def _database_port(database_url: str) -> int:
    return int(make_url(database_url).port or 5432)


def _workers_connected_to_postgres(server: Server, port: int) -> int:
    """How many worker processes hold a TCP connection to PostgreSQL (they pool them)."""
    busy = 0
    for pid in server.worker_pids():
        busy += any(
            c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
            for c in psutil.Process(pid).net_connections(kind="tcp")
        )
    return busy


@pytest.fixture(scope="module")
def limited(server_factory: Callable[..., Server]) -> Server:
    return server_factory(workers=2, AURION_MAX_CHILDREN_PER_PARENT=10)


@pytest.fixture(scope="module")
def roomy(server_factory: Callable[..., Server]) -> Server:
    return server_factory(workers=2, AURION_MAX_CHILDREN_PER_PARENT=100_000)


async def test_limit_holds_across_two_worker_processes(
    limited: Server, auth: dict[str, str], database_url: str
) -> None:
    assert len(limited.worker_pids()) == 2
    async with _client(limited) as client:
        parent = await _parent(client, auth)
        path = f"/api/v2/conversations/{parent}/children"
        responses = await _fire(client, path, 100, lambda _: auth)
        statuses = Counter(r.status_code for r in responses)
        assert statuses == {201: 10, 409: 90}, statuses
        assert {r.json()["code"] for r in responses if r.status_code == 409} == {
            "children_limit_reached"
        }
        got = (await client.get(f"/api/v2/conversations/{parent}", headers=auth)).json()
        assert (got["version"], got["tab_counts"]["related"]) == (11, 10)
    # Both processes served: each keeps pooled connections to PostgreSQL once it has (seen on
    # TCP; a Unix-socket DATABASE_URL leaves nothing to see there).
    if make_url(database_url).host:
        assert _workers_connected_to_postgres(limited, _database_port(database_url)) == 2


async def test_200_parallel_creations_across_processes_lose_nothing(
    roomy: Server, auth: dict[str, str]
) -> None:
    async with _client(roomy) as client:
        parent = await _parent(client, auth)
        path = f"/api/v2/conversations/{parent}/children"
        responses = await _fire(client, path, 200, lambda _: auth)
        assert Counter(r.status_code for r in responses) == {201: 200}
        assert len({r.json()["id"] for r in responses}) == 200

        got = (await client.get(f"/api/v2/conversations/{parent}", headers=auth)).json()
        assert got["version"] == 201
        assert got["tab_counts"]["related"] == 200
        assert got["tab_counts"]["activities"] == 201  # created + one per child

        listed: list[str] = []
        cursor: str | None = None
        while True:
            query: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            page = (await client.get(path, params=query, headers=auth)).json()
            listed += [c["id"] for c in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert sorted(listed) == sorted(r.json()["id"] for r in responses)


async def test_one_idempotency_key_creates_one_child_across_processes(
    roomy: Server, token_for: TokenFactory, workspace: str
) -> None:
    auth = {"Authorization": f"Bearer {token_for(workspace)}"}
    key = {**auth, "Idempotency-Key": f"scale-{uuid.uuid4()}"}
    async with _client(roomy) as client:
        parent = await _parent(client, auth)
        path = f"/api/v2/conversations/{parent}/children"
        responses = await asyncio.gather(
            *(client.post(path, json={"subject": "same"}, headers=key) for _ in range(50))
        )
        created = [r for r in responses if r.status_code == 201]
        others = [r for r in responses if r.status_code != 201]
        assert created, [r.text for r in responses[:3]]
        assert {r.json()["id"] for r in created} == {created[0].json()["id"]}
        assert sum(r.headers.get("idempotent-replayed") != "true" for r in created) == 1
        assert all(
            (r.status_code, r.json()["code"]) == (409, "idempotency_key_in_use")
            and "retry-after" in r.headers
            for r in others
        ), [r.text for r in others[:3]]

        got = (await client.get(f"/api/v2/conversations/{parent}", headers=auth)).json()
        assert (got["version"], got["tab_counts"]["related"]) == (2, 1)


def _children_created(exposition: str) -> float:
    route = "/api/v2/conversations/{conversation_id}/children"
    total = 0.0
    for line in exposition.splitlines():
        if (
            line.startswith("aurion_http_requests_total{")
            and f'route="{route}"' in line
            and 'method="POST"' in line
            and 'status="201"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_metrics_add_up_across_worker_processes(roomy: Server, auth: dict[str, str]) -> None:
    async with _client(roomy) as client:
        parent = await _parent(client, auth)
        before = _children_created((await client.get("/metrics")).text)
        responses = await _fire(
            client, f"/api/v2/conversations/{parent}/children", 40, lambda _: auth
        )
        assert Counter(r.status_code for r in responses) == {201: 40}
    # Each scrape is a new connection, so it lands on either worker: all must see the sum.
    scrapes = []
    for _ in range(6):
        async with httpx.AsyncClient(base_url=roomy.base_url, timeout=10) as fresh:
            scrapes.append((await fresh.get("/metrics")).text)
    counts = {_children_created(text) for text in scrapes}
    assert counts == {before + 40}
    assert all("aurion_db_pool_connections_in_use" in text for text in scrapes)


def _accepted_by_each_worker(server: Server) -> list[int]:
    """How many of the server's port's established connections each worker holds."""
    port = int(server.base_url.rsplit(":", 1)[1])
    return [
        sum(
            c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
            for c in psutil.Process(pid).net_connections(kind="tcp")
        )
        for pid in server.worker_pids()
    ]


async def test_connections_opened_at_once_are_spread_over_the_workers(roomy: Server) -> None:
    """Each worker listens on a socket of its own (SO_REUSEPORT, aurion/serving.py): 32
    connections opened in one burst and kept alive land on both workers (with one shared
    socket, one worker often took nearly all of them, and kept them)."""
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=roomy.base_url, limits=limits, timeout=30) as client:
        # Held open together: each request waits for a pooled connection of its own.
        responses = await asyncio.gather(*(client.get("/healthz") for _ in range(32)))
        assert {r.status_code for r in responses} == {200}
        per_worker = _accepted_by_each_worker(roomy)
    assert len(per_worker) == 2
    # Linux hashes each connection to a socket: all of them on one of two has odds of 2 in
    # 2^n. (httpx may reuse a connection that answered early, so n can be less than 32.)
    assert sum(per_worker) >= 16, per_worker
    assert min(per_worker) > 0, per_worker


def test_a_port_already_in_use_fails_at_start() -> None:
    """A port another program listens on is refused before any worker starts, as uvicorn alone
    refuses it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*aurion_command(), "serve", "--port", str(port), "--workers", "2"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
        )
    assert done.returncode != 0
    assert "Address already in use" in done.stderr + done.stdout
