"""The demo parent conversation: ``aurion seed`` creates one, and so does ``make run``.

It is created through the service, as an API client's would be, so it has the counters,
activity and messages any conversation has.
"""

from __future__ import annotations

from uuid import UUID

from aurion.auth.principal import Principal
from aurion.conversations import service
from aurion.conversations.schemas import ConversationCreate
from aurion.db.driver import driver_of
from aurion.db.engine import create_engine
from aurion.db.json_sql import Document
from aurion.settings import Settings

DEMO_PARENT = ConversationCreate.model_validate(
    {
        "subject": "Order #1001 arrived damaged",
        "status": "open",
        "priority": "high",
        "urgency": "high",
        "impact": "single_user",
        "category": "shipping",
        "sub_category": "damaged_item",
        "channel": "email",
        "source": "email",
        "conversation_type": "incident",
        "company_id": "comp_acme",
        "company_name": "Acme Corp",
        "contact_id": "contact_jo",
        "contact_name": "Jo Customer",
        "contact_email": "jo@acme.example",
        "contact_phone": "+1 555 0100",
        "contact_role": "buyer",
        "department_id": "dept_support",
        "assignee_team_id": "team_logistics",
        "assignee_team_name": "Logistics",
        "assignee_user_id": "user_dana",
        "assignee_user_name": "Dana Agent",
        "tags": ["vip", "shipping"],
        "custom_attrs": {"order_id": "A-1001", "value_eur": 249.0},
        "ai_language": "en",
        "sla_first_response_due": "2030-01-01T09:00:00Z",
        "sla_resolution_due": "2030-01-03T17:00:00Z",
        "sla_state": "active",
        "messages": [
            {
                "body": "My order arrived with a cracked screen.",
                "sender_type": "contact",
                "sender_id": "contact_jo",
            },
            {
                "body": "Sorry to hear that! Could you send a photo?",
                "sender_type": "agent",
                "sender_id": "user_dana",
            },
            {"body": "Photo attached.", "sender_type": "contact", "sender_id": "contact_jo"},
        ],
    }
)
# The subject the printed example gives the demo parent's child.
DEMO_CHILD_SUBJECT = "Refund the damaged item"


async def seed_demo_parent(settings: Settings, database_url: str, workspace: str) -> UUID:
    """Create the demo parent in ``workspace`` (the schema must be migrated); its id."""
    principal = Principal(subject="seed", workspace_id=workspace, scopes=frozenset())
    engine = create_engine(settings, database_url)
    try:
        async with engine.connect() as conn, driver_of(conn, pgbouncer=False) as db:
            created = await service.create_conversation(db, principal, DEMO_PARENT, claim=None)
            assert isinstance(created, Document)  # no key, so never a replay
            assert created.id is not None
            return created.id
    finally:
        await engine.dispose()
