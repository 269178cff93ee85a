"""The bare reference: FastAPI + a raw asyncpg pool running the yardstick's one statement.

``POST /api/v2/conversations/{id}/children`` runs bench/yardstick.py's CREATE_CHILD_SQL in
autocommit (no explicit transaction) and answers 201 with the child row as JSON (orjson).
Nothing else: no authentication, no lock, no limit, no idempotency (the bearer token and the
Idempotency-Key the benchmark sends are ignored), no access log, no middleware. The workspace
and actor come from the environment, as a token would give them.

Run by the benchmark as ``python -m bench.serve bench.reference_app:create_app`` with the
service's server (aurion/serving.py: uvloop, httptools, the same number of workers, each on a
socket of its own) and the same pool size.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID

import asyncpg
import orjson
import uuid_utils.compat as uuid7
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from bench.yardstick import CREATE_CHILD_SQL


class ChildIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str


async def _init_connection(connection: asyncpg.Connection) -> None:
    # JSON columns decode to objects, so the response carries them as JSON, not as strings.
    await connection.set_type_codec(
        "jsonb", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads,
        schema="pg_catalog",
    )  # fmt: skip


async def _no_reset(_connection: asyncpg.Connection) -> None:
    """The endpoint sets no session state, so a released connection needs no reset query
    (asyncpg's default would add a round trip per request)."""


def create_app() -> FastAPI:
    dsn = os.environ["DATABASE_URL"]
    workspace = os.environ["BENCH_WORKSPACE"]
    actor = os.environ["BENCH_ACTOR"]
    pool_size = int(os.environ.get("AURION_DB_POOL_SIZE", "20"))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(
            dsn,
            min_size=pool_size,
            max_size=pool_size,
            init=_init_connection,
            reset=_no_reset,
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
        row = await app.state.pool.fetchrow(
            CREATE_CHILD_SQL,
            workspace,
            conversation_id,
            child_id,
            body.subject,
            actor,
            uuid7.uuid7(),
            uuid7.uuid7(),
        )
        if row is None:
            return Response(status_code=404)
        child = dict(row)
        del child["workspace_id"]
        return Response(
            orjson.dumps(child, default=str),  # asyncpg's own UUID type
            status_code=201,
            media_type="application/json",
            headers={"Location": f"/api/v2/conversations/{child_id}"},
        )

    return app
