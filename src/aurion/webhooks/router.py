"""HTTP layer of webhooks: register, list, delete, and the deliveries log."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from aurion.auth import WebhooksPrincipal
from aurion.auth.dependencies import AUTH_ERRORS
from aurion.db.driver import DbDep
from aurion.errors import DatabaseUnavailable, PayloadTooLarge
from aurion.openapi import error_responses
from aurion.webhooks import service
from aurion.webhooks.errors import WebhookNotFound, WebhookUrlNotAllowed
from aurion.webhooks.schemas import DeliveryPage, WebhookCreate, WebhookCreated, WebhookList

router = APIRouter(prefix="/api/v2/webhooks", tags=["webhooks"])
JSON = "application/json"

WebhookID = Annotated[
    UUID,
    Path(
        description="The webhook's id (a UUID).", examples=["0193b0a2-7c4e-7d1a-9f3e-2b8c4d5e6f80"]
    ),
]
Limit = Annotated[int, Query(ge=1, le=100, description="Page size, 1–100.", examples=[20])]
Cursor = Annotated[
    str | None,
    Query(
        pattern=r"^[1-9][0-9]{0,17}$",
        description="`next_cursor` of the previous page; omit for the first page.",
        examples=["1042"],
    ),
]


@router.post(
    "",
    status_code=201,
    response_model=WebhookCreated,
    operation_id="createWebhook",
    summary="Register a webhook",
    responses={
        201: {
            "description": "The webhook, with its secret (shown only here).",
            "headers": {
                "Location": {
                    "description": "URL of the webhook's deliveries log.",
                    "schema": {"type": "string"},
                }
            },
        },
        **error_responses(*AUTH_ERRORS, WebhookUrlNotAllowed, PayloadTooLarge, DatabaseUnavailable),
    },
)
async def create_webhook(
    request: Request, body: WebhookCreate, principal: WebhooksPrincipal, db: DbDep
) -> Response:
    """Register a URL to receive the workspace's events of the given types.

    Each event is POSTed as JSON (the feed's event object) with the Standard Webhooks headers
    `webhook-id` (the event id), `webhook-timestamp` and `webhook-signature`
    (`v1,<base64 HMAC-SHA256>` with the secret returned here, and only here). Any 2xx within
    10 s is a success; otherwise the attempt is retried for about 24 hours. The URL must be
    https and resolve to public addresses only.
    """
    allow_private = request.app.state.settings.webhook_allow_private
    created = await service.create_webhook(db, principal, body, allow_private=allow_private)
    location = f"/api/v2/webhooks/{created.id}/deliveries"
    return Response(created.body, 201, {"Location": location}, JSON)


@router.get(
    "",
    response_model=WebhookList,
    operation_id="listWebhooks",
    summary="List webhooks",
    responses=error_responses(*AUTH_ERRORS, DatabaseUnavailable),
)
async def list_webhooks(principal: WebhooksPrincipal, db: DbDep) -> Response:
    """The workspace's webhooks, oldest first. Secrets are never shown again."""
    return Response(await service.list_webhooks(db, principal), media_type=JSON)


@router.delete(
    "/{webhook_id}",
    status_code=204,
    operation_id="deleteWebhook",
    summary="Delete a webhook",
    responses={
        204: {"description": "Deleted; nothing more is delivered to it."},
        **error_responses(*AUTH_ERRORS, WebhookNotFound, DatabaseUnavailable),
    },
)
async def delete_webhook(
    webhook_id: WebhookID, principal: WebhooksPrincipal, db: DbDep
) -> Response:
    """Delete a webhook, its pending deliveries and its log."""
    await service.delete_webhook(db, principal, webhook_id)
    return Response(status_code=204)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=DeliveryPage,
    operation_id="listWebhookDeliveries",
    summary="List a webhook's deliveries",
    responses=error_responses(*AUTH_ERRORS, WebhookNotFound, DatabaseUnavailable),
)
async def list_webhook_deliveries(
    webhook_id: WebhookID,
    principal: WebhooksPrincipal,
    db: DbDep,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Response:
    """The webhook's delivery attempts, newest first: one entry per attempt, with the
    receiver's status, the duration, and when the next attempt is due."""
    body = await service.list_deliveries(db, principal, webhook_id, cursor=cursor, limit=limit)
    return Response(body, media_type=JSON)
