"""Maintenance across workspaces is multi-shard by design, and works on Citus.

The purge of expired idempotency keys is the only statement that is not about one workspace:
it deletes expired keys wherever they are, so it runs on every shard. It is the one explicit
exemption from the suite's router-only rule (``citus.multi_task_query_log_level = 'error'`` on
the database, set by harness/citus.py): this test runs it on an engine of its own whose
sessions lower the level, as an operator's maintenance job would.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import event, text

from aurion.db.engine import create_engine
from aurion.idempotency.service import purge_expired
from tests.conftest import make_settings

EXPIRED = timedelta(hours=-1)
LIVE = timedelta(hours=1)


async def test_purge_of_expired_keys_runs_on_every_shard(
    database_url: str, distributed_tables: dict[str, int]
) -> None:
    maintenance = create_engine(make_settings(database_url), database_url)

    @event.listens_for(maintenance.sync_engine, "connect")
    def _exempt(dbapi_connection: object, record: object) -> None:
        cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
        cursor.execute("SET citus.multi_task_query_log_level = 'off'")
        cursor.close()

    # Enough workspaces that the keys land on several shards (and both workers).
    workspaces = [f"ws_purge_{uuid.uuid4().hex[:10]}" for _ in range(12)]
    now = datetime.now(UTC)
    try:
        async with maintenance.begin() as conn:
            for ws in workspaces:
                for key, ttl in (("old", EXPIRED), ("new", LIVE)):
                    await conn.execute(
                        text(
                            "INSERT INTO idempotency_keys (workspace_id, subject, key,"
                            " fingerprint, created_at, expires_at)"
                            " VALUES (:w, 's', :k, 'f', :c, :e)"
                        ),
                        {"w": ws, "k": key, "c": now, "e": now + ttl},
                    )
            shards = await conn.execute(
                text(
                    "SELECT count(DISTINCT get_shard_id_for_distribution_column("
                    "'idempotency_keys', w)) FROM unnest(CAST(:ws AS text[])) AS w"
                ),
                {"ws": workspaces},
            )
            assert shards.scalar_one() > 1
        async with maintenance.connect() as conn:
            deleted = await purge_expired(conn, batch=5)
        async with maintenance.connect() as conn:
            left = await conn.execute(
                text(
                    "SELECT key, count(*) FROM idempotency_keys "
                    "WHERE workspace_id = ANY(CAST(:ws AS text[])) GROUP BY key"
                ),
                {"ws": workspaces},
            )
            remaining = dict(left.all())
    finally:
        await maintenance.dispose()
    assert deleted >= len(workspaces)
    assert remaining == {"new": len(workspaces)}
