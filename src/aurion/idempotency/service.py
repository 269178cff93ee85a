"""Idempotency rules: what makes two requests the same, and what a taken key answers.

The key is claimed by the first write of the request's own statement and its response stored
by the last (idempotency/repository.py), so either both exist or neither does: a crash cannot
leave a key without its response, nor a response without the writes it describes. Refusals
roll the statement back, key included, so they are not stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aurion.auth.principal import Principal
from aurion.db.driver import Db
from aurion.idempotency import repository
from aurion.idempotency.errors import IdempotencyKeyInUse, IdempotencyKeyReused

RETRY_AFTER_SECONDS = "1"
logger = logging.getLogger("aurion.idempotency")


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status_code: int
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Claim:
    """What a write statement needs to claim a key and store its response."""

    key: str
    fingerprint: str
    ttl: timedelta

    def values(self, now: datetime) -> dict[str, Any]:
        return {"key": self.key, "fingerprint": self.fingerprint, "expires_at": now + self.ttl}


def fingerprint(method: str, path: str, body: BaseModel) -> str:
    """A digest of what makes two requests "the same": method, path and the validated body.

    Only the fields the client sent count: an absent field may mean something else than its
    default (a child inherits an absent field from its parent, but not an explicit `[]`)."""
    canonical = orjson.dumps(
        body.model_dump(mode="json", exclude_unset=True), option=orjson.OPT_SORT_KEYS
    )
    digest = hashlib.sha256()
    digest.update(method.upper().encode())
    digest.update(b"\n")
    digest.update(path.encode())
    digest.update(b"\n")
    digest.update(canonical)
    return digest.hexdigest()


def in_use() -> IdempotencyKeyInUse:
    return IdempotencyKeyInUse(headers={"Retry-After": RETRY_AFTER_SECONDS})


async def replay(db: Db, principal: Principal, claim: Claim) -> StoredResponse:
    """The response stored for a key another request holds (its statement has committed)."""
    row = await repository.stored(db, principal.workspace_id, principal.subject, claim.key)
    if row is None or row["status_code"] is None:
        # Gone meanwhile (expired and purged) or never completed: the client retries.
        raise in_use()
    if row["fingerprint"] != claim.fingerprint:
        raise IdempotencyKeyReused()
    return StoredResponse(row["status_code"], row["body"], row["headers"])


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
