"""Delivery: the outbox's events to the webhooks that want them, signed, retried, at least once.

One loop per process (the service's lifespan, or ``aurion worker``), on connections of its own
(never the request path's pool):

1. **dispatch**: per webhook, the events after its cursor and below the horizon become first
   attempts (``repository.DISPATCH``), read from the outbox by the feed's gap-free order. The
   request path does nothing extra for this: no trigger, no NOTIFY; an event reaches its
   webhooks within a poll interval of committing.
2. **claim** due attempts (``FOR UPDATE SKIP LOCKED`` + a lease, committed before sending):
   two processes never send the same attempt, and no transaction stays open during HTTP
   (an open one would hold back the horizon, and with it the feed).
3. **send** each one (Standard Webhooks headers and signature, by the ``standardwebhooks``
   library), at most ``AURION_WEBHOOK_CONCURRENCY`` at once, each bounded by the timeout: a
   slow or dead receiver holds one slot, never a request.
4. **record** the outcome and, after a failure, queue the next attempt at its due time.

Everything a restart needs is in the database: pending attempts are sent by whichever process
polls next; an attempt whose process died mid-send is sent again once its lease expires.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks.webhooks import Webhook as Signer

from aurion.db.delegation import Delegation, delegation_for
from aurion.db.driver import Statement, driver_of
from aurion.settings import Settings
from aurion.webhooks import repository, safety

logger = logging.getLogger("aurion.webhooks")

JITTER = 0.1
# How many webhooks and events one dispatch statement handles (it runs again at once if full).
DISPATCH_WEBHOOKS = 100
DISPATCH_EVENTS = 500
DISPATCH_ROUNDS = 10  # then sending gets its turn
# A lease outlasts the longest attempt by this much.
LEASE_MARGIN_SECONDS = 30
# Connections of the delivery loop (statements are short; sends hold none).
DELIVERY_POOL_SIZE = 3
ERROR_BACKOFF_SECONDS = 2.0
# Recording an outcome is retried this often (1 s, 2 s apart) while the database is unwell.
RECORD_TRIES = 3


def retry_delay(attempt: int, schedule: Sequence[float]) -> float | None:
    """Seconds until the attempt after ``attempt`` (1-based), with ±10 % jitter; None when
    ``attempt`` was the last."""
    if attempt > len(schedule):
        return None
    return schedule[attempt - 1] * random.uniform(1 - JITTER, 1 + JITTER)


def signed_headers(secret: str, event_id: str, body: bytes, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers for ``body``."""
    signature = Signer(secret).sign(event_id, at, body.decode())
    return {
        "content-type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "user-agent": "aurion-webhooks",
    }


