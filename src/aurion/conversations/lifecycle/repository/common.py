"""Fragments the lifecycle statements share: the locks, the activity inserts."""

from __future__ import annotations

from aurion.conversations.models import Activity as ActivityRow
from aurion.conversations.models import Conversation as ConversationRow

CONVERSATIONS = ConversationRow.__table__
ACTIVITIES = ActivityRow.__table__


def locked(condition: str) -> str:
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


def needs_ids(activities: str, events: str) -> str:
    """A refusal (``more_ids``) when the id arrays are shorter than what the statement writes."""
    return f"""WHEN cardinality(:activity_ids::uuid[]) < {activities}
              OR cardinality(:event_ids::uuid[]) < {events} THEN 'more_ids'"""


def activities_insert(source: str) -> str:
    """Insert one activity per row of ``source`` (conversation_id, kind, payload, n): its id is
    ``activity_ids[n + 1]``."""
    return f"""activity AS (
    INSERT INTO activities (workspace_id, id, conversation_id, kind, actor, payload, created_at)
    SELECT :workspace_id, (:activity_ids::uuid[])[a.n + 1], a.conversation_id, a.kind, :caller,
           a.payload, :now
    FROM {source} a
)"""
