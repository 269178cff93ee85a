"""SQL of the idempotency store: fragments that write statements embed, the replay, the purge.

A write statement that takes an Idempotency-Key starts with ``CLAIM_CTE`` and ends with
``RESPONSE_CTE``: the claim is its first write, so a concurrent duplicate waits on the key (then
replays), not on the rows the request works on; the response, rendered by the statement, is
stored beside it (or, when it is the object an event of the statement carries, a reference to
that event). A statement without a key uses ``UNCLAIMED_CTE`` instead, so both variants
share the rest of their text. Every statement filters on the workspace and the caller.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from aurion.db.driver import Db, Statement

# Claim the key: a new row, or take over an expired one. No row when a live one exists. A
# concurrent claim of the same key waits on the unique index until the other statement ends,
# then sees its key (and replays its response) or, if it rolled back, claims the key itself.
# Parameters: :workspace_id, :caller (the token's subject), :key, :fingerprint, :now,
# :expires_at.
CLAIM_CTE = """
claim AS (
    INSERT INTO idempotency_keys AS k
        (workspace_id, subject, key, fingerprint, created_at, expires_at)
    VALUES (:workspace_id, :caller, :key, :fingerprint, :now, :expires_at)
    ON CONFLICT (workspace_id, subject, key) DO UPDATE
        SET fingerprint = EXCLUDED.fingerprint, created_at = EXCLUDED.created_at,
            expires_at = EXCLUDED.expires_at
        WHERE k.expires_at <= EXCLUDED.created_at
    RETURNING 1
), gate AS (
    SELECT EXISTS (SELECT 1 FROM claim) AS claimed
)"""

UNCLAIMED_CTE = """
gate AS (
    SELECT true AS claimed
)"""


def response_cte(
    status_code: int,
    rendered: str,
    location_prefix: str | None,
    key: str = ":key",
    event_id: str | None = None,
) -> str:
    """Store the response of the CTE ``rendered`` (columns body, id, version: the body, and
    the created resource's id and version for ``Location`` and ``ETag``) for the key. Without
    a ``location_prefix`` (a response that is not one resource) there are no such headers.
    ``key`` is the key's SQL: the parameter, or a column of ``rendered`` (one key a row).

    ``event_id``: SQL (over ``rendered``'s row ``r``) of the event, written by the same
    statement, whose ``data -> 'conversation'`` is the body: the response refers to it instead
    of storing the object a second time (``STORED_SQL`` reads it back, the same bytes).

    Conflicts only with the response of an expired key this statement took over.
    """
    headers = (
        "'{}'::jsonb"
        if location_prefix is None
        else f"""jsonb_build_object('location', '{location_prefix}' || r.id,
                              'etag', '"' || r.version || '"')"""
    )
    body, event = ("r.body", "NULL::uuid") if event_id is None else ("NULL::bytea", event_id)
    return f"""
response AS (
    INSERT INTO idempotency_responses
        (workspace_id, subject, key, status_code, body, event_id, headers)
    SELECT :workspace_id, :caller, {key}, {status_code}, {body}, {event}, {headers}
    FROM {rendered} r
    ON CONFLICT (workspace_id, subject, key) DO UPDATE
        SET status_code = EXCLUDED.status_code, body = EXCLUDED.body,
            event_id = EXCLUDED.event_id, headers = EXCLUDED.headers
)"""


# The body of a response stored by reference is its event's object, as the event stored it.
STORED_SQL = Statement("""
SELECT k.fingerprint, r.status_code,
    coalesce(r.body, convert_to((e.data -> 'conversation')::text, 'UTF8')) AS body,
    r.headers::text AS headers
FROM idempotency_keys k
LEFT JOIN idempotency_responses r
    ON r.workspace_id = k.workspace_id AND r.subject = k.subject AND r.key = k.key
LEFT JOIN events e ON e.workspace_id = r.workspace_id AND e.id = r.event_id
WHERE k.workspace_id = :workspace_id AND k.subject = :caller AND k.key = :key
""")

# Maintenance across workspaces, in batches so no single statement holds many row locks.
# Batches are chosen by primary key (not ctid, which means nothing across Citus shards); the
# outer condition is checked again on a row a request took over meanwhile, which is kept.
PURGE_SQL = """
WITH gone AS (
    DELETE FROM idempotency_keys
    WHERE (workspace_id, subject, key) IN (
        SELECT workspace_id, subject, key FROM idempotency_keys WHERE expires_at <= $1 LIMIT $2
    ) AND expires_at <= $1
    RETURNING workspace_id, subject, key
), responses AS (
    DELETE FROM idempotency_responses r USING gone
    WHERE r.workspace_id = gone.workspace_id AND r.subject = gone.subject AND r.key = gone.key
)
SELECT count(*) FROM gone
"""


async def stored(db: Db, workspace_id: str, caller: str, key: str) -> dict[str, Any] | None:
    """The key's fingerprint and stored response (status_code None: none stored), or None."""
    row = await db.fetchrow(
        STORED_SQL, {"workspace_id": workspace_id, "caller": caller, "key": key}
    )
    if row is None:
        return None
    return {
        "fingerprint": row["fingerprint"],
        "status_code": row["status_code"],
        "body": bytes(row["body"] or b""),
        "headers": orjson.loads(row["headers"]) if row["headers"] else {},
    }


async def purge(conn: AsyncConnection, now: datetime, batch: int = 5000) -> int:
    """Delete one batch of expired keys and their responses; the number of keys deleted."""
    result = await conn.exec_driver_sql(PURGE_SQL, (now, batch))
    return int(result.scalar_one())
