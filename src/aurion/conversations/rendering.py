"""The public objects rendered as JSON by PostgreSQL: SQL fragments the statements embed.

Which fields an object has comes from its read schema (``db.json_sql.schema_fields_sql``), so
the rendering and the OpenAPI document cannot disagree; tests/conversations/test_contract.py
validates every endpoint's body against the schema.
"""

from __future__ import annotations

from aurion.conversations.models import Conversation as ConversationRow
from aurion.conversations.models import Message as MessageRow
from aurion.conversations.schemas import Conversation, MessageRead
from aurion.db.json_sql import json_object_sql, schema_fields_sql

MAX_EMBEDDED_MESSAGES = 200
RESOLVED = "('resolved', 'closed')"

_conversations = ConversationRow.__table__
_messages = MessageRow.__table__


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
    """The newest messages of ``alias`` (at most 200), oldest first, as a json array.

    The workspace is the statement's parameter, not ``alias.workspace_id``: Citus routes a
    correlated sub-query to one shard only when it pins the distribution column to a value
    (with the column of the outer row it ran GET on all 32 shards, and refused the children
    page outright: "correlated subqueries are not supported when the FROM clause contains a
    CTE or subquery")."""
    return f"""CASE WHEN {alias}.n_messages = 0 THEN '[]'::json ELSE (
        SELECT json_agg({message_json_sql("m")} ORDER BY m.created_at, m.id)
        FROM (SELECT * FROM messages
              WHERE workspace_id = :workspace_id AND conversation_id = {alias}.id
              ORDER BY created_at DESC, id DESC
              LIMIT {MAX_EMBEDDED_MESSAGES}) m) END"""


def rendered_cte(source: str, messages: str) -> str:
    """The CTE ``rendered``: ``doc`` (json, for events) and ``body`` (the response's bytes),
    with the object's ``id`` and ``version``, for each row of ``source``."""
    return rendered_from(f"(SELECT {rendering_sql(source, messages)} FROM {source})")


def rendering_sql(alias: str, messages: str) -> str:
    """The conversation row ``alias`` as ``doc``, ``id`` and ``version``: a select list, or
    the RETURNING list of an ``INSERT INTO conversations AS alias`` (then ``rendered_from``
    that statement's CTE). Rendered as the row is inserted, it is not carried whole (70-odd
    columns) into another CTE first: about 8 % less of PostgreSQL's CPU for a coalesced child
    creation of 1-6 children, measured interleaved, medians of 300."""
    return f"{conversation_json_sql(alias, messages)} AS doc, {alias}.id, {alias}.version"


def rendered_from(source: str) -> str:
    """The CTE ``rendered`` of ``source``'s ``doc``, ``id`` and ``version`` (``rendering_sql``)."""
    return f"""rendered AS (
    SELECT r.doc, convert_to(r.doc::text, 'UTF8') AS body, r.id, r.version
    FROM {source} r
)"""


def body_sql(alias: str, messages: str) -> str:
    return f"convert_to(({conversation_json_sql(alias, messages)})::text, 'UTF8')"
