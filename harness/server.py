"""An HTTP server process on a free port of 127.0.0.1, started and waited for until it serves:
the real ``aurion serve`` as a user starts it, or any other app (the benchmark's references)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from harness.processes import free_port, peak_rss_mib, stop, tail, worker_pids

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Server:
    name: str
    base_url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def worker_pids(self) -> list[int]:
        return worker_pids(self.process.pid)

    def peak_rss_mib(self) -> list[float]:
        """Peak resident memory of each worker."""
        return [peak_rss_mib(pid) for pid in self.worker_pids()]

    def stop(self, timeout: float = 30) -> None:
        stop(self.process, timeout)


def aurion_command() -> list[str]:
    """``aurion`` as installed beside this interpreter (the console script a user runs)."""
    script = Path(sys.executable).parent / "aurion"
    return [str(script)] if script.exists() else [sys.executable, "-m", "aurion.cli"]


def start_server(
    argv: Sequence[str],
    *,
    name: str,
    port: int,
    env: Mapping[str, str],
    log_path: Path,
    ready_path: str = "/healthz",
    workers: int = 0,
    timeout: float = 90,
) -> Server:
    """Start ``argv`` (which listens on ``port``), output to ``log_path``; return once
    ``ready_path`` answers 200 and, with ``workers``, that many worker processes run."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(name, f"http://127.0.0.1:{port}", port, process, log_path)
    try:
        _wait_ready(server, ready_path, workers, timeout)
    except BaseException:
        stop(process)
        raise
    return server


def _wait_ready(server: Server, ready_path: str, workers: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.process.returncode}:\n{tail(server.log_path)}"
            )
        if len(server.worker_pids()) >= workers:
            try:
                response = httpx.get(server.base_url + ready_path, timeout=2)
                if response.status_code == 200:
                    return
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    raise RuntimeError(
        f"{server.name} did not answer {ready_path} within {timeout} s:\n{tail(server.log_path)}"
    )


def serve_aurion(
    database_url: str,
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    workers: int | None = None,
    args: Sequence[str] = (),
    ready_path: str = "/readyz",
    name: str = "aurion serve",
    timeout: float = 90,
) -> Server:
    """``aurion serve`` on a free port against ``database_url``; ``env`` adds AURION_* settings
    to this process's environment. Ready once ``ready_path`` answers (by default /readyz: the
    database is reachable and migrated) and every worker runs."""
    port = free_port()
    argv = [*aurion_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    argv += args
    environment = {**os.environ, "DATABASE_URL": database_url, **(env or {})}
    return start_server(
        argv,
        name=name,
        port=port,
        env=environment,
        log_path=log_path,
        ready_path=ready_path,
        workers=workers or 0,
        timeout=timeout,
    )
