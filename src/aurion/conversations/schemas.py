"""Request and response bodies of the conversations API.

Inputs forbid unknown fields and refuse what PostgreSQL cannot store (NUL, lone surrogates,
non-finite numbers), so malformed input is a 422 and never reaches the database as a 500.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
)

Status = Literal["new", "open", "pending", "on_hold", "resolved", "closed"]
Priority = Literal["low", "medium", "high", "urgent"]

_LABEL_FORBIDDEN = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_TEXT_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
MAX_JSON_BYTES = 16 * 1024
MAX_JSON_DEPTH = 32
# orjson (responses) and asyncpg (jsonb) take 64-bit integers; jsonb prints 1e20 as
# 100000000000000000000, which reads back as an integer: floats keep to the same range.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _no_control(value: str) -> str:
    if _LABEL_FORBIDDEN.search(value):
        raise ValueError("must not contain control characters")
    return value


def _no_binary(value: str) -> str:
    if _TEXT_FORBIDDEN.search(value):
        raise ValueError("must not contain NUL or control characters other than tab and newline")
    return value


def _storable(value: str) -> str:
    # Free-form JSON keeps any text PostgreSQL can store: only NUL and lone surrogates are out.
    if _UNSTORABLE.search(value):
        raise ValueError("must not contain NUL or unpaired surrogates")
    return value


def _check_json(value: Any, depth: int = 0) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"must not nest deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        _storable(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must not contain NaN or infinite numbers")
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError("contains a number out of range (at most ±9.2e18)")
    elif isinstance(value, int) and not isinstance(value, bool):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError("contains an integer out of the 64-bit range")
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key)
            _check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)


def _json_object(value: dict[str, Any]) -> dict[str, Any]:
    _check_json(value)
    try:
        encoded = orjson.dumps(value)
    except TypeError as exc:  # anything orjson cannot encode is a client error, not a 500
        raise ValueError(f"is not storable JSON: {exc}") from None
    if len(encoded) > MAX_JSON_BYTES:
        raise ValueError(f"must be at most {MAX_JSON_BYTES} bytes as JSON")
    return value


# The same rules as JSON Schema patterns, so the OpenAPI document (and clients or fuzzers
# generating from it) knows them; the validators above give the friendlier message.
_LABEL_PATTERN = Field(json_schema_extra={"pattern": "^[^\\u0000-\\u001f\\u007f]*$"})
_SUBJECT_PATTERN = Field(
    json_schema_extra={
        "pattern": "^[^\\u0000-\\u001f\\u007f]*"
        "[^\\s\\u0000-\\u001f\\u007f][^\\u0000-\\u001f\\u007f]*$"
    }
)
_TEXT_PATTERN = Field(
    json_schema_extra={"pattern": "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f]*$"}
)


def _json_text_only(value: Any) -> Any:
    # A time is an ISO 8601 string, as the schema says: lax parsing would take 0 as 1970.
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date-time string with a time zone")
    return value


Label = Annotated[
    str, StringConstraints(max_length=255), AfterValidator(_no_control), _LABEL_PATTERN
]
Tag = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64),
    AfterValidator(_no_control),
    _LABEL_PATTERN,
]
Subject = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=500),
    AfterValidator(_no_control),
    _SUBJECT_PATTERN,
]
JsonObject = Annotated[dict[str, Any], AfterValidator(_json_object)]
MessageBody = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64 * 1024),
    AfterValidator(_no_binary),
    _TEXT_PATTERN,
]
Html = Annotated[
    str, StringConstraints(max_length=64 * 1024), AfterValidator(_no_binary), _TEXT_PATTERN
]


def _in_utc_range(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


def _json_integer(value: Any) -> Any:
    # JSON has one number type: 5.0 is the integer 5 (JSON Schema agrees); "5" and true are not.
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Timestamp = Annotated[
    AwareDatetime, BeforeValidator(_json_text_only), AfterValidator(_in_utc_range)
]
EffortMinutes = Annotated[int, Field(ge=0, le=10_000_000), BeforeValidator(_json_integer)]

TIME_EXAMPLE = "2019-08-24T14:15:22Z"
UUID_EXAMPLE = "0193b0a2-7c4e-7d1a-9f3e-2b8c4d5e6f70"


_NO_EXAMPLE: Any = object()


def _f(description: str, example: Any = _NO_EXAMPLE, **kwargs: Any) -> Any:
    # An explicit None is a real example: the field is usually null.
    examples = None if example is _NO_EXAMPLE else [example]
    return Field(description=description, examples=examples, **kwargs)


# ---------------------------------------------------------------- read models


class Attachment(BaseModel):
    model_config = ConfigDict(extra="allow")


class MessageRead(BaseModel):
    """A message of a conversation, as the seed API returns it."""

    id: str = _f("The message's id (UUID).", UUID_EXAMPLE)
    attachments: list[dict[str, Any]] = _f("Attachment descriptors.", [])
    body: str = _f("Plain-text body.", "My order has not arrived.")
    body_html: str | None = _f("HTML body, when the channel has one.", "<p>My order…</p>")
    content_type: str = _f("MIME type of the body.", "text/plain")
    conversation_version: int = _f("The conversation's version when the message was added.", 1)
    created_at: str = _f("When the message was created (ISO 8601 UTC).", TIME_EXAMPLE)
    is_internal: bool = _f("An internal note, invisible to the customer.", False)
    metadata: dict[str, Any] = _f("Free-form metadata.", {})
    original_body: str | None = _f("The body before translation.", None)
    sender_id: str | None = _f("Who sent it (user or contact id).", "contact_42")
    sender_type: str | None = _f("Kind of sender: contact, agent, system, bot.", "contact")
    sentiment_label: str | None = _f("Sentiment of the message.", None)
    sentiment_score: float | None = _f("Sentiment score, -1 to 1.", None)
    source: str | None = _f("Where the message came from (email, chat, api).", "email")
    source_message_id: str | None = _f("The message's id in the source system.", None)
    translated_body: str | None = _f("Translated body.", None)
    translation_target_language: str | None = _f("Language of translated_body.", None)


class TabCounts(BaseModel):
    """Counters derived on read, for the conversation view's tabs."""

    activities: int = _f("Activity-log entries on the conversation.", 1)
    has_resolution: bool = _f("Status is resolved or closed.", False)
    messages: int = _f("Messages on the conversation (all, not just embedded ones).", 0)
    related: int = _f("Conversations linked by parent/child: its parent plus its children.", 1)


