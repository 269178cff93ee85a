"""Every query of the conversations domain: one statement per request.

Each write is a single statement on the request's driver connection (``aurion.db.driver``),
which PostgreSQL runs as a transaction of its own: it claims the Idempotency-Key (if any),
locks and checks what it changes, writes, renders the public object as JSON and stores that
response with the key. A refusal is diagnosed on the locked, latest row and raised by
``aurion_refuse`` (SQLSTATE AUR01), which rolls the whole statement back, key included.
Reads render their JSON in PostgreSQL too, from the counters kept on the row. Every statement
filters on ``workspace_id`` first.

``children``: child creation (one, a batch, single requests coalesced); ``conversations``:
conversation creation and the reads; ``columns``: the column lists they are built from.
"""

from aurion.conversations.repository.children import (
    CREATE_CHILD,
    CREATE_CHILD_IDEMPOTENT,
    CREATE_CHILDREN,
    CREATE_CHILDREN_IDEMPOTENT,
    CREATE_PLAIN_CHILD,
    CREATE_PLAIN_CHILD_IDEMPOTENT,
    CREATE_PLAIN_CHILDREN_TOGETHER,
    ITEM_COLUMNS,
    NEW_MESSAGE_COLUMNS,
    PLAIN_ITEM_COLUMNS,
    create_child,
    create_children,
    create_plain_children_together,
    is_plain,
)
from aurion.conversations.repository.columns import (
    INHERITED_COLUMNS,
    LOCATION_PREFIX,
    MESSAGE_COLUMNS,
    WRITABLE_COLUMNS,
)
from aurion.conversations.repository.conversations import (
    CREATE_CONVERSATION,
    CREATE_CONVERSATION_IDEMPOTENT,
    GET_CONVERSATION,
    LIST_CHILDREN,
    create_conversation,
    get_conversation,
    list_children,
)

__all__ = [
    "CREATE_CHILD",
    "CREATE_CHILDREN",
    "CREATE_CHILDREN_IDEMPOTENT",
    "CREATE_CHILD_IDEMPOTENT",
    "CREATE_CONVERSATION",
    "CREATE_CONVERSATION_IDEMPOTENT",
    "CREATE_PLAIN_CHILD",
    "CREATE_PLAIN_CHILDREN_TOGETHER",
    "CREATE_PLAIN_CHILD_IDEMPOTENT",
    "GET_CONVERSATION",
    "INHERITED_COLUMNS",
    "ITEM_COLUMNS",
    "LIST_CHILDREN",
    "LOCATION_PREFIX",
    "MESSAGE_COLUMNS",
    "NEW_MESSAGE_COLUMNS",
    "PLAIN_ITEM_COLUMNS",
    "WRITABLE_COLUMNS",
    "create_child",
    "create_children",
    "create_plain_children_together",
    "create_conversation",
    "get_conversation",
    "is_plain",
    "list_children",
]
