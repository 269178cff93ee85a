"""The README's "Try it" commands, run as written against the real server process.

Only the address and the path of the virtual environment are adapted: the shell blocks are
read from README.md, so an example that stops working fails here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.server import Server
from tests.conftest import ROOT, TEST_SECRET


def try_it_blocks(heading: str = "## Try it") -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, re.DOTALL)


def run_block(block: str, server: Server, database_url: str) -> str:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    script = block.replace(".venv/bin/aurion", str(Path(sys.executable).with_name("aurion")))
    script = script.replace("http://127.0.0.1:8000", server.base_url)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "AURION_JWT_SECRET": TEST_SECRET,
        "AURION_ENV": "test",
        "AURION_LOG_LEVEL": "WARNING",
    }
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def json_values(output: str) -> list[Any]:
    """The JSON documents curl printed one after the other (it adds no newline)."""
    decoder = json.JSONDecoder()
    values, index = [], 0
    while index < len(output):
        if output[index].isspace():
            index += 1
            continue
        value, index = decoder.raw_decode(output, index)
        values.append(value)
    return values


def test_the_try_it_commands_create_a_child_then_read_it(server: Server, database_url: str) -> None:
    blocks = try_it_blocks()
    assert len(blocks) == 2
    # Both blocks in one shell: the second uses the first's $TOKEN and $PARENT.
    output = run_block(blocks[0] + "\necho\n" + blocks[1], server, database_url)
    child, parent, children, invalid = json_values(output)

    assert child["subject"] == "Refund the damaged item"
    assert child["parent_id"] == parent["id"]
    assert child["source"] == "child"
    assert child["company_name"] == parent["company_name"] == "Acme Corp"
    assert child["tags"] == parent["tags"]
    assert len(parent["messages"]) == 3
    assert [item["id"] for item in children["items"]] == [child["id"]]
    assert children["next_cursor"] is None
    assert invalid == {
        "detail": [{"loc": ["body", "subject"], "msg": "Field required", "type": "missing"}]
    }


def test_the_split_commands_create_a_child_with_a_note_and_a_copy_then_a_batch(
    server: Server, database_url: str
) -> None:
    blocks = try_it_blocks("## Split a ticket")
    assert len(blocks) == 2
    output = run_block(blocks[0] + "\necho\n" + blocks[1], server, database_url)
    child, batch = json_values(output)

    assert child["subject"] == "Refund the damaged item"
    assert child["assignee_team_name"] == "Billing"
    assert child["company_name"] == "Acme Corp"  # inherited
    copy, note = child["messages"]
    assert copy["body"] == "My order arrived with a cracked screen."
    assert copy["sender_type"] == "contact"
    assert copy["source_message_id"] is not None
    assert copy["id"] != copy["source_message_id"]
    assert note["is_internal"] is True
    assert note["body"] == "Split off: Billing refunds the order."

    replacement, claim = batch["items"]
    assert replacement["priority"] == "urgent"
    assert claim["assignee_team_name"] is None
    assert claim["custom_attrs"] == {"order_id": "A-1001", "claim": "courier"}
    assert replacement["parent_id"] == claim["parent_id"] == child["parent_id"]


def test_the_hierarchy_commands_update_resolve_move_and_delete(
    server: Server, database_url: str
) -> None:
    (lifecycle,) = try_it_blocks("## The life of a hierarchy")
    output = run_block(try_it_blocks()[0] + "\necho\n" + lifecycle, server, database_url)
    (
        _first_child,
        updated,
        blocked,
        resolved,
        reopened,
        archived,
        moved,
        detached,
        children,
        activities,
    ) = json_values(output)
    assert (updated["priority"], updated["tags"], updated["version"]) == (
        "urgent",
        ["vip", "refund"],
        2,
    )
    assert blocked["code"] == "open_children"
    assert updated["id"] in blocked["open_child_ids"]
    assert len(blocked["open_child_ids"]) == 2
    assert resolved["status"] == "resolved"
    assert reopened["status"] == "open"
    assert archived["archived_at"] is not None
    assert moved["parent_id"] not in (None, resolved["id"])
    assert detached["parent_id"] is None
    assert children["items"] == []
    assert children["summary"]["total"] == 1
    assert children["summary"]["percent_resolved"] == 100
    kinds = [a["kind"] for a in activities["items"]]
    assert kinds[:4] == ["child_detached", "reopened", "updated", "child_created"]
