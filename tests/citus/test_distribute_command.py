"""`aurion db distribute`, as an operator runs it against the coordinator."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import asyncpg
from sqlalchemy.engine import make_url

from aurion.db.distribution import tables
from tests.citus.conftest import dsn
from tests.conftest import ROOT


def _distribute(database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aurion.cli", "db", "distribute"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_table_of_the_metadata_is_distributed_and_colocated(
    distributed_tables: dict[str, int],
) -> None:
    assert {t.name for t in tables()} == set(distributed_tables)


async def test_all_tables_share_one_colocation_group(
    coordinator: asyncpg.Connection, distributed_tables: dict[str, int]
) -> None:
    rows = await coordinator.fetch(
        "SELECT DISTINCT colocation_id FROM citus_tables WHERE table_name::text = ANY($1)",
        list(distributed_tables),
    )
    assert len(rows) == 1


def test_a_second_run_changes_nothing(
    database_url: str, distributed_tables: dict[str, int]
) -> None:
    result = _distribute(database_url)
    assert result.returncode == 0, result.stderr
    *lines, last = result.stdout.splitlines()
    assert sorted(line.split(":")[0] for line in lines) == sorted(distributed_tables)
    assert all(": already distributed (by workspace_id" in line for line in lines), lines
    assert "see shards in the catalogue" in last


async def test_the_schema_functions_exist_on_every_worker(
    coordinator: asyncpg.Connection, distributed_tables: dict[str, int]
) -> None:
    rows = await coordinator.fetch(
        "SELECT nodeport, success, result FROM run_command_on_workers("
        "$$SELECT to_regprocedure('aurion_refuse(text, text)') IS NOT NULL$$)"
    )
    assert len(rows) == 2
    assert all(r["success"] and r["result"] == "t" for r in rows), rows


async def test_the_service_sessions_see_shards_in_the_catalogue(
    coordinator: asyncpg.Connection, distributed_tables: dict[str, int]
) -> None:
    # What makes asyncpg's type introspection fast on Citus (aurion.db.distribution).
    settings = await coordinator.fetchval(
        "SELECT setconfig FROM pg_db_role_setting "
        "WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND setrole = 0"
    )
    assert "citus.show_shards_for_app_name_prefixes=aurion" in settings


async def test_without_citus_it_says_so_in_one_line_and_exits_1(database_url: str) -> None:
    # A database of the same server without the extension (plain PostgreSQL or not).
    name = f"aurion_plain_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn(database_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        plain = make_url(database_url).set(database=name).render_as_string(hide_password=False)
        result = _distribute(plain)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert "has no Citus extension" in result.stderr
