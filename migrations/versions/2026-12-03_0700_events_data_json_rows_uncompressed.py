"""events.data as json; events and stored responses kept uncompressed

Two costs of every write, measured on the grouped child creation (bench/: the same statement
run interleaved on two databases, PostgreSQL's CPU per statement from /proc, medians of 200):

* ``events.data`` was jsonb. Every event that carries the object (``child.created``,
  ``conversation.updated``...) embeds the object the statement rendered as json for the
  response, and jsonb parsed it again, only to print it back as text for the feed and the
  webhooks: 4-7 % of the statement. As json, the object is stored as rendered, and the event
  carries the very bytes of the API's answer (same keys, same order). Nothing queries inside
  ``data``.
* A row over about 2 KB is compressed (pglz) before it is stored, or at least tried. An event
  with its object (about 2.2 KB of text, about 1.35 KB compressed) and a stored response
  (about 2 KB) are just over: compressing them was another 3-7 % of the statement.
  ``toast_tuple_target = 8160`` keeps rows up to a page inline and uncompressed: a little more
  disk and WAL (the event's row, about 0.9 KB more a child creation), less CPU.

Revision ID: 0007_events_json
Revises: 0006_delegate
Create Date: 2026-12-03 07:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007_events_json"
down_revision: str | None = "0006_delegate"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The largest toast_tuple_target PostgreSQL accepts (a page less its header).
UNCOMPRESSED_UP_TO = 8160


def upgrade() -> None:
    op.execute("ALTER TABLE events ALTER COLUMN data TYPE json USING data::json")
    for table in ("events", "idempotency_responses"):
        op.execute(f"ALTER TABLE {table} SET (toast_tuple_target = {UNCOMPRESSED_UP_TO})")


def downgrade() -> None:
    for table in ("events", "idempotency_responses"):
        op.execute(f"ALTER TABLE {table} RESET (toast_tuple_target)")
    op.execute("ALTER TABLE events ALTER COLUMN data TYPE jsonb USING data::jsonb")
