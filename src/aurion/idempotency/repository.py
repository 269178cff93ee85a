"""Queries of the idempotency store (every one filters on the workspace and subject)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

# Claim the key: a new row, or take over an expired one. Returns no row when a live row
# exists. A concurrent claim of the same key waits here (unique index) until the other
# transaction ends: it then sees the committed response and replays it, or, if that one
# rolled back, claims the key itself. lock_timeout bounds the wait.
CLAIM_SQL = """
INSERT INTO idempotency_keys AS k
    (workspace_id, subject, key, fingerprint, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (workspace_id, subject, key) DO UPDATE
    SET fingerprint = EXCLUDED.fingerprint, created_at = EXCLUDED.created_at,
        expires_at = EXCLUDED.expires_at, status_code = NULL, response_body = NULL,
        response_headers = '{}'::jsonb
    WHERE k.expires_at <= EXCLUDED.created_at
RETURNING 1
"""

FETCH_SQL = """
SELECT fingerprint, status_code, response_body, response_headers
FROM idempotency_keys
WHERE workspace_id = $1 AND subject = $2 AND key = $3
"""

STORE_SQL = """
UPDATE idempotency_keys
SET status_code = $4, response_body = $5, response_headers = $6::jsonb
WHERE workspace_id = $1 AND subject = $2 AND key = $3
"""

# Maintenance across workspaces, in batches so no single statement holds many row locks.
# Batches are chosen by primary key (not ctid, which means nothing across Citus shards).
PURGE_SQL = """
DELETE FROM idempotency_keys
WHERE (workspace_id, subject, key) IN (
    SELECT workspace_id, subject, key FROM idempotency_keys WHERE expires_at <= $1 LIMIT $2
)
"""


async def claim(
    conn: AsyncConnection,
    workspace_id: str,
    subject: str,
    key: str,
    fingerprint: str,
    now: datetime,
    expires_at: datetime,
) -> bool:
    """True if this transaction now owns the key."""
    result = await conn.exec_driver_sql(
        CLAIM_SQL, (workspace_id, subject, key, fingerprint, now, expires_at)
    )
    return result.first() is not None


async def fetch(
    conn: AsyncConnection, workspace_id: str, subject: str, key: str
) -> Row[Any] | None:
    result = await conn.exec_driver_sql(FETCH_SQL, (workspace_id, subject, key))
    return result.first()


async def store(
    conn: AsyncConnection,
    workspace_id: str,
    subject: str,
    key: str,
    status_code: int,
    body: bytes,
    headers: dict[str, str],
) -> None:
    await conn.exec_driver_sql(
        STORE_SQL,
        (workspace_id, subject, key, status_code, body, orjson.dumps(headers).decode()),
    )


async def purge(conn: AsyncConnection, now: datetime, batch: int = 5000) -> int:
    """Delete one batch of expired keys; the number deleted."""
    result = await conn.exec_driver_sql(PURGE_SQL, (now, batch))
    return int(result.rowcount)
