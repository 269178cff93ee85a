"""A Python client generated from the committed openapi.json creates a child on the server.

openapi-python-client is what an integrator would run; ``--fail-on-warning`` makes any part
of the document it cannot turn into typed code a failure here.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from aurion.auth.tokens import mint_token
from aurion.settings import Settings
from harness.server import Server
from tests.conftest import READ_WRITE, ROOT

CONFIG = "project_name_override: aurion-client\npackage_name_override: aurion_client\n"


@pytest.fixture(scope="module")
def client_package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    out = tmp_path_factory.mktemp("python-client")
    config = out / "config.yml"
    # No post hooks: formatting the generated code is not what is tested.
    config.write_text(CONFIG + "post_hooks: []\n")
    generator = Path(sys.executable).with_name("openapi-python-client")
    result = subprocess.run(
        [
            str(generator),
            "generate",
            "--path",
            str(ROOT / "openapi.json"),
            "--meta",
            "none",
            "--output-path",
            str(out / "aurion_client"),
            "--config",
            str(config),
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(out))
    try:
        names = [
            "aurion_client",
            "aurion_client.api.conversations.create_child_conversation",
            "aurion_client.api.conversations.create_child_conversations_batch",
            "aurion_client.api.conversations.create_conversation",
            "aurion_client.api.conversations.update_conversation",
            "aurion_client.api.conversations.set_conversation_parent",
            "aurion_client.models",
        ]
        yield {name.rsplit(".", 1)[-1]: importlib.import_module(name) for name in names}
    finally:
        sys.path.remove(str(out))
        for name in [n for n in sys.modules if n.startswith("aurion_client")]:
            del sys.modules[name]


@pytest.fixture
def api(client_package: dict[str, ModuleType], server: Server, settings: Settings) -> Iterator[Any]:
    token = mint_token(
        settings, workspace=f"ws_{uuid.uuid4().hex[:12]}", subject="sdk-user", scopes=READ_WRITE
    )
    client = client_package["aurion_client"].AuthenticatedClient(
        base_url=server.base_url, token=token
    )
    with client as opened:
        yield opened


def test_generated_client_creates_a_child(client_package: dict[str, ModuleType], api: Any) -> None:
    models = client_package["models"]
    parent = client_package["create_conversation"].sync_detailed(
        client=api,
        body=models.ConversationCreate(subject="Order #1001 arrived damaged", tags=["vip"]),
    )
    assert parent.status_code == 201
    assert isinstance(parent.parsed, models.Conversation)

    created = client_package["create_child_conversation"].sync_detailed(
        client=api,
        conversation_id=uuid.UUID(parent.parsed.id),
        body=models.ChildConversationCreate(subject="Refund the damaged item"),
        idempotency_key=f"sdk-{uuid.uuid4().hex}",
    )
    assert created.status_code == 201
    child = created.parsed
    assert isinstance(child, models.Conversation)
    assert child.parent_id == parent.parsed.id
    assert child.subject == "Refund the damaged item"
    assert child.tags == ["vip"]
    assert child.version == 1
    assert created.headers["location"] == f"/api/v2/conversations/{child.id}"


def test_generated_client_parses_a_declared_error(
    client_package: dict[str, ModuleType], api: Any
) -> None:
    models = client_package["models"]
    missing = client_package["create_child_conversation"].sync_detailed(
        client=api,
        conversation_id=uuid.uuid4(),
        body=models.ChildConversationCreate(subject="Follow-up"),
    )
    assert missing.status_code == 404
    assert isinstance(missing.parsed, models.ErrorBody)
    assert missing.parsed.code == "conversation_not_found"


def test_generated_client_splits_a_ticket(client_package: dict[str, ModuleType], api: Any) -> None:
    models = client_package["models"]
    parent = (
        client_package["create_conversation"]
        .sync_detailed(
            client=api,
            body=models.ConversationCreate(
                subject="Order #1001 arrived damaged",
                tags=["vip"],
                assignee_user_id="user_dana",
                messages=[models.MessageCreate(body="It arrived cracked.", sender_type="contact")],
            ),
        )
        .parsed
    )
    customer_message = parent.messages[0].id
    created = client_package["create_child_conversations_batch"].sync_detailed(
        client=api,
        conversation_id=uuid.UUID(parent.id),
        body=models.ChildConversationBatchCreate(
            children=[
                models.ChildConversationCreate(
                    subject="Refund the damaged item",
                    assignee_team_id="team_billing",
                    assignee_user_id=None,  # sent as null: cleared, not inherited
                    message=models.MessageCreate(body="Split off for Billing.", is_internal=True),
                    copy_message_ids=[uuid.UUID(customer_message)],
                ),
                models.ChildConversationCreate(subject="Replace it", priority="urgent"),
            ]
        ),
        idempotency_key=f"sdk-{uuid.uuid4().hex}",
    )
    assert created.status_code == 201, created.content
    assert isinstance(created.parsed, models.ConversationBatch)
    refund, replace = created.parsed.items
    assert refund.assignee_team_id == "team_billing"
    assert refund.assignee_user_id is None
    assert refund.tags == ["vip"]
    assert [m.source_message_id for m in refund.messages] == [customer_message, None]
    assert refund.messages[1].is_internal is True
    assert replace.priority == "urgent"
    assert replace.assignee_user_id == "user_dana"  # absent: inherited


def test_generated_client_updates_and_moves_a_conversation(
    client_package: dict[str, ModuleType], api: Any
) -> None:
    models = client_package["models"]
    create = client_package["create_conversation"].sync_detailed
    parent = create(client=api, body=models.ConversationCreate(subject="Parent")).parsed
    loose = create(client=api, body=models.ConversationCreate(subject="Loose")).parsed

    moved = client_package["set_conversation_parent"].sync_detailed(
        client=api,
        conversation_id=uuid.UUID(loose.id),
        body=models.ParentUpdate(parent_id=uuid.UUID(parent.id)),
    )
    assert moved.status_code == 200
    assert moved.parsed.parent_id == parent.id

    update = client_package["update_conversation"].sync_detailed
    blocked = update(
        client=api,
        conversation_id=uuid.UUID(parent.id),
        body=models.ConversationPatch(status=models.ConversationPatchStatus.RESOLVED),
    )
    assert blocked.status_code == 409
    assert isinstance(blocked.parsed, models.OpenChildrenBody)
    assert blocked.parsed.open_child_ids == [loose.id]

    resolved = update(
        client=api,
        conversation_id=uuid.UUID(parent.id),
        body=models.ConversationPatch(
            status=models.ConversationPatchStatus.RESOLVED, tags=["done"]
        ),
        children="resolve",
    )
    assert resolved.status_code == 200
    assert isinstance(resolved.parsed, models.Conversation)
    assert (resolved.parsed.status, resolved.parsed.tags, resolved.parsed.version) == (
        "resolved",
        ["done"],
        3,
    )
