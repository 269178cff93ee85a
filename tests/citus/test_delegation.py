"""aurion_delegate on the cluster: where a statement runs, what comes back, what stays behind.

The API suites prove the writes through it; these call it directly (as aurion.db.delegation
does) to pin down what they cannot see: the statement runs on the worker holding the workspace,
on that worker's shard; an error comes back as a row and leaves nothing written; and the
statements it prepares in the worker's session stay bounded.
"""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from aurion.db.delegation import Delegation
from aurion.db.driver import Db, Refused, Statement

MAX_PREPARED = 64  # migration 0006

SHARD_OF_THE_ROW = Statement("""
WITH made AS (
    INSERT INTO conversations (workspace_id, id, subject, status, version, created_at,
                               updated_at)
    VALUES (:workspace_id, :id, :subject, 'open', 1, now(), now())
    RETURNING tableoid::regclass::text AS shard
)
SELECT shard, inet_server_port() AS port, :n::int AS n FROM made
""")

REFUSES_AFTER_WRITING = Statement("""
WITH made AS (
    INSERT INTO conversations (workspace_id, id, subject, status, version, created_at,
                               updated_at)
    VALUES (:workspace_id, :id, 'doomed', 'open', 1, now(), now())
    RETURNING id
)
SELECT aurion_refuse('refused_for_the_test', 'a detail') AS refused FROM made
""")

PREPARED_HERE = Statement("""
WITH noop AS (
    INSERT INTO conversations (workspace_id, id, subject, status, version, created_at,
                               updated_at)
    SELECT :workspace_id, :id, 's', 'open', 1, now(), now() WHERE false
    RETURNING id
)
SELECT count(*)::int AS prepared, :n::int AS n FROM pg_prepared_statements
WHERE name LIKE 'aurion\\_%'
""")


async def _expected_shard(coordinator: asyncpg.Connection, workspace: str) -> tuple[str, int]:
    row = await coordinator.fetchrow(
        "SELECT shard_name('conversations', s.shardid) AS shard, p.nodeport AS port "
        "FROM (SELECT get_shard_id_for_distribution_column('conversations', $1::text) AS shardid"
        ") s "
        "JOIN pg_dist_placement pl ON pl.shardid = s.shardid "
        "JOIN pg_dist_node p ON p.groupid = pl.groupid",
        workspace,
    )
    return row["shard"], row["port"]


async def test_the_statement_runs_on_the_workers_shard_of_its_workspace(
    coordinator: asyncpg.Connection, distributed_tables: dict[str, int]
) -> None:
    db = Db(connection=coordinator)
    delegation = Delegation(lock_timeout_ms=1000)
    for _ in range(4):  # workspaces on different shards, and on both workers
        workspace = f"ws_{uuid.uuid4().hex[:10]}"
        values = {"workspace_id": workspace, "id": uuid.uuid4(), "subject": "s", "n": 7}
        rows = await delegation.fetch(coordinator, SHARD_OF_THE_ROW, values)
        shard, port = await _expected_shard(coordinator, workspace)
        assert [dict(r) for r in rows] == [
            {
                "shard": shard,
                "port": port,
                "n": 7,
                "error_code": None,
                "error_message": None,
                "error_detail": None,
                "error_context": None,
            }
        ]
        found = await db.fetchrow(
            Statement("SELECT subject FROM conversations WHERE workspace_id = :w AND id = :i"),
            {"w": workspace, "i": values["id"]},
        )
        assert found is not None
        assert found["subject"] == "s"


async def test_a_refusal_comes_back_as_the_error_and_writes_nothing(
    coordinator: asyncpg.Connection, distributed_tables: dict[str, int]
) -> None:
    workspace = f"ws_{uuid.uuid4().hex[:10]}"
    delegated = Db(connection=coordinator, lock_timeout_ms=1000)  # learns it may delegate
    child = uuid.uuid4()
    with pytest.raises(Refused) as refused:
        await delegated.fetch(REFUSES_AFTER_WRITING, {"workspace_id": workspace, "id": child})
    assert (refused.value.code, refused.value.detail) == ("refused_for_the_test", "a detail")
    left = await coordinator.fetchval(
        "SELECT count(*) FROM conversations WHERE workspace_id = $1", workspace
    )
    assert left == 0


async def test_prepared_statements_in_the_workers_session_stay_bounded(
    coordinator: asyncpg.Connection, distributed_tables: dict[str, int]
) -> None:
    workspace = f"ws_{uuid.uuid4().hex[:10]}"
    delegation = Delegation(lock_timeout_ms=1000)
    counts = []
    # Distinct statements (one per n) on one workspace, from one coordinator session: each is
    # prepared in the same worker session, until the bound deallocates them all.
    for n in range(MAX_PREPARED + 6):
        text = PREPARED_HERE.template.replace(":n::int AS n", f"{n} AS n")
        rows = await delegation.fetch(
            coordinator, Statement(text), {"workspace_id": workspace, "id": uuid.uuid4()}
        )
        counts.append(rows[0]["prepared"])
    # Each call counts the ones prepared before it, its own included.
    assert counts[:MAX_PREPARED] == list(range(1, MAX_PREPARED + 1))
    assert counts[MAX_PREPARED:] == list(range(1, 7))
