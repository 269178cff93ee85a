"""HTTP layer of the conversations API: status codes, headers, and the commit at the boundary."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from aurion.auth import Principal, ReadPrincipal, WritePrincipal
from aurion.auth.dependencies import AUTH_ERRORS
from aurion.conversations import service
from aurion.conversations.dependencies import (
    ConnectionDep,
    ConversationID,
    Cursor,
    IdempotencyKey,
    IfMatch,
    Limit,
    SettingsDep,
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
from aurion.errors import DatabaseUnavailable, PayloadTooLarge, error_responses
from aurion.idempotency import service as idempotency
from aurion.idempotency.errors import IdempotencyKeyInUse, IdempotencyKeyReused
from aurion.settings import Settings

router = APIRouter(prefix="/api/v2/conversations", tags=["conversations"])

_JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_OMIT_MICROSECONDS
_LOCATION_HEADER = {
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
_REPLAYED_HEADERS = ("location", "etag")


def _default(value: Any) -> str:
    # asyncpg returns its own UUID type, which orjson does not know.
    return str(value)


def json_response(
    content: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(content, default=_default, option=_JSON_OPTIONS),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


def conversation_response(view: service.ConversationView, status_code: int = 200) -> Response:
    headers = {"ETag": f'"{view.version}"'}
    if status_code == 201:
        headers["Location"] = f"/api/v2/conversations/{view.id}"
    return json_response(view.public(), status_code, headers)


async def run_idempotently(
    conn: AsyncConnection,
    principal: Principal,
    settings: Settings,
    request: Request,
    body: BaseModel,
    key: str | None,
    create: Callable[[], Awaitable[Response]],
) -> Response:
    """Run ``create`` and commit; with a key, at most once per (workspace, subject, key)."""
    if key is None:
        response = await create()
        await conn.commit()
        return response
    fingerprint = idempotency.fingerprint(request.method, request.url.path, body)
    ttl = timedelta(hours=settings.idempotency_ttl_hours)
    stored = await idempotency.begin(conn, principal, key, fingerprint, ttl)
    if stored is not None:
        return Response(
            stored.body,
            status_code=stored.status_code,
            media_type="application/json",
            headers={**stored.headers, "Idempotent-Replayed": "true"},
        )
    response = await create()
    headers = {k: v for k, v in response.headers.items() if k in _REPLAYED_HEADERS}
    await idempotency.remember(
        conn, principal, key, response.status_code, bytes(response.body), headers
    )
    await conn.commit()
    return response


_IDEMPOTENCY_ERRORS = (IdempotencyKeyInUse, IdempotencyKeyReused)


@router.post(
    "/{conversation_id}/children",
    status_code=201,
    response_model=Conversation,
    operation_id="createChildConversation",
    summary="Create a child conversation",
    responses={
        201: {"description": "The child conversation.", "headers": _LOCATION_HEADER},
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
    conn: ConnectionDep,
    settings: SettingsDep,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Create a child conversation that inherits the parent's context.

    The child copies the parent's customer, company, team, assignee, priority, tags, custom
    attributes and SLA due dates; it starts `open` with no messages. The parent gets a
    `child_created` activity and a new version, and is reopened if it was resolved or closed.
    Children are one level deep, and a parent has at most `AURION_MAX_CHILDREN_PER_PARENT`.
    With an `Idempotency-Key`, a retry returns the first response instead of a second child.
    """

    async def create() -> Response:
        view = await service.create_child(
            conn,
            principal,
            conversation_id,
            body.subject,
            if_match=if_match,
            max_children=settings.max_children_per_parent,
        )
        return conversation_response(view, 201)

    return await run_idempotently(conn, principal, settings, request, body, idempotency_key, create)


@router.post(
    "",
    status_code=201,
    response_model=Conversation,
    operation_id="createConversation",
    summary="Create a conversation",
    responses={
        201: {"description": "The new conversation.", "headers": _LOCATION_HEADER},
        **error_responses(*AUTH_ERRORS, *_IDEMPOTENCY_ERRORS, PayloadTooLarge, DatabaseUnavailable),
    },
)
async def create_conversation(
    request: Request,
    body: ConversationCreate,
    principal: WritePrincipal,
    conn: ConnectionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Create a conversation, optionally with its first messages."""

    async def create() -> Response:
        view = await service.create_conversation(conn, principal, body)
        return conversation_response(view, 201)

    return await run_idempotently(conn, principal, settings, request, body, idempotency_key, create)


@router.get(
    "/{conversation_id}",
    response_model=Conversation,
    operation_id="getConversation",
    summary="Get a conversation",
    responses={
        200: {
            "description": "The conversation with its newest 200 messages.",
            "headers": {"ETag": _LOCATION_HEADER["ETag"]},
        },
        **error_responses(*AUTH_ERRORS, ConversationNotFound, DatabaseUnavailable),
    },
)
async def get_conversation(
    conversation_id: ConversationID,
    principal: ReadPrincipal,
    conn: ConnectionDep,
) -> Response:
    """Get a conversation with its messages (oldest first, the newest 200) and tab counts."""
    view = await service.get_conversation(conn, principal, conversation_id)
    return conversation_response(view)


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
    conn: ConnectionDep,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Response:
    """List a conversation's children, newest first, with cursor pagination."""
    before = service.decode_cursor(cursor) if cursor else None
    views, next_cursor = await service.list_children(
        conn, principal, conversation_id, limit=limit, before=before
    )
    return json_response({"items": [v.public() for v in views], "next_cursor": next_cursor})
