"""The yardstick's SQL: one fixed child-creation statement, the benchmark's own.

The bare reference (bench/reference_app.py) and pgbench run it; the ORM version copies the
same columns. It does NOT follow the service's SQL: it is what the cheapest honest endpoint
does for a child (copy the parent's inherited columns into a new row, write the two
activities) in one autocommitted statement, with no lock, no limit, no idempotency and no
parent bump. The service is measured against it, so it must not change when the service does.
"""

from __future__ import annotations

# The columns a child copies from its parent (SPEC §2's inheritance table).
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

_copied = ", ".join(INHERITED_COLUMNS)
_from_parent = ", ".join(f"p.{c}" for c in INHERITED_COLUMNS)

# $1 workspace, $2 parent id, $3 child id, $4 subject, $5 actor, $6 and $7 the ids of the
# child's `created_from_parent` and the parent's `child_created` activity. Returns the child
# row, or no row when the parent does not exist.
CREATE_CHILD_SQL = f"""
WITH child AS (
    INSERT INTO conversations (
        workspace_id, id, parent_id, subject, status, version, source, created_at, updated_at,
        assigned_at, {_copied}
    )
    SELECT p.workspace_id, $3, p.id, $4, 'open', 1, 'child', now(), now(),
           CASE WHEN p.assignee_user_id IS NOT NULL OR p.assignee_team_id IS NOT NULL
                THEN now() END,
           {_from_parent}
    FROM conversations p
    WHERE p.workspace_id = $1 AND p.id = $2
    RETURNING *
), activity AS (
    INSERT INTO activities (workspace_id, id, conversation_id, kind, actor, payload, created_at)
    SELECT c.workspace_id, a.id, a.conversation_id, a.kind, $5, a.payload, c.created_at
    FROM child c, LATERAL (VALUES
        ($6::uuid, c.id, 'created_from_parent', jsonb_build_object('parent_id', c.parent_id)),
        ($7::uuid, c.parent_id, 'child_created',
         jsonb_build_object('child_id', c.id, 'subject', c.subject))
    ) AS a(id, conversation_id, kind, payload)
)
SELECT * FROM child
"""
