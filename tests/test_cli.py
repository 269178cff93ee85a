"""The command line as a newcomer uses it: `make run` is `aurion serve --migrate --print-token`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.processes import free_port
from tests.support import ROOT, server_data_dir


def _aurion(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aurion.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def fresh_env() -> Iterator[dict[str, str]]:
    """No DATABASE_URL: the commands start an embedded PostgreSQL under a data dir of their own."""
    with server_data_dir("cli-test") as data_dir:
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env["AURION_DATA_DIR"] = str(data_dir)
        env["AURION_LOG_LEVEL"] = "WARNING"
        yield env


@pytest.fixture(scope="module")
def served(fresh_env: dict[str, str]) -> Iterator[tuple[str, str, str]]:
    """`aurion serve --migrate --print-token` on a free port; its base URL, and the token and
    the try-it command it printed."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "aurion.cli", "serve", "--migrate", "--print-token",
         "--port", str(port)],
        cwd=ROOT,
        env=fresh_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert server.stdout is not None
    output = ""
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    token = curl = None
    while time.monotonic() < deadline and curl is None:
        line = server.stdout.readline()
        output += line
        match = re.match(r"^(eyJ[\w-]+\.[\w-]+\.[\w-]+)$", line.strip())
        if match:
            token = match.group(1)
        if line.startswith("curl "):
            curl = line.strip()
    assert token, f"no token printed:\n{output}"
    assert curl, f"no command printed:\n{output}"
    assert f"{base}/docs" in output
    for _ in range(100):
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    yield base, token, curl
    server.terminate()
    server.wait(30)
    # serve started the embedded server, so it stops it too
    pg_dir = Path(fresh_env["AURION_DATA_DIR"]) / "postgres"
    assert not (pg_dir / "pgdata" / "postmaster.pid").exists()


def test_make_run_flow_creates_a_child_with_the_printed_token(
    served: tuple[str, str, str],
) -> None:
    base, token, _ = served
    auth = {"Authorization": f"Bearer {token}"}
    parent = httpx.post(
        f"{base}/api/v2/conversations",
        json={"subject": "Parent", "priority": "high", "tags": ["vip"]},
        headers=auth,
    )
    assert parent.status_code == 201
    child = httpx.post(
        f"{base}/api/v2/conversations/{parent.json()['id']}/children",
        json={"subject": "Child"},
        headers=auth,
    )
    assert child.status_code == 201
    assert child.json()["priority"] == "high"
    assert child.json()["tags"] == ["vip"]
    after = httpx.get(f"{base}/api/v2/conversations/{parent.json()['id']}", headers=auth).json()
    assert after["version"] == 2
    assert after["tab_counts"]["related"] == 1
    assert after["tab_counts"]["activities"] == 2
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 200


def test_the_printed_command_works_as_pasted(served: tuple[str, str, str]) -> None:
    base, token, curl = served
    assert curl.startswith(f"curl -X POST {base}/api/v2/conversations/")
    result = subprocess.run(
        ["bash", "-c", curl + " --silent"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    child = json.loads(result.stdout)
    assert child["subject"] == "Refund the damaged item"
    auth = {"Authorization": f"Bearer {token}"}
    parent = httpx.get(f"{base}/api/v2/conversations/{child['parent_id']}", headers=auth).json()
    assert parent["company_name"] == child["company_name"] == "Acme Corp"  # the demo parent
    assert parent["tab_counts"]["messages"] == 3


def test_seed_and_token_commands(served: tuple[str, str, str], fresh_env: dict[str, str]) -> None:
    base, _, _ = served
    seeded = _aurion("seed", "--workspace", "acme", env=fresh_env)
    assert seeded.returncode == 0, seeded.stderr
    parent_id = seeded.stdout.strip().splitlines()[-1]
    minted = _aurion("token", "--workspace", "acme", "--sub", "me", env=fresh_env)
    assert minted.returncode == 0, minted.stderr
    auth = {"Authorization": f"Bearer {minted.stdout.strip()}"}
    parent = httpx.get(f"{base}/api/v2/conversations/{parent_id}", headers=auth)
    assert parent.status_code == 200
    assert parent.json()["tab_counts"]["messages"] == 3
    child = httpx.post(
        f"{base}/api/v2/conversations/{parent_id}/children",
        json={"subject": "Replace the item"},
        headers=auth,
    )
    assert child.status_code == 201
    assert child.json()["company_name"] == parent.json()["company_name"]


def test_db_upgrade_is_repeatable(fresh_env: dict[str, str], served: tuple[str, str, str]) -> None:
    result = _aurion("db", "upgrade", env=fresh_env)
    assert result.returncode == 0, result.stderr
    assert "head" in result.stdout


def test_help_lists_every_command(fresh_env: dict[str, str]) -> None:
    result = _aurion("--help", env=fresh_env)
    assert result.returncode == 0
    for command in ("serve", "db", "token", "seed", "openapi"):
        assert command in result.stdout


def test_openapi_writes_the_committed_document(fresh_env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "openapi.json"
    result = _aurion("openapi", str(target), env=fresh_env)
    assert result.returncode == 0, result.stderr
    assert target.read_text(encoding="utf-8") == (ROOT / "openapi.json").read_text(encoding="utf-8")
