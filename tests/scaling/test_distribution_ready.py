"""The schema and the queries are ready to be distributed by workspace (Citus, docs/scaling.md).

Two checks against the real database:
* every table's keys lead with ``workspace_id`` and every foreign key includes it, so rows of
  one workspace can live together on one shard and a link cannot cross workspaces;
* every statement the service sends while serving API requests pins ``workspace_id`` on every
  table it reads or writes. The statements are captured on the driver connections, then
  PostgreSQL itself plans them (EXPLAIN, with the captured parameters) and each scan of a
  table must carry a ``workspace_id = ...`` condition: a statement Citus can route to one shard.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.util import greenlet_spawn

from aurion.auth.principal import ALL_SCOPES
from aurion.db.engine import async_url
from tests.support import TokenFactory, make_settings, started_app

EVERY_SCOPE = " ".join(ALL_SCOPES)
PINNED = re.compile(r"\bworkspace_id\s*=|=\s*(?:\w+\.)?workspace_id\b")


def _dsn(database_url: str) -> str:
    return async_url(database_url).replace("postgresql+asyncpg://", "postgresql://", 1)


async def _tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        """SELECT table_name FROM information_schema.tables
           WHERE table_schema = 'public' AND table_type = 'BASE TABLE'
             AND table_name <> 'alembic_version'"""
    )
    return {r["table_name"] for r in rows}


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(_dsn(database_url))
    try:
        yield conn
    finally:
        await conn.close()


async def test_every_key_leads_with_workspace_id(db: asyncpg.Connection) -> None:
    tables = await _tables(db)
    assert {"conversations", "messages", "activities"} <= tables
    rows = await db.fetch(
        """SELECT c.conrelid::regclass::text AS tbl, c.conname, c.contype::text AS contype,
                  ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n
                        ORDER BY k.i)::text[] AS cols,
                  ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                        JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n
                        ORDER BY k.i)::text[] AS ref_cols
           FROM pg_constraint c
           WHERE c.connamespace = 'public'::regnamespace AND c.contype IN ('p', 'u', 'f')"""
    )
    by_table: dict[str, list[Any]] = {t: [] for t in tables}
    for row in rows:
        if row["tbl"] in by_table:
            by_table[row["tbl"]].append(row)
    problems = []
    for table, constraints in sorted(by_table.items()):
        if not any(c["contype"] == "p" for c in constraints):
            problems.append(f"{table} has no primary key")
        for c in constraints:
            if c["contype"] in "pu" and c["cols"][0] != "workspace_id":
                problems.append(f"{table}.{c['conname']} {c['cols']} does not lead with it")
            if c["contype"] == "f" and (
                "workspace_id" not in c["cols"]
                or c["ref_cols"][c["cols"].index("workspace_id")] != "workspace_id"
            ):
                problems.append(f"{table}.{c['conname']} {c['cols']} can cross workspaces")
    unique_indexes = await db.fetch(
        """SELECT indrelid::regclass::text AS tbl, indexrelid::regclass::text AS idx,
                  (SELECT attname FROM pg_attribute
                   WHERE attrelid = indrelid AND attnum = indkey[0]) AS first
           FROM pg_index WHERE indisunique"""
    )
    for index in unique_indexes:
        if index["tbl"] in tables and index["first"] != "workspace_id":
            problems.append(f"unique index {index['idx']} does not lead with workspace_id")
    assert problems == []


@pytest.fixture
async def traced_app(database_url: str) -> AsyncIterator[tuple[FastAPI, list[tuple[str, Any]]]]:
    settings = make_settings(
        database_url, max_children_per_parent=2, idempotency_purge_interval_seconds=0
    )
    sent: list[tuple[str, Any]] = []
    async for app in started_app(settings):
        # The request path runs its statements on the driver (asyncpg) connections of the
        # engine's pool: trace every connection the pool opens.
        @event.listens_for(app.state.engine.sync_engine, "connect")
        def trace(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.driver_connection.add_query_logger(
                lambda query: sent.append((query.query, query.args))
            )

        # The connection of the start-up's probe (aurion.db.driver) predates the logger.
        await greenlet_spawn(app.state.engine.sync_engine.pool.dispose)

        yield app, sent


async def _exercise_the_api(app: FastAPI, token_for: TokenFactory, workspace: str) -> None:
    """Every endpoint, its refusals, and idempotent replays."""
    auth = {"Authorization": f"Bearer {token_for(workspace)}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

        async def call(method: str, path: str, expect: int, **kw: Any) -> Any:
            response = await client.request(method, path, **kw)
            assert response.status_code == expect, response.text
            return response.json() if response.content else None

        key = {**auth, "Idempotency-Key": f"k-{uuid.uuid4()}"}
        body = {"subject": "P", "tags": ["a"], "messages": [{"body": "hi"}, {"body": "there"}]}
        parent = await call("POST", "/api/v2/conversations", 201, json=body, headers=key)
        await call("POST", "/api/v2/conversations", 201, json=body, headers=key)  # replay
        children = f"/api/v2/conversations/{parent['id']}/children"
        child_key = {**auth, "Idempotency-Key": f"k-{uuid.uuid4()}"}
        child = await call("POST", children, 201, json={"subject": "c1"}, headers=child_key)
        await call("POST", children, 201, json={"subject": "c1"}, headers=child_key)
        await call("POST", children, 422, json={"subject": "other"}, headers=child_key)
        await call("POST", children, 201, json={"subject": "c2"}, headers=auth)
        await call("POST", children, 409, json={"subject": "c3"}, headers=auth)  # limit
        await call("POST", children, 412, json={"subject": "x"}, headers={**auth, "If-Match": "1"})
        grandchildren = f"/api/v2/conversations/{child['id']}/children"
        await call("POST", grandchildren, 409, json={"subject": "x"}, headers=auth)
        missing = f"/api/v2/conversations/{uuid.uuid4()}"
        await call("POST", f"{missing}/children", 404, json={"subject": "x"}, headers=auth)
        await call("GET", missing, 404, headers=auth)
        await call("GET", f"{missing}/children", 404, headers=auth)
        await call("GET", f"/api/v2/conversations/{parent['id']}", 200, headers=auth)
        await call("GET", f"/api/v2/conversations/{child['id']}", 200, headers=auth)
        page = await call("GET", children, 200, params={"limit": 1}, headers=auth)
        await call("GET", children, 200, params={"cursor": page["next_cursor"]}, headers=auth)
        # Events and webhooks (their own scopes).
        every = {"Authorization": f"Bearer {token_for(workspace, EVERY_SCOPE)}"}
        feed = await call("GET", "/api/v2/events", 200, params={"limit": 2}, headers=every)
        await call("GET", "/api/v2/events", 200, params={"after": feed["next_cursor"]},
                   headers=every)  # fmt: skip
        hook = {"url": "http://127.0.0.1:9/hook", "types": ["child.created"]}
        webhook = await call("POST", "/api/v2/webhooks", 201, json=hook, headers=every)
        await call("GET", "/api/v2/webhooks", 200, headers=every)
        await call("GET", f"/api/v2/webhooks/{webhook['id']}/deliveries", 200, headers=every)
        deleted = await client.delete(f"/api/v2/webhooks/{webhook['id']}", headers=every)
        assert deleted.status_code == 204
        # The life of a hierarchy (SPEC §8): update, refuse, cascade, reopen, move, read, delete.
        conversation = f"/api/v2/conversations/{parent['id']}"
        resolve = {"status": "resolved"}
        await call("PATCH", conversation, 409, json=resolve, headers=auth)
        await call("PATCH", f"{conversation}?children=resolve", 200, json=resolve, headers=auth)
        child_url = f"/api/v2/conversations/{child['id']}"
        await call("PATCH", child_url, 200, json={"status": "open"}, headers=auth)
        other = await call(
            "POST", "/api/v2/conversations", 201, json={"subject": "O"}, headers=auth
        )
        await call("PUT", f"{child_url}/parent", 200, json={"parent_id": other["id"]}, headers=auth)
        await call("GET", children, 200, params={"status": "open,closed"}, headers=auth)
        await call("GET", f"{conversation}/activities", 200, headers=auth)
        await call("DELETE", f"/api/v2/conversations/{other['id']}", 204, headers=auth)


def _scans(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _scans(child)


async def test_every_statement_pins_the_workspace(
    traced_app: tuple[FastAPI, list[tuple[str, Any]]],
    db: asyncpg.Connection,
    token_for: TokenFactory,
    workspace: str,
) -> None:
    app, sent = traced_app
    await _exercise_the_api(app, token_for, workspace)
    tables = await _tables(db)
    mentions = re.compile(r"\b(" + "|".join(map(re.escape, sorted(tables))) + r")\b")

    checked: set[str] = set()
    problems: list[str] = []
    for statement, params in sent:
        if statement in checked or not mentions.search(statement):
            continue
        checked.add(statement)
        head = " ".join(statement.split())[:120]
        for insert in re.finditer(r"INSERT INTO (\w+)(?: AS \w+)?\s*\(([^)]*)\)", statement):
            if "workspace_id" not in insert.group(2):
                problems.append(f"INSERT INTO {insert.group(1)} without workspace_id: {head}")
        # executemany sends a list of parameter tuples: the first one stands for all.
        many = isinstance(params, list) and params and isinstance(params[0], tuple | list)
        args = params[0] if many else (params or ())
        plan = json.loads(await db.fetchval("EXPLAIN (FORMAT JSON) " + statement, *args))
        for node in _scans(plan[0]["Plan"]):
            relation = node.get("Relation Name")
            if relation not in tables or node["Node Type"] == "ModifyTable":
                continue
            conditions = " ".join(
                str(node.get(k, "")) for k in ("Index Cond", "Recheck Cond", "Filter")
            )
            if not PINNED.search(conditions):
                problems.append(f"{node['Node Type']} on {relation} without workspace_id: {head}")
    # Not vacuous: the scenario reached the domain's reads and writes, idempotency included.
    # Six statements: create (keyed), the replay's read, create child (keyed and not), get, list.
    assert len(checked) >= 6, checked
    assert {m.group(1) for s in checked for m in mentions.finditer(s)} == tables
    assert problems == []
