"""Idempotency rules: claim a key in the request's transaction, replay what it stored.

The key row is written in the same transaction as the conversation it describes, so either
both exist or neither does: a crash between them cannot leave a key without its child, or a
child without its key. Refusals roll the transaction back, so they are not stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aurion.auth.principal import Principal
from aurion.errors import LOCK_NOT_AVAILABLE, sqlstate_of
from aurion.idempotency import repository
from aurion.idempotency.errors import IdempotencyKeyInUse, IdempotencyKeyReused

RETRY_AFTER_SECONDS = "1"
logger = logging.getLogger("aurion.idempotency")


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status_code: int
    body: bytes
    headers: dict[str, str]


def fingerprint(method: str, path: str, body: BaseModel) -> str:
    """A digest of what makes two requests "the same": method, path and the validated body."""
    canonical = orjson.dumps(body.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256()
    digest.update(method.upper().encode())
    digest.update(b"\n")
    digest.update(path.encode())
    digest.update(b"\n")
    digest.update(canonical)
    return digest.hexdigest()


def _in_use() -> IdempotencyKeyInUse:
    return IdempotencyKeyInUse(headers={"Retry-After": RETRY_AFTER_SECONDS})


async def begin(
    conn: AsyncConnection,
    principal: Principal,
    key: str,
    request_fingerprint: str,
    ttl: timedelta,
) -> StoredResponse | None:
    """Claim ``key`` for this request (None), or the stored response to replay."""
    now = datetime.now(UTC)
    try:
        claimed = await repository.claim(
            conn,
            principal.workspace_id,
            principal.subject,
            key,
            request_fingerprint,
            now,
            now + ttl,
        )
    except sa_exc.DBAPIError as exc:
        # Another request with this key held it longer than lock_timeout.
        if sqlstate_of(exc) == LOCK_NOT_AVAILABLE:
            raise _in_use() from exc
        raise
    if claimed:
        return None
    row = await repository.fetch(conn, principal.workspace_id, principal.subject, key)
    if row is None or row.status_code is None:
        raise _in_use()
    if row.fingerprint != request_fingerprint:
        raise IdempotencyKeyReused()
    return StoredResponse(
        status_code=int(row.status_code),
        body=bytes(row.response_body or b""),
        headers=dict(row.response_headers or {}),
    )


async def remember(
    conn: AsyncConnection,
    principal: Principal,
    key: str,
    status_code: int,
    body: bytes,
    headers: dict[str, str],
) -> None:
    """Store the response of the request that owns ``key`` (same transaction as its writes)."""
    await repository.store(
        conn, principal.workspace_id, principal.subject, key, status_code, body, headers
    )


async def purge_expired(conn: AsyncConnection, batch: int = 5000) -> int:
    """Delete expired keys in batches, committing each; the total deleted."""
    total = 0
    while True:
        deleted = await repository.purge(conn, datetime.now(UTC), batch)
        await conn.commit()
        total += deleted
        if deleted < batch:
            return total


async def purge_periodically(engine: AsyncEngine, interval_seconds: float) -> None:
    """Purge expired keys every ``interval_seconds`` (jittered, so workers do not align)."""
    while True:
        await asyncio.sleep(interval_seconds * random.uniform(0.8, 1.2))
        try:
            async with engine.connect() as conn:
                deleted = await purge_expired(conn)
            if deleted:
                logger.info("purged expired idempotency keys", extra={"deleted": deleted})
        except Exception:  # the next round retries; a purge never takes the service down
            logger.warning("idempotency key purge failed", exc_info=True)
