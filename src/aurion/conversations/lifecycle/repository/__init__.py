"""Every statement of the lifecycle operations: one statement per request, like child creation.

Each write locks every conversation it may change in ONE CTE ordered by id (``_locked``), so
two statements that touch the same conversations take their locks in the same order and never
deadlock. Which conversations those are is read first from the statement's snapshot (the
conversation's parent, its children); after the locks every check uses the locked, latest rows,
and a snapshot that turned out stale (a child created or moved in between, which the counters on
the locked row reveal) is refused as ``retry``: nothing was written, and the service runs the
statement again. Refusals raise ``aurion_refuse`` (SQLSTATE AUR01), which rolls everything back.

Ids of activities and events come from the service in two arrays (``activity_ids``,
``event_ids``); a statement that needs more (a cascade over many children) refuses with
``more_ids`` and the number it needs.
"""

from aurion.conversations.lifecycle.repository.activities import LIST_ACTIVITIES, list_activities
from aurion.conversations.lifecycle.repository.delete import (
    DELETE_CONVERSATION,
    delete_conversation,
)
from aurion.conversations.lifecycle.repository.parent import SET_PARENT, set_parent
from aurion.conversations.lifecycle.repository.update import (
    UPDATE_CONVERSATION,
    update_conversation,
)

__all__ = [
    "DELETE_CONVERSATION",
    "LIST_ACTIVITIES",
    "SET_PARENT",
    "UPDATE_CONVERSATION",
    "delete_conversation",
    "list_activities",
    "set_parent",
    "update_conversation",
]
