"""Every query of the conversations domain.

The statements are plain PostgreSQL in asyncpg's ``$n`` style, run on the request's connection
with ``exec_driver_sql``: no per-request compilation, and the very same text is what the
benchmark's raw-asyncpg reference and pgbench run (``bench/``). Each one filters on
``workspace_id`` first.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

# Columns a child copies from its parent, as they are (the inheritance table of SPEC §2).
INHERITED_COLUMNS: tuple[str, ...] = (
    "company_id",
    "company_name",
    "contact_id",
    "contact_name",
    "contact_email",
    "contact_phone",
    "contact_role",
    "channel",
    "conversation_type",
    "category",
    "sub_category",
    "priority",
    "urgency",
    "impact",
    "department_id",
    "assignee_team_id",
    "assignee_team_name",
    "assignee_user_id",
    "assignee_user_name",
    "tags",
    "custom_attrs",
    "ai_language",
    "sla_first_response_due",
    "sla_resolution_due",
    "sla_state",
)

# Columns a client may set when creating a conversation (besides subject and messages).
WRITABLE_COLUMNS: tuple[str, ...] = (
    "status",
    "priority",
    "urgency",
    "impact",
    "category",
    "sub_category",
    "channel",
    "source",
    "source_thread_id",
    "conversation_type",
    "company_id",
    "company_name",
    "contact_id",
    "contact_name",
    "contact_email",
    "contact_phone",
    "contact_role",
    "department_id",
    "assignee_team_id",
    "assignee_team_name",
    "assignee_user_id",
    "assignee_user_name",
    "tags",
    "custom_attrs",
    "ai_language",
    "sla_first_response_due",
    "sla_resolution_due",
    "sla_state",
    "planned_start",
    "planned_end",
    "planned_effort_minutes",
)
_JSON_COLUMNS = {"custom_attrs"}

_copied = ", ".join(INHERITED_COLUMNS)
_copied_from_p = ", ".join(f"p.{c}" for c in INHERITED_COLUMNS)

# The parent's row, locked for the rest of the transaction so that concurrent child creations
# under one parent run one after another: the count in CREATE_CHILD_SQL then sees every
# committed sibling, which makes the children limit race-free. NO KEY UPDATE does not block
# the foreign-key checks of the child rows.
LOCK_PARENT_SQL = """
SELECT id, parent_id, merged_into_id, is_spam, archived_at, status, version
FROM conversations
WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL
FOR NO KEY UPDATE
"""

# One round trip for every write of a child creation. $1 workspace, $2 parent id, $3 child id,
# $4 subject, $5 now, $6 the children limit, $7..$10 the activities (ids, conversation ids,
# kinds, JSON payloads), $11 the actor. Returns no row when the limit is reached.
CREATE_CHILD_SQL = f"""
WITH siblings AS (
    SELECT count(*) AS n FROM conversations
    WHERE workspace_id = $1 AND parent_id = $2 AND deleted_at IS NULL
), child AS (
    INSERT INTO conversations (
        workspace_id, id, parent_id, subject, status, version, created_at, updated_at,
        source, assigned_at, {_copied}
    )
    SELECT
        p.workspace_id, $3, p.id, $4, 'open', 1, $5, $5,
        'child',
        CASE WHEN p.assignee_user_id IS NOT NULL OR p.assignee_team_id IS NOT NULL
             THEN $5::timestamptz END,
        {_copied_from_p}
    FROM conversations p, siblings
    WHERE p.workspace_id = $1 AND p.id = $2 AND siblings.n < $6
    RETURNING *
), parent AS (
    UPDATE conversations p
    SET version = p.version + 1,
        updated_at = $5,
        status = CASE WHEN p.status IN ('resolved', 'closed') THEN 'open' ELSE p.status END
    FROM child
    WHERE p.workspace_id = $1 AND p.id = $2
    RETURNING p.version
), activity AS (
    INSERT INTO activities (workspace_id, id, conversation_id, kind, actor, payload, created_at)
    SELECT $1, a.id, a.conversation_id, a.kind, $11, a.payload::jsonb, $5
    FROM unnest($7::uuid[], $8::uuid[], $9::text[], $10::text[])
         AS a(id, conversation_id, kind, payload)
    WHERE EXISTS (SELECT 1 FROM child)
)
SELECT child.*, (SELECT version FROM parent) AS parent_version FROM child
"""

INSERT_CONVERSATION_SQL = f"""
INSERT INTO conversations (
    workspace_id, id, subject, version, created_at, updated_at, assigned_at,
    {", ".join(WRITABLE_COLUMNS)}
) VALUES (
    $1, $2, $3, 1, $4, $4, $5,
    {
    ", ".join(
        f"${i}::jsonb" if c in _JSON_COLUMNS else f"${i}"
        for i, c in enumerate(WRITABLE_COLUMNS, start=6)
    )
}
)
RETURNING *
"""

INSERT_MESSAGES_SQL = """
INSERT INTO messages (
    workspace_id, id, conversation_id, conversation_version, body, body_html, content_type,
    sender_type, sender_id, is_internal, metadata, created_at
)
SELECT $1, m.id, $2, 1, m.body, m.body_html, m.content_type, m.sender_type, m.sender_id,
       m.is_internal, m.metadata::jsonb, m.created_at