class Conversation(BaseModel):
    """A conversation (support ticket), exactly the fields of the seed API's object."""

    ai_analysis_generated_at: str | None = _f("When AI analysis last ran.", None)
    ai_analysis_message_count: int = _f("Messages covered by the last AI analysis.", 0)
    ai_analysis_stale: bool = _f("New messages arrived since the last AI analysis.", False)
    ai_category: str | None = _f("Category suggested by AI.", None)
    ai_classification_source: str | None = _f("What produced the AI classification.", None)
    ai_classified_at: str | None = _f("When AI classified the conversation.", None)
    ai_confidence: float | None = _f("Confidence of the AI classification, 0 to 1.", None)
    ai_conversation_type: str | None = _f("Conversation type suggested by AI.", None)
    ai_copilot_context: dict[str, Any] = _f("Context kept for the AI copilot.", {})
    ai_language: str | None = _f("Language of the conversation (inherited by children).", "en")
    ai_priority: str | None = _f("Priority suggested by AI.", None)
    ai_sentiment: str | None = _f("Overall sentiment found by AI.", None)
    ai_suggested_reply: dict[str, Any] = _f("A reply drafted by AI.", {})
    ai_suggestion: dict[str, Any] = _f("Field values suggested by AI.", {})
    ai_suggestion_field_states: dict[str, Any] = _f("Accepted/rejected state per field.", {})
    ai_topic_tags: list[str] = _f("Topic tags found by AI.", [])
    ai_triage_hint: str | None = _f("A triage hint from AI.", None)
    ai_triage_hint_type: str | None = _f("Kind of triage hint.", None)
    archived_at: str | None = _f("When the conversation was archived.", None)
    assigned_at: str | None = _f("When the current assignee was set.", TIME_EXAMPLE)
    assignee_team_id: str | None = _f("Assigned team's id.", "team_billing")
    assignee_team_name: str | None = _f("Assigned team's name.", "Billing")
    assignee_user_id: str | None = _f("Assigned agent's id.", "user_7")
    assignee_user_name: str | None = _f("Assigned agent's name.", "Dana Agent")
    assignment_reason: str | None = _f("Why the assignee was chosen.", None)
    auto_resolved_by_ai: bool = _f("Resolved automatically by AI.", False)
    category: str | None = _f("Category.", "billing")
    channel: str | None = _f("Channel the conversation arrived on.", "email")
    company_id: str | None = _f("Customer company's id.", "comp_1")
    company_name: str | None = _f("Customer company's name.", "Acme Corp")
    contact_email: str | None = _f("Customer contact's email.", "jo@acme.example")
    contact_id: str | None = _f("Customer contact's id.", "contact_42")
    contact_name: str | None = _f("Customer contact's name.", "Jo Customer")
    contact_phone: str | None = _f("Customer contact's phone.", "+1 555 0100")
    contact_role: str | None = _f("Customer contact's role.", "buyer")
    conversation_type: str | None = _f("Type: question, incident, problem, task...", "incident")
    created_at: str = _f("When the conversation was created (ISO 8601 UTC).", TIME_EXAMPLE)
    current_sentiment_label: str | None = _f("Latest sentiment label.", None)
    current_sentiment_score: float | None = _f("Latest sentiment score, -1 to 1.", None)
    custom_attrs: dict[str, Any] = _f("Workspace-defined attributes.", {"order": "A-1001"})
    deleted_at: str | None = _f("When the conversation was soft-deleted.", None)
    department_id: str | None = _f("Owning department's id.", "dept_support")
    id: str = _f("The conversation's id (UUID v7, time-ordered).", UUID_EXAMPLE)
    impact: str | None = _f("Impact label.", "single_user")
    initial_sentiment_label: str | None = _f("Sentiment at the first message.", None)
    is_spam: bool = _f("Marked as spam.", False)
    merged_at: str | None = _f("When it was merged into another conversation.", None)
    merged_by: str | None = _f("Who merged it.", None)
    merged_into_id: str | None = _f("The conversation it was merged into.", None)
    messages: list[MessageRead] = _f(
        "Messages, oldest first; at most the newest 200 (tab_counts.messages has the total).", []
    )
    parent_id: str | None = _f(
        "The parent conversation's id, for a child; null otherwise.",
        "0193b0a2-6b1d-7c0e-8e2d-1a7b3c4d5e6f",
    )
    planned_effort_minutes: int | None = _f("Planned effort in minutes.", None)
    planned_end: str | None = _f("Planned end.", None)
    planned_start: str | None = _f("Planned start.", None)
    priority: Priority | None = _f("Priority: low, medium, high or urgent.", "high")
    sentiment_trend: str | None = _f("Sentiment trend: improving, stable, worsening.", None)
    sla_first_response_due: str | None = _f("SLA: first response due.", TIME_EXAMPLE)
    sla_last_escalation_at: str | None = _f("SLA: last escalation.", None)
    sla_resolution_due: str | None = _f("SLA: resolution due.", TIME_EXAMPLE)
    sla_state: str | None = _f("SLA state label.", "active")
    source: str | None = _f("Origin: email, chat, api, child...", "child")
    source_thread_id: str | None = _f("Thread id in the source system.", None)
    status: Status = _f("Status: new, open, pending, on_hold, resolved or closed.", "open")
    sub_category: str | None = _f("Sub-category.", "refund")
    subject: str = _f("Subject line.", "Refund the duplicate charge")
    tab_counts: TabCounts = _f(
        "Derived counters for the conversation's tabs.",
        {"activities": 1, "has_resolution": False, "messages": 0, "related": 1},
    )
    tags: list[str] = _f("Tags.", ["vip"])
    total_time_spent_minutes: int = _f("Time logged on the conversation, in minutes.", 0)
    updated_at: str = _f("Last change (ISO 8601 UTC).", TIME_EXAMPLE)
    urgency: str | None = _f("Urgency label.", "high")
    version: int = _f("Optimistic-concurrency version; the ETag is its quoted value.", 1, ge=1)