class Deliverer:
    """The delivery loop of one process."""

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.lease_seconds = settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS
        self.in_flight: set[asyncio.Task[None]] = set()
        # A Citus cluster's: writes go through aurion_delegate (aurion.db.delegation).
        self.delegation: Delegation | None = None
        self._probed = False
        self.client = httpx.AsyncClient(
            timeout=settings.webhook_timeout_seconds,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=settings.webhook_concurrency),
        )

    async def _run(self, statement: Statement, values: dict[str, Any]) -> list[Any]:
        pgbouncer = self.settings.db_pgbouncer
        async with (
            self.engine.connect() as conn,
            driver_of(conn, pgbouncer=pgbouncer, delegation=self.delegation) as db,
        ):
            return await db.fetch(statement, values)

    async def _on_citus(self) -> bool:
        """Whether the database is a Citus cluster that delegates writes (learnt once)."""
        if not self._probed:
            async with self.engine.connect() as conn:
                raw = await conn.get_raw_connection()
                self.delegation = await delegation_for(
                    raw.driver_connection, self.settings.db_lock_timeout_ms
                )
            self._probed = True
        return self.delegation is not None

    async def _workspaces(self) -> list[str]:
        """The workspaces with webhooks: a statement on every shard, by design (and exempt
        from a database's rule against those)."""
        pgbouncer = self.settings.db_pgbouncer
        async with (
            self.engine.connect() as conn,
            driver_of(conn, pgbouncer=pgbouncer) as db,
            db.transaction(),
        ):
            await db.fetch(repository.ACROSS_SHARDS, {})
            rows = await db.fetch(repository.WEBHOOK_WORKSPACES, {})
        return [row["workspace_id"] for row in rows]

    async def dispatch(self, workspace: str | None = None) -> int:
        """Queue first attempts for new events (of ``workspace``, or all); how many."""
        statement, values = repository.DISPATCH, {}
        if workspace is not None:
            statement, values = repository.DISPATCH_IN_WORKSPACE, {"workspace_id": workspace}
        queued = 0
        for _ in range(DISPATCH_ROUNDS):
            rows = await self._run(
                statement,
                {**values, "webhooks": DISPATCH_WEBHOOKS, "events": DISPATCH_EVENTS},
            )
            queued += int(rows[0]["queued"])
            if rows[0]["webhooks"] == 0:  # no webhook had anything new
                break
        return queued

    async def claim(self, workspace: str | None = None) -> int:
        """Claim due attempts (of ``workspace``, or all; as many as free slots) and start
        sending them."""
        free = self.settings.webhook_concurrency - len(self.in_flight)
        if free <= 0:
            return 0
        lease_id = uuid4()
        statement, values = repository.CLAIM, {}
        if workspace is not None:
            statement, values = repository.CLAIM_IN_WORKSPACE, {"workspace_id": workspace}
        rows = await self._run(
            statement,
            {**values, "limit": free, "lease_seconds": self.lease_seconds, "lease_id": lease_id},
        )
        for row in rows:
            task = asyncio.create_task(self.send(row, lease_id))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
        return len(rows)

    async def send(self, row: Any, lease_id: UUID) -> None:
        """One attempt: send, then record its outcome (and the next attempt, if any)."""
        attempted_at = datetime.now(UTC)
        started = time.monotonic()
        http_status: int | None = None
        error: str | None = None
        try:
            target = await safety.resolve(
                row["url"], allow_private=self.settings.webhook_allow_private
            )
            headers = signed_headers(row["secret"], str(row["event_id"]), row["body"], attempted_at)
            async with asyncio.timeout(self.settings.webhook_timeout_seconds):
                async with self.client.stream(
                    "POST",
                    target.url,
                    content=row["body"],
                    headers={**headers, **target.headers},
                    extensions=target.extensions,
                ) as response:
                    http_status = response.status_code
        except safety.UrlNotAllowed as exc:
            error = str(exc)
        except Exception as exc:  # whatever went wrong, the attempt failed and is recorded
            error = f"{type(exc).__name__}: {exc}"[:500]
        duration_ms = int((time.monotonic() - started) * 1000)
        succeeded = http_status is not None and 200 <= http_status < 300
        delay = (
            None
            if succeeded
            else retry_delay(row["attempt"], self.settings.webhook_retry_schedule_seconds)
        )
        next_at = attempted_at + timedelta(seconds=delay) if delay is not None else None
        if not succeeded:
            error = error or f"HTTP {http_status}"
            # Ids and the outcome only: a URL may carry a receiver's token in its query.
            logger.info(
                "webhook attempt failed",
                extra={
                    "workspace_id": row["workspace_id"],
                    "webhook_id": str(row["webhook_id"]),
                    "event_id": str(row["event_id"]),
                    "attempt": row["attempt"],
                    "error": error if http_status is not None else error.split(":", 1)[0],
                    "retry_in_seconds": None if delay is None else round(delay, 1),
                },
            )
        outcome = {
            "workspace_id": row["workspace_id"],
            "id": row["id"],
            "lease_id": lease_id,
            "status": "succeeded" if succeeded else "failed",
            "http_status": http_status,
            "duration_ms": duration_ms,
            "error": error,
            "attempted_at": attempted_at,
            "next_attempt_at": next_at,
        }
        for attempt in range(RECORD_TRIES):
            try:
                await self._run(repository.RECORD, outcome)
                return
            except Exception as exc:
                logger.warning("could not record a webhook attempt: %s", type(exc).__name__)
                await asyncio.sleep(attempt + 1)
        # Given up: the lease expires and the attempt is sent again (at least once, not lost).

    async def poll(self) -> int:
        """One round: dispatch, then claim; how much work it found. On Citus, one workspace
        at a time (``repository``: a statement across shards cannot skip locked rows)."""
        if not await self._on_citus():
            return await self.dispatch() + await self.claim()
        found = 0
        for workspace in await self._workspaces():
            found += await self.dispatch(workspace) + await self.claim(workspace)
        return found

    async def run(self) -> None:
        """Poll until cancelled. A round that found work is followed at once by another; with
        every slot busy, the next round starts as soon as one frees up."""
        interval = self.settings.webhook_poll_interval_seconds
        try:
            while True:
                try:
                    found = await self.poll()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    logger.warning("webhook delivery round failed: %s", type(exc).__name__)
                    await asyncio.sleep(ERROR_BACKOFF_SECONDS)
                    continue
                if len(self.in_flight) >= self.settings.webhook_concurrency:
                    await asyncio.wait(
                        self.in_flight, timeout=interval, return_when=asyncio.FIRST_COMPLETED
                    )
                elif not found:
                    await asyncio.sleep(interval)
        finally:
            for task in list(self.in_flight):
                task.cancel()
            await asyncio.gather(*self.in_flight, return_exceptions=True)
            await self.client.aclose()


def delivery_engine(settings: Settings, url: str) -> AsyncEngine:
    """The delivery loop's own small pool: it never takes a connection from the requests."""
    from aurion.db.engine import create_engine

    small = settings.model_copy(
        update={
            "db_pool_size": DELIVERY_POOL_SIZE,
            "db_max_overflow": 0,
            "db_pool_timeout_seconds": 10,
        }
    )
    return create_engine(small, url)