FROM unnest($3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::bool[], $10::text[], $11::timestamptz[])
     AS m(id, body, body_html, content_type, sender_type, sender_id, is_internal, metadata,
          created_at)
"""

INSERT_ACTIVITY_SQL = """
INSERT INTO activities (workspace_id, id, conversation_id, kind, actor, payload, created_at)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)
"""

# The row plus its derived counters, in one statement.
GET_CONVERSATION_SQL = """
SELECT c.*,
    (SELECT count(*) FROM messages m
      WHERE m.workspace_id = $1 AND m.conversation_id = c.id) AS n_messages,
    (SELECT count(*) FROM activities a
      WHERE a.workspace_id = $1 AND a.conversation_id = c.id) AS n_activities,
    (SELECT count(*) FROM conversations k
      WHERE k.workspace_id = $1 AND k.parent_id = c.id
        AND k.deleted_at IS NULL) AS n_children
FROM conversations c
WHERE c.workspace_id = $1 AND c.id = $2 AND c.deleted_at IS NULL
"""

# The newest $3 messages of each conversation in $2, oldest first within a conversation.
NEWEST_MESSAGES_SQL = """
SELECT * FROM (
    SELECT m.*, row_number() OVER (
        PARTITION BY m.conversation_id ORDER BY m.created_at DESC, m.id DESC) AS rn
    FROM messages m
    WHERE m.workspace_id = $1 AND m.conversation_id = ANY($2::uuid[])
) newest
WHERE rn <= $3
ORDER BY conversation_id, created_at, id
"""

NEWEST_MESSAGES_ONE_SQL = """
SELECT * FROM (
    SELECT m.* FROM messages m
    WHERE m.workspace_id = $1 AND m.conversation_id = $2
    ORDER BY m.created_at DESC, m.id DESC
    LIMIT $3
) newest
ORDER BY created_at, id
"""

LIST_CHILDREN_SQL = """
SELECT c.*,
    (SELECT count(*) FROM messages m
      WHERE m.workspace_id = $1 AND m.conversation_id = c.id) AS n_messages,
    (SELECT count(*) FROM activities a
      WHERE a.workspace_id = $1 AND a.conversation_id = c.id) AS n_activities,
    (SELECT count(*) FROM conversations k
      WHERE k.workspace_id = $1 AND k.parent_id = c.id
        AND k.deleted_at IS NULL) AS n_children
FROM conversations c
WHERE c.workspace_id = $1 AND c.parent_id = $2 AND c.deleted_at IS NULL
  AND ($3::uuid IS NULL OR c.id < $3::uuid)
ORDER BY c.id DESC
LIMIT $4
"""

EXISTS_SQL = """
SELECT 1 FROM conversations WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL
"""


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def lock_parent(conn: AsyncConnection, workspace_id: str, parent_id: UUID) -> Row[Any] | None:
    """The parent's state, locked until the transaction ends; None if it is not visible."""
    result = await conn.exec_driver_sql(LOCK_PARENT_SQL, (workspace_id, parent_id))
    return result.first()


