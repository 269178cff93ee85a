"""Tables of the conversations domain.

Every key leads with ``workspace_id`` and every foreign key includes it, so a row can only ever
point at a row of its own workspace (and the tables can be distributed by workspace later).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from aurion.db.base import Base

TS = DateTime(timezone=True)
EMPTY_OBJECT = text("'{}'::jsonb")
EMPTY_ARRAY_JSON = text("'[]'::jsonb")
EMPTY_TEXT_ARRAY = text("'{}'::text[]")


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "parent_id"],
            ["conversations.workspace_id", "conversations.id"],
        ),
        ForeignKeyConstraint(
            ["workspace_id", "merged_into_id"],
            ["conversations.workspace_id", "conversations.id"],
        ),
        CheckConstraint(
            "status IN ('new', 'open', 'pending', 'on_hold', 'resolved', 'closed')",
            name="status_known",
        ),
        CheckConstraint(
            "priority IS NULL OR priority IN ('low', 'medium', 'high', 'urgent')",
            name="priority_known",
        ),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint(
            "n_children >= 0 AND n_open_children >= 0 AND n_open_children <= n_children "
            "AND n_messages >= 0 AND n_activities >= 0",
            name="counters_consistent",
        ),
        # A conversation is never its own parent (depth is enforced by the service).
        CheckConstraint("parent_id IS NULL OR parent_id <> id", name="not_own_parent"),
        # Children of a parent, newest first (list endpoint, limit count, tab_counts.related).
        Index("ix_conversations_workspace_id_parent_id_id", "workspace_id", "parent_id", "id"),
    )

    workspace_id: Mapped[str] = mapped_column(Text, primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))

    subject: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default="open")
    priority: Mapped[str | None] = mapped_column(Text)
    urgency: Mapped[str | None] = mapped_column(Text)
    impact: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(Text)
    sub_category: Mapped[str | None] = mapped_column(Text)
    channel: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text)
    source_thread_id: Mapped[str | None] = mapped_column(Text)
    conversation_type: Mapped[str | None] = mapped_column(Text)

    company_id: Mapped[str | None] = mapped_column(Text)
    company_name: Mapped[str | None] = mapped_column(Text)
    contact_id: Mapped[str | None] = mapped_column(Text)
    contact_name: Mapped[str | None] = mapped_column(Text)
    contact_email: Mapped[str | None] = mapped_column(Text)
    contact_phone: Mapped[str | None] = mapped_column(Text)
    contact_role: Mapped[str | None] = mapped_column(Text)

    department_id: Mapped[str | None] = mapped_column(Text)
    assignee_team_id: Mapped[str | None] = mapped_column(Text)
    assignee_team_name: Mapped[str | None] = mapped_column(Text)
    assignee_user_id: Mapped[str | None] = mapped_column(Text)
    assignee_user_name: Mapped[str | None] = mapped_column(Text)
    assignment_reason: Mapped[str | None] = mapped_column(Text)
    assigned_at: Mapped[datetime | None] = mapped_column(TS)

    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=EMPTY_TEXT_ARRAY)
    custom_attrs: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=EMPTY_OBJECT)

    ai_analysis_generated_at: Mapped[datetime | None] = mapped_column(TS)
    ai_analysis_message_count: Mapped[int] = mapped_column(Integer, server_default="0")
    ai_analysis_stale: Mapped[bool] = mapped_column(Boolean, server_default="false")
    ai_category: Mapped[str | None] = mapped_column(Text)
    ai_classification_source: Mapped[str | None] = mapped_column(Text)
    ai_classified_at: Mapped[datetime | None] = mapped_column(TS)
    ai_confidence: Mapped[float | None] = mapped_column(Float)
    ai_conversation_type: Mapped[str | None] = mapped_column(Text)
    ai_copilot_context: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=EMPTY_OBJECT)
    ai_language: Mapped[str | None] = mapped_column(Text)
    ai_priority: Mapped[str | None] = mapped_column(Text)
    ai_sentiment: Mapped[str | None] = mapped_column(Text)
    ai_suggested_reply: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=EMPTY_OBJECT)
    ai_suggestion: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=EMPTY_OBJECT)
    ai_suggestion_field_states: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=EMPTY_OBJECT
    )
    ai_topic_tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=EMPTY_TEXT_ARRAY)
    ai_triage_hint: Mapped[str | None] = mapped_column(Text)
    ai_triage_hint_type: Mapped[str | None] = mapped_column(Text)

    current_sentiment_label: Mapped[str | None] = mapped_column(Text)
    current_sentiment_score: Mapped[float | None] = mapped_column(Float)
    initial_sentiment_label: Mapped[str | None] = mapped_column(Text)
    sentiment_trend: Mapped[str | None] = mapped_column(Text)

    planned_effort_minutes: Mapped[int | None] = mapped_column(Integer)
    planned_start: Mapped[datetime | None] = mapped_column(TS)
    planned_end: Mapped[datetime | None] = mapped_column(TS)

    sla_first_response_due: Mapped[datetime | None] = mapped_column(TS)
    sla_resolution_due: Mapped[datetime | None] = mapped_column(TS)
    sla_last_escalation_at: Mapped[datetime | None] = mapped_column(TS)
    sla_state: Mapped[str | None] = mapped_column(Text)

    archived_at: Mapped[datetime | None] = mapped_column(TS)
    deleted_at: Mapped[datetime | None] = mapped_column(TS)
    merged_at: Mapped[datetime | None] = mapped_column(TS)
    merged_by: Mapped[str | None] = mapped_column(Text)
    merged_into_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    is_spam: Mapped[bool] = mapped_column(Boolean, server_default="false")
    auto_resolved_by_ai: Mapped[bool] = mapped_column(Boolean, server_default="false")

    total_time_spent_minutes: Mapped[int] = mapped_column(Integer, server_default="0")

    # Counters, changed in the same statement as what they count, under the row's lock: every
    # statement that adds or removes a child (or changes a child's status), a message or an
    # activity keeps them exact. tab_counts reads them; the children limit checks n_children on
    # the locked row. tests/support.py: assert_counters_exact checks them against count(*).
    n_children: Mapped[int] = mapped_column(Integer, server_default="0")  # not deleted
    n_open_children: Mapped[int] = mapped_column(Integer, server_default="0")  # not resolved/closed
    n_messages: Mapped[int] = mapped_column(Integer, server_default="0")
    n_activities: Mapped[int] = mapped_column(Integer, server_default="0")

    version: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[datetime] = mapped_column(TS)
    updated_at: Mapped[datetime] = mapped_column(TS)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "conversation_id"],
            ["conversations.workspace_id", "conversations.id"],
        ),
        # Messages of a conversation in order (embedding the newest 200, counting them).
        Index(
            "ix_messages_workspace_id_conversation_id_created_at_id",
            "workspace_id",
            "conversation_id",
            "created_at",
            "id",
        ),
    )

    workspace_id: Mapped[str] = mapped_column(Text, primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    conversation_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    conversation_version: Mapped[int] = mapped_column(Integer, server_default="1")
    body: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    original_body: Mapped[str | None] = mapped_column(Text)
    translated_body: Mapped[str | None] = mapped_column(Text)
    translation_target_language: Mapped[str | None] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(Text, server_default="text/plain")
    sender_type: Mapped[str | None] = mapped_column(Text)
    sender_id: Mapped[str | None] = mapped_column(Text)
    is_internal: Mapped[bool] = mapped_column(Boolean, server_default="false")
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, server_default=EMPTY_OBJECT
    )
    attachments: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, server_default=EMPTY_ARRAY_JSON
    )
    sentiment_label: Mapped[str | None] = mapped_column(Text)
    sentiment_score: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str | None] = mapped_column(Text)
    source_message_id: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TS)


class Activity(Base):
    __tablename__ = "activities"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "conversation_id"],
            ["conversations.workspace_id", "conversations.id"],
        ),
        Index(
            "ix_activities_workspace_id_conversation_id_created_at",
            "workspace_id",
            "conversation_id",
            "created_at",
        ),
    )

    workspace_id: Mapped[str] = mapped_column(Text, primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    conversation_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    kind: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=EMPTY_OBJECT)
    created_at: Mapped[datetime] = mapped_column(TS)
