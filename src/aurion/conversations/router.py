"""HTTP layer of the conversations API: status codes and headers around the service.

Each write is one statement that commits on its own (see repository.py): there is no commit
to make here, and nothing to roll back on a refusal.

These are the hot routes: each has one dependency (the principal); the database is
``request.app.state.db`` and If-Match a header parameter parsed here, since FastAPI spends about
40 µs of CPU per request on each dependency it solves (bench/inprocess.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
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
    ChildConversationBatchCreate,
    ChildConversationCreate,
    Conversation,
    ConversationBatch,
    ConversationCreate,
    ConversationPage,
)
from aurion.errors import DatabaseUnavailable, PayloadTooLarge
from aurion.http import (
    IfMatch,
    claim_for,
    document_response,
    if_match_versions,
    written_response,
)
from aurion.idempotency.errors import IdempotencyKeyInUse, IdempotencyKeyReused
from aurion.openapi import error_responses
from aurion.routing import LeanRoute

# LeanRoute: a fast path for the valid request, FastAPI's own handler for everything else
# (aurion/routing.py); these five routes are the hot ones.
router = APIRouter(prefix="/api/v2/conversations", tags=["conversations"], route_class=LeanRoute)

# OpenAPI descriptions of the headers aurion.http sends with a conversation.
_ETAG_HEADER = {
    "description": 'The conversation\'s version, quoted (`"1"` for a new one): send it in '
    "If-Match to act only on this version.",
    "schema": {"type": "string"},
}
_CREATED_RESPONSE_HEADERS = {
    "Location": {"description": "URL of the new conversation.", "schema": {"type": "string"}},
    "ETag": _ETAG_HEADER,
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored response of an earlier request "
        "with the same Idempotency-Key.",
        "schema": {"type": "string", "enum": ["true"]},
    },
}
_IDEMPOTENCY_ERRORS = (IdempotencyKeyInUse, IdempotencyKeyReused)
_CHILD_ERRORS = (
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
)


# The docs page fills "Try it out" with the first example: a subject alone works on any parent
# (an example built from every field's example would copy a message id no parent has).
_CHILD_EXAMPLES: dict[str, Any] = {
    "subject": {
        "summary": "A subject: everything else is inherited",
        "value": {"subject": "Refund the duplicate charge"},
    },
    "split": {
        "summary": "A split: another team, higher priority, a note",
        "description": "Add `copy_message_ids` with ids of the parent's messages (GET the "
        "parent) to carry them over.",
        "value": {
            "subject": "Refund the duplicate charge",
            "assignee_team_id": "team_billing",
            "assignee_team_name": "Billing",
            "assignee_user_id": None,
            "assignee_user_name": None,
            "priority": "urgent",
            "message": {
                "body": "Split off: Billing refunds the duplicate charge.",
                "is_internal": True,
            },
        },
    },
}
_BATCH_EXAMPLES: dict[str, Any] = {
    "two": {
        "summary": "Two children at once",
        "value": {
            "children": [
                {"subject": "Refund the duplicate charge", "assignee_team_id": "team_billing"},
                {"subject": "Replace the damaged item", "priority": "urgent"},
            ]
        },
    }
}


def _child_responses(*where: str | int) -> dict[int | str, Any]:
    """The errors of child creation, with the 422 of a copied id that is not the parent's."""
    responses = error_responses(*_CHILD_ERRORS)
    invalid = responses[422]
    invalid["description"] += (
        " A `copy_message_ids` item that is not a message of the parent: `type` "
        "`message_not_in_parent`, at its location."
    )
    invalid["content"]["application/json"]["examples"]["message_not_in_parent"] = {
        "summary": "An id to copy is not a message of the parent.",
        "value": {
            "detail": [
                {
                    "loc": ["body", *where, "copy_message_ids", 0],
                    "msg": "Not a message of the parent conversation.",
                    "type": "message_not_in_parent",
                }
            ]
        },
    }
    return responses


