"""Business rules of the lifecycle operations: no HTTP, no commit (each write is one statement).

The rules run in the statements of repository.py, under the locks of the conversations they
change; this module prepares their values, runs a statement again when it found its snapshot
stale (``retry``) or needs more ids (``more_ids``), and maps refusals to errors.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson

from aurion.auth.principal import Principal
from aurion.conversations.errors import ConversationNotFound, PreconditionFailed
from aurion.conversations.lifecycle import repository
from aurion.conversations.lifecycle.errors import (
    ConversationBusy,
    ConversationHasChildren,
    NewParentNotFound,
    OpenChildren,
)
from aurion.conversations.lifecycle.schemas import ConversationPatch
from aurion.conversations.service import Document, encode_cursor, new_id
from aurion.conversations.service import _refusal as creation_refusal
from aurion.db.driver import Db, Refused
from aurion.errors import AppError

# A statement refused as ``retry`` saw a child created or moved between its snapshot and its
# locks; under a storm of such changes to one family, give up after this many runs (503).
MAX_RUNS = 5
BUSY_RETRY_AFTER_SECONDS = "1"


def _refusal(refused: Refused) -> AppError:
    match refused.code:
        case "conversation_not_found":
            return ConversationNotFound()
        case "precondition_failed":
            return PreconditionFailed(
                f'The conversation is at version "{refused.detail}"; reload it and retry.'
            )
        case "open_children":
            ids = [i for i in refused.detail.split(",") if i]
            return OpenChildren(extra={"open_child_ids": ids})
    raise RuntimeError(f"unknown refusal {refused.code!r}")


async def run_statement(
    db: Db, run: Any, values: dict[str, Any], *, ids: int, refusal: Any = _refusal
) -> Any:
    """Run a lifecycle statement with ``ids`` fresh ids for its activities and events, again
    when it asks for more or found its snapshot stale; refusals become errors."""
    for _ in range(MAX_RUNS):
        values["activity_ids"] = [new_id() for _ in range(ids)]
        values["event_ids"] = [new_id() for _ in range(ids)]
        try:
            return await run(db, values)
        except Refused as refused:
            if refused.code == "retry":
                continue
            if refused.code == "more_ids":
                ids = int(refused.detail)
                continue
            raise refusal(refused) from None
    raise ConversationBusy(headers={"Retry-After": BUSY_RETRY_AFTER_SECONDS})


async def update_conversation(
    db: Db,
    principal: Principal,
    conversation_id: UUID,
    body: ConversationPatch,
    *,
    if_match: list[int] | None,
    cascade: bool,
    auto_resolve: bool,
    max_children: int,
) -> Document:
    """Change some fields of a conversation (SPEC §8.1), with the effects of a status change
    on its children (§8.2) and on its parent (§8.3)."""
    patch = body.model_dump(mode="json", exclude_unset=True)
    archived = patch.pop("archived", None)
    fields = list(patch)
    if archived is not None:
        fields.append("archived_at")
    values: dict[str, Any] = {
        "workspace_id": principal.workspace_id,
        "caller": principal.subject,
        "conversation_id": conversation_id,
        "patch": orjson.dumps(patch).decode(),
        "fields": fields,
        "archived": archived,
        "if_match": if_match,
        "cascade": cascade,
        "auto_resolve": auto_resolve,
        # Only a status change concerns the children: lock them only then.
        "lock_children": "status" in patch,
        "now": datetime.now(UTC),
    }
    # A status change may cascade to every child: enough ids for that, so one statement does it.
    ids = max_children + 2 if values["lock_children"] else 2
    row = await run_statement(db, repository.update_conversation, values, ids=ids)
    return Document(row["body"], conversation_id, row["version"])


async def delete_conversation(
    db: Db,
    principal: Principal,
    conversation_id: UUID,
    *,
    if_match: list[int] | None,
    max_children: int,
) -> None:
    """Soft-delete a conversation (SPEC §8.5); its children become standalone."""
    values: dict[str, Any] = {
        "workspace_id": principal.workspace_id,
        "caller": principal.subject,
        "conversation_id": conversation_id,
        "if_match": if_match,
        "now": datetime.now(UTC),
    }
    await run_statement(db, repository.delete_conversation, values, ids=max_children + 2)


async def set_parent(
    db: Db,
    principal: Principal,
    conversation_id: UUID,
    new_parent_id: UUID | None,
    *,
    if_match: list[int] | None,
    max_children: int,
) -> Document:
    """Attach a conversation to a parent, move it to another, or detach it (SPEC §8.4)."""
    values: dict[str, Any] = {
        "workspace_id": principal.workspace_id,
        "caller": principal.subject,
        "conversation_id": conversation_id,
        "new_parent_id": new_parent_id,
        "max_children": max_children,
        "if_match": if_match,
        "now": datetime.now(UTC),
    }

    def refusal(refused: Refused) -> Exception:
        match refused.code:
            case "parent_not_found":
                return NewParentNotFound()
            case "conversation_has_children":
                return ConversationHasChildren()
            case "conversation_not_found" | "precondition_failed":
                return _refusal(refused)
        # The new parent's refusals are child creation's, with its messages.
        return creation_refusal(refused, max_children)

    row = await run_statement(db, repository.set_parent, values, ids=4, refusal=refusal)
    return Document(row["body"], conversation_id, row["version"])


async def list_activities(
    db: Db, principal: Principal, conversation_id: UUID, *, limit: int, before: UUID | None
) -> Document:
    """A page of a conversation's activity log, newest first, and the next page's cursor."""
    row = await repository.list_activities(
        db, principal.workspace_id, conversation_id, before=before, limit=limit
    )
    if not row["found"]:
        raise ConversationNotFound()
    cursor = orjson.dumps(encode_cursor(row["last_id"]) if row["more"] else None)
    return Document(b'{"items":' + row["items"] + b',"next_cursor":' + cursor + b"}")
