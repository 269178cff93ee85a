"""The real server process and the Node tooling the end-to-end and client tests share.

The server is started the way a user starts it (``aurion serve``), on a free port, against the
test database; Node packages are installed from the committed lockfiles with ``npm ci``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT

CHROMIUM = "/usr/bin/chromium"
INSTALL_HINT = "run `make test-deps` (bash scripts/install-system-deps.sh chromium nodejs npm)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    base_url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@contextmanager
def live_server(database_url: str, jwt_secret: str, workdir: Path) -> Iterator[LiveServer]:
    """``aurion serve`` in a child process; yields once /readyz answers 200."""
    port = free_port()
    aurion = Path(sys.executable).with_name("aurion")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "AURION_ENV": "test",
        "AURION_JWT_SECRET": jwt_secret,
        "AURION_LOG_LEVEL": "INFO",
        "AURION_LOG_FORMAT": "json",  # the access-log tests read the JSON lines
        "AURION_DATA_DIR": str(workdir / "data"),  # never an embedded server of its own
    }
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(aurion), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", log_path, process)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"aurion serve exited with {process.returncode}:\n{server.log_text()}")
            try:
                if httpx.get(f"{server.base_url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"aurion serve was not ready within 60 s:\n{server.log_text()}")
            time.sleep(0.2)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
