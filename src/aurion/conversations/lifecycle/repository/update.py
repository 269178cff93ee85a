"""PATCH: one statement (see the package docstring)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import DateTime

from aurion.conversations.lifecycle.repository.common import (
    CONVERSATIONS,
    activities_insert,
    locked,
    needs_ids,
)
from aurion.conversations.lifecycle.schemas import PATCHABLE_COLUMNS
from aurion.conversations.rendering import RESOLVED, newest_messages_sql, rendered_cte
from aurion.db.driver import Db, Statement
from aurion.db.json_sql import json_object_sql, utc_timestamp_sql
from aurion.events.repository import event_cte

# ------------------------------------------------------------------ update (PATCH)

# The fields a PATCH can change, as the API shows them (times formatted), to name the changes.
_COMPARED = (*PATCHABLE_COLUMNS, "archived_at")


def _fields_json(alias: str) -> str:
    pairs = {}
    for name in _COMPARED:
        expr = f"{alias}.{name}"
        is_time = isinstance(CONVERSATIONS.c[name].type, DateTime)
        pairs[name] = utc_timestamp_sql(expr) if is_time else expr
    return json_object_sql(pairs)


_SET_COLUMNS = (*PATCHABLE_COLUMNS, "archived_at")
_ASSIGNEE_CHANGED = " OR ".join(
    f"(n.{c} IS NOT NULL AND n.{c} IS DISTINCT FROM o.{c})"
    for c in ("assignee_user_id", "assignee_team_id")
)

UPDATE_CONVERSATION = Statement(f"""
WITH {locked(":lock_children AND c.parent_id = :conversation_id AND c.deleted_at IS NULL")},
o AS (
    SELECT * FROM locked WHERE id = :conversation_id AND deleted_at IS NULL
), par AS (
    SELECT l.* FROM locked l JOIN o ON l.id = o.parent_id
), kids AS (
    SELECT * FROM locked WHERE parent_id = :conversation_id AND deleted_at IS NULL
), n AS (
    -- The conversation as the PATCH makes it: the body's fields over the locked row.
    SELECT n.* FROM o CROSS JOIN LATERAL jsonb_populate_record(NULL::conversations,
        to_jsonb(o) || :patch::jsonb || jsonb_build_object('archived_at',
            CASE WHEN :archived::boolean IS NULL THEN o.archived_at
                 WHEN :archived::boolean THEN coalesce(o.archived_at, :now) END)) n
), diff AS (
    SELECT coalesce(jsonb_object_agg(k, jsonb_build_object('old', ov.j -> k, 'new', nv.j -> k)),
                    '{{}}'::jsonb) AS changes
    FROM (SELECT ({_fields_json("o")})::jsonb AS j FROM o) ov,
         (SELECT ({_fields_json("n")})::jsonb AS j FROM n) nv,
         unnest(:fields::text[]) AS k
    WHERE ov.j -> k IS DISTINCT FROM nv.j -> k
), f AS (
    SELECT o.id, o.status AS old_status, n.status AS new_status, diff.changes,
        diff.changes <> '{{}}'::jsonb AS changed,
        CASE
        WHEN o.id IS NULL THEN 'conversation_not_found'
        WHEN :if_match::int[] IS NOT NULL AND o.version <> ALL(:if_match::int[])
            THEN 'precondition_failed'
        -- moved, or children added or moved, between the snapshot and the locks
        WHEN o.parent_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM par) THEN 'retry'
        WHEN :lock_children AND (
            (SELECT count(*) FROM kids) <> o.n_children
            OR (SELECT count(*) FROM kids WHERE status NOT IN {RESOLVED}) <> o.n_open_children)
            THEN 'retry'
        WHEN diff.changes ? 'status' AND n.status IN {RESOLVED} AND o.n_open_children > 0
             AND NOT :cascade THEN 'open_children'
        {needs_ids("o.n_open_children + 2", "o.n_open_children + 2")}
        END AS refusal,
        o.version, o.n_open_children + 2 AS ids_needed,
        (SELECT string_agg(id::text, ',' ORDER BY id) FROM kids
         WHERE status NOT IN {RESOLVED}) AS open_child_ids
    FROM (VALUES (1)) AS one(x) LEFT JOIN o ON true LEFT JOIN n ON true CROSS JOIN diff
), ok AS (
    SELECT * FROM f WHERE refusal IS NULL AND changed
), moves AS (
    SELECT ok.old_status NOT IN {RESOLVED} AND ok.new_status IN {RESOLVED} AS resolves,
           ok.old_status IN {RESOLVED} AND ok.new_status NOT IN {RESOLVED} AS reopens
    FROM ok
), cascading AS (
    SELECT k.* FROM kids k, ok
    WHERE ok.changes ? 'status' AND ok.new_status IN {RESOLVED} AND k.status NOT IN {RESOLVED}
), rel AS (
    -- The parent of a child that crossed the resolved line: its open-children counter, and
    -- its own status when it is reopened or resolved automatically.
    SELECT par.id, t.status AS new_status, t.d_open, t.kind, t.payload
    FROM par, moves CROSS JOIN LATERAL (SELECT
        CASE WHEN moves.reopens AND par.status IN {RESOLVED} THEN 'open'
             WHEN moves.resolves AND :auto_resolve AND par.n_open_children = 1
                  AND par.status NOT IN {RESOLVED} THEN 'resolved'
             ELSE par.status END AS status,
        CASE WHEN moves.reopens THEN 1 ELSE -1 END AS d_open,
        CASE WHEN moves.reopens AND par.status IN {RESOLVED} THEN 'reopened'
             WHEN moves.resolves AND :auto_resolve AND par.n_open_children = 1
                  AND par.status NOT IN {RESOLVED} THEN 'resolved_automatically'
        END AS kind,
        CASE WHEN moves.reopens
             THEN jsonb_build_object('reason', 'child_reopened', 'child_id', :conversation_id::uuid,
                                     'from_status', par.status)
             ELSE jsonb_build_object('reason', 'all_children_resolved',
                                     'child_id', :conversation_id::uuid) END AS payload
    ) t
    WHERE moves.resolves OR moves.reopens
    UNION ALL
    SELECT k.id, ok.new_status, 0, 'resolved_with_parent',
           jsonb_build_object('parent_id', :conversation_id::uuid, 'from_status', k.status)
    FROM cascading k, ok
), upd AS (
    UPDATE conversations c SET
        ({", ".join(_SET_COLUMNS)}) = ({", ".join(f"n.{col}" for col in _SET_COLUMNS)}),
        assigned_at = CASE WHEN {_ASSIGNEE_CHANGED} THEN :now ELSE c.assigned_at END,
        n_open_children = c.n_open_children - (SELECT count(*) FROM cascading),
        n_activities = c.n_activities + 1,
        version = c.version + 1,
        updated_at = :now
    FROM n, o, ok
    WHERE c.workspace_id = :workspace_id AND c.id = :conversation_id
    RETURNING c.*
), upd_rel AS (
    UPDATE conversations c SET
        status = r.new_status,
        n_open_children = c.n_open_children + r.d_open,
        n_activities = c.n_activities + (r.kind IS NOT NULL)::int,
        version = c.version + (r.kind IS NOT NULL)::int,
        updated_at = CASE WHEN r.kind IS NOT NULL THEN :now ELSE c.updated_at END
    FROM rel r
    WHERE c.workspace_id = :workspace_id AND c.id = r.id
), acts AS (
    SELECT :conversation_id::uuid AS conversation_id, 'updated' AS kind,
           jsonb_build_object('changes', ok.changes) AS payload, 0::bigint AS n
    FROM ok
    UNION ALL
    SELECT r.id, r.kind, r.payload, row_number() OVER (ORDER BY r.id)
    FROM rel r WHERE r.kind IS NOT NULL
), {activities_insert("acts")}, result AS (
    SELECT * FROM upd
    UNION ALL
    SELECT o.* FROM o WHERE NOT EXISTS (SELECT 1 FROM ok)
), {rendered_cte("result", newest_messages_sql("result"))},{
    event_cte(
        "ev_updated",
        "conversation.updated",
        "(SELECT r.*, ok.changes FROM rendered r, ok)",
        "(:event_ids::uuid[])[1]",
        "json_build_object('conversation_id', s.id, 'changes', s.changes, 'conversation', s.doc)",
    )
},{
    event_cte(
        "ev_reopened",
        "parent.reopened",
        "(SELECT * FROM acts WHERE kind = 'reopened')",
        "(:event_ids::uuid[])[s.n + 1]",
        "json_build_object('conversation_id', s.conversation_id, 'reason', 'child_reopened', "
        "'child_id', :conversation_id::uuid)",
    )
},{
    event_cte(
        "ev_auto",
        "parent.resolved_automatically",
        "(SELECT * FROM acts WHERE kind = 'resolved_automatically')",
        "(:event_ids::uuid[])[s.n + 1]",
        "json_build_object('conversation_id', s.conversation_id, "
        "'reason', 'all_children_resolved', 'child_id', :conversation_id::uuid)",
    )
},{
    event_cte(
        "ev_cascade",
        "child.resolved_with_parent",
        "(SELECT * FROM acts WHERE kind = 'resolved_with_parent')",
        "(:event_ids::uuid[])[s.n + 1]",
        "json_build_object('conversation_id', s.conversation_id, "
        "'parent_id', :conversation_id::uuid)",
    )
}
SELECT rendered.body, rendered.version, CASE WHEN f.refusal IS NOT NULL THEN
    aurion_refuse(f.refusal, CASE f.refusal
        WHEN 'precondition_failed' THEN f.version::text
        WHEN 'open_children' THEN f.open_child_ids
        WHEN 'more_ids' THEN f.ids_needed::text
    END) END AS refused
FROM f LEFT JOIN rendered ON true
""")


async def update_conversation(db: Db, values: dict[str, Any]) -> Any:
    """Apply a PATCH (values: workspace_id, caller, conversation_id, patch (jsonb text),
    fields, archived, if_match, cascade, auto_resolve, lock_children, now, the id arrays):
    ``body`` and ``version`` of the conversation as it is now."""
    return await db.fetchrow(UPDATE_CONVERSATION, values)
