"""The docs page in a real browser: a child conversation created from /docs, offline.

Starts ``aurion serve`` and Debian's headless Chromium (driven by playwright-core, which
downloads no browser of its own), authorizes with a bearer token, and runs
createChildConversation with "Try it out" → Execute.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from aurion.auth.tokens import mint_token
from aurion.settings import Settings
from harness.server import Server
from tests.conftest import READ_WRITE
from tests.e2e.live import npm_ci, require_chromium, require_node

HERE = Path(__file__).resolve().parent


def run_docs_page(
    server: Server, token: str, parent_id: str, subject: str, shots: Path
) -> dict[str, Any]:
    chromium = require_chromium()
    node = str(Path(require_node()).with_name("node"))
    npm_ci(HERE)
    result = subprocess.run(
        [node, str(HERE / "docs_page.mjs")],
        cwd=HERE,
        env={
            "PATH": str(Path(node).parent),
            "HOME": str(shots),
            "BASE_URL": server.base_url,
            "TOKEN": token,
            "PARENT_ID": parent_id,
            "SUBJECT": subject,
            "SCREENSHOT_DIR": str(shots),
            "CHROMIUM": chromium,
        },
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result from docs_page.mjs:\n{result.stdout}\n{result.stderr}"
    outcome: dict[str, Any] = json.loads(lines[-1])
    assert "error" not in outcome, f"{outcome['error']}\nserver log:\n{server.log_text()[-4000:]}"
    return outcome


@pytest.fixture(scope="module")
def docs_run(
    server: Server, tmp_path_factory: pytest.TempPathFactory, settings: Settings
) -> dict[str, Any]:
    workspace = f"ws_{uuid.uuid4().hex[:12]}"
    token = mint_token(settings, workspace=workspace, subject="docs-reader", scopes=READ_WRITE)
    created = httpx.post(
        f"{server.base_url}/api/v2/conversations",
        json={"subject": "Order #1001 arrived damaged", "priority": "high", "tags": ["vip"]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert created.status_code == 201, created.text
    parent = created.json()
    subject = f"Refund from the docs page {uuid.uuid4().hex[:6]}"
    shots = tmp_path_factory.mktemp("screenshots")
    outcome = run_docs_page(server, token, parent["id"], subject, shots)
    return {
        **outcome,
        "parent": parent,
        "subject": subject,
        "token": token,
        "workspace": workspace,
        "shots": shots,
    }


def test_execute_creates_a_child_with_201(docs_run: dict[str, Any]) -> None:
    assert docs_run["title"].startswith("Aurion Conversations API")
    assert docs_run["status"] == 201
    child = docs_run["body"]
    assert child["parent_id"] == docs_run["parent"]["id"]
    assert child["subject"] == docs_run["subject"]
    assert child["priority"] == "high"
    assert child["tags"] == ["vip"]

    # The child was really created: its activity log, read from the page, starts with it
    # (it was then detached and deleted from the page, so the parent lists it no more).
    activities = docs_run["lifecycle"]["listConversationActivities"]["body"]["items"]
    assert activities[-1]["payload"] == {
        "parent_id": docs_run["parent"]["id"],
        "overridden_fields": [],
        "copied_message_ids": [],
    }


def test_the_lifecycle_operations_run_from_the_page(docs_run: dict[str, Any]) -> None:
    ran = docs_run["lifecycle"]
    assert ran["updateConversation"]["status"] == 200
    assert ran["updateConversation"]["body"]["status"] == "resolved"
    assert ran["setConversationParent"]["status"] == 200
    assert ran["setConversationParent"]["body"]["parent_id"] is None
    assert ran["listConversationActivities"]["status"] == 200
    kinds = [a["kind"] for a in ran["listConversationActivities"]["body"]["items"]]
    assert kinds == ["parent_changed", "updated", "created_from_parent"]
    assert ran["deleteConversation"] == {"status": 204, "body": None}


def test_page_needs_nothing_but_the_service(docs_run: dict[str, Any]) -> None:
    assert docs_run["docs"] == {"foreign": [], "errors": []}
    assert (docs_run["shots"] / "docs-child-created.png").stat().st_size > 10_000


def test_the_page_shows_a_curl_command_with_the_bearer_token(docs_run: dict[str, Any]) -> None:
    curl = docs_run["curl"]
    assert f"/api/v2/conversations/{docs_run['parent']['id']}/children" in curl
    assert f"Authorization: Bearer {docs_run['token']}" in curl


def test_redoc_renders_offline(docs_run: dict[str, Any]) -> None:
    assert docs_run["redocHeading"].startswith("Aurion Conversations API")
    # ReDoc's footer always asks Redocly's CDN for a 1 KB logo and hides it when that fails
    # (there is no option to turn it off); nothing else may leave the machine.
    foreign = [url for url in docs_run["redoc"]["foreign"] if not url.endswith("/logo-mini.svg")]
    assert foreign == []
    assert (docs_run["shots"] / "redoc.png").stat().st_size > 10_000


def test_access_log_names_the_workspace_and_never_the_token(
    docs_run: dict[str, Any], server: Server
) -> None:
    records = [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]
    created = [
        r
        for r in records
        if r.get("route") == "/api/v2/conversations/{conversation_id}/children"
        and r.get("status") == 201
    ]
    assert len(created) == 1
    assert created[0]["workspace_id"] == docs_run["workspace"]
    assert created[0]["method"] == "POST"
    assert created[0]["duration_ms"] >= 0
    assert docs_run["token"] not in server.log_text()
    assert docs_run["subject"] not in server.log_text()