async def create_child(
    conn: AsyncConnection,
    *,
    workspace_id: str,
    parent_id: UUID,
    child_id: UUID,
    subject: str,
    now: datetime,
    max_children: int,
    actor: str,
    activities: Sequence[tuple[UUID, UUID, str, dict[str, Any]]],
) -> Row[Any] | None:
    """Insert the child, bump the parent, log the activities; None when the limit is reached."""
    result = await conn.exec_driver_sql(
        CREATE_CHILD_SQL,
        (
            workspace_id,
            parent_id,
            child_id,
            subject,
            now,
            max_children,
            [a[0] for a in activities],
            [a[1] for a in activities],
            [a[2] for a in activities],
            [_json(a[3]) for a in activities],
            actor,
        ),
    )
    return result.first()


async def insert_conversation(
    conn: AsyncConnection,
    *,
    workspace_id: str,
    conversation_id: UUID,
    subject: str,
    now: datetime,
    assigned_at: datetime | None,
    fields: dict[str, Any],
) -> Row[Any]:
    """Insert a conversation with the given writable fields."""
    values = [_json(fields[c]) if c in _JSON_COLUMNS else fields[c] for c in WRITABLE_COLUMNS]
    result = await conn.exec_driver_sql(
        INSERT_CONVERSATION_SQL,
        (workspace_id, conversation_id, subject, now, assigned_at, *values),
    )
    return result.one()


async def insert_messages(
    conn: AsyncConnection,
    *,
    workspace_id: str,
    conversation_id: UUID,
    messages: Sequence[dict[str, Any]],
) -> None:
    """Insert messages (dicts with id, body, ..., created_at) in one statement."""
    if not messages:
        return
    columns = ("id", "body", "body_html", "content_type", "sender_type", "sender_id", "is_internal")
    arrays: list[list[Any]] = [[m[c] for m in messages] for c in columns]
    arrays.append([_json(m["metadata"]) for m in messages])
    arrays.append([m["created_at"] for m in messages])
    await conn.exec_driver_sql(INSERT_MESSAGES_SQL, (workspace_id, conversation_id, *arrays))


async def insert_activity(
    conn: AsyncConnection,
    *,
    workspace_id: str,
    activity_id: UUID,
    conversation_id: UUID,
    kind: str,
    actor: str,
    payload: dict[str, Any],
    now: datetime,
) -> None:
    await conn.exec_driver_sql(
        INSERT_ACTIVITY_SQL,
        (workspace_id, activity_id, conversation_id, kind, actor, _json(payload), now),
    )


async def get_conversation(
    conn: AsyncConnection, workspace_id: str, conversation_id: UUID
) -> Row[Any] | None:
    """The conversation with its derived counters, or None."""
    result = await conn.exec_driver_sql(GET_CONVERSATION_SQL, (workspace_id, conversation_id))
    return result.first()


async def newest_messages(
    conn: AsyncConnection, workspace_id: str, conversation_id: UUID, limit: int
) -> Sequence[Row[Any]]:
    """At most ``limit`` newest messages of one conversation, oldest first."""
    result = await conn.exec_driver_sql(
        NEWEST_MESSAGES_ONE_SQL, (workspace_id, conversation_id, limit)
    )
    return result.all()


async def newest_messages_of_many(
    conn: AsyncConnection, workspace_id: str, conversation_ids: Sequence[UUID], limit: int
) -> Sequence[Row[Any]]:
    """At most ``limit`` newest messages of each conversation, oldest first."""
    if not conversation_ids:
        return []
    result = await conn.exec_driver_sql(
        NEWEST_MESSAGES_SQL, (workspace_id, list(conversation_ids), limit)
    )
    return result.all()


async def conversation_exists(
    conn: AsyncConnection, workspace_id: str, conversation_id: UUID
) -> bool:
    result = await conn.exec_driver_sql(EXISTS_SQL, (workspace_id, conversation_id))
    return result.first() is not None


async def list_children(
    conn: AsyncConnection,
    workspace_id: str,
    parent_id: UUID,
    *,
    before: UUID | None,
    limit: int,
) -> Sequence[Row[Any]]:
    """Children of a parent, newest first (ids are time-ordered), after the cursor."""
    result = await conn.exec_driver_sql(LIST_CHILDREN_SQL, (workspace_id, parent_id, before, limit))
    return result.all()
