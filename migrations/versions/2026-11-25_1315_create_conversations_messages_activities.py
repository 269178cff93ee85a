"""create conversations messages activities

Revision ID: 0001
Revises:
Create Date: 2026-11-25 13:15:48.124660+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("parent_id", sa.UUID(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="open", nullable=False),
        sa.Column("priority", sa.Text(), nullable=True),
        sa.Column("urgency", sa.Text(), nullable=True),
        sa.Column("impact", sa.Text(), nullable=True),
        sa.Column("category", sa.Text(), nullable=True),
        sa.Column("sub_category", sa.Text(), nullable=True),
        sa.Column("channel", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("source_thread_id", sa.Text(), nullable=True),
        sa.Column("conversation_type", sa.Text(), nullable=True),
        sa.Column("company_id", sa.Text(), nullable=True),
        sa.Column("company_name", sa.Text(), nullable=True),
        sa.Column("contact_id", sa.Text(), nullable=True),
        sa.Column("contact_name", sa.Text(), nullable=True),
        sa.Column("contact_email", sa.Text(), nullable=True),
        sa.Column("contact_phone", sa.Text(), nullable=True),
        sa.Column("contact_role", sa.Text(), nullable=True),
        sa.Column("department_id", sa.Text(), nullable=True),
        sa.Column("assignee_team_id", sa.Text(), nullable=True),
        sa.Column("assignee_team_name", sa.Text(), nullable=True),
        sa.Column("assignee_user_id", sa.Text(), nullable=True),
        sa.Column("assignee_user_name", sa.Text(), nullable=True),
        sa.Column("assignment_reason", sa.Text(), nullable=True),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "tags",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column(
            "custom_attrs",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("ai_analysis_generated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ai_analysis_message_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("ai_analysis_stale", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("ai_category", sa.Text(), nullable=True),
        sa.Column("ai_classification_source", sa.Text(), nullable=True),
        sa.Column("ai_classified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ai_confidence", sa.Float(), nullable=True),
        sa.Column("ai_conversation_type", sa.Text(), nullable=True),
        sa.Column(
            "ai_copilot_context",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("ai_language", sa.Text(), nullable=True),
        sa.Column("ai_priority", sa.Text(), nullable=True),
        sa.Column("ai_sentiment", sa.Text(), nullable=True),
        sa.Column(
            "ai_suggested_reply",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "ai_suggestion",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "ai_suggestion_field_states",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "ai_topic_tags",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column("ai_triage_hint", sa.Text(), nullable=True),
        sa.Column("ai_triage_hint_type", sa.Text(), nullable=True),
        sa.Column("current_sentiment_label", sa.Text(), nullable=True),
        sa.Column("current_sentiment_score", sa.Float(), nullable=True),
        sa.Column("initial_sentiment_label", sa.Text(), nullable=True),
        sa.Column("sentiment_trend", sa.Text(), nullable=True),
        sa.Column("planned_effort_minutes", sa.Integer(), nullable=True),
        sa.Column("planned_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("planned_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sla_first_response_due", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sla_resolution_due", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sla_last_escalation_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sla_state", sa.Text(), nullable=True),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("merged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("merged_by", sa.Text(), nullable=True),
        sa.Column("merged_into_id", sa.UUID(), nullable=True),
        sa.Column("is_spam", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("auto_resolved_by_ai", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("total_time_spent_minutes", sa.Integer(), server_default="0", nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "priority IS NULL OR priority IN ('low', 'medium', 'high', 'urgent')",
            name=op.f("ck_conversations_priority_known"),
        ),
        sa.CheckConstraint(
            "status IN ('new', 'open', 'pending', 'on_hold', 'resolved', 'closed')",
            name=op.f("ck_conversations_status_known"),
        ),
        sa.CheckConstraint(
            "parent_id IS NULL OR parent_id <> id", name=op.f("ck_conversations_not_own_parent")
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_conversations_version_positive")),
        sa.ForeignKeyConstraint(
            ["workspace_id", "merged_into_id"],
            ["conversations.workspace_id", "conversations.id"],
            name=op.f("fk_conversations_workspace_id_merged_into_id_conversations"),
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id", "parent_id"],
            ["conversations.workspace_id", "conversations.id"],
            name=op.f("fk_conversations_workspace_id_parent_id_conversations"),
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_conversations")),
    )
    op.create_index(
        "ix_conversations_workspace_id_parent_id_id",
        "conversations",
        ["workspace_id", "parent_id", "id"],
        unique=False,
    )
    op.create_table(
        "activities",
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("conversation_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column(
            "payload",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id", "conversation_id"],
            ["conversations.workspace_id", "conversations.id"],
            name=op.f("fk_activities_workspace_id_conversation_id_conversations"),
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_activities")),
    )
    op.create_index(
        "ix_activities_workspace_id_conversation_id_created_at",
        "activities",
        ["workspace_id", "conversation_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "messages",
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("conversation_id", sa.UUID(), nullable=False),
        sa.Column("conversation_version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=True),
        sa.Column("original_body", sa.Text(), nullable=True),
        sa.Column("translated_body", sa.Text(), nullable=True),
        sa.Column("translation_target_language", sa.Text(), nullable=True),
        sa.Column("content_type", sa.Text(), server_default="text/plain", nullable=False),
        sa.Column("sender_type", sa.Text(), nullable=True),
        sa.Column("sender_id", sa.Text(), nullable=True),
        sa.Column("is_internal", sa.Boolean(), server_default="false", nullable=False),
        sa.Column(
            "metadata",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "attachments",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("sentiment_label", sa.Text(), nullable=True),
        sa.Column("sentiment_score", sa.Float(), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("source_message_id", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id", "conversation_id"],
            ["conversations.workspace_id", "conversations.id"],
            name=op.f("fk_messages_workspace_id_conversation_id_conversations"),
        ),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_messages")),
    )
    op.create_index(
        "ix_messages_workspace_id_conversation_id_created_at_id",
        "messages",
        ["workspace_id", "conversation_id", "created_at", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_messages_workspace_id_conversation_id_created_at_id", table_name="messages")
    op.drop_table("messages")
    op.drop_index("ix_activities_workspace_id_conversation_id_created_at", table_name="activities")
    op.drop_table("activities")
    op.drop_index("ix_conversations_workspace_id_parent_id_id", table_name="conversations")
    op.drop_table("conversations")
