"""Request and response bodies of the conversations API.

The read schemas define the public objects: PostgreSQL renders each response from their fields
(repository.py), so a field here is a field of the API. Input field types are in fields.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, StrictBool

from aurion.conversations.fields import (
    TIME_EXAMPLE,
    UUID_EXAMPLE,
    EffortMinutes,
    Html,
    JsonObject,
    Label,
    MessageBody,
    Priority,
    Status,
    Subject,
    Tag,
    Timestamp,
    documented,
)

# ---------------------------------------------------------------- read models


class MessageRead(BaseModel):
    """A message of a conversation, as the seed API returns it."""

    id: UUID = documented("The message's id (UUID).", UUID_EXAMPLE)
    attachments: list[dict[str, Any]] = documented("Attachment descriptors.", [])
    body: str = documented("Plain-text body.", "My order has not arrived.")
    body_html: str | None = documented("HTML body, when the channel has one.", "<p>My order…</p>")
    content_type: str = documented("MIME type of the body.", "text/plain")
    conversation_version: int = documented(
        "The conversation's version when the message was added.", 1
    )
    created_at: datetime = documented("When the message was created (ISO 8601 UTC).", TIME_EXAMPLE)
    is_internal: bool = documented("An internal note, invisible to the customer.", False)
    metadata: dict[str, Any] = documented("Free-form metadata.", {})
    original_body: str | None = documented("The body before translation.", None)
    sender_id: str | None = documented("Who sent it (user or contact id).", "contact_42")
    sender_type: str | None = documented("Kind of sender: contact, agent, system, bot.", "contact")
    sentiment_label: str | None = documented("Sentiment of the message.", None)
    sentiment_score: float | None = documented("Sentiment score, -1 to 1.", None)
    source: str | None = documented("Where the message came from (email, chat, api).", "email")
    source_message_id: str | None = documented("The message's id in the source system.", None)
    translated_body: str | None = documented("Translated body.", None)
    translation_target_language: str | None = documented("Language of translated_body.", None)


class TabCounts(BaseModel):
    """Counters derived on read, for the conversation view's tabs."""

    activities: int = documented("Activity-log entries on the conversation.", 1)
    has_resolution: bool = documented("Status is resolved or closed.", False)
    messages: int = documented("Messages on the conversation (all, not just embedded ones).", 0)
    related: int = documented(
        "Conversations linked by parent/child: its parent plus its children.", 1
    )


