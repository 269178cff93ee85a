"""Attach, move, detach (PUT parent): one statement (see the package docstring)."""

from __future__ import annotations

from typing import Any

from aurion.conversations.lifecycle.repository.common import (
    activities_insert,
    locked,
)
from aurion.conversations.rendering import RESOLVED, newest_messages_sql, rendered_cte
from aurion.db.driver import Db, Statement
from aurion.events.repository import event_cte

# ------------------------------------------------------------------ attach, move, detach

SET_PARENT = Statement(f"""
WITH {locked("c.id = :new_parent_id")},
cv AS (
    SELECT * FROM locked WHERE id = :conversation_id AND deleted_at IS NULL
), op AS (
    SELECT l.* FROM locked l JOIN cv ON l.id = cv.parent_id
), np AS (
    SELECT * FROM locked
    WHERE id = :new_parent_id AND deleted_at IS NULL AND id <> :conversation_id
), f AS (
    SELECT cv.id, cv.version, np.merged_into_id, np.parent_id AS np_parent_id,
        cv.parent_id IS DISTINCT FROM :new_parent_id::uuid AS changed,
        cv.status NOT IN {RESOLVED} AS is_open, CASE
        WHEN cv.id IS NULL THEN 'conversation_not_found'
        WHEN :if_match::int[] IS NOT NULL AND cv.version <> ALL(:if_match::int[])
            THEN 'precondition_failed'
        WHEN cv.parent_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM op) THEN 'retry'
        WHEN cv.parent_id IS NOT DISTINCT FROM :new_parent_id::uuid
             OR :new_parent_id::uuid IS NULL THEN NULL
        -- the refusals of child creation, on the new parent
        WHEN np.id IS NULL THEN 'parent_not_found'
        WHEN np.merged_into_id IS NOT NULL THEN 'parent_merged'
        WHEN np.is_spam THEN 'parent_is_spam'
        WHEN np.archived_at IS NOT NULL THEN 'parent_archived'
        WHEN np.parent_id IS NOT NULL THEN 'parent_is_child'
        WHEN cv.n_children > 0 THEN 'conversation_has_children'
        WHEN np.n_children >= :max_children THEN 'children_limit_reached'
    END AS refusal
    FROM (VALUES (1)) AS one(x) LEFT JOIN cv ON true LEFT JOIN np ON true
), ok AS (
    SELECT * FROM f WHERE refusal IS NULL AND changed
), plan AS (
    -- The conversation, its old parent and its new one: one row each, with their activities.
    SELECT cv.id, true AS moves, 0 AS d_children, 0 AS d_open, cv.status AS new_status,
        jsonb_build_array(jsonb_build_object(
            'kind', 'parent_changed',
            'payload', jsonb_build_object('from', cv.parent_id, 'to', :new_parent_id::uuid)
        )) AS acts, 0 AS n
    FROM cv, ok
    UNION ALL
    SELECT op.id, false, -1, -ok.is_open::int, op.status,
        jsonb_build_array(jsonb_build_object(
            'kind', 'child_detached', 'payload', jsonb_build_object('child_id', cv.id)
        )), 1
    FROM op, cv, ok
    UNION ALL
    SELECT np.id, false, 1, ok.is_open::int,
        CASE WHEN ok.is_open AND np.status IN {RESOLVED} THEN 'open' ELSE np.status END,
        jsonb_build_array(jsonb_build_object(
            'kind', 'child_attached', 'payload', jsonb_build_object('child_id', cv.id)
        )) || CASE WHEN ok.is_open AND np.status IN {RESOLVED} THEN jsonb_build_array(
            jsonb_build_object('kind', 'reopened', 'payload', jsonb_build_object(
                'reason', 'child_attached', 'child_id', cv.id, 'from_status', np.status)))
        ELSE '[]'::jsonb END, 2
    FROM np, cv, ok
), upd AS (
    UPDATE conversations c SET
        parent_id = CASE WHEN p.moves THEN :new_parent_id::uuid ELSE c.parent_id END,
        status = p.new_status,
        n_children = c.n_children + p.d_children,
        n_open_children = c.n_open_children + p.d_open,
        n_activities = c.n_activities + jsonb_array_length(p.acts),
        version = c.version + 1,
        updated_at = :now
    FROM plan p
    WHERE c.workspace_id = :workspace_id AND c.id = p.id
    RETURNING c.*
), acts AS (
    SELECT p.id AS conversation_id, a.value ->> 'kind' AS kind, a.value -> 'payload' AS payload,
        row_number() OVER (ORDER BY p.n, a.i) - 1 AS n
    FROM plan p CROSS JOIN LATERAL jsonb_array_elements(p.acts) WITH ORDINALITY AS a(value, i)
), {activities_insert("acts")}, result AS (
    SELECT * FROM upd WHERE id = :conversation_id
    UNION ALL
    SELECT cv.* FROM cv WHERE NOT EXISTS (SELECT 1 FROM ok)
), {rendered_cte("result", newest_messages_sql("result"))},{
    event_cte(
        "ev_detached",
        "child.detached",
        "(SELECT * FROM acts WHERE kind = 'child_detached')",
        "(:event_ids::uuid[])[1]",
        "json_build_object('conversation_id', :conversation_id::uuid, "
        "'parent_id', s.conversation_id)",
    )
},{
    event_cte(
        "ev_attached",
        "child.attached",
        "(SELECT * FROM acts WHERE kind = 'child_attached')",
        "(:event_ids::uuid[])[2]",
        "json_build_object('conversation_id', :conversation_id::uuid, "
        "'parent_id', s.conversation_id)",
    )
},{
    event_cte(
        "ev_reopened",
        "parent.reopened",
        "(SELECT * FROM acts WHERE kind = 'reopened')",
        "(:event_ids::uuid[])[3]",
        "json_build_object('conversation_id', s.conversation_id, 'reason', 'child_attached', "
        "'child_id', :conversation_id::uuid)",
    )
}
SELECT rendered.body, rendered.version, CASE WHEN f.refusal IS NOT NULL THEN
    aurion_refuse(f.refusal, CASE f.refusal
        WHEN 'precondition_failed' THEN f.version::text
        WHEN 'parent_merged' THEN f.merged_into_id::text
        WHEN 'parent_is_child' THEN f.np_parent_id::text
    END) END AS refused
FROM f LEFT JOIN rendered ON true
""")


async def set_parent(db: Db, values: dict[str, Any]) -> Any:
    """Attach, move or detach a conversation (values: workspace_id, caller, conversation_id,
    new_parent_id, max_children, if_match, now, the id arrays): ``body`` and ``version``."""
    return await db.fetchrow(SET_PARENT, values)
