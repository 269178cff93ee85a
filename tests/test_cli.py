"""The command line as a newcomer uses it: `make run` is `aurion serve --migrate --print-token`."""

from __future__ import annotations

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

ROOT = Path(__file__).resolve().parents[1]


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
def fresh_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """No DATABASE_URL: the commands start an embedded PostgreSQL under a data dir of their own."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["AURION_DATA_DIR"] = str(tmp_path_factory.mktemp("data"))
    env["AURION_LOG_LEVEL"] = "WARNING"
    return env


@pytest.fixture(scope="module")
def served(fresh_env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """`aurion serve --migrate --print-token` on a free port; its base URL and printed token."""
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
    token = None
    while time.monotonic() < deadline and token is None:
        line = server.stdout.readline()
        output += line
        match = re.match(r"^(eyJ[\w-]+\.[\w-]+\.[\w-]+)$", line.strip())
        if match:
            token = match.group(1)
    assert token, f"no token printed:\n{output}"
    assert f"{base}/docs" in output
    for _ in range(100):
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    yield base, token
    server.terminate()
    server.wait(30)
    # serve started the embedded server, so it stops it too
    pg_dir = Path(fresh_env["AURION_DATA_DIR"]) / "postgres"
    assert not (pg_dir / "pgdata" / "postmaster.pid").exists()


def test_make_run_flow_creates_a_child_with_the_printed_token(served: tuple[str, str]) -> None:
    base, token = served
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


def test_seed_and_token_commands(served: tuple[str, str], fresh_env: dict[str, str]) -> None:
    base, _ = served
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


def test_db_upgrade_is_repeatable(fresh_env: dict[str, str], served: tuple[str, str]) -> None:
    result = _aurion("db", "upgrade", env=fresh_env)
    assert result.returncode == 0, result.stderr
    assert "head" in result.stdout


def test_help_lists_every_command(fresh_env: dict[str, str]) -> None:
    result = _aurion("--help", env=fresh_env)
    assert result.returncode == 0
    for command in ("serve", "db", "token", "seed"):
        assert command in result.stdout