class Conversation(BaseModel):
    """A conversation (support ticket), exactly the fields of the seed API's object."""

    ai_analysis_generated_at: datetime | None = documented("When AI analysis last ran.", None)
    ai_analysis_message_count: int = documented("Messages covered by the last AI analysis.", 0)
    ai_analysis_stale: bool = documented("New messages arrived since the last AI analysis.", False)
    ai_category: str | None = documented("Category suggested by AI.", None)
    ai_classification_source: str | None = documented("What produced the AI classification.", None)
    ai_classified_at: datetime | None = documented("When AI classified the conversation.", None)
    ai_confidence: float | None = documented("Confidence of the AI classification, 0 to 1.", None)
    ai_conversation_type: str | None = documented("Conversation type suggested by AI.", None)
    ai_copilot_context: dict[str, Any] = documented("Context kept for the AI copilot.", {})
    ai_language: str | None = documented(
        "Language of the conversation (inherited by children).", "en"
    )
    ai_priority: str | None = documented("Priority suggested by AI.", None)
    ai_sentiment: str | None = documented("Overall sentiment found by AI.", None)
    ai_suggested_reply: dict[str, Any] = documented("A reply drafted by AI.", {})
    ai_suggestion: dict[str, Any] = documented("Field values suggested by AI.", {})
    ai_suggestion_field_states: dict[str, Any] = documented(
        "Accepted/rejected state per field.", {}
    )
    ai_topic_tags: list[str] = documented("Topic tags found by AI.", [])
    ai_triage_hint: str | None = documented("A triage hint from AI.", None)
    ai_triage_hint_type: str | None = documented("Kind of triage hint.", None)
    archived_at: datetime | None = documented("When the conversation was archived.", None)
    assigned_at: datetime | None = documented("When the current assignee was set.", TIME_EXAMPLE)
    assignee_team_id: str | None = documented("Assigned team's id.", "team_billing")
    assignee_team_name: str | None = documented("Assigned team's name.", "Billing")
    assignee_user_id: str | None = documented("Assigned agent's id.", "user_7")
    assignee_user_name: str | None = documented("Assigned agent's name.", "Dana Agent")
    assignment_reason: str | None = documented("Why the assignee was chosen.", None)
    auto_resolved_by_ai: bool = documented("Resolved automatically by AI.", False)
    category: str | None = documented("Category.", "billing")
    channel: str | None = documented("Channel the conversation arrived on.", "email")
    company_id: str | None = documented("Customer company's id.", "comp_1")
    company_name: str | None = documented("Customer company's name.", "Acme Corp")
    contact_email: str | None = documented("Customer contact's email.", "jo@acme.example")
    contact_id: str | None = documented("Customer contact's id.", "contact_42")
    contact_name: str | None = documented("Customer contact's name.", "Jo Customer")
    contact_phone: str | None = documented("Customer contact's phone.", "+1 555 0100")
    contact_role: str | None = documented("Customer contact's role.", "buyer")
    conversation_type: str | None = documented(
        "Type: question, incident, problem, task...", "incident"
    )
    created_at: datetime = documented(
        "When the conversation was created (ISO 8601 UTC).", TIME_EXAMPLE
    )
    current_sentiment_label: str | None = documented("Latest sentiment label.", None)
    current_sentiment_score: float | None = documented("Latest sentiment score, -1 to 1.", None)
    custom_attrs: dict[str, Any] = documented("Workspace-defined attributes.", {"order": "A-1001"})
    deleted_at: datetime | None = documented("When the conversation was soft-deleted.", None)
    department_id: str | None = documented("Owning department's id.", "dept_support")
    id: UUID = documented("The conversation's id (UUID v7, time-ordered).", UUID_EXAMPLE)
    impact: str | None = documented("Impact label.", "single_user")
    initial_sentiment_label: str | None = documented("Sentiment at the first message.", None)
    is_spam: bool = documented("Marked as spam.", False)
    merged_at: datetime | None = documented("When it was merged into another conversation.", None)
    merged_by: str | None = documented("Who merged it.", None)
    merged_into_id: UUID | None = documented("The conversation it was merged into.", None)
    messages: list[MessageRead] = documented(
        "Messages, oldest first; at most the newest 200 (tab_counts.messages has the total).", []
    )
    parent_id: UUID | None = documented(
        "The parent conversation's id, for a child; null otherwise.",
        "0193b0a2-6b1d-7c0e-8e2d-1a7b3c4d5e6f",
    )
    planned_effort_minutes: int | None = documented("Planned effort in minutes.", None)
    planned_end: datetime | None = documented("Planned end.", None)
    planned_start: datetime | None = documented("Planned start.", None)
    priority: Priority | None = documented("Priority: low, medium, high or urgent.", "high")
    sentiment_trend: str | None = documented("Sentiment trend: improving, stable, worsening.", None)
    sla_first_response_due: datetime | None = documented("SLA: first response due.", TIME_EXAMPLE)
    sla_last_escalation_at: datetime | None = documented("SLA: last escalation.", None)
    sla_resolution_due: datetime | None = documented("SLA: resolution due.", TIME_EXAMPLE)
    sla_state: str | None = documented("SLA state label.", "active")
    source: str | None = documented("Origin: email, chat, api, child...", "child")
    source_thread_id: str | None = documented("Thread id in the source system.", None)
    status: Status = documented("Status: new, open, pending, on_hold, resolved or closed.", "open")
    sub_category: str | None = documented("Sub-category.", "refund")
    subject: str = documented("Subject line.", "Refund the duplicate charge")
    tab_counts: TabCounts = documented(
        "Derived counters for the conversation's tabs.",
        {"activities": 1, "has_resolution": False, "messages": 0, "related": 1},
    )
    tags: list[str] = documented("Tags.", ["vip"])
    total_time_spent_minutes: int = documented("Time logged on the conversation, in minutes.", 0)
    updated_at: datetime = documented("Last change (ISO 8601 UTC).", TIME_EXAMPLE)
    urgency: str | None = documented("Urgency label.", "high")
    version: int = documented(
        "Optimistic-concurrency version; the ETag is its quoted value.", 1, ge=1
    )


class StatusCounts(BaseModel):
    """Children per status."""

    new: int = documented("Children with status new.", 0)
    open: int = documented("Children with status open.", 2)
    pending: int = documented("Children with status pending.", 1)
    on_hold: int = documented("Children with status on_hold.", 0)
    resolved: int = documented("Children with status resolved.", 1)
    closed: int = documented("Children with status closed.", 0)


class ChildrenSummary(BaseModel):
    """Progress of a parent's children: all of them, whatever the filter and the page."""

    total: int = documented("Children that are not deleted.", 4)
    by_status: StatusCounts = documented("Children per status (every status is present).")
    percent_resolved: int = documented(
        "Resolved and closed children over total, in percent, rounded down (0 with none).", 25
    )


class ConversationPage(BaseModel):
    """One page of a conversation's children, newest first, and their summary."""

    items: list[Conversation] = documented("The conversations on this page.")
    next_cursor: str | None = documented(
        "Pass as `cursor` to get the next page; null on the last page.", None
    )
    summary: ChildrenSummary = documented("Progress of all the parent's children.")


# ---------------------------------------------------------------- write models


