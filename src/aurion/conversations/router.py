"""HTTP layer of the conversations API: status codes and headers around the service.

Each write is one statement that commits on its own (see repository.py): there is no commit
to make here, and nothing to roll back on a refusal.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from aurion.auth import ReadPrincipal, WritePrincipal
from aurion.auth.dependencies import AUTH_ERRORS
from aurion.conversations import service
from aurion.conversations.dependencies import (
    ConversationID,
    Cursor,
    IdempotencyKey,
    Limit,
    StatusFilter,
)
from aurion.conversations.errors import (
    ChildrenLimitReached,
    ConversationNotFound,
    ParentArchived,
    ParentIsChild,
    ParentIsSpam,
    ParentMerged,
    PreconditionFailed,
)
from aurion.conversations.schemas import (
    ChildConversationCreate,
    Conversation,
    ConversationCreate,
    ConversationPage,
)
from aurion.db.driver import DbDep
from aurion.errors import DatabaseUnavailable, PayloadTooLarge, error_responses
from aurion.http import IfMatchVersions, claim_for, document_response, written_response
from aurion.idempotency.errors import IdempotencyKeyInUse, IdempotencyKeyReused

router = APIRouter(prefix="/api/v2/conversations", tags=["conversations"])

_CREATED_HEADERS = {
    "Location": {"description": "URL of the new conversation.", "schema": {"type": "string"}},
    "ETag": {
        "description": 'The new conversation\'s version, quoted: `"1"`.',
        "schema": {"type": "string"},
    },
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored response of an earlier request "
        "with the same Idempotency-Key.",
        "schema": {"type": "string", "enum": ["true"]},
    },
}
_IDEMPOTENCY_ERRORS = (IdempotencyKeyInUse, IdempotencyKeyReused)


@router.post(
    "/{conversation_id}/children",
    status_code=201,
    response_model=Conversation,
    operation_id="createChildConversation",
    summary="Create a child conversation",
    responses={
        201: {"description": "The child conversation.", "headers": _CREATED_HEADERS},
        **error_responses(
            *AUTH_ERRORS,
            ConversationNotFound,
            ParentMerged,
            ParentIsSpam,
            ParentArchived,
            ParentIsChild,
            ChildrenLimitReached,
            PreconditionFailed,
            *_IDEMPOTENCY_ERRORS,
            PayloadTooLarge,
            DatabaseUnavailable,
        ),
    },
)
async def create_child_conversation(
    request: Request,
    conversation_id: ConversationID,
    body: ChildConversationCreate,
    principal: WritePrincipal,
    db: DbDep,
    if_match: IfMatchVersions,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Create a child conversation that inherits the parent's context.

    The child copies the parent's customer, company, team, assignee, priority, tags, custom
    attributes and SLA due dates; it starts `open` with no messages. The parent gets a
    `child_created` activity and a new version, and is reopened if it was resolved or closed.
    Children are one level deep, and a parent has at most `AURION_MAX_CHILDREN_PER_PARENT`.
    With an `Idempotency-Key`, a retry returns the first response instead of a second child.
    """
    state = request.app.state
    claim = claim_for(request, body, idempotency_key)
    async with state.turns.turn(conversation_id):
        result = await service.create_child(
            db,
            principal,
            conversation_id,
            body,
            if_match=if_match,
            claim=claim,
            max_children=state.settings.max_children_per_parent,
        )
    return written_response(result)


@router.post(
    "",
    status_code=201,
    response_model=Conversation,
    operation_id="createConversation",
    summary="Create a conversation",
    responses={
        201: {"description": "The new conversation.", "headers": _CREATED_HEADERS},
        **error_responses(*AUTH_ERRORS, *_IDEMPOTENCY_ERRORS, PayloadTooLarge, DatabaseUnavailable),
    },
)
async def create_conversation(
    request: Request,
    body: ConversationCreate,
    principal: WritePrincipal,
    db: DbDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Create a conversation, optionally with its first messages."""
    claim = claim_for(request, body, idempotency_key)
    return written_response(await service.create_conversation(db, principal, body, claim=claim))


@router.get(
    "/{conversation_id}",
    response_model=Conversation,
    operation_id="getConversation",
    summary="Get a conversation",
    responses={
        200: {
            "description": "The conversation with its newest 200 messages.",
            "headers": {"ETag": _CREATED_HEADERS["ETag"]},
        },
        **error_responses(*AUTH_ERRORS, ConversationNotFound, DatabaseUnavailable),
    },
)
async def get_conversation(
    conversation_id: ConversationID,
    principal: ReadPrincipal,
    db: DbDep,
) -> Response:
    """Get a conversation with its messages (oldest first, the newest 200) and tab counts."""
    return document_response(await service.get_conversation(db, principal, conversation_id))


@router.get(
    "/{conversation_id}/children",
    response_model=ConversationPage,
    operation_id="listChildConversations",
    summary="List child conversations",
    responses=error_responses(*AUTH_ERRORS, ConversationNotFound, DatabaseUnavailable),
)
async def list_child_conversations(
    conversation_id: ConversationID,
    principal: ReadPrincipal,
    db: DbDep,
    limit: Limit = 20,
    cursor: Cursor = None,
    status: StatusFilter = None,
) -> Response:
    """List a conversation's children, newest first, with cursor pagination.

    `status` keeps the children with one of the given statuses. `summary` counts all the
    parent's children whatever the filter and the page: `total`, `by_status` (every status)
    and `percent_resolved` (resolved + closed over total, rounded down; 0 with no children).
    """
    before = service.decode_cursor(cursor) if cursor else None
    statuses = status.split(",") if status else None
    page = await service.list_children(
        db, principal, conversation_id, limit=limit, before=before, statuses=statuses
    )
    return document_response(page)