@router.post(
    "/{conversation_id}/children",
    status_code=201,
    response_model=Conversation,
    operation_id="createChildConversation",
    summary="Create a child conversation",
    responses={
        201: {"description": "The child conversation.", "headers": _CREATED_RESPONSE_HEADERS},
        **_child_responses(),
    },
)
async def create_child_conversation(
    request: Request,
    conversation_id: ConversationID,
    body: Annotated[ChildConversationCreate, Body(openapi_examples=_CHILD_EXAMPLES)],
    principal: WritePrincipal,
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> Response:
    """Create a child conversation that inherits the parent's context.

    The child copies the parent's customer, company, team, assignee, priority, tags, custom
    attributes and SLA due dates, except the fields the body gives (`null` clears one); it
    starts `open`, with copies of the parent's messages named in `copy_message_ids` (oldest
    first) and then `message`, if given. The parent gets a `child_created` activity and a new
    version, and is reopened if it was resolved or closed. Children are one level deep, and a
    parent has at most `AURION_MAX_CHILDREN_PER_PARENT`. With an `Idempotency-Key`, a retry
    returns the first response instead of a second child.
    """
    state = request.app.state
    claim = claim_for(request, body, idempotency_key)
    result = await service.create_child(
        state.db,
        principal,
        conversation_id,
        body,
        if_match=if_match_versions(if_match),
        claim=claim,
        max_children=state.settings.max_children_per_parent,
        turns=state.turns,
    )
    return written_response(result)


@router.post(
    "/{conversation_id}/children/batch",
    status_code=201,
    response_model=ConversationBatch,
    operation_id="createChildConversationsBatch",
    summary="Create several child conversations at once",
    responses={
        201: {
            "description": "The children, in request order.",
            "headers": {"Idempotent-Replayed": _CREATED_RESPONSE_HEADERS["Idempotent-Replayed"]},
        },
        **_child_responses("children", 0),
    },
)
async def create_child_conversations_batch(
    request: Request,
    conversation_id: ConversationID,
    body: Annotated[ChildConversationBatchCreate, Body(openapi_examples=_BATCH_EXAMPLES)],
    principal: WritePrincipal,
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> Response:
    """Create 1–50 child conversations of one parent, all or none.

    Each item is a `createChildConversation` body and gives the same child. Either every child
    is created or none is: any refusal refuses the whole batch, with the codes of
    `createChildConversation` (`children_limit_reached` when the batch does not fit, saying how
    many more children the parent can take). The parent gets one `child_created` activity per
    child and a single new version. A 422 locates the item: `["body", "children", i, ...]`.
    With an `Idempotency-Key`, a retry returns the whole first response.
    """
    state = request.app.state
    claim = claim_for(request, body, idempotency_key)
    # In turn with the single creations that take turns per parent (not the coalesced ones).
    async with state.turns.turn(conversation_id):
        result = await service.create_children(
            state.db,
            principal,
            conversation_id,
            body,
            if_match=if_match_versions(if_match),
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
        201: {"description": "The new conversation.", "headers": _CREATED_RESPONSE_HEADERS},
        **error_responses(*AUTH_ERRORS, *_IDEMPOTENCY_ERRORS, PayloadTooLarge, DatabaseUnavailable),
    },
)
async def create_conversation(
    request: Request,
    body: ConversationCreate,
    principal: WritePrincipal,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Create a conversation, optionally with its first messages."""
    claim = claim_for(request, body, idempotency_key)
    db = request.app.state.db
    return written_response(await service.create_conversation(db, principal, body, claim=claim))


@router.get(
    "/{conversation_id}",
    response_model=Conversation,
    operation_id="getConversation",
    summary="Get a conversation",
    responses={
        200: {
            "description": "The conversation with its newest 200 messages.",
            "headers": {"ETag": _ETAG_HEADER},
        },
        **error_responses(*AUTH_ERRORS, ConversationNotFound, DatabaseUnavailable),
    },
)
async def get_conversation(
    request: Request,
    conversation_id: ConversationID,
    principal: ReadPrincipal,
) -> Response:
    """Get a conversation with its messages (oldest first, the newest 200) and tab counts."""
    db = request.app.state.db
    return document_response(await service.get_conversation(db, principal, conversation_id))


@router.get(
    "/{conversation_id}/children",
    response_model=ConversationPage,
    operation_id="listChildConversations",
    summary="List child conversations",
    responses=error_responses(*AUTH_ERRORS, ConversationNotFound, DatabaseUnavailable),
)
async def list_child_conversations(
    request: Request,
    conversation_id: ConversationID,
    principal: ReadPrincipal,
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
    db = request.app.state.db
    page = await service.list_children(
        db, principal, conversation_id, limit=limit, before=before, statuses=statuses
    )
    return document_response(page)