class StatusCounts(BaseModel):
    """Children per status."""

    new: int = _f("Children with status new.", 0)
    open: int = _f("Children with status open.", 2)
    pending: int = _f("Children with status pending.", 1)
    on_hold: int = _f("Children with status on_hold.", 0)
    resolved: int = _f("Children with status resolved.", 1)
    closed: int = _f("Children with status closed.", 0)


class ChildrenSummary(BaseModel):
    """Progress of a parent's children: all of them, whatever the filter and the page."""

    total: int = _f("Children that are not deleted.", 4)
    by_status: StatusCounts = _f("Children per status (every status is present).")
    percent_resolved: int = _f(
        "Resolved and closed children over total, in percent, rounded down (0 with none).", 25
    )


class ConversationPage(BaseModel):
    """One page of a conversation's children, newest first, and their summary."""

    items: list[Conversation] = _f("The conversations on this page.")
    next_cursor: str | None = _f(
        "Pass as `cursor` to get the next page; null on the last page.", None
    )
    summary: ChildrenSummary = _f("Progress of all the parent's children.")


# ---------------------------------------------------------------- write models


class MessageCreate(BaseModel):
    """An initial message of a new conversation."""

    model_config = ConfigDict(extra="forbid")

    body: MessageBody = _f("Plain-text body, up to 64 KiB.", "My order has not arrived.")
    body_html: Html | None = _f("HTML body, up to 64 KiB.", None, default=None)
    content_type: Label = _f("MIME type of the body.", "text/plain", default="text/plain")
    sender_type: Label | None = _f("contact, agent, system or bot.", "contact", default=None)
    sender_id: Label | None = _f("The sender's id.", "contact_42", default=None)
    # Strict: JSON `0`/`"true"` are not booleans (the schema says boolean; lax coercion hid typos).
    is_internal: StrictBool = _f("An internal note.", False, default=False)
    metadata: JsonObject = _f(
        "Free-form metadata: up to 16 KiB as JSON, 32 levels, no NUL, numbers within int64.",
        {},
        default={},
    )


