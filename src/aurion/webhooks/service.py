"""Rules of webhooks: registration (URL checks, the secret), listing, deletion, the log."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime
from uuid import UUID

import orjson

from aurion.auth.principal import Principal
from aurion.conversations.service import new_id
from aurion.db.driver import Db
from aurion.db.json_sql import Document
from aurion.webhooks import repository, safety
from aurion.webhooks.errors import WebhookNotFound, WebhookUrlNotAllowed
from aurion.webhooks.schemas import WebhookCreate

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


async def create_webhook(
    db: Db, principal: Principal, body: WebhookCreate, *, allow_private: bool
) -> Document:
    """Register a webhook whose URL may receive events; its secret is in this answer only."""
    try:
        await safety.resolve(body.url, allow_private=allow_private)
    except safety.UrlNotAllowed as exc:
        raise WebhookUrlNotAllowed(str(exc)) from None
    webhook_id = new_id()
    created = await repository.create(
        db,
        {
            "workspace_id": principal.workspace_id,
            "id": webhook_id,
            "url": body.url,
            "types": list(body.types),
            "description": body.description or None,
            "secret": new_secret(),
            "now": datetime.now(UTC),
        },
    )
    return Document(created, webhook_id)


async def list_webhooks(db: Db, principal: Principal) -> bytes:
    """The workspace's webhooks (never their secrets)."""
    return b'{"items":' + await repository.list_all(db, principal.workspace_id) + b"}"


async def delete_webhook(db: Db, principal: Principal, webhook_id: UUID) -> None:
    """Delete a webhook; nothing more is delivered to it."""
    if not await repository.delete(db, principal.workspace_id, webhook_id):
        raise WebhookNotFound()


async def list_deliveries(
    db: Db, principal: Principal, webhook_id: UUID, *, cursor: str | None, limit: int
) -> bytes:
    """A page of a webhook's delivery attempts, newest first."""
    before = int(cursor) if cursor else None
    row = await repository.deliveries(
        db, principal.workspace_id, webhook_id, before=before, limit=limit
    )
    if not row["found"]:
        raise WebhookNotFound()
    next_cursor = orjson.dumps(str(row["last_id"]) if row["more"] else None)
    items: bytes = row["items"]
    return b'{"items":' + items + b',"next_cursor":' + next_cursor + b"}"
