"""Refusals of the lifecycle operations (the others are conversations' own)."""

from __future__ import annotations

from pydantic import Field

from aurion.conversations.errors import ConversationNotFound
from aurion.conversations.schemas import UUID_EXAMPLE
from aurion.errors import AppError, ErrorBody


class OpenChildrenBody(ErrorBody):
    """`open_children`: the usual error body, and the children that are still open."""

    open_child_ids: list[str] = Field(
        description="The open children (not resolved or closed) that block the change.",
        examples=[[UUID_EXAMPLE]],
    )


class OpenChildren(AppError):
    status_code = 409
    code = "open_children"
    message = (
        "The conversation has open children; resolve them first, or ask for the cascade "
        "with ?children=resolve."
    )
    body_model = OpenChildrenBody
    example_extra = {"open_child_ids": [UUID_EXAMPLE]}


class ConversationHasChildren(AppError):
    status_code = 409
    code = "conversation_has_children"
    message = "The conversation has children of its own; children are one level deep."


class ConversationBusy(AppError):
    status_code = 503
    code = "conversation_busy"
    message = "The conversation's family is changing too fast right now; retry shortly."


class NewParentNotFound(ConversationNotFound):
    message = "The new parent conversation was not found."
