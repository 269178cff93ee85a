"""Business rules of conversations: no HTTP here, and no commit (the request boundary commits)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import uuid_utils.compat as uuid7
from sqlalchemy.ext.asyncio import AsyncConnection

from aurion.auth.principal import Principal
from aurion.conversations import repository
from aurion.conversations.errors import (
    ChildrenLimitReached,
    ConversationNotFound,
    ParentArchived,
    ParentIsChild,
    ParentIsSpam,
    ParentMerged,
    PreconditionFailed,
)
from aurion.conversations.schemas import ConversationCreate

MAX_EMBEDDED_MESSAGES = 200
RESOLVED_STATUSES = frozenset({"resolved", "closed"})

# Row columns that are not part of the public object.
_PRIVATE_COLUMNS = frozenset(
    {"workspace_id", "n_messages", "n_activities", "n_children", "parent_version", "rn"}
)
_MESSAGE_PRIVATE = frozenset({"workspace_id", "conversation_id", "rn"})


def new_id() -> UUID:
    """A time-ordered UUID (v7): ids sort by creation, which keyset pagination relies on."""
    return uuid7.uuid7()


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class ConversationView:
    """A conversation as the API shows it: the row, its messages and its derived counters."""

    row: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)
    n_messages: int = 0
    n_activities: int = 0
    n_children: int = 0

    @property
    def version(self) -> int:
        return int(self.row["version"])

    @property
    def id(self) -> UUID:
        return UUID(str(self.row["id"]))

    def public(self) -> dict[str, Any]:
        """The public object (the seed's fields exactly)."""
        data = {k: v for k, v in self.row.items() if k not in _PRIVATE_COLUMNS}
        data["messages"] = self.messages
        data["tab_counts"] = {
            "activities": self.n_activities,
            "has_resolution": data["status"] in RESOLVED_STATUSES,
            "messages": self.n_messages,
            "related": self.n_children + (1 if data["parent_id"] is not None else 0),
        }
        return data


def _message(row: Any) -> dict[str, Any]:
    return {k: v for k, v in row._mapping.items() if k not in _MESSAGE_PRIVATE}


def etag_matches(if_match: str, version: int) -> bool:
    """RFC 9110 strong comparison of If-Match against the current ETag."""
    current = f'"{version}"'
    for candidate in if_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag == current:
            return True
    return False


async def create_child(
    conn: AsyncConnection,
    principal: Principal,
    parent_id: UUID,
    subject: str,
    *,
    if_match: str | None,
    max_children: int,
) -> ConversationView:
    """Create a child of ``parent_id`` that inherits its context (SPEC §2)."""
    workspace = principal.workspace_id
    parent = await repository.lock_parent(conn, workspace, parent_id)
    if parent is None:
        raise ConversationNotFound()
    if if_match is not None and not etag_matches(if_match, parent.version):
        raise PreconditionFailed(
            f'The conversation is at version "{parent.version}"; reload it and retry.'
        )
    if parent.merged_into_id is not None:
        raise ParentMerged(
            f"The conversation was merged into {parent.merged_into_id}; create the child there."
        )
    if parent.is_spam:
        raise ParentIsSpam()
    if parent.archived_at is not None:
        raise ParentArchived()
    if parent.parent_id is not None:
        raise ParentIsChild(
            f"The conversation is itself a child of {parent.parent_id}; "
            "children are one level deep."
        )

    child_id = new_id()
    created = now()
    activities: list[tuple[UUID, UUID, str, dict[str, Any]]] = [
        (new_id(), child_id, "created_from_parent", {"parent_id": str(parent_id)}),
        (new_id(), parent_id, "child_created", {"child_id": str(child_id), "subject": subject}),
    ]
    if parent.status in RESOLVED_STATUSES:
        activities.append(
            (
                new_id(),
                parent_id,
                "reopened",
                {
                    "from_status": parent.status,
                    "reason": "child_created",
                    "child_id": str(child_id),
                },
            )
        )
    row = await repository.create_child(
        conn,
        workspace_id=workspace,
        parent_id=parent_id,
        child_id=child_id,
        subject=subject,
        now=created,
        max_children=max_children,
        actor=principal.subject,
        activities=activities,
    )
    if row is None:
        raise ChildrenLimitReached(
            f"The conversation already has the maximum of {max_children} children."
        )
    # A fresh child's counters are known by construction: no messages, its one activity,
    # and one related conversation (the parent).
    return ConversationView(row=dict(row._mapping), n_activities=1)


async def create_conversation(
    conn: AsyncConnection, principal: Principal, body: ConversationCreate
) -> ConversationView:
    """Create a conversation (a potential parent) with optional initial messages."""
    workspace = principal.workspace_id
    conversation_id = new_id()
    created = now()
    fields = body.model_dump(exclude={"subject", "messages"})
    has_assignee = fields["assignee_user_id"] is not None or fields["assignee_team_id"] is not None
    row = await repository.insert_conversation(
        conn,
        workspace_id=workspace,
        conversation_id=conversation_id,
        subject=body.subject,
        now=created,
        assigned_at=created if has_assignee else None,
        fields=fields,
    )
    messages = [{**m.model_dump(), "id": new_id(), "created_at": created} for m in body.messages]
    await repository.insert_messages(
        conn, workspace_id=workspace, conversation_id=conversation_id, messages=messages
    )
    await repository.insert_activity(
        conn,
        workspace_id=workspace,
        activity_id=new_id(),
        conversation_id=conversation_id,
        kind="created",
        actor=principal.subject,
        payload={"messages": len(messages)},
        now=created,
    )
    embedded = [_public_message(m) for m in messages[-MAX_EMBEDDED_MESSAGES:]]
    return ConversationView(
        row=dict(row._mapping), messages=embedded, n_messages=len(messages), n_activities=1
    )


def _public_message(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": message["id"],
        "attachments": [],
        "body": message["body"],
        "body_html": message["body_html"],
        "content_type": message["content_type"],
        "conversation_version": 1,
        "created_at": message["created_at"],
        "is_internal": message["is_internal"],
        "metadata": message["metadata"],
        "original_body": None,
        "sender_id": message["sender_id"],
        "sender_type": message["sender_type"],
        "sentiment_label": None,
        "sentiment_score": None,
        "source": None,
        "source_message_id": None,
        "translated_body": None,
        "translation_target_language": None,
    }


def _view(row: Any, messages: list[dict[str, Any]]) -> ConversationView:
    return ConversationView(
        row=dict(row._mapping),
        messages=messages,
        n_messages=row.n_messages,
        n_activities=row.n_activities,
        n_children=row.n_children,
    )


async def get_conversation(
    conn: AsyncConnection, principal: Principal, conversation_id: UUID
) -> ConversationView:
    """One conversation with its newest messages and counters."""
    row = await repository.get_conversation(conn, principal.workspace_id, conversation_id)
    if row is None:
        raise ConversationNotFound()
    messages: list[dict[str, Any]] = []
    if row.n_messages:
        rows = await repository.newest_messages(
            conn, principal.workspace_id, conversation_id, MAX_EMBEDDED_MESSAGES
        )
        messages = [_message(m) for m in rows]
    return _view(row, messages)


def encode_cursor(last_id: UUID) -> str:
    return base64.urlsafe_b64encode(last_id.bytes).decode().rstrip("=")


def decode_cursor(cursor: str) -> UUID:
    """The id a cursor stands for; ValueError if it is not one this API returned."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return UUID(bytes=raw)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("is not a cursor this API returned") from exc


async def list_children(
    conn: AsyncConnection,
    principal: Principal,
    parent_id: UUID,
    *,
    limit: int,
    before: UUID | None,
) -> tuple[list[ConversationView], str | None]:
    """A page of a conversation's children, newest first, and the cursor of the next page."""
    workspace = principal.workspace_id
    if not await repository.conversation_exists(conn, workspace, parent_id):
        raise ConversationNotFound()
    rows = list(
        await repository.list_children(conn, workspace, parent_id, before=before, limit=limit + 1)
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].id)
    ids = [r.id for r in rows if r.n_messages]
    by_conversation: dict[UUID, list[dict[str, Any]]] = {}
    for m in await repository.newest_messages_of_many(conn, workspace, ids, MAX_EMBEDDED_MESSAGES):
        by_conversation.setdefault(m.conversation_id, []).append(_message(m))
    views = [_view(r, by_conversation.get(r.id, [])) for r in rows]
    return views, next_cursor
