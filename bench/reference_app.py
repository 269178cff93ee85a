"""The bare reference: a minimal FastAPI endpoint running the endpoint's SQL on raw asyncpg.

Same transaction as the service (lock the parent, check it, count the siblings, insert the
child and its activities, bump the parent: ``LOCK_PARENT_SQL`` then ``CREATE_CHILD_SQL``, the
very strings the repository runs), the same response body (the child row as JSON), and nothing
else: no authentication, no idempotency, no access log, no middleware. The workspace and actor
come from the environment, as a token would give them.

With ``BENCH_IDEMPOTENCY=1`` it also runs the idempotency store's own statements around them
(``CLAIM_SQL`` first, ``STORE_SQL`` with the response last): the SQL the service runs for a
request with an Idempotency-Key, so the two differ only in Python.

Run by bench/run.py as ``uvicorn bench.reference_app:create_app --factory`` with the service's
server options (uvloop, httptools, the same number of workers and the same pool size).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

import asyncpg
import orjson
import uuid_utils.compat as uuid7
from fastapi import FastAPI, Header
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from aurion.conversations.repository import CREATE_CHILD_SQL, LOCK_PARENT_SQL
from aurion.idempotency.repository import CLAIM_SQL, STORE_SQL

_PRIVATE = ("workspace_id", "parent_version")
_JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_OMIT_MICROSECONDS
KEY_TTL = timedelta(hours=24)


class Refused(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class ChildIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str


async def _init_connection(connection: asyncpg.Connection) -> None:
    # JSON columns decode to objects, as the service's driver setup does.
    for name in ("json", "jsonb"):
        await connection.set_type_codec(
            name,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """The reference sets no session state, so nothing needs resetting between requests:
    this keeps its round trips exactly the service's (BEGIN, lock, write, COMMIT)."""


def create_app() -> FastAPI:
    dsn = os.environ["DATABASE_URL"]
    workspace = os.environ["BENCH_WORKSPACE"]
    actor = os.environ["BENCH_ACTOR"]
    max_children = int(os.environ.get("AURION_MAX_CHILDREN_PER_PARENT", "50"))
    # The "reference + idempotency" variant also runs the service's idempotency statements
    # (claim the key first, store the response last, same transaction).
    with_idempotency = os.environ.get("BENCH_IDEMPOTENCY") == "1"
    pool_max = int(os.environ.get("AURION_DB_POOL_SIZE", "10")) + int(
        os.environ.get("AURION_DB_MAX_OVERFLOW", "10")
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(
            dsn, min_size=1, max_size=pool_max, init=_init_connection, reset=_keep_session
        )
        try:
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    async def create(
        con: asyncpg.Connection, parent_id: UUID, subject: str, key: str | None
    ) -> Response:
        child_id = uuid7.uuid7()
        now = datetime.now(UTC)
        if key is not None:
            canonical = orjson.dumps({"subject": subject}, option=orjson.OPT_SORT_KEYS)
            fingerprint = hashlib.sha256(
                b"POST\n"
                + f"/api/v2/conversations/{parent_id}/children".encode()
                + b"\n"
                + canonical
            ).hexdigest()
            claimed = await con.fetchrow(
                CLAIM_SQL, workspace, actor, key, fingerprint, now, now + KEY_TTL
            )
            if claimed is None:
                raise Refused(409)
        parent = await con.fetchrow(LOCK_PARENT_SQL, workspace, parent_id)
        if parent is None:
            raise Refused(404)
        if (
            parent["merged_into_id"] is not None
            or parent["is_spam"]
            or parent["archived_at"] is not None
            or parent["parent_id"] is not None
        ):
            raise Refused(409)
        activities: list[tuple[UUID, UUID, str, dict[str, Any]]] = [
            (uuid7.uuid7(), child_id, "created_from_parent", {"parent_id": str(parent_id)}),
            (
                uuid7.uuid7(),
                parent_id,
                "child_created",
                {"child_id": str(child_id), "subject": subject},
            ),
        ]
        if parent["status"] in ("resolved", "closed"):
            activities.append((uuid7.uuid7(), parent_id, "reopened", {"child_id": str(child_id)}))
        row = await con.fetchrow(
            CREATE_CHILD_SQL,
            workspace,
            parent_id,
            child_id,
            subject,
            now,
            max_children,
            [a[0] for a in activities],
            [a[1] for a in activities],
            [a[2] for a in activities],
            [orjson.dumps(a[3]).decode() for a in activities],
            actor,
        )
        if row is None:
            raise Refused(409)
        data = {k: v for k, v in row.items() if k not in _PRIVATE}
        data["messages"] = []
        data["tab_counts"] = {"activities": 1, "has_resolution": False, "messages": 0, "related": 1}
        content = orjson.dumps(data, default=str, option=_JSON_OPTIONS)
        headers = {"Location": f"/api/v2/conversations/{child_id}", "ETag": '"1"'}
        if key is not None:
            await con.execute(
                STORE_SQL, workspace, actor, key, 201, content, orjson.dumps(headers).decode()
            )
        return Response(content, status_code=201, media_type="application/json", headers=headers)

    @app.post("/api/v2/conversations/{conversation_id}/children", status_code=201)
    async def create_child(
        conversation_id: UUID,
        body: ChildIn,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Response:
        key = idempotency_key if with_idempotency else None
        try:
            async with app.state.pool.acquire() as con, con.transaction():
                return await create(con, conversation_id, body.subject, key)
        except Refused as refused:  # rolled back: refusals write nothing
            return Response(status_code=refused.status)

    return app
