"""The claimed keys of idempotent requests and the responses they got."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, Index, Integer, LargeBinary, Text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from aurion.db.base import Base


class IdempotencyKey(Base):
    """One key of one caller and the fingerprint of the request that claimed it.

    The claim is the first write of the request's statement, so a concurrent duplicate waits on
    this row (then replays), never on the resource the request works on.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)

    workspace_id: Mapped[str] = mapped_column(Text, primary_key=True)
    subject: Mapped[str] = mapped_column(Text, primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class IdempotencyResponse(Base):
    """The response stored for a key: written in the same statement as the key and the writes
    it describes, so a committed key always has its response (and a refusal has neither).

    Its body is either stored here or, when the response is the object an event of the same
    statement carries, that event's (``event_id``): the created object is written once
    (migration 0008_responses_by_event)."""

    __tablename__ = "idempotency_responses"
    # Stored with toast_tuple_target = 8160: a response of about 2 KB stays inline and
    # uncompressed (migration 0007_events_json).
    __table_args__ = (CheckConstraint("num_nonnulls(body, event_id) = 1", name="body_or_event"),)

    workspace_id: Mapped[str] = mapped_column(Text, primary_key=True)
    subject: Mapped[str] = mapped_column(Text, primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    status_code: Mapped[int] = mapped_column(Integer)
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    event_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    headers: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
