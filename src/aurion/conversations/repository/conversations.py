"""Conversation creation and the reads: one statement each."""

from __future__ import annotations

from typing import Any, get_args
from uuid import UUID

from aurion.conversations.fields import Status
from aurion.conversations.rendering import (
    RESOLVED,
    body_sql,
    conversation_json_sql,
    message_json_sql,
    newest_messages_sql,
    rendered_cte,
)
from aurion.conversations.repository.columns import (
    CONVERSATIONS,
    LOCATION_PREFIX,
    MESSAGE_COLUMNS,
    MESSAGES,
    WRITABLE_COLUMNS,
    sql_type,
)
from aurion.db.driver import Db, Statement
from aurion.events.repository import event_cte
from aurion.idempotency.repository import CLAIM_CTE, UNCLAIMED_CTE, response_cte

# ------------------------------------------------------------------ conversation creation


def _param(name: str) -> str:
    return f":{name}::{sql_type(CONVERSATIONS, name)}"


def _message_array(name: str) -> str:
    return f":message_{name}::{sql_type(MESSAGES, name)}[]"


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
            "json_build_object('conversation_id', s.id, 'conversation', s.doc)",
        )
    }{response}
SELECT (SELECT claimed FROM gate) AS claimed, rendered.body
FROM (VALUES (1)) AS one(x) LEFT JOIN rendered ON true
""")


CREATE_CONVERSATION = _create_conversation_sql(UNCLAIMED_CTE, "")
CREATE_CONVERSATION_IDEMPOTENT = _create_conversation_sql(
    # The response refers to the conversation.created event, which carries the same object.
    CLAIM_CTE,
    "," + response_cte(201, "rendered", LOCATION_PREFIX, event_id=":event_id::uuid"),
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

_STATUS_COUNTS = ", ".join(
    f"'{status}', count(*) FILTER (WHERE status = '{status}')" for status in get_args(Status)
)

LIST_CHILDREN = Statement(f"""
WITH page AS (
    SELECT c.*, row_number() OVER (ORDER BY c.id DESC) AS rn
    FROM conversations c
    WHERE c.workspace_id = :workspace_id AND c.parent_id = :parent_id AND c.deleted_at IS NULL
      AND (:before::uuid IS NULL OR c.id < :before::uuid)
      AND (:statuses::text[] IS NULL OR c.status = ANY(:statuses::text[]))
    ORDER BY c.id DESC
    LIMIT :limit + 1
), summary AS (
    -- Over all the parent's children, whatever the filter and the cursor (SPEC §8.6).
    SELECT count(*) AS total, jsonb_build_object({_STATUS_COUNTS}) AS by_status,
           count(*) FILTER (WHERE status IN {RESOLVED}) AS done
    FROM conversations
    WHERE workspace_id = :workspace_id AND parent_id = :parent_id AND deleted_at IS NULL
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
    (array_agg(c.id ORDER BY c.id) FILTER (WHERE c.rn <= :limit))[1] AS last_id,
    (SELECT convert_to(jsonb_build_object(
        'total', total, 'by_status', by_status,
        'percent_resolved', CASE WHEN total = 0 THEN 0 ELSE done * 100 / total END)::text, 'UTF8')
     FROM summary) AS summary
FROM page c
""")


async def get_conversation(db: Db, workspace_id: str, conversation_id: UUID) -> Any:
    """The conversation rendered (``body``) with its ``version``, or None."""
    return await db.fetchrow(
        GET_CONVERSATION, {"workspace_id": workspace_id, "conversation_id": conversation_id}
    )


async def list_children(
    db: Db,
    workspace_id: str,
    parent_id: UUID,
    *,
    before: UUID | None,
    limit: int,
    statuses: list[str] | None = None,
) -> Any:
    """A page of children, newest first: ``found`` (the parent), ``items`` (rendered),
    ``more`` and ``last_id`` (for the next cursor), ``summary`` (rendered)."""
    return await db.fetchrow(
        LIST_CHILDREN,
        {
            "workspace_id": workspace_id,
            "parent_id": parent_id,
            "before": before,
            "limit": limit,
            "statuses": statuses,
        },
    )
