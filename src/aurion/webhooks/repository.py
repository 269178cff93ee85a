"""Every query of webhooks: the API's (one statement each, filtered on the workspace) and the
delivery worker's (across workspaces: dispatch new events, claim due attempts, record them).

On Citus, where a statement across workspaces runs on every shard and ``SKIP LOCKED`` across
shards is refused, the worker dispatches and claims one workspace at a time: the same
statements, with ``AND workspace_id = :workspace_id`` (the ``*_IN_WORKSPACE`` variants), each
on the shard of its workspace, for the workspaces ``WEBHOOK_WORKSPACES`` lists."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aurion.db.driver import Db, Statement
from aurion.db.json_sql import json_object_sql, utc_timestamp_sql
from aurion.events.repository import HORIZON_SQL, event_json_sql


def webhook_json_sql(alias: str, *, secret: bool = False) -> str:
    pairs = {
        "id": f"{alias}.id",
        "url": f"{alias}.url",
        "types": f"to_json({alias}.types)",
        "description": f"{alias}.description",
        "created_at": utc_timestamp_sql(f"{alias}.created_at"),
    }
    if secret:
        pairs["secret"] = f"{alias}.secret"
    return json_object_sql(pairs)


def _timestamp_or_null(expr: str) -> str:
    return f"CASE WHEN {expr} IS NULL THEN NULL ELSE {utc_timestamp_sql(expr)} END"


def delivery_json_sql(alias: str) -> str:
    return json_object_sql(
        {
            "event_id": f"{alias}.event_id",
            "attempt": f"{alias}.attempt",
            "status": f"{alias}.status",
            "http_status": f"{alias}.http_status",
            "duration_ms": f"{alias}.duration_ms",
            "attempted_at": _timestamp_or_null(f"{alias}.attempted_at"),
            "next_attempt_at": _timestamp_or_null(f"{alias}.next_attempt_at"),
        }
    )


# ------------------------------------------------------------------ the API

# A new webhook starts at the horizon: it gets the events of every transaction that had not
# ended when it was registered, and everything after.
# Rendered from the RETURNING row in the outer query: Citus allows only immutable functions in
# a RETURNING clause (to_char is stable).
CREATE = Statement(f"""
WITH created AS (
    INSERT INTO webhooks (
        workspace_id, id, url, types, description, secret, created_at, cursor_txid, cursor_id
    )
    VALUES (
        :workspace_id, :id, :url, :types::text[], :description, :secret, :now, {HORIZON_SQL},
        '00000000-0000-0000-0000-000000000000'
    )
    RETURNING *
)
SELECT convert_to(({webhook_json_sql("created", secret=True)})::text, 'UTF8') AS body
FROM created
""")

LIST = Statement(f"""
SELECT convert_to(coalesce(
    json_agg({webhook_json_sql("w")} ORDER BY w.created_at, w.id), '[]'::json)::text, 'UTF8'
) AS items
FROM webhooks w WHERE w.workspace_id = :workspace_id
""")

DELETE = Statement("""
DELETE FROM webhooks WHERE workspace_id = :workspace_id AND id = :id RETURNING id
""")

DELIVERIES = Statement(f"""
WITH page AS (
    SELECT d.*, row_number() OVER (ORDER BY d.id DESC) AS rn
    FROM webhook_deliveries d
    WHERE d.workspace_id = :workspace_id AND d.webhook_id = :webhook_id
      AND (:before::bigint IS NULL OR d.id < :before::bigint)
    ORDER BY d.id DESC
    LIMIT :limit + 1
)
SELECT EXISTS (
        SELECT 1 FROM webhooks WHERE workspace_id = :workspace_id AND id = :webhook_id
    ) AS found,
    convert_to(coalesce(
        json_agg({delivery_json_sql("d")} ORDER BY d.id DESC) FILTER (WHERE d.rn <= :limit),
        '[]'::json)::text, 'UTF8') AS items,
    count(*) > :limit AS more,
    min(d.id) FILTER (WHERE d.rn <= :limit) AS last_id