class ConversationContext(BaseModel):
    """The subject and the context a child inherits from its parent (the inheritance table of
    SPEC §2): one definition of each field, for createConversation and createChildConversation."""

    model_config = ConfigDict(extra="forbid")

    subject: Subject = _f("Subject; trimmed; 1–500 characters.", "Order #1001 never arrived")
    priority: Priority | None = _f("Priority.", "high", default=None)
    urgency: Label | None = _f("Urgency label.", "high", default=None)
    impact: Label | None = _f("Impact label.", "single_user", default=None)
    category: Label | None = _f("Category.", "shipping", default=None)
    sub_category: Label | None = _f("Sub-category.", "lost_parcel", default=None)
    channel: Label | None = _f("Channel.", "email", default=None)
    conversation_type: Label | None = _f("Type.", "incident", default=None)
    company_id: Label | None = _f("Customer company's id.", "comp_1", default=None)
    company_name: Label | None = _f("Customer company's name.", "Acme Corp", default=None)
    contact_id: Label | None = _f("Customer contact's id.", "contact_42", default=None)
    contact_name: Label | None = _f("Customer contact's name.", "Jo Customer", default=None)
    contact_email: Label | None = _f("Customer contact's email.", "jo@acme.example", default=None)
    contact_phone: Label | None = _f("Customer contact's phone.", "+1 555 0100", default=None)
    contact_role: Label | None = _f("Customer contact's role.", "buyer", default=None)
    department_id: Label | None = _f("Department id.", "dept_support", default=None)
    assignee_team_id: Label | None = _f("Assigned team's id.", "team_billing", default=None)
    assignee_team_name: Label | None = _f("Assigned team's name.", "Billing", default=None)
    assignee_user_id: Label | None = _f("Assigned agent's id.", "user_7", default=None)
    assignee_user_name: Label | None = _f("Assigned agent's name.", "Dana Agent", default=None)
    tags: list[Tag] = _f(
        "Tags: at most 50, each 1–64 characters.", ["vip"], default=[], max_length=50
    )
    custom_attrs: JsonObject = _f(
        "Attributes: up to 16 KiB as JSON, 32 levels, no NUL, numbers within int64.",
        {"order": "A-1001"},
        default={},
    )
    ai_language: Label | None = _f("Language code.", "en", default=None)
    sla_first_response_due: Timestamp | None = _f(
        "SLA: first response due (with time zone).", TIME_EXAMPLE, default=None
    )
    sla_resolution_due: Timestamp | None = _f(
        "SLA: resolution due (with time zone).", TIME_EXAMPLE, default=None
    )
    sla_state: Label | None = _f("SLA state label.", "active", default=None)


