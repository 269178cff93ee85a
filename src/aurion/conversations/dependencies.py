"""Request-scoped dependencies: the database connection, settings and typed path/query params."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Header, Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from aurion.db.engine import ConnectionQueue
from aurion.settings import Settings


async def get_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """One connection (and transaction) per request; rolled back unless the route commits."""
    state = request.app.state
    queue: ConnectionQueue | None = getattr(state, "connection_queue", None)
    if queue is None or queue.engine is not state.engine:
        queue = state.connection_queue = ConnectionQueue(state.engine, state.settings)
    async with queue.connect() as conn:
        yield conn


async def get_settings(request: Request) -> Settings:
    # async on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, and that
    # round trip through the thread pool cost more than the rest of the dependency solving.
    settings: Settings = request.app.state.settings
    return settings


ConnectionDep = Annotated[AsyncConnection, Depends(get_connection)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

ConversationID = Annotated[
    UUID,
    Path(
        description="The conversation's id (a UUID).",
        examples=["0193b0a2-7c4e-7d1a-9f3e-2b8c4d5e6f70"],
    ),
]
IfMatch = Annotated[
    str | None,
    Header(
        max_length=1024,
        description='Only act if the parent\'s ETag matches, e.g. `"3"` (412 otherwise).',
        examples=['"1"'],
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=r"^[\x20-\x7e]{1,255}$",
        description="Makes a retry safe: 1–255 printable ASCII characters, unique per "
        "operation. Within 24 h, a request with the same key and body gets the first "
        "response back (`Idempotent-Replayed: true`) and nothing new is written.",
        examples=["3f1c9a2e-retry-safe-key"],
    ),
]
Limit = Annotated[int, Query(ge=1, le=100, description="Page size, 1–100.", examples=[20])]
# A cursor is a base64url-encoded child id (22 characters): the pattern makes any accepted
# value decodable, so a forged or truncated cursor is a 422 like any other bad parameter.
Cursor = Annotated[
    str | None,
    Query(
        pattern=r"^[A-Za-z0-9_-]{22}$",
        description="`next_cursor` of the previous page; omit for the first page.",
        examples=["AZOwonxOfRqfPiuMTV5vcA"],
    ),
]
