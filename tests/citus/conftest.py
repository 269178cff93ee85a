"""The Citus suite: runs against a Citus coordinator whose tables `aurion db distribute` made.

`make test-citus` (harness/citus.py) builds Citus, starts a coordinator and two workers, runs
`aurion db upgrade` and `aurion db distribute`, and points DATABASE_URL at the coordinator.
Without DATABASE_URL (the embedded PostgreSQL of `make test`, which then prints one line saying
it skipped the Citus suite) they are not collected; against another server without Citus they
skip, with that reason.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import asyncpg
import pytest

from aurion.db.engine import async_url

if not os.environ.get("DATABASE_URL"):
    collect_ignore_glob = ["test_*.py"]


def dsn(database_url: str) -> str:
    """The URL in the form asyncpg takes."""
    return async_url(database_url).replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture(scope="session")
async def distributed_tables(database_url: str) -> dict[str, int]:
    """Distributed table -> shard count; skips unless DATABASE_URL is a distributed database."""
    conn = await asyncpg.connect(dsn(database_url))
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'citus'"):
            pytest.skip("DATABASE_URL is not a Citus coordinator (make test-citus runs these)")
        rows = await conn.fetch(
            "SELECT table_name::text AS name, shard_count FROM citus_tables "
            "WHERE citus_table_type = 'distributed'"
        )
    finally:
        await conn.close()
    if not rows:
        pytest.skip("no distributed table: run `aurion db distribute` (make test-citus does)")
    return {r["name"]: r["shard_count"] for r in rows}


@pytest.fixture
async def coordinator(
    database_url: str, distributed_tables: dict[str, int]
) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn(database_url))
    try:
        yield conn
    finally:
        await conn.close()
