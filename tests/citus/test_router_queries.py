"""Every statement the service sends is a single-shard router query on Citus.

Two proofs. The whole Citus suite runs with ``citus.multi_task_query_log_level = 'error'`` set
on the database (harness/citus.py), so any statement that would run on more than one shard
fails the test that sent it. And here, every statement captured while a scenario reaches each
endpoint, refusal and idempotent replay (the one of tests/scaling/test_distribution_ready.py)
is planned by the coordinator (EXPLAIN, with the captured parameters): each distributed part
of the plan must be one task, with no sub-plan run through the coordinator first. Every
statement goes as a call of ``aurion_delegate`` (aurion.db.delegation): one task, on the worker
of the workspace, where the statement names only that worker's shards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import asyncpg
from fastapi import FastAPI

from aurion.db.delegation import TABLE_REFERENCE
from tests.scaling.test_distribution_ready import _exercise_the_api, traced_app
from tests.support import TokenFactory

__all__ = ["traced_app"]  # the fixture, shared with the plain-PostgreSQL check

DELEGATE_CALL = "FROM aurion_delegate("


def _distributed_parts(node: Any) -> Iterator[dict[str, Any]]:
    """Every "Distributed Query" of a Citus JSON plan, sub-plans included."""
    if isinstance(node, dict):
        if "Distributed Query" in node:
            yield node["Distributed Query"]
        for value in node.values():
            yield from _distributed_parts(value)
    elif isinstance(node, list):
        for item in node:
            yield from _distributed_parts(item)


def _shape(statement: str, plan: Any) -> str | None:
    """Why ``plan`` is not a single-shard router plan, or None if it is."""
    parts = list(_distributed_parts(plan))
    if not parts:
        return "not planned by Citus (a local table?)"
    if len(parts) > 1 or parts[0].get("Subplans"):
        return f"{len(parts)} distributed parts: sub-plans run through the coordinator"
    tasks = parts[0]["Job"]["Task Count"]
    return None if tasks == 1 else f"{tasks} tasks (one per shard)"


async def test_every_statement_is_a_single_shard_router_query(
    traced_app: tuple[FastAPI, list[tuple[str, Any]]],
    coordinator: asyncpg.Connection,
    distributed_tables: dict[str, int],
    token_for: TokenFactory,
    workspace: str,
) -> None:
    app, sent = traced_app
    await _exercise_the_api(app, token_for, workspace)
    explained: set[str] = set()
    touched: set[str] = set()
    delegated: set[str] = set()
    problems: list[str] = []
    for statement, params in sent:
        many = isinstance(params, list) and params and isinstance(params[0], tuple | list)
        args: Any = params[0] if many else (params or ())
        if DELEGATE_CALL in statement:
            # The call goes to the workspace's worker, where the statement (args[3]) runs on
            # the shards it names as "@table" (args[2]), and on nothing else.
            tables, inner = args[2], args[3]
            left = {m.group(3) for m in TABLE_REFERENCE.finditer(inner)} & set(distributed_tables)
            if left:
                problems.append(f"delegated, yet names {left} as such: {inner[:100]}")
            touched |= set(tables)
            if inner in delegated:
                continue
            delegated.add(inner)
        elif any(t in statement for t in distributed_tables):
            problems.append(f"sent as it is: {' '.join(statement.split())[:100]}")
            continue
        else:
            continue
        plan = json.loads(await coordinator.fetchval("EXPLAIN (FORMAT JSON) " + statement, *args))
        explained.add(inner)
        why = _shape(statement, plan)
        if why:
            problems.append(f"{why}: {' '.join(inner.split())[:100]}")
    # Not vacuous: the scenario's statements (as in test_distribution_ready), reads, writes,
    # replays and refusals, touched every table.
    assert len(explained) >= 6, explained
    assert touched == set(distributed_tables)
    assert not problems, "\n".join(problems)
