"""The activity log: one statement."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aurion.conversations.lifecycle.repository.common import (
    ACTIVITIES,
)
from aurion.conversations.lifecycle.schemas import Activity
from aurion.db.driver import Db, Statement
from aurion.db.json_sql import json_object_sql, schema_fields_sql

# ------------------------------------------------------------------ activity log

LIST_ACTIVITIES = Statement(f"""
WITH page AS (
    SELECT a.*, row_number() OVER (ORDER BY a.created_at DESC, a.id DESC) AS rn
    FROM activities a
    WHERE a.workspace_id = :workspace_id AND a.conversation_id = :conversation_id
      AND (:before::uuid IS NULL OR (a.created_at, a.id) < (
          SELECT b.created_at, b.id FROM activities b
          WHERE b.workspace_id = :workspace_id AND b.conversation_id = :conversation_id
            AND b.id = :before::uuid))
    ORDER BY a.created_at DESC, a.id DESC
    LIMIT :limit + 1
)
SELECT EXISTS (
        SELECT 1 FROM conversations
        WHERE workspace_id = :workspace_id AND id = :conversation_id AND deleted_at IS NULL
    ) AS found,
    convert_to(coalesce(
        json_agg({json_object_sql(schema_fields_sql(Activity, ACTIVITIES, "a", {}))}
                 ORDER BY a.rn) FILTER (WHERE a.rn <= :limit),
        '[]'::json)::text, 'UTF8') AS items,
    count(*) > :limit AS more,
    (array_agg(a.id ORDER BY a.rn DESC) FILTER (WHERE a.rn <= :limit))[1] AS last_id
FROM page a
""")


async def list_activities(
    db: Db, workspace_id: str, conversation_id: UUID, *, before: UUID | None, limit: int
) -> Any:
    """A page of a conversation's activities, newest first: ``found``, ``items`` (rendered),
    ``more`` and ``last_id``."""
    return await db.fetchrow(
        LIST_ACTIVITIES,
        {
            "workspace_id": workspace_id,
            "conversation_id": conversation_id,
            "before": before,
            "limit": limit,
        },
    )
