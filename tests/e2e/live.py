"""The real server process and the Node tooling the end-to-end and client tests share.

The server is started the way a user starts it (``aurion serve``, by harness/server.py), on a
free port, against the test database; Node packages are installed from the committed lockfiles
with ``npm ci``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.server import Server, serve_aurion
from tests.conftest import TEST_SECRET

CHROMIUM = "/usr/bin/chromium"
INSTALL_HINT = "run `make test-deps` (bash scripts/install-system-deps.sh chromium nodejs npm)"


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real ``aurion serve`` process on a free port, against the test database (the
    ``server`` fixture of tests/e2e and tests/clients)."""
    workdir = tmp_path_factory.mktemp("server")
    live = serve_aurion(
        database_url,
        log_path=workdir / "server.log",
        env={
            "AURION_ENV": "test",
            "AURION_JWT_SECRET": TEST_SECRET,
            "AURION_LOG_LEVEL": "INFO",
            "AURION_DATA_DIR": str(workdir / "data"),  # never an embedded server of its own
        },
        timeout=60,
    )
    try:
        yield live
    finally:
        live.stop()


def require_node() -> str:
    """The npm executable (node is beside it), or a skip that says how to get them."""
    npm = shutil.which("npm")
    if npm is None or not os.access(Path(npm).with_name("node"), os.X_OK):
        pytest.skip(f"Node.js and npm are not installed: {INSTALL_HINT}")
    return npm


def require_chromium() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM}: {INSTALL_HINT}")
    return CHROMIUM


def npm_ci(package_dir: Path) -> None:
    """Install a test package's Node dependencies exactly as its lockfile says (once)."""
    npm = require_node()
    stamp = package_dir / "node_modules" / ".package-lock.json"
    lock = package_dir / "package-lock.json"
    if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
        return
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=package_dir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(f"npm ci in {package_dir} failed:\n{result.stdout}\n{result.stderr}")
