"""Webhook registrations and their deliveries (the delivery queue and its log in one table)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    ARRAY,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from aurion.db.base import Base


class Webhook(Base):
    """A receiver of a workspace's events.

    ``cursor_txid``/``cursor_id`` is how far the dispatcher has read the outbox for it, by the
    feed's own gap-free order (events.repository): each event after it, below the horizon,
    becomes a delivery exactly once, in the statement that moves the cursor past it.
    """

    __tablename__ = "webhooks"

    workspace_id: Mapped[str] = mapped_column(Text, primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    types: Mapped[list[str]] = mapped_column(ARRAY(Text))
    description: Mapped[str | None] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cursor_txid: Mapped[int] = mapped_column(BigInteger)
    cursor_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))


class WebhookDelivery(Base):
    """One attempt to deliver one event to one webhook.

    ``pending`` rows are the queue: due when ``next_attempt_at`` has passed and no process
    holds a lease on them (``leased_until``). A process claims due rows (``FOR UPDATE SKIP
    LOCKED``, then a lease, committed before it sends), so no two processes send the same
    attempt; a process that dies mid-send leaves a lease that expires, and the attempt is
    sent again (at least once). An attempt's outcome turns it ``succeeded`` or ``failed``; a
    failed one that will be retried names the time in ``next_attempt_at`` and the next
    attempt is a new pending row.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        ForeignKeyConstraint(
            ["workspace_id", "webhook_id"],
            ["webhooks.workspace_id", "webhooks.id"],
            ondelete="CASCADE",
        ),
        ForeignKeyConstraint(["workspace_id", "event_id"], ["events.workspace_id", "events.id"]),
        UniqueConstraint("workspace_id", "webhook_id", "event_id", "attempt"),
        CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status_known"),
        Index(
            "ix_webhook_deliveries_workspace_id_webhook_id_id", "workspace_id", "webhook_id", "id"
        ),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
    )

    workspace_id: Mapped[str] = mapped_column(Text, primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    webhook_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(Text)
    http_status: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attempted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    leased_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
