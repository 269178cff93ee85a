"""The column lists the statements are built from (derived from the schemas) and SQL types."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql

from aurion.conversations.models import Conversation as ConversationRow
from aurion.conversations.models import Message as MessageRow
from aurion.conversations.schemas import (
    INHERITED_FIELDS,
    ConversationCreate,
    MessageCreate,
)

LOCATION_PREFIX = "/api/v2/conversations/"

# Columns a child copies from its parent, as they are (the inheritance table of SPEC §2), and a
# request may override (SPEC §9): the fields of the schema that defines them.
INHERITED_COLUMNS: tuple[str, ...] = INHERITED_FIELDS

# Columns a client may set when creating a conversation: the create schema's fields.
WRITABLE_COLUMNS: tuple[str, ...] = tuple(
    name for name in ConversationCreate.model_fields if name not in ("subject", "messages")
)
# Columns of an initial message: its id and the message create schema's fields.
MESSAGE_COLUMNS: tuple[str, ...] = ("id", *MessageCreate.model_fields)

CONVERSATIONS = ConversationRow.__table__
MESSAGES = MessageRow.__table__


_dialect = postgresql.dialect()  # type: ignore[no-untyped-call]


def sql_type(table: Any, column: str) -> str:
    return str(table.c[column].type.compile(dialect=_dialect))