# The fields a child copies from its parent (SPEC §2) and may override (SPEC §9), in order.
INHERITED_FIELDS: tuple[str, ...] = tuple(
    name for name in ConversationContext.model_fields if name != "subject"
)


class ConversationCreate(ConversationContext):
    """Body of createConversation: a subject and the writable context fields."""

    status: Status = _f("Initial status.", "open", default="open")
    source: Label | None = _f("Origin system.", "email", default=None)
    source_thread_id: Label | None = _f("Thread id in the origin system.", None, default=None)
    planned_start: Timestamp | None = _f("Planned start.", None, default=None)
    planned_end: Timestamp | None = _f("Planned end.", None, default=None)
    planned_effort_minutes: EffortMinutes | None = _f(
        "Planned effort in minutes, 0 to 10,000,000.", 90, default=None
    )
    messages: list[MessageCreate] = _f(
        "Initial messages, oldest first; at most 100.", [], default=[], max_length=100
    )


MAX_COPIED_MESSAGES = 20
MAX_BATCH_CHILDREN = 50


def _distinct(ids: list[UUID]) -> list[UUID]:
    seen: dict[UUID, int] = {}
    for index, value in enumerate(ids):
        if value in seen:
            raise ValueError(f"repeats the id at index {seen[value]} (at index {index})")
        seen[value] = index
    return ids


def _optional_fields_have_no_default(schema: dict[str, Any]) -> None:
    # An absent override means "inherit", not the default createConversation would apply; and
    # generators that make a field with a default required (openapi-typescript) would require
    # every optional field of the body, where `{"subject": ...}` alone must do.
    for name, prop in schema["properties"].items():
        if name != "subject":
            prop.pop("default", None)


class ChildConversationCreate(ConversationContext):
    """Body of createChildConversation: the subject and, optionally, what differs from the parent.

    Every field of the inheritance table may be given: it replaces the inherited value (`null`
    clears a nullable field; `tags` and `custom_attrs` are replaced whole, `[]`/`{}` clear them);
    an absent field is inherited. `{"subject": ...}` alone creates a child exactly like the parent.
    `copy_message_ids` copies messages of the parent (oldest first), then `message` is added."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_optional_fields_have_no_default)

    subject: Subject = _f(
        "Subject of the child; surrounding whitespace is trimmed; 1–500 characters.",
        "Refund the duplicate charge",
    )
    message: MessageCreate | None = _f(
        "A first message on the child (after the copied ones), e.g. a note saying why it was "
        "split off.",
        {"body": "Split off: the refund is handled by Billing.", "is_internal": True},
        default=None,
    )
    copy_message_ids: Annotated[list[UUID], AfterValidator(_distinct)] = _f(
        f"Ids of the parent's messages to copy to the child (at most {MAX_COPIED_MESSAGES}, no "
        "repeats): copied oldest first with new ids, the same body, body_html, content_type, "
        "sender, is_internal and metadata, and `source_message_id` = the original's id. An id "
        "that is not a message of the parent is a 422 of type `message_not_in_parent`.",
        [UUID_EXAMPLE],
        default=[],
        max_length=MAX_COPIED_MESSAGES,
        json_schema_extra={"uniqueItems": True},
    )

    def overrides(self) -> dict[str, Any]:
        """The inherited fields this body sets, by name, in the inheritance table's order."""
        return {
            name: getattr(self, name) for name in INHERITED_FIELDS if name in self.model_fields_set
        }


class ChildConversationBatchCreate(BaseModel):
    """Body of createChildConversationsBatch: the children to create, all or none."""

    model_config = ConfigDict(extra="forbid")

    children: list[ChildConversationCreate] = _f(
        f"The children, 1–{MAX_BATCH_CHILDREN}, each a createChildConversation body.",
        [
            {"subject": "Refund the duplicate charge", "assignee_team_id": "team_billing"},
            {"subject": "Replace the damaged item", "priority": "urgent"},
        ],
        min_length=1,
        max_length=MAX_BATCH_CHILDREN,
    )


class ConversationBatch(BaseModel):
    """Conversations created together, in the order they were asked for."""

    items: list[Conversation] = _f("The conversations, in request order.")
