"""DELETE: one statement (see the package docstring)."""

from __future__ import annotations

from typing import Any

from aurion.conversations.lifecycle.repository.common import (
    activities_insert,
    locked,
    needs_ids,
)
from aurion.conversations.rendering import RESOLVED
from aurion.db.driver import Db, Statement
from aurion.events.repository import event_cte

# ------------------------------------------------------------------ delete

DELETE_CONVERSATION = Statement(f"""
WITH {locked("(c.parent_id = :conversation_id AND c.deleted_at IS NULL)")},
cv AS (
    SELECT * FROM locked WHERE id = :conversation_id AND deleted_at IS NULL
), par AS (
    SELECT l.* FROM locked l JOIN cv ON l.id = cv.parent_id
), kids AS (
    SELECT * FROM locked
    WHERE parent_id = :conversation_id AND deleted_at IS NULL AND id <> :conversation_id
), f AS (
    SELECT cv.id, cv.version, cv.n_children + 2 AS ids_needed, CASE
        WHEN cv.id IS NULL THEN 'conversation_not_found'
        WHEN :if_match::int[] IS NOT NULL AND cv.version <> ALL(:if_match::int[])
            THEN 'precondition_failed'
        WHEN cv.parent_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM par) THEN 'retry'
        WHEN (SELECT count(*) FROM kids) <> cv.n_children THEN 'retry'
        {needs_ids("cv.n_children + 2", "cv.n_children + 1")}
    END AS refusal
    FROM (VALUES (1)) AS one(x) LEFT JOIN cv ON true
), ok AS (
    SELECT * FROM f WHERE refusal IS NULL
), plan AS (
    -- The conversation (deleted, its children gone), each child (detached), and its parent
    -- (one child fewer): one row each, one activity each.
    SELECT cv.id, 'deleted' AS kind,
           jsonb_build_object('children', (SELECT coalesce(jsonb_agg(id ORDER BY id), '[]')
                                           FROM kids)) AS payload,
           true AS deletes, false AS detaches, -cv.n_children AS d_children,
           -cv.n_open_children AS d_open, 0::bigint AS n
    FROM cv, ok
    UNION ALL
    SELECT k.id, 'parent_deleted', jsonb_build_object('parent_id', :conversation_id::uuid),
           false, true, 0, 0, row_number() OVER (ORDER BY k.id)
    FROM kids k, ok
    UNION ALL
    SELECT par.id, 'child_deleted', jsonb_build_object('child_id', :conversation_id::uuid),
           false, false, -1, -(cv.status NOT IN {RESOLVED})::int, cv.n_children + 1
    FROM par, cv, ok
), upd AS (
    UPDATE conversations c SET
        deleted_at = CASE WHEN p.deletes THEN :now ELSE c.deleted_at END,
        parent_id = CASE WHEN p.detaches THEN NULL ELSE c.parent_id END,
        n_children = c.n_children + p.d_children,
        n_open_children = c.n_open_children + p.d_open,
        n_activities = c.n_activities + 1,
        version = c.version + 1,
        updated_at = :now
    FROM plan p
    WHERE c.workspace_id = :workspace_id AND c.id = p.id
), {activities_insert("(SELECT id AS conversation_id, kind, payload, n FROM plan)")},{
    event_cte(
        "ev_deleted",
        "conversation.deleted",
        "(SELECT * FROM plan WHERE kind = 'deleted')",
        "(:event_ids::uuid[])[1]",
        "json_build_object('conversation_id', s.id, 'children', s.payload -> 'children')",
    )
},{
    event_cte(
        "ev_detached",
        "child.detached",
        "(SELECT * FROM plan WHERE kind = 'parent_deleted')",
        "(:event_ids::uuid[])[s.n + 1]",
        "json_build_object('conversation_id', s.id, 'parent_id', :conversation_id::uuid, "
        "'reason', 'parent_deleted')",
    )
}
SELECT CASE WHEN f.refusal IS NOT NULL THEN
    aurion_refuse(f.refusal, CASE f.refusal
        WHEN 'precondition_failed' THEN f.version::text
        WHEN 'more_ids' THEN f.ids_needed::text
    END) END AS refused
FROM f
""")


async def delete_conversation(db: Db, values: dict[str, Any]) -> Any:
    """Soft-delete a conversation and detach its children (values: workspace_id, caller,
    conversation_id, if_match, now, the id arrays)."""
    return await db.fetchrow(DELETE_CONVERSATION, values)