class MessageCreate(BaseModel):
    """An initial message of a new conversation."""

    model_config = ConfigDict(extra="forbid")

    body: MessageBody = documented("Plain-text body, up to 64 KiB.", "My order has not arrived.")
    body_html: Html | None = documented("HTML body, up to 64 KiB.", None, default=None)
    content_type: Label = documented("MIME type of the body.", "text/plain", default="text/plain")
    sender_type: Label | None = documented(
        "contact, agent, system or bot.", "contact", default=None
    )
    sender_id: Label | None = documented("The sender's id.", "contact_42", default=None)
    # Strict: JSON `0`/`"true"` are not booleans (the schema says boolean; lax coercion hid typos).
    is_internal: StrictBool = documented("An internal note.", False, default=False)
    metadata: JsonObject = documented(
        "Free-form metadata: up to 16 KiB as JSON, 32 levels, no NUL, numbers within int64.",
        {},
        default={},
    )


class ConversationContext(BaseModel):
    """The subject and the context a child inherits from its parent (the inheritance table of
    SPEC §2): one definition of each field, for createConversation and createChildConversation."""

    model_config = ConfigDict(extra="forbid")

    subject: Subject = documented(
        "Subject; trimmed; 1–500 characters.", "Order #1001 never arrived"
    )
    priority: Priority | None = documented("Priority.", "high", default=None)
    urgency: Label | None = documented("Urgency label.", "high", default=None)
    impact: Label | None = documented("Impact label.", "single_user", default=None)
    category: Label | None = documented("Category.", "shipping", default=None)
    sub_category: Label | None = documented("Sub-category.", "lost_parcel", default=None)
    channel: Label | None = documented("Channel.", "email", default=None)
    conversation_type: Label | None = documented("Type.", "incident", default=None)
    company_id: Label | None = documented("Customer company's id.", "comp_1", default=None)
    company_name: Label | None = documented("Customer company's name.", "Acme Corp", default=None)
    contact_id: Label | None = documented("Customer contact's id.", "contact_42", default=None)
    contact_name: Label | None = documented("Customer contact's name.", "Jo Customer", default=None)
    contact_email: Label | None = documented(
        "Customer contact's email.", "jo@acme.example", default=None
    )
    contact_phone: Label | None = documented(
        "Customer contact's phone.", "+1 555 0100", default=None
    )
    contact_role: Label | None = documented("Customer contact's role.", "buyer", default=None)
    department_id: Label | None = documented("Department id.", "dept_support", default=None)
    assignee_team_id: Label | None = documented("Assigned team's id.", "team_billing", default=None)
    assignee_team_name: Label | None = documented("Assigned team's name.", "Billing", default=None)
    assignee_user_id: Label | None = documented("Assigned agent's id.", "user_7", default=None)
    assignee_user_name: Label | None = documented(
        "Assigned agent's name.", "Dana Agent", default=None
    )
    tags: list[Tag] = documented(
        "Tags: at most 50, each 1–64 characters.", ["vip"], default=[], max_length=50
    )
    custom_attrs: JsonObject = documented(
        "Attributes: up to 16 KiB as JSON, 32 levels, no NUL, numbers within int64.",
        {"order": "A-1001"},
        default={},
    )
    ai_language: Label | None = documented("Language code.", "en", default=None)
    sla_first_response_due: Timestamp | None = documented(
        "SLA: first response due (with time zone).", TIME_EXAMPLE, default=None
    )
    sla_resolution_due: Timestamp | None = documented(
        "SLA: resolution due (with time zone).", TIME_EXAMPLE, default=None
    )
    sla_state: Label | None = documented("SLA state label.", "active", default=None)


# The fields a child copies from its parent (SPEC §2) and may override (SPEC §9), in order.
INHERITED_FIELDS: tuple[str, ...] = tuple(
    name for name in ConversationContext.model_fields if name != "subject"
)


class ConversationCreate(ConversationContext):
    """Body of createConversation: a subject and the writable context fields."""

    status: Status = documented("Initial status.", "open", default="open")
    source: Label | None = documented("Origin system.", "email", default=None)
    source_thread_id: Label | None = documented(
        "Thread id in the origin system.", None, default=None
    )
    planned_start: Timestamp | None = documented("Planned start.", None, default=None)
    planned_end: Timestamp | None = documented("Planned end.", None, default=None)
    planned_effort_minutes: EffortMinutes | None = documented(
        "Planned effort in minutes, 0 to 10,000,000.", 90, default=None
    )
    messages: list[MessageCreate] = documented(
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

    subject: Subject = documented(
        "Subject of the child; surrounding whitespace is trimmed; 1–500 characters.",
        "Refund the duplicate charge",
    )
    message: MessageCreate | None = documented(
        "A first message on the child (after the copied ones), e.g. a note saying why it was "
        "split off.",
        {"body": "Split off: the refund is handled by Billing.", "is_internal": True},
        default=None,
    )
    copy_message_ids: Annotated[list[UUID], AfterValidator(_distinct)] = documented(
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
        sent = self.model_fields_set
        if not sent.isdisjoint(INHERITED_FIELDS):
            return {name: getattr(self, name) for name in INHERITED_FIELDS if name in sent}
        return {}


class ChildConversationBatchCreate(BaseModel):
    """Body of createChildConversationsBatch: the children to create, all or none."""

    model_config = ConfigDict(extra="forbid")

    children: list[ChildConversationCreate] = documented(
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

    items: list[Conversation] = documented("The conversations, in request order.")
