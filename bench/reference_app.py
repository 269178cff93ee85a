"""The bare reference: a minimal FastAPI endpoint running the endpoint's SQL on raw asyncpg.

Same transaction as the service (lock the parent, check it, count the siblings, insert the
child and its activities, bump the parent: ``LOCK_PARENT_SQL`` then ``CREATE_CHILD_SQL``, the
very strings the repository runs), the same response body (the child row as JSON), and nothing
else: no authentication, no idempotency, no access log, no middleware. The workspace and actor
come from the environment, as a token would give them.

Run by bench/run.py as ``uvicorn bench.reference_app:create_app --factory`` with the service's
server options (uvloop, httptools, the same number of workers and the same pool size).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson
import uuid_utils.compat as uuid7
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from aurion.conversations.repository import CREATE_CHILD_SQL, LOCK_PARENT_SQL

_PRIVATE = ("workspace_id", "parent_version")
_JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_OMIT_MICROSECONDS


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

    @app.post("/api/v2/conversations/{conversation_id}/children", status_code=201)
    async def create_child(conversation_id: UUID, body: ChildIn) -> Response:
        child_id = uuid7.uuid7()
        now = datetime.now(UTC)
        async with app.state.pool.acquire() as con, con.transaction():
            parent = await con.fetchrow(LOCK_PARENT_SQL, workspace, conversation_id)
            if parent is None:
                return Response(status_code=404)
            if (
                parent["merged_into_id"] is not None
                or parent["is_spam"]
                or parent["archived_at"] is not None
                or parent["parent_id"] is not None
            ):
                return Response(status_code=409)
            activities: list[tuple[UUID, UUID, str, dict[str, Any]]] = [
                (uuid7.uuid7(), child_id, "created_from_parent", {"parent_id": str(parent["id"])}),
                (
                    uuid7.uuid7(),
                    conversation_id,
                    "child_created",
                    {"child_id": str(child_id), "subject": body.subject},
                ),
            ]
            if parent["status"] in ("resolved", "closed"):
                activities.append(
                    (uuid7.uuid7(), conversation_id, "reopened", {"child_id": str(child_id)})
                )
            row = await con.fetchrow(
                CREATE_CHILD_SQL,
                workspace,
                conversation_id,
                child_id,
                body.subject,
                now,
                max_children,
                [a[0] for a in activities],
                [a[1] for a in activities],
                [a[2] for a in activities],
                [orjson.dumps(a[3]).decode() for a in activities],
                actor,
            )
        if row is None:
            return Response(status_code=409)
        data = {k: v for k, v in row.items() if k not in _PRIVATE}
        data["messages"] = []
        data["tab_counts"] = {
            "activities": 1,
            "has_resolution": False,
            "messages": 0,
            "related": 1,
        }
        return Response(
            orjson.dumps(data, default=str, option=_JSON_OPTIONS),
            status_code=201,
            media_type="application/json",
            headers={"Location": f"/api/v2/conversations/{child_id}", "ETag": '"1"'},
        )

    return app