FROM page d
""")


async def create(db: Db, values: dict[str, Any]) -> bytes:
    row = await db.fetchrow(CREATE, values)
    assert row is not None
    body: bytes = row["body"]
    return body


async def list_all(db: Db, workspace_id: str) -> bytes:
    row = await db.fetchrow(LIST, {"workspace_id": workspace_id})
    assert row is not None
    items: bytes = row["items"]
    return items


async def delete(db: Db, workspace_id: str, webhook_id: UUID) -> bool:
    """Delete a webhook and its deliveries (pending ones included); False if there was none."""
    return await db.fetchrow(DELETE, {"workspace_id": workspace_id, "id": webhook_id}) is not None


async def deliveries(
    db: Db, workspace_id: str, webhook_id: UUID, *, before: int | None, limit: int
) -> Any:
    """A page of attempts, newest first: ``found`` (the webhook), ``items``, ``more``,
    ``last_id``."""
    return await db.fetchrow(
        DELIVERIES,
        {"workspace_id": workspace_id, "webhook_id": webhook_id, "before": before, "limit": limit},
    )


# ------------------------------------------------------------------ the delivery worker

# A delivery's id, named rather than left to the column's identity default: on Citus a write
# runs on the workspace's shard (aurion.db.delegation), whose column has no default; the
# sequence, on each node with a range of its own, is the same one the default would use.
NEXT_DELIVERY_ID = "nextval(pg_get_serial_sequence('webhook_deliveries', 'id'))"


# Turns new events into first attempts, per webhook, by the feed's gap-free order: the events
# after the webhook's cursor and below the horizon (see events.repository.FEED for why that
# never skips an event that commits late). The webhook rows are locked (SKIP LOCKED: another
# process works on those), only those with something new, so an idle poll writes nothing;
# the cursor moves past exactly the events read, in the statement that creates their
# attempts: each event becomes one delivery per matching webhook, once (the unique key is a
# second guard). Events of types a webhook does not want are passed over.
def _dispatch_sql(in_workspace: str) -> str:
    return f"""
WITH hook AS (
    SELECT w.workspace_id, w.id, w.types, w.cursor_txid, w.cursor_id
    FROM webhooks w
    WHERE {in_workspace.format(alias="w")}EXISTS (
        SELECT 1 FROM events e
        WHERE e.workspace_id = w.workspace_id
          AND (e.txid, e.id) > (w.cursor_txid, w.cursor_id) AND e.txid < {HORIZON_SQL}
    )
    ORDER BY w.workspace_id, w.id
    LIMIT :webhooks
    FOR NO KEY UPDATE SKIP LOCKED
), picked AS (
    SELECT hook.workspace_id, hook.id AS webhook_id, hook.types, e.id AS event_id, e.txid,
           e.type
    FROM hook CROSS JOIN LATERAL (
        SELECT e.id, e.txid, e.type FROM events e
        WHERE e.workspace_id = hook.workspace_id
          AND (e.txid, e.id) > (hook.cursor_txid, hook.cursor_id) AND e.txid < {HORIZON_SQL}
        ORDER BY e.txid, e.id
        LIMIT :events
    ) e
), queued AS (
    INSERT INTO webhook_deliveries (
        id, workspace_id, webhook_id, event_id, attempt, status, created_at, next_attempt_at
    ) OVERRIDING SYSTEM VALUE
    SELECT {NEXT_DELIVERY_ID}, p.workspace_id, p.webhook_id, p.event_id, 1, 'pending', now(),
           now()
    FROM picked p WHERE p.type = ANY(p.types)
    ON CONFLICT DO NOTHING
    RETURNING 1
), last AS (
    SELECT DISTINCT ON (workspace_id, webhook_id) workspace_id, webhook_id, txid, event_id
    FROM picked
    ORDER BY workspace_id, webhook_id, txid DESC, event_id DESC
), moved AS (
    UPDATE webhooks w SET cursor_txid = last.txid, cursor_id = last.event_id
    FROM last WHERE w.workspace_id = last.workspace_id AND w.id = last.webhook_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM queued) AS queued, (SELECT count(*) FROM moved) AS webhooks
