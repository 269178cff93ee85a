"""Request and response bodies of the webhooks API."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from aurion.conversations.fields import Label
from aurion.events.schemas import EventType

_CONTROL = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def _unique(value: list[str]) -> list[str]:
    if len(set(value)) != len(value):
        raise ValueError("must not repeat a type")
    return value


Url = Annotated[
    str,
    StringConstraints(min_length=1, max_length=2048, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[!-~]+$"),
    AfterValidator(_no_control),
]
# A label (at most 255 characters, no control characters: the OpenAPI document says so too,
# as a pattern), its surrounding whitespace stripped.
Description = Annotated[Label, StringConstraints(strip_whitespace=True)]
_ID = "0193b0a2-7c4e-7d1a-9f3e-2b8c4d5e6f80"
_URL = "https://hooks.example.com/aurion"
_TYPES = ["child.created", "parent.reopened"]


class WebhookCreate(BaseModel):
    """Body of createWebhook."""

    model_config = ConfigDict(extra="forbid")

    url: Url = Field(
        description="Where events are POSTed: an https URL whose host resolves to public "
        "addresses only (checked now and before every delivery; "
        "`AURION_WEBHOOK_ALLOW_PRIVATE=true` lifts this for development). At most 2048 "
        "characters.",
        examples=[_URL],
    )
    types: Annotated[list[EventType], AfterValidator(_unique)] = Field(
        min_length=1,
        max_length=9,
        description="The event types to deliver (at least one, no repeats).",
        examples=[_TYPES],
        json_schema_extra={"uniqueItems": True},
    )
    description: Description | None = Field(
        default=None,
        description="A note for people (at most 255 characters).",
        examples=["Sync sub-tickets to the CRM"],
    )


class Webhook(BaseModel):
    """A registered webhook (its secret is shown only once, when it is created)."""

    id: UUID = Field(description="The webhook's id (a UUID).", examples=[_ID])
    url: str = Field(description="Where events are POSTed.", examples=[_URL])
    types: list[EventType] = Field(description="The event types delivered.", examples=[_TYPES])
    description: str | None = Field(
        description="A note for people.", examples=["Sync sub-tickets to the CRM"]
    )
    created_at: datetime = Field(
        description="When it was registered (ISO 8601 UTC).", examples=["2026-11-25T18:00:00Z"]
    )


class WebhookCreated(Webhook):
    """A new webhook, with the secret that signs its deliveries."""

    secret: str = Field(
        description="The signing secret (`whsec_` + base64 of 32 random bytes, the Standard "
        "Webhooks form). Shown only in this response: store it to verify deliveries.",
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw4Y9p+3X7v6w="],
    )


class WebhookList(BaseModel):
    """The workspace's webhooks, oldest first."""

    items: list[Webhook] = Field(description="Every webhook of the workspace.")


class Delivery(BaseModel):
    """One attempt to deliver one event."""

    event_id: UUID = Field(
        description="The event's id, sent as `webhook-id` (the same on every attempt).",
        examples=["0193b0a2-7c4e-7d1a-9f3e-2b8c4d5e6f71"],
    )
    attempt: int = Field(
        description="1 for the first attempt, 2 for the first retry, ...", examples=[1]
    )
    status: Literal["pending", "succeeded", "failed"] = Field(
        description="`pending`: not sent yet (due at `next_attempt_at`); `succeeded`: the "
        "receiver answered 2xx; `failed`: it did not (or could not be reached): retried at "
        "`next_attempt_at`, or given up when that is null.",
        examples=["failed"],
    )
    http_status: int | None = Field(
        description="The receiver's HTTP status; null if none was received.", examples=[503]
    )
    duration_ms: int | None = Field(
        description="How long the attempt took, in milliseconds; null while pending.",
        examples=[87],
    )
    attempted_at: datetime | None = Field(
        description="When it was sent (ISO 8601 UTC); null while pending.",
        examples=["2026-11-25T18:00:01Z"],
    )
    next_attempt_at: datetime | None = Field(
        description="Pending: when it is due. Failed: when the next attempt is due (null: no "
        "more attempts). Succeeded: null.",
        examples=["2026-11-25T18:00:06Z"],
    )


class DeliveryPage(BaseModel):
    """A page of a webhook's deliveries, newest first."""

    items: list[Delivery] = Field(description="The attempts on this page.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page.",
        examples=["1042"],
    )
