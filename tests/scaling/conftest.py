"""Real processes for the scale-out tests (from harness/): the server with several workers,
and PgBouncer. Both listen on 127.0.0.1 only and are stopped when the session ends."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from aurion.settings import Settings
from harness.pgbouncer import PgBouncer, find_pgbouncer, start_pgbouncer
from harness.server import Server, serve_aurion
from tests.conftest import ROOT, TEST_SECRET, app_client, make_settings

# Server connections PgBouncer may open to PostgreSQL: far fewer than the app's client
# connections, so transactions of different clients share server connections all the time.
PGBOUNCER_POOL_SIZE = 4


# --- PgBouncer -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pgbouncer_bin() -> str:
    """The pgbouncer binary, installed with scripts/install-system-deps.sh if missing."""
    found = find_pgbouncer()
    if found:
        return found
    try:
        result = subprocess.run(
            ["bash", str(ROOT / "scripts" / "install-system-deps.sh"), "pgbouncer"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        output = (result.stdout + result.stderr)[-1500:]
    except (OSError, subprocess.TimeoutExpired) as exc:
        output = str(exc)
    found = find_pgbouncer()
    if not found:
        pytest.skip(
            "PgBouncer is not installed and scripts/install-system-deps.sh pgbouncer could "
            f"not install it (needs root or sudo and the Debian package mirror):\n{output}"
        )
    return found


@pytest.fixture(scope="session")
def pgbouncer(pgbouncer_bin: str, database_url: str) -> Iterator[PgBouncer]:
    """PgBouncer in transaction pooling mode on a free 127.0.0.1 port, in front of the test DB."""
    bouncer = start_pgbouncer(database_url, pool_size=PGBOUNCER_POOL_SIZE)
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture(scope="session")
def pgbouncer_settings(pgbouncer: PgBouncer) -> Settings:
    return make_settings(pgbouncer.url, db_pgbouncer=True, max_children_per_parent=10)


@pytest.fixture(scope="session")
async def pgbouncer_client(pgbouncer_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(pgbouncer_settings) as c:
        yield c


# --- The real server, several workers --------------------------------------------------------


@pytest.fixture(scope="module")
def server_factory(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Server]]:
    """Starts real servers (``aurion serve --workers N``); all are stopped after the module."""
    started: list[Server] = []

    def make(workers: int = 2, **env: Any) -> Server:
        environment = {
            "AURION_ENV": "test",
            "AURION_JWT_SECRET": TEST_SECRET,
            "AURION_LOG_LEVEL": "WARNING",
            # The tests check counts, not latency: on a busy CI machine a request may wait a
            # while for the parent's lock or a pooled connection without that being a failure.
            "AURION_DB_POOL_TIMEOUT_SECONDS": "30",
            "AURION_DB_LOCK_TIMEOUT_MS": "30000",
            **{k: str(v) for k, v in env.items()},
        }
        server = serve_aurion(
            database_url,
            log_path=tmp_path_factory.mktemp("server") / "server.log",
            env=environment,
            workers=workers,
            args=["--graceful-timeout", "2"],
        )
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