"""


DISPATCH = Statement(_dispatch_sql(""))


# Claims due attempts for this process: locked with SKIP LOCKED (rows another process is
# claiming are skipped; once it commits, its lease keeps them out of every later claim, as
# the lease is rechecked on the latest row version), leased, and returned with what sending
# needs. The lease outlasts an attempt (timeout + margin); only a process that died mid-send
# leaves one to expire, and then the attempt is sent again: at least once.
def _claim_sql(in_workspace: str) -> str:
    return f"""
WITH due AS (
    SELECT d.workspace_id, d.id FROM webhook_deliveries d
    WHERE {in_workspace.format(alias="d")}d.status = 'pending' AND d.next_attempt_at <= now()
      AND (d.leased_until IS NULL OR d.leased_until < now())
    ORDER BY d.next_attempt_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE webhook_deliveries d
    SET leased_until = now() + make_interval(secs => :lease_seconds), lease_id = :lease_id
    FROM due WHERE d.workspace_id = due.workspace_id AND d.id = due.id
    RETURNING d.id, d.workspace_id, d.webhook_id, d.event_id, d.attempt
)
SELECT c.id, c.workspace_id, c.webhook_id, c.event_id, c.attempt, w.url, w.secret,
       convert_to(({event_json_sql("e")})::text, 'UTF8') AS body
FROM claimed c
JOIN webhooks w ON w.workspace_id = c.workspace_id AND w.id = c.webhook_id
JOIN events e ON e.workspace_id = c.workspace_id AND e.id = c.event_id
"""


CLAIM = Statement(_claim_sql(""))

# The same, one workspace at a time (Citus), and the workspaces to go through.
_IN_WORKSPACE = "{alias}.workspace_id = :workspace_id AND "
DISPATCH_IN_WORKSPACE = Statement(_dispatch_sql(_IN_WORKSPACE))
CLAIM_IN_WORKSPACE = Statement(_claim_sql(_IN_WORKSPACE))
WEBHOOK_WORKSPACES = Statement("SELECT DISTINCT workspace_id FROM webhooks")
# Before that statement, in its transaction: a database that forbids statements on several
# shards (as `make test-citus` does, to catch any on the request path) lets this one through.
ACROSS_SHARDS = Statement("SET LOCAL citus.multi_task_query_log_level = 'off'")

# Records an attempt's outcome, if this process still holds its lease, and queues the next
# attempt when one is due.
RECORD = Statement(f"""
WITH done AS (
    UPDATE webhook_deliveries d SET
        status = :status, http_status = :http_status, duration_ms = :duration_ms,
        error = :error, attempted_at = :attempted_at, next_attempt_at = :next_attempt_at,
        leased_until = NULL, lease_id = NULL
    WHERE d.workspace_id = :workspace_id AND d.id = :id AND d.lease_id = :lease_id
    RETURNING d.workspace_id, d.webhook_id, d.event_id, d.attempt
), retry AS (
    INSERT INTO webhook_deliveries (
        id, workspace_id, webhook_id, event_id, attempt, status, created_at, next_attempt_at
    ) OVERRIDING SYSTEM VALUE
    SELECT {NEXT_DELIVERY_ID}, done.workspace_id, done.webhook_id, done.event_id,
           done.attempt + 1, 'pending', :attempted_at, :next_attempt_at
    FROM done WHERE :next_attempt_at::timestamptz IS NOT NULL
    ON CONFLICT DO NOTHING
)
SELECT count(*) AS recorded FROM done
""")
