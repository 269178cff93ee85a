"""The event types of SPEC §10 and the feed's response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args
from uuid import UUID

from pydantic import BaseModel, Field

EventType = Literal[
    "conversation.created",
    "conversation.updated",
    "conversation.deleted",
    "child.created",
    "child.attached",
    "child.detached",
    "parent.reopened",
    "parent.resolved_automatically",
    "child.resolved_with_parent",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)

EVENT_TYPES_DESCRIPTION = """What happened:

* `conversation.created`: a conversation was created (`data.conversation` is the new object).
* `conversation.updated`: a conversation changed (`data.conversation` is the object as it became).
* `conversation.deleted`: a conversation was deleted.
* `child.created`: a child conversation was created (`data.parent_id`, `data.conversation`).
* `child.attached` / `child.detached`: a conversation got or lost its parent.
* `parent.reopened`: a resolved or closed parent was reopened by one of its children.
* `parent.resolved_automatically`: a parent was resolved when its last open child was.
* `child.resolved_with_parent`: an open child was resolved together with its parent."""


class Event(BaseModel):
    """Something that happened in the workspace, recorded with the change itself."""

    id: UUID = Field(
        description="The event's id (a UUID); also the `webhook-id` of its deliveries, so "
        "receivers deduplicate on it.",
        examples=["0193b0a2-7c4e-7d1a-9f3e-2b8c4d5e6f71"],
    )
    type: EventType = Field(description=EVENT_TYPES_DESCRIPTION, examples=["child.created"])
    created_at: datetime = Field(
        description="When the change was made (ISO 8601 UTC).", examples=["2026-11-25T17:05:00Z"]
    )
    data: dict[str, Any] = Field(
        description="The ids concerned (`conversation_id`, and `parent_id`, `child_id` where "
        "they apply) and, for `*.created` and `*.updated`, the conversation object as it "
        "became (`conversation`).",
        examples=[
            {
                "conversation_id": "0193b0a2-7c4e-7d1a-9f3e-2b8c4d5e6f70",
                "parent_id": "0193b0a2-6b1d-7c0e-8e2d-1a7b3c4d5e6f",
                "conversation": {"id": "0193b0a2-7c4e-7d1a-9f3e-2b8c4d5e6f70", "...": "..."},
            }
        ],
    )


class EventPage(BaseModel):
    """A page of the feed, oldest first."""

    items: list[Event] = Field(description="The events, in commit order (oldest first).")
    next_cursor: str = Field(
        description="Always present: pass it as `after` to get what comes next. When "
        "nothing new has committed it is the cursor given.",
        examples=["AAAAAAAAAvEBk7CifE59Gp8-K4xNXm9x"],
    )
