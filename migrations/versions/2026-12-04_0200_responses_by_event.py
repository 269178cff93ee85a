"""A stored response that is an event's object refers to the event instead of copying it

A child creation (and a conversation's creation) with an Idempotency-Key stored the created
object twice in its statement: in the ``child.created`` event's ``data`` and as the key's
response body, about 2.2 KB each. The response now names the event (``event_id``) and its body
is that event's ``data -> 'conversation'``: the same bytes (``events.data`` is json, kept as
rendered, and ``->`` on json returns the value's text as it is stored). About 2.2 KB less to
write, log (WAL) and keep per child; a replay reads the event by its primary key. Events are
never deleted, so a response can always be rebuilt while its key lives. A response that is no
event's object (a batch's ``{"items": [...]}``) keeps its body.

Revision ID: 0008_responses_by_event
Revises: 0007_events_json
Create Date: 2026-12-04 02:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008_responses_by_event"
down_revision: str | None = "0007_events_json"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("idempotency_responses", sa.Column("event_id", postgresql.UUID(), nullable=True))
    op.alter_column("idempotency_responses", "body", existing_type=sa.LargeBinary(), nullable=True)
    op.create_check_constraint(
        op.f("ck_idempotency_responses_body_or_event"),
        "idempotency_responses",
        "num_nonnulls(body, event_id) = 1",
    )


def downgrade() -> None:
    op.execute("""
        UPDATE idempotency_responses r
        SET body = convert_to((e.data -> 'conversation')::text, 'UTF8'), event_id = NULL
        FROM events e
        WHERE r.event_id IS NOT NULL AND e.workspace_id = r.workspace_id AND e.id = r.event_id
    """)
    op.drop_constraint(
        op.f("ck_idempotency_responses_body_or_event"), "idempotency_responses", type_="check"
    )
    op.alter_column("idempotency_responses", "body", existing_type=sa.LargeBinary(), nullable=False)
    op.drop_column("idempotency_responses", "event_id")
