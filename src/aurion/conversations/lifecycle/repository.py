"""Every statement of the lifecycle operations: one statement per request, like child creation.

Each write locks every conversation it may change in ONE CTE ordered by id (``_locked``), so
two statements that touch the same conversations take their locks in the same order and never
deadlock. Which conversations those are is read first from the statement's snapshot (the
conversation's parent, its children); after the locks every check uses the locked, latest rows,
and a snapshot that turned out stale (a child created or moved in between, which the counters on
the locked row reveal) is refused as ``retry``: nothing was written, and the service runs the
statement again. Refusals raise ``aurion_refuse`` (SQLSTATE AUR01), which rolls everything back.

Ids of activities and events come from the service in two arrays (``activity_ids``,
``event_ids``); a statement that needs more (a cascade over many children) refuses with
``more_ids`` and the number it needs.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import DateTime

from aurion.conversations.lifecycle.schemas import PATCHABLE_COLUMNS, Activity
from aurion.conversations.models import Activity as ActivityRow
from aurion.conversations.models import Conversation as ConversationRow
from aurion.conversations.rendering import RESOLVED, newest_messages_sql, rendered_cte
from aurion.db.driver import Db, Statement
from aurion.db.json_sql import json_object_sql, schema_fields_sql, utc_timestamp_sql
from aurion.events.repository import event_cte

_conversations = ConversationRow.__table__
_activities = ActivityRow.__table__


def _locked(condition: str) -> str:
    """``snap`` (the conversation's parent in the snapshot) and ``locked``: the conversation,
    that parent and the rows of ``condition``, locked in id order."""
    return f"""snap AS (
    SELECT parent_id FROM conversations
    WHERE workspace_id = :workspace_id AND id = :conversation_id
), locked AS (
    SELECT c.* FROM conversations c
    WHERE c.workspace_id = :workspace_id
      AND (c.id = :conversation_id OR c.id = (SELECT parent_id FROM snap) OR {condition})
    ORDER BY c.id
    FOR NO KEY UPDATE
)"""


def _needs_ids(activities: str, events: str) -> str:
    """A refusal (``more_ids``) when the id arrays are shorter than what the statement writes."""
    return f"""WHEN cardinality(:activity_ids::uuid[]) < {activities}
              OR cardinality(:event_ids::uuid[]) < {events} THEN 'more_ids'"""


def _activities_insert(source: str) -> str:
    """Insert one activity per row of ``source`` (conversation_id, kind, payload, n): its id is
    ``activity_ids[n + 1]``."""
    return f"""activity AS (
    INSERT INTO activities (workspace_id, id, conversation_id, kind, actor, payload, created_at)
    SELECT :workspace_id, (:activity_ids::uuid[])[a.n + 1], a.conversation_id, a.kind, :caller,
           a.payload, :now
    FROM {source} a
)"""


# ------------------------------------------------------------------ update (PATCH)

# The fields a PATCH can change, as the API shows them (times formatted), to name the changes.
_COMPARED = (*PATCHABLE_COLUMNS, "archived_at")


def _fields_json(alias: str) -> str:
    pairs = {}
    for name in _COMPARED:
        expr = f"{alias}.{name}"
        is_time = isinstance(_conversations.c[name].type, DateTime)
        pairs[name] = utc_timestamp_sql(expr) if is_time else expr
    return json_object_sql(pairs)


_SET_COLUMNS = (*PATCHABLE_COLUMNS, "archived_at")
_ASSIGNEE_CHANGED = " OR ".join(
    f"(n.{c} IS NOT NULL AND n.{c} IS DISTINCT FROM o.{c})"
    for c in ("assignee_user_id", "assignee_team_id")
)

UPDATE_CONVERSATION = Statement(f"""
WITH {_locked(":lock_children AND c.parent_id = :conversation_id AND c.deleted_at IS NULL")},
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
        {_needs_ids("o.n_open_children + 2", "o.n_open_children + 2")}
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
), {_activities_insert("acts")}, result AS (
    SELECT * FROM upd
    UNION ALL
    SELECT o.* FROM o WHERE NOT EXISTS (SELECT 1 FROM ok)
), {rendered_cte("result", newest_messages_sql("result"))},{
    event_cte(
        "ev_updated",
        "conversation.updated",
        "(SELECT r.*, ok.changes FROM rendered r, ok)",
        "(:event_ids::uuid[])[1]",
        "jsonb_build_object('conversation_id', s.id, 'changes', s.changes, 'conversation', s.doc)",
    )
},{
    event_cte(
        "ev_reopened",
        "parent.reopened",
        "(SELECT * FROM acts WHERE kind = 'reopened')",
        "(:event_ids::uuid[])[s.n + 1]",
        "jsonb_build_object('conversation_id', s.conversation_id, 'reason', 'child_reopened', "
        "'child_id', :conversation_id::uuid)",
    )
},{
    event_cte(
        "ev_auto",
        "parent.resolved_automatically",
        "(SELECT * FROM acts WHERE kind = 'resolved_automatically')",
        "(:event_ids::uuid[])[s.n + 1]",
        "jsonb_build_object('conversation_id', s.conversation_id, "
        "'reason', 'all_children_resolved', 'child_id', :conversation_id::uuid)",
    )
},{
    event_cte(
        "ev_cascade",
        "child.resolved_with_parent",
        "(SELECT * FROM acts WHERE kind = 'resolved_with_parent')",
        "(:event_ids::uuid[])[s.n + 1]",
        "jsonb_build_object('conversation_id', s.conversation_id, "
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


# ------------------------------------------------------------------ delete

DELETE_CONVERSATION = Statement(f"""
WITH {_locked("(c.parent_id = :conversation_id AND c.deleted_at IS NULL)")},
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
        {_needs_ids("cv.n_children + 2", "cv.n_children + 1")}
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
), {_activities_insert("(SELECT id AS conversation_id, kind, payload, n FROM plan)")},{
    event_cte(
        "ev_deleted",
        "conversation.deleted",
        "(SELECT * FROM plan WHERE kind = 'deleted')",
        "(:event_ids::uuid[])[1]",
        "jsonb_build_object('conversation_id', s.id, 'children', s.payload -> 'children')",
    )
},{
    event_cte(
        "ev_detached",
        "child.detached",
        "(SELECT * FROM plan WHERE kind = 'parent_deleted')",
        "(:event_ids::uuid[])[s.n + 1]",
        "jsonb_build_object('conversation_id', s.id, 'parent_id', :conversation_id::uuid, "
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


# ------------------------------------------------------------------ attach, move, detach

SET_PARENT = Statement(f"""
WITH {_locked("c.id = :new_parent_id")},
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
), {_activities_insert("acts")}, result AS (
    SELECT * FROM upd WHERE id = :conversation_id
    UNION ALL
    SELECT cv.* FROM cv WHERE NOT EXISTS (SELECT 1 FROM ok)
), {rendered_cte("result", newest_messages_sql("result"))},{
    event_cte(
        "ev_detached",
        "child.detached",
        "(SELECT * FROM acts WHERE kind = 'child_detached')",
        "(:event_ids::uuid[])[1]",
        "jsonb_build_object('conversation_id', :conversation_id::uuid, "
        "'parent_id', s.conversation_id)",
    )
},{
    event_cte(
        "ev_attached",
        "child.attached",
        "(SELECT * FROM acts WHERE kind = 'child_attached')",
        "(:event_ids::uuid[])[2]",
        "jsonb_build_object('conversation_id', :conversation_id::uuid, "
        "'parent_id', s.conversation_id)",
    )
},{
    event_cte(
        "ev_reopened",
        "parent.reopened",
        "(SELECT * FROM acts WHERE kind = 'reopened')",
        "(:event_ids::uuid[])[3]",
        "jsonb_build_object('conversation_id', s.conversation_id, 'reason', 'child_attached', "
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
        json_agg({json_object_sql(schema_fields_sql(Activity, _activities, "a", {}))}
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
