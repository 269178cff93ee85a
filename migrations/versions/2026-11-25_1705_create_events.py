"""create events (the transactional outbox)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 17:05:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column(
            "txid",
            sa.BigInteger(),
            server_default=sa.text("(pg_current_xact_id()::text)::bigint"),
            nullable=False,
        ),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_events")),
    )
    op.create_index(
        "ix_events_workspace_id_txid_id", "events", ["workspace_id", "txid", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_events_workspace_id_txid_id", table_name="events")
    op.drop_table("events")
