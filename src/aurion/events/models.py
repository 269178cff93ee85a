"""The outbox: one row per event, written by the statement that makes the change it describes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Index, Text, text
from sqlalchemy.dialects.postgresql import JSON, UUID
from sqlalchemy.orm import Mapped, mapped_column

from aurion.db.base import Base


class Event(Base):
    """An event of a workspace.

    ``txid`` is the writing transaction's id (``pg_current_xact_id()``): the feed orders by
    (txid, id) and only shows events below the oldest running transaction's horizon, so a
    transaction that started earlier and commits later can never be skipped by a reader.
    """

    __tablename__ = "events"
    # Stored with toast_tuple_target = 8160: an event with its object (about 2.2 KB) stays
    # inline and uncompressed (migration 0007_events_json).
    __table_args__ = (Index("ix_events_workspace_id_txid_id", "workspace_id", "txid", "id"),)

    workspace_id: Mapped[str] = mapped_column(Text, primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    txid: Mapped[int] = mapped_column(
        BigInteger, server_default=text("(pg_current_xact_id()::text)::bigint")
    )
    type: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # json, not jsonb: the object an event carries is stored as the statement rendered it
    # (migration 0007_events_json).
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
