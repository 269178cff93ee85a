"""counters on conversations, idempotent responses apart, aurion_refuse()

The write path became one statement per request (issue 10), which needs:

* counters kept on the conversation row (children, open children, messages, activities), changed
  under the row's lock in the statement that changes what they count: the children limit is a
  conditional check on the locked, latest row version (race-free, unlike a count in the same
  statement, whose snapshot predates the lock wait), and reads never count(*) messages;
* the stored response of an idempotent request in a table of its own, so the key can be claimed
  first in the statement (a concurrent duplicate waits on it, not on the parent) and the response,
  rendered by PostgreSQL later in the same statement, written beside it;
* ``aurion_refuse(code, detail)``: raises SQLSTATE AUR01 so that a refused request rolls back
  whatever its statement claimed (the key) — a refusal writes nothing.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 17:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTERS = ("n_children", "n_open_children", "n_messages", "n_activities")

REFUSE_FUNCTION = """
CREATE OR REPLACE FUNCTION aurion_refuse(code text, detail text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'AUR01', MESSAGE = code, DETAIL = coalesce(detail, '');
END
$$
"""


def upgrade() -> None:
    for name in COUNTERS:
        op.add_column(
            "conversations",
            sa.Column(name, sa.Integer(), server_default="0", nullable=False),
        )
    op.create_check_constraint(
        op.f("ck_conversations_counters_consistent"),
        "conversations",
        "n_children >= 0 AND n_open_children >= 0 AND n_open_children <= n_children "
        "AND n_messages >= 0 AND n_activities >= 0",
    )
    op.execute(
        """
        UPDATE conversations c SET
            n_children = (SELECT count(*) FROM conversations k
                          WHERE k.workspace_id = c.workspace_id AND k.parent_id = c.id
                            AND k.deleted_at IS NULL),
            n_open_children = (SELECT count(*) FROM conversations k
                               WHERE k.workspace_id = c.workspace_id AND k.parent_id = c.id
                                 AND k.deleted_at IS NULL
                                 AND k.status NOT IN ('resolved', 'closed')),
            n_messages = (SELECT count(*) FROM messages m
                          WHERE m.workspace_id = c.workspace_id AND m.conversation_id = c.id),
            n_activities = (SELECT count(*) FROM activities a
                            WHERE a.workspace_id = c.workspace_id AND a.conversation_id = c.id)
        """
    )
    op.create_table(
        "idempotency_responses",
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column(
            "headers",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.PrimaryKeyConstraint(
            "workspace_id", "subject", "key", name=op.f("pk_idempotency_responses")
        ),
    )
    op.execute(
        """
        INSERT INTO idempotency_responses (workspace_id, subject, key, status_code, body, headers)
        SELECT workspace_id, subject, key, status_code, response_body, response_headers
        FROM idempotency_keys WHERE status_code IS NOT NULL
        """
    )
    op.drop_column("idempotency_keys", "status_code")
    op.drop_column("idempotency_keys", "response_body")
    op.drop_column("idempotency_keys", "response_headers")
    # Responses are a few KiB: keep them in the row, uncompressed (no TOAST work per request).
    op.execute("ALTER TABLE idempotency_responses SET (toast_tuple_target = 8160)")
    op.execute("ALTER TABLE idempotency_responses ALTER COLUMN body SET STORAGE MAIN")
    op.execute(REFUSE_FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS aurion_refuse(text, text)")
    op.add_column("idempotency_keys", sa.Column("status_code", sa.Integer(), nullable=True))
    op.add_column("idempotency_keys", sa.Column("response_body", sa.LargeBinary(), nullable=True))
    op.add_column(
        "idempotency_keys",
        sa.Column(
            "response_headers",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
    )
    op.execute(
        """
        UPDATE idempotency_keys k SET status_code = r.status_code, response_body = r.body,
            response_headers = r.headers
        FROM idempotency_responses r
        WHERE (r.workspace_id, r.subject, r.key) = (k.workspace_id, k.subject, k.key)
        """
    )
    op.drop_table("idempotency_responses")
    op.drop_constraint("ck_conversations_counters_consistent", "conversations", type_="check")
    for name in COUNTERS:
        op.drop_column("conversations", name)
