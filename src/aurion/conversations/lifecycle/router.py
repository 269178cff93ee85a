"""HTTP layer of the lifecycle operations: status codes and headers around the service."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from aurion.auth import ReadPrincipal, WritePrincipal
from aurion.auth.dependencies import AUTH_ERRORS
from aurion.conversations.dependencies import ConversationID, Cursor, Limit
from aurion.conversations.errors import (
    ChildrenLimitReached,
    ConversationNotFound,
    ParentArchived,
    ParentIsChild,
    ParentIsSpam,
    ParentMerged,
    PreconditionFailed,
)
from aurion.conversations.lifecycle import service
from aurion.conversations.lifecycle.errors import (
    ConversationBusy,
    ConversationHasChildren,
    OpenChildren,
)
from aurion.conversations.lifecycle.schemas import (
    ACTIVITY_KINDS,
    ActivityPage,
    ConversationPatch,
    ParentUpdate,
)
from aurion.conversations.schemas import Conversation
from aurion.conversations.service import decode_cursor
from aurion.db.driver import DbDep
from aurion.errors import DatabaseUnavailable, PayloadTooLarge
from aurion.http import IfMatch, document_response, if_match_versions
from aurion.openapi import error_responses
from aurion.settings import Settings

router = APIRouter(prefix="/api/v2/conversations", tags=["conversations"])

_ETAG = {
    "ETag": {
        "description": 'The conversation\'s version after the request, quoted: `"2"`.',
        "schema": {"type": "string"},
    }
}
_COMMON_ERRORS = (ConversationBusy, PayloadTooLarge, DatabaseUnavailable)

ChildrenMode = Annotated[
    Literal["resolve"] | None,
    Query(
        description="`resolve`: when the update resolves or closes a parent, its open children "
        "take the same status, whatever `AURION_PARENT_CLOSE_POLICY` says.",
        examples=["resolve"],
    ),
]


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.patch(
    "/{conversation_id}",
    response_model=Conversation,
    operation_id="updateConversation",
    summary="Update a conversation",
    responses={
        200: {"description": "The conversation as it is now.", "headers": _ETAG},
        **error_responses(
            *AUTH_ERRORS, ConversationNotFound, OpenChildren, PreconditionFailed, *_COMMON_ERRORS
        ),
    },
)
async def update_conversation(
    request: Request,
    conversation_id: ConversationID,
    body: ConversationPatch,
    principal: WritePrincipal,
    db: DbDep,
    if_match: IfMatch = None,
    children: ChildrenMode = None,
) -> Response:
    """Update some fields of a conversation.

    Absent fields are unchanged, `null` clears a nullable field, `tags` and `custom_attrs` are
    replaced whole; `is_spam` and `archived` (write-only) mark the conversation. A change logs an
    `updated` activity with the old and new values and gives a new version; a request that
    changes nothing returns the conversation as it is, with the same version.

    Resolving or closing a parent that has open children follows `AURION_PARENT_CLOSE_POLICY`:
    `block` (the default) refuses with 409 `open_children` (the body lists `open_child_ids`),
    `cascade` gives the open children the same status (activity `resolved_with_parent`);
    `?children=resolve` asks for the cascade whatever the policy. Reopening a child of a
    resolved or closed parent reopens the parent; with `AURION_AUTO_RESOLVE_PARENT=true`,
    resolving a parent's last open child resolves the parent.
    """
    settings = _settings(request)
    document = await service.update_conversation(
        db,
        principal,
        conversation_id,
        body,
        if_match=if_match_versions(if_match),
        cascade=children == "resolve" or settings.parent_close_policy == "cascade",
        auto_resolve=settings.auto_resolve_parent,
        max_children=settings.max_children_per_parent,
    )
    return document_response(document)


@router.delete(
    "/{conversation_id}",
    status_code=204,
    operation_id="deleteConversation",
    summary="Delete a conversation",
    responses={
        204: {"description": "Deleted; the conversation is now 404 everywhere."},
        **error_responses(*AUTH_ERRORS, ConversationNotFound, PreconditionFailed, *_COMMON_ERRORS),
    },
)
async def delete_conversation(
    request: Request,
    conversation_id: ConversationID,
    principal: WritePrincipal,
    db: DbDep,
    if_match: IfMatch = None,
) -> Response:
    """Delete a conversation (soft delete).

    The conversation gets `deleted_at` and a `deleted` activity, and from then on answers 404
    everywhere (a second DELETE included). Its children are detached in the same transaction:
    each becomes standalone, with a `parent_deleted` activity and a new version. When the
    conversation was a child, its parent counts one child fewer (activity `child_deleted`).
    """
    await service.delete_conversation(
        db,
        principal,
        conversation_id,
        if_match=if_match_versions(if_match),
        max_children=_settings(request).max_children_per_parent,
    )
    return Response(status_code=204)


@router.put(
    "/{conversation_id}/parent",
    response_model=Conversation,
    operation_id="setConversationParent",
    summary="Attach, move or detach a conversation",
    responses={
        200: {"description": "The conversation as it is now.", "headers": _ETAG},
        **error_responses(
            *AUTH_ERRORS,
            ConversationNotFound,
            ParentMerged,
            ParentIsSpam,
            ParentArchived,
            ParentIsChild,
            ConversationHasChildren,
            ChildrenLimitReached,
            PreconditionFailed,
            *_COMMON_ERRORS,
        ),
    },
)
async def set_conversation_parent(
    request: Request,
    conversation_id: ConversationID,
    body: ParentUpdate,
    principal: WritePrincipal,
    db: DbDep,
    if_match: IfMatch = None,
) -> Response:
    """Attach a conversation to a parent, move it to another parent, or detach it.

    `parent_id` names the new parent (attach or move) or is null (detach: the conversation
    becomes standalone and keeps its `source`). The new parent is refused exactly as in child
    creation (404, `parent_merged`, `parent_is_spam`, `parent_archived`, `parent_is_child`,
    `children_limit_reached`); a conversation with children of its own cannot become a child
    (`conversation_has_children`), nor its own parent (422). The same parent as now: 200 and
    nothing changes. Inherited fields are not copied again.

    The conversation logs `parent_changed` (`from`, `to`), the old parent `child_detached`, the
    new one `child_attached`; each gets a new version. An open child attached under a resolved
    or closed parent reopens it. `If-Match` applies to the conversation.
    """
    if body.parent_id == conversation_id:
        raise RequestValidationError(
            [
                {
                    "loc": ("body", "parent_id"),
                    "msg": "A conversation cannot be its own parent.",
                    "type": "own_parent",
                }
            ]
        )
    document = await service.set_parent(
        db,
        principal,
        conversation_id,
        body.parent_id,
        if_match=if_match_versions(if_match),
        max_children=_settings(request).max_children_per_parent,
    )
    return document_response(document)


_KINDS = "\n".join(f"* `{kind}`: {meaning}" for kind, meaning in ACTIVITY_KINDS.items())


@router.get(
    "/{conversation_id}/activities",
    response_model=ActivityPage,
    operation_id="listConversationActivities",
    summary="List a conversation's activities",
    description="The conversation's activity log, newest first, with cursor pagination. "
    "Each entry names what happened (`kind`), who did it (`actor`, the token's `sub`), "
    "when, and details in `payload`. The kinds:\n\n" + _KINDS,
    responses=error_responses(*AUTH_ERRORS, ConversationNotFound, DatabaseUnavailable),
)
async def list_conversation_activities(
    conversation_id: ConversationID,
    principal: ReadPrincipal,
    db: DbDep,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Response:
    """List a conversation's activities, newest first."""
    before = decode_cursor(cursor) if cursor else None
    page = await service.list_activities(db, principal, conversation_id, limit=limit, before=before)
    return document_response(page)
