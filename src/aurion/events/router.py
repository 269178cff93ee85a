"""HTTP layer of the event feed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from aurion.auth import EventsPrincipal
from aurion.auth.dependencies import AUTH_ERRORS
from aurion.db.driver import DbDep
from aurion.errors import DatabaseUnavailable
from aurion.events import service
from aurion.events.schemas import EVENT_TYPES, EventPage
from aurion.openapi import error_responses

router = APIRouter(prefix="/api/v2/events", tags=["events"])

_TYPE = "|".join(t.replace(".", r"\.") for t in EVENT_TYPES)

After = Annotated[
    str | None,
    Query(
        pattern=r"^[A-Za-z0-9_-]{32}$",
        description="`next_cursor` of the previous page; omit to start from the oldest event.",
        examples=["AAAAAAAAAvEBk7CifE59Gp8-K4xNXm9x"],
    ),
]
Types = Annotated[
    str | None,
    Query(
        pattern=rf"^({_TYPE})(,({_TYPE}))*$",
        description="Only these event types, comma-separated (an unknown type is a 422): "
        + ", ".join(f"`{t}`" for t in EVENT_TYPES)
        + ".",
        examples=["child.created,parent.reopened"],
    ),
]
Limit = Annotated[int, Query(ge=1, le=500, description="Page size, 1–500.", examples=[100])]


@router.get(
    "",
    response_model=EventPage,
    operation_id="listEvents",
    summary="Read the event feed",
    responses=error_responses(*AUTH_ERRORS, DatabaseUnavailable),
)
async def list_events(
    principal: EventsPrincipal,
    db: DbDep,
    after: After = None,
    types: Types = None,
    limit: Limit = 100,
) -> Response:
    """The workspace's events after a cursor, oldest first, in commit order.

    Poll with `after` = the last `next_cursor`: the feed is gap-free, so a reader never skips
    an event, not even one whose transaction started before and committed after others. An
    event appears once every transaction that was running when it was written has ended
    (usually milliseconds).
    """
    wanted = sorted(set(types.split(","))) if types else None
    body = await service.list_events(db, principal, after=after, types=wanted, limit=limit)
    return Response(body, media_type="application/json")
