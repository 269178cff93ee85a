"""The public object has one definition, the read schema: PostgreSQL renders every response
from its fields (aurion.db.json_sql), and these tests hold the two together.

* Every endpoint's body is exactly its read model: strict validation, the model's keys and no
  others, times as the API writes them (``assert_shaped_as``).
* The column lists that cannot be derived agree with the table and the schemas, and a new
  column must be classified (public field or private bookkeeping) before the suite passes.
"""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import DateTime, Float, Integer, Text, Uuid
from sqlalchemy.ext.asyncio import AsyncEngine

from aurion.conversations import repository
from aurion.conversations.lifecycle.schemas import ActivityPage
from aurion.conversations.models import Conversation as ConversationRow
from aurion.conversations.models import Message as MessageRow
from aurion.conversations.schemas import (
    Conversation,
    ConversationBatch,
    ConversationCreate,
    ConversationPage,
    MessageCreate,
    MessageRead,
)
from tests.conversations.test_create_child import FULL_PARENT
from tests.support import Factory, assert_shaped_as, child_url, set_state

CONVERSATION_COLUMNS = {c.name for c in ConversationRow.__table__.columns}
MESSAGE_COLUMNS = {c.name for c in MessageRow.__table__.columns}
# Fields of the public object that are not columns: rendered by conversation_json_sql.
COMPUTED = {"messages", "tab_counts"}
# Columns that are not public: the tenant key and the counters (tab_counts shows them).
PRIVATE_CONVERSATION_COLUMNS = {
    "workspace_id",
    "n_children",
    "n_open_children",
    "n_messages",
    "n_activities",
}
PRIVATE_MESSAGE_COLUMNS = {"workspace_id", "conversation_id"}


class TestEveryEndpointRendersTheReadSchema:
    async def test_create_conversation(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        response = await client.post("/api/v2/conversations", json=FULL_PARENT, headers=auth)
        assert response.status_code == 201
        body = assert_shaped_as(Conversation, response.content)
        assert len(body["messages"]) == 2

    async def test_create_child_and_its_replay(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str]
    ) -> None:
        parent = await create_parent(**FULL_PARENT)
        headers = {**auth, "Idempotency-Key": f"contract-{uuid.uuid4().hex}"}
        first = await client.post(child_url(parent["id"]), json={"subject": "x"}, headers=headers)
        again = await client.post(child_url(parent["id"]), json={"subject": "x"}, headers=headers)
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.headers["idempotent-replayed"] == "true"
        assert assert_shaped_as(Conversation, again.content) == assert_shaped_as(
            Conversation, first.content
        )

    async def test_get_and_list(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str]
    ) -> None:
        parent = await create_parent(**FULL_PARENT)
        await client.post(child_url(parent["id"]), json={"subject": "x"}, headers=auth)
        got = await client.get(f"/api/v2/conversations/{parent['id']}", headers=auth)
        assert got.status_code == 200
        assert len(assert_shaped_as(Conversation, got.content)["messages"]) == 2
        page = await client.get(child_url(parent["id"]), headers=auth)
        assert page.status_code == 200
        assert len(assert_shaped_as(ConversationPage, page.content)["items"]) == 1

    async def test_batch_update_and_activities(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str]
    ) -> None:
        parent = await create_parent(**FULL_PARENT)
        batch = await client.post(
            f"{child_url(parent['id'])}/batch",
            json={"children": [{"subject": "a"}, {"subject": "b", "priority": "low"}]},
            headers=auth,
        )
        assert batch.status_code == 201, batch.text
        assert len(assert_shaped_as(ConversationBatch, batch.content)["items"]) == 2
        url = f"/api/v2/conversations/{parent['id']}"
        updated = await client.patch(url, json={"priority": "low"}, headers=auth)
        assert updated.status_code == 200, updated.text
        assert assert_shaped_as(Conversation, updated.content)["priority"] == "low"
        log = await client.get(f"{url}/activities", headers=auth)
        assert log.status_code == 200
        assert len(assert_shaped_as(ActivityPage, log.content)["items"]) >= 3

    async def test_every_column_set_renders_in_its_schema_type(
        self,
        client: httpx.AsyncClient,
        create_parent: Factory,
        auth: dict[str, str],
        engine: AsyncEngine,
        workspace: str,
    ) -> None:
        """Columns the API cannot set yet (AI, merge, archive, sentiment) hold values, so
        their rendering is checked too, not only their null."""
        other = await create_parent()
        conversation = await create_parent(**FULL_PARENT)
        await set_state(engine, workspace, conversation["id"], _fill_nullable_columns(other["id"]))
        got = await client.get(f"/api/v2/conversations/{conversation['id']}", headers=auth)
        assert got.status_code == 200
        body = assert_shaped_as(Conversation, got.content)
        assert [name for name, value in body.items() if value is None] == ["deleted_at"]


def _fill_nullable_columns(other_id: str) -> str:
    """An UPDATE's SET list giving every nullable public column a value of its type (but
    deleted_at, which hides the row)."""
    values = {DateTime: "now()", Text: "'x'", Float: "0.5", Integer: "1", Uuid: f"'{other_id}'"}
    assignments = []
    for column in ConversationRow.__table__.columns:
        if not column.nullable or column.name == "deleted_at":
            continue
        value = next(v for t, v in values.items() if isinstance(column.type, t))
        if column.name == "priority":  # a CHECK constraint names the values
            value = "'low'"
        assignments.append(f"{column.name} = {value}")
    return ", ".join(assignments)


class TestColumnListsAgree:
    def test_the_read_schema_is_the_columns_but_private_ones_plus_computed_fields(self) -> None:
        fields = set(Conversation.model_fields)
        assert fields - CONVERSATION_COLUMNS == COMPUTED
        assert CONVERSATION_COLUMNS - fields == PRIVATE_CONVERSATION_COLUMNS
        assert set(MessageRead.model_fields) == MESSAGE_COLUMNS - PRIVATE_MESSAGE_COLUMNS

    def test_inherited_columns_are_public_columns(self) -> None:
        inherited = set(repository.INHERITED_COLUMNS)
        assert len(inherited) == len(repository.INHERITED_COLUMNS)
        assert inherited <= CONVERSATION_COLUMNS
        assert inherited <= set(Conversation.model_fields)

    def test_create_schemas_write_columns(self) -> None:
        assert set(ConversationCreate.model_fields) - {"messages"} <= CONVERSATION_COLUMNS
        assert set(repository.WRITABLE_COLUMNS) | {"subject", "messages"} == set(
            ConversationCreate.model_fields
        )
        assert set(MessageCreate.model_fields) <= MESSAGE_COLUMNS
        assert set(repository.MESSAGE_COLUMNS) == {"id", *MessageCreate.model_fields}
