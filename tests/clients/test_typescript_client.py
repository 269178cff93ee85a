"""TypeScript types generated from openapi.json with openapi-typescript compile with typed
calls of createChildConversation and createChildConversationsBatch (tests/clients/ts/call.ts),
under ``tsc --noEmit --strict``; compiled, the same calls create children on the real server.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from aurion.auth.tokens import mint_token
from aurion.settings import Settings
from harness.server import Server
from tests.conftest import READ_WRITE, ROOT
from tests.e2e.live import npm_ci, require_node

TS = Path(__file__).resolve().parent / "ts"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    node = str(Path(require_node()).with_name("node"))
    return subprocess.run(
        [node, *args], cwd=TS, capture_output=True, text=True, timeout=300, check=False, env=env
    )


@pytest.fixture(scope="module")
def schema() -> Path:
    npm_ci(TS)
    schema = TS / "generated" / "schema.d.ts"
    generated = run(
        "node_modules/openapi-typescript/bin/cli.js", str(ROOT / "openapi.json"), "-o", str(schema)
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert "createChildConversation: {" in schema.read_text()
    return schema


TSC_FAILED = (
    "The TypeScript that openapi-typescript generates from openapi.json does not compile: a "
    "change to the OpenAPI document breaks TypeScript clients (a self-referencing schema, for "
    "one, is refused by tsc).\n"
)


def test_generated_types_compile_with_a_typed_child_call(schema: Path) -> None:
    compiled = run("node_modules/typescript/bin/tsc", "--noEmit", "-p", ".")
    assert compiled.returncode == 0, TSC_FAILED + compiled.stdout + compiled.stderr


def test_the_typed_call_creates_a_child(schema: Path, server: Server, settings: Settings) -> None:
    emitted = run(
        "node_modules/typescript/bin/tsc", "-p", ".", "--noEmit", "false", "--outDir", "build"
    )
    assert emitted.returncode == 0, TSC_FAILED + emitted.stdout + emitted.stderr
    token = mint_token(
        settings, workspace=f"ws_{uuid.uuid4().hex[:12]}", subject="ts-user", scopes=READ_WRITE
    )
    parent = httpx.post(
        f"{server.base_url}/api/v2/conversations",
        json={
            "subject": "Order #1001 arrived damaged",
            "assignee_user_id": "user_dana",
            "tags": ["vip"],
        },
        headers={"Authorization": f"Bearer {token}"},
    ).json()

    result = run(
        "run.mjs", env={"BASE_URL": server.base_url, "TOKEN": token, "PARENT_ID": parent["id"]}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    child_id, status, parent_id, version, related = outcome["summary"].split()
    assert (status, parent_id, version, related) == ("open", parent["id"], "v1", "related=1")
    assert outcome["refusal"] == {"status": 404, "code": "conversation_not_found"}
    # updateConversation: the typed 409 names the open child, then the cascade resolves both.
    assert outcome["blocked"] == {"status": 409, "code": "open_children", "open": [child_id]}
    assert outcome["resolved"] == "resolved v3"
    # Then a split: two more children (which reopen the parent).
    assert outcome["split"] == "2 team_billing null true urgent replacement"
    listed = httpx.get(
        f"{server.base_url}/api/v2/conversations/{parent['id']}/children",
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    assert [item["id"] for item in listed["items"]][-1] == child_id
    assert len(listed["items"]) == 3
    assert listed["items"][-1]["status"] == "resolved"
    assert listed["summary"]["percent_resolved"] == 33
