"""Every query of the conversations domain: one statement per request.

Each write is a single statement on the request's driver connection (``aurion.db.driver``),
which PostgreSQL runs as a transaction of its own: it claims the Idempotency-Key (if any),
locks and checks what it changes, writes, renders the public object as JSON and stores that
response with the key. A refusal is diagnosed on the locked, latest row and raised by
``aurion_refuse`` (SQLSTATE AUR01), which rolls the whole statement back, key included.
Reads render their JSON in PostgreSQL too, from the counters kept on the row. Every statement
filters on ``workspace_id`` first.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy.dialects import postgresql

from aurion.conversations.models import Conversation as ConversationRow
from aurion.conversations.models import Message as MessageRow
from aurion.conversations.schemas import Conversation, ConversationCreate, MessageRead
from aurion.db.driver import Db, Statement
from aurion.db.json_sql import json_object_sql, schema_fields_sql
from aurion.events.repository import event_cte
from aurion.idempotency.repository import CLAIM_CTE, UNCLAIMED_CTE, response_cte

MAX_EMBEDDED_MESSAGES = 200
RESOLVED = "('resolved', 'closed')"
LOCATION_PREFIX = "/api/v2/conversations/"

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

# Columns a client may set when creating a conversation: the create schema's fields.
WRITABLE_COLUMNS: tuple[str, ...] = tuple(
    name for name in ConversationCreate.model_fields if name not in ("subject", "messages")
)
MESSAGE_COLUMNS = (
    "id",
    "body",
    "body_html",
    "content_type",
    "sender_type",
    "sender_id",
    "is_internal",
    "metadata",
)

_conversations = ConversationRow.__table__
_messages = MessageRow.__table__


_dialect = postgresql.dialect()  # type: ignore[no-untyped-call]


def _sql_type(table: Any, column: str) -> str:
    return str(table.c[column].type.compile(dialect=_dialect))


# ------------------------------------------------------------------ rendering (the public object)


def message_json_sql(alias: str) -> str:
    return json_object_sql(schema_fields_sql(MessageRead, _messages, alias, {}))


def conversation_json_sql(alias: str, messages: str) -> str:
    """The public object of the conversation row ``alias``, with ``messages`` (json) embedded."""
    tab_counts = json_object_sql(
        {
            "activities": f"{alias}.n_activities",
            "has_resolution": f"{alias}.status IN {RESOLVED}",
            "messages": f"{alias}.n_messages",
            "related": f"{alias}.n_children + ({alias}.parent_id IS NOT NULL)::int",
        }
    )
    return json_object_sql(
        schema_fields_sql(
            Conversation, _conversations, alias, {"messages": messages, "tab_counts": tab_counts}
        )
    )


def newest_messages_sql(alias: str) -> str:
    """The newest messages of ``alias`` (at most 200), oldest first, as a json array."""
    return f"""CASE WHEN {alias}.n_messages = 0 THEN '[]'::json ELSE (
        SELECT json_agg({message_json_sql("m")} ORDER BY m.created_at, m.id)
        FROM (SELECT * FROM messages
              WHERE workspace_id = {alias}.workspace_id AND conversation_id = {alias}.id
              ORDER BY created_at DESC, id DESC
              LIMIT {MAX_EMBEDDED_MESSAGES}) m) END"""


def rendered_cte(source: str, messages: str) -> str:
    """The CTE ``rendered``: ``doc`` (json, for events) and ``body`` (the response's bytes),
    with the object's ``id`` and ``version``, for each row of ``source``."""
    return f"""rendered AS (
    SELECT r.doc, convert_to(r.doc::text, 'UTF8') AS body, r.id, r.version
    FROM (SELECT {conversation_json_sql(source, messages)} AS doc, {source}.id, {source}.version
          FROM {source}) r
)"""


def body_sql(alias: str, messages: str) -> str:
    return f"convert_to(({conversation_json_sql(alias, messages)})::text, 'UTF8')"


# ------------------------------------------------------------------ child creation

_copied = ", ".join(INHERITED_COLUMNS)
_copied_from_ok = ", ".join(f"ok.{c}" for c in INHERITED_COLUMNS)


def _create_child_sql(claim: str, response: str) -> Statement:
    return Statement(f"""
WITH {claim},
p AS (
    -- The parent, locked: a concurrent creation under it waits here and then reads the
    -- latest version, so every check below (the children counter above all) is current.
    SELECT * FROM conversations
    WHERE workspace_id = :workspace_id AND id = :parent_id AND deleted_at IS NULL
      AND (SELECT claimed FROM gate)
    FOR NO KEY UPDATE
), checked AS (
    SELECT p.*, CASE
        WHEN NOT (SELECT claimed FROM gate) THEN NULL
        WHEN p.id IS NULL THEN 'conversation_not_found'
        WHEN :if_match::int[] IS NOT NULL AND p.version <> ALL(:if_match::int[])
            THEN 'precondition_failed'
        WHEN p.merged_into_id IS NOT NULL THEN 'parent_merged'
        WHEN p.is_spam THEN 'parent_is_spam'
        WHEN p.archived_at IS NOT NULL THEN 'parent_archived'
        WHEN p.parent_id IS NOT NULL THEN 'parent_is_child'
        WHEN p.n_children >= :max_children THEN 'children_limit_reached'
    END AS refusal
    FROM (VALUES (1)) AS one(x) LEFT JOIN p ON true
), ok AS (
    SELECT * FROM checked WHERE refusal IS NULL AND id IS NOT NULL
), parent AS (
    UPDATE conversations c SET
        version = c.version + 1,
        updated_at = :now,
        n_children = c.n_children + 1,
        n_open_children = c.n_open_children + 1,
        n_activities = c.n_activities + CASE WHEN c.status IN {RESOLVED} THEN 2 ELSE 1 END,
        status = CASE WHEN c.status IN {RESOLVED} THEN 'open' ELSE c.status END
    FROM ok
    WHERE c.workspace_id = :workspace_id AND c.id = :parent_id
), child AS (
    INSERT INTO conversations (
        workspace_id, id, parent_id, subject, status, version, created_at, updated_at,
        source, assigned_at, n_activities, {_copied}
    )
    SELECT :workspace_id, :child_id, ok.id, :subject, 'open', 1, :now, :now,
        'child',
        CASE WHEN ok.assignee_user_id IS NOT NULL OR ok.assignee_team_id IS NOT NULL
             THEN :now::timestamptz END,
        1, {_copied_from_ok}
    FROM ok
    RETURNING *
), activity AS (
    INSERT INTO activities (workspace_id, id, conversation_id, kind, actor, payload, created_at)
    SELECT :workspace_id, a.id, a.conversation_id, a.kind, :caller, a.payload, :now
    FROM ok CROSS JOIN LATERAL (VALUES
        ((:activity_ids::uuid[])[1], :child_id::uuid, 'created_from_parent',
         jsonb_build_object('parent_id', ok.id)),
        ((:activity_ids::uuid[])[2], ok.id, 'child_created',
         jsonb_build_object('child_id', :child_id::uuid, 'subject', :subject::text)),
        ((:activity_ids::uuid[])[3], ok.id, 'reopened',
         jsonb_build_object('from_status', ok.status, 'reason', 'child_created',
                            'child_id', :child_id::uuid))
    ) AS a(id, conversation_id, kind, payload)
    WHERE a.kind <> 'reopened' OR ok.status IN {RESOLVED}
), {rendered_cte("child", "'[]'::json")},{
        event_cte(
            "child_created",
            "child.created",
            "rendered",
            "(:event_ids::uuid[])[1]",
            "jsonb_build_object('conversation_id', s.id, 'parent_id', :parent_id::uuid, "
            "'conversation', s.doc)",
        )
    },{
        event_cte(
            "parent_reopened",
            "parent.reopened",
            f"(SELECT * FROM ok WHERE status IN {RESOLVED})",
            "(:event_ids::uuid[])[2]",
            "jsonb_build_object('conversation_id', s.id, 'reason', 'child_created', "
            "'child_id', :child_id::uuid)",
        )
    }{response}
SELECT (SELECT claimed FROM gate) AS claimed, rendered.body, CASE
    WHEN checked.refusal IS NOT NULL THEN aurion_refuse(checked.refusal, CASE checked.refusal
        WHEN 'precondition_failed' THEN checked.version::text
        WHEN 'parent_merged' THEN checked.merged_into_id::text
        WHEN 'parent_is_child' THEN checked.parent_id::text
    END) END AS refused
FROM checked LEFT JOIN rendered ON true
""")


CREATE_CHILD = _create_child_sql(UNCLAIMED_CTE, "")
CREATE_CHILD_IDEMPOTENT = _create_child_sql(
    CLAIM_CTE, "," + response_cte(201, "rendered", LOCATION_PREFIX)
)


async def create_child(db: Db, values: dict[str, Any], *, idempotent: bool) -> Any:
    """Create a child (values: workspace_id, caller, parent_id, child_id, subject, now,
    max_children, if_match, activity_ids, and the claim's). The row has ``claimed`` (false:
    the key is taken, nothing was written) and ``body`` (the child, rendered)."""
    return await db.fetchrow(CREATE_CHILD_IDEMPOTENT if idempotent else CREATE_CHILD, values)


# ------------------------------------------------------------------ conversation creation


def _param(name: str) -> str:
    return f":{name}::{_sql_type(_conversations, name)}"


def _message_array(name: str) -> str:
    return f":message_{name}::{_sql_type(_messages, name)}[]"


_message_params = ", ".join(_message_array(c) for c in MESSAGE_COLUMNS)


def _create_conversation_sql(claim: str, response: str) -> Statement:
    return Statement(f"""
WITH {claim},
conversation AS (
    INSERT INTO conversations (
        workspace_id, id, subject, version, created_at, updated_at, assigned_at,
        n_messages, n_activities, {", ".join(WRITABLE_COLUMNS)}
    )
    SELECT :workspace_id, :conversation_id, :subject, 1, :now, :now, :assigned_at::timestamptz,
        cardinality(:message_id::uuid[]), 1, {", ".join(_param(c) for c in WRITABLE_COLUMNS)}
    WHERE (SELECT claimed FROM gate)
    RETURNING *
), message AS (
    INSERT INTO messages (
        workspace_id, conversation_id, conversation_version, {", ".join(MESSAGE_COLUMNS)},
        created_at
    )
    SELECT :workspace_id, conversation.id, 1, m.{", m.".join(MESSAGE_COLUMNS)}, :now
    FROM conversation,
         unnest({_message_params}) WITH ORDINALITY AS m({", ".join(MESSAGE_COLUMNS)}, n)
    RETURNING *
), activity AS (
    INSERT INTO activities (workspace_id, id, conversation_id, kind, actor, payload, created_at)
    SELECT :workspace_id, :activity_id, conversation.id, 'created', :caller,
           jsonb_build_object('messages', conversation.n_messages), :now
    FROM conversation
), {
        rendered_cte(
            "conversation",
            f"(SELECT coalesce(json_agg({message_json_sql('m')} ORDER BY m.id), '[]'::json)"
            " FROM message m)",
        )
    },{
        event_cte(
            "conversation_created",
            "conversation.created",
            "rendered",
            ":event_id::uuid",
            "jsonb_build_object('conversation_id', s.id, 'conversation', s.doc)",
        )
    }{response}
SELECT (SELECT claimed FROM gate) AS claimed, rendered.body
FROM (VALUES (1)) AS one(x) LEFT JOIN rendered ON true
""")


CREATE_CONVERSATION = _create_conversation_sql(UNCLAIMED_CTE, "")
CREATE_CONVERSATION_IDEMPOTENT = _create_conversation_sql(
    CLAIM_CTE, "," + response_cte(201, "rendered", LOCATION_PREFIX)
)


async def create_conversation(db: Db, values: dict[str, Any], *, idempotent: bool) -> Any:
    """Insert a conversation, its messages (``message_<column>`` arrays) and its activity."""
    statement = CREATE_CONVERSATION_IDEMPOTENT if idempotent else CREATE_CONVERSATION
    return await db.fetchrow(statement, values)


# ------------------------------------------------------------------ reads

GET_CONVERSATION = Statement(f"""
SELECT {body_sql("c", newest_messages_sql("c"))} AS body, c.version
FROM conversations c
WHERE c.workspace_id = :workspace_id AND c.id = :conversation_id AND c.deleted_at IS NULL
""")

LIST_CHILDREN = Statement(f"""
WITH page AS (
    SELECT c.*, row_number() OVER (ORDER BY c.id DESC) AS rn
    FROM conversations c
    WHERE c.workspace_id = :workspace_id AND c.parent_id = :parent_id AND c.deleted_at IS NULL
      AND (:before::uuid IS NULL OR c.id < :before::uuid)
    ORDER BY c.id DESC
    LIMIT :limit + 1
)
SELECT EXISTS (
        SELECT 1 FROM conversations
        WHERE workspace_id = :workspace_id AND id = :parent_id AND deleted_at IS NULL
    ) AS found,
    convert_to(coalesce(
        json_agg({conversation_json_sql("c", newest_messages_sql("c"))} ORDER BY c.id DESC)
            FILTER (WHERE c.rn <= :limit),
        '[]'::json)::text, 'UTF8') AS items,
    count(*) > :limit AS more,
    (array_agg(c.id ORDER BY c.id) FILTER (WHERE c.rn <= :limit))[1] AS last_id
FROM page c
""")


async def get_conversation(db: Db, workspace_id: str, conversation_id: UUID) -> Any:
    """The conversation rendered (``body``) with its ``version``, or None."""
    return await db.fetchrow(
        GET_CONVERSATION, {"workspace_id": workspace_id, "conversation_id": conversation_id}
    )


async def list_children(
    db: Db, workspace_id: str, parent_id: UUID, *, before: UUID | None, limit: int
) -> Any:
    """A page of children, newest first: ``found`` (the parent), ``items`` (rendered),
    ``more`` and ``last_id`` (for the next cursor)."""
    return await db.fetchrow(
        LIST_CHILDREN,
        {"workspace_id": workspace_id, "parent_id": parent_id, "before": before, "limit": limit},
    )
