"""Ports, process lifetimes and what a process tree has cost (CPU time, peak memory)."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil

from aurion.db.embedded import SYSTEM_USER, free_port

__all__ = [
    "chown_tree",
    "free_port",
    "peak_rss_mib",
    "run_as",
    "stop",
    "tail",
    "tree_cpu_seconds",
    "wait_for_port",
    "worker_pids",
]


def tail(log: Path | None, chars: int = 3000) -> str:
    """The end of a log file, for an error message."""
    if log is None or not log.exists():
        return "(no log)"
    return log.read_text(errors="replace")[-chars:]


def wait_for_port(
    port: int,
    process: subprocess.Popen[bytes],
    *,
    what: str,
    log: Path | None = None,
    timeout: float = 15,
) -> None:
    """Until something accepts connections on 127.0.0.1:port; fails early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{tail(log)}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(
        f"{what}: nothing listens on 127.0.0.1:{port} after {timeout} s:\n{tail(log)}"
    )


def stop(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL to the process group it leads (started with start_new_session)."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            process.kill()
        process.wait(10)


def run_as() -> str | None:
    """The user daemons (PgBouncer, nginx) run as: ourselves, or as root the embedded cluster's
    system user, since they refuse to run as root or should not."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", SYSTEM_USER], check=True, capture_output=True)
    return SYSTEM_USER


def chown_tree(path: Path, user: str | None) -> None:
    """Hand a work directory to the user a daemon runs as (no-op when that is ourselves)."""
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for item in (path, *path.rglob("*")):
        os.chown(item, entry.pw_uid, entry.pw_gid)


def tree_cpu_seconds(*roots: int) -> float:
    """CPU time (user + system) of process trees: each root and its live descendants, plus
    every child they have reaped. A backend or worker that exits between two readings still
    counts, as long as its parent has waited for it (PostgreSQL's postmaster and uvicorn do)."""
    total = 0.0
    for root in roots:
        try:
            top = psutil.Process(root)
            tree = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in tree:
            try:
                t = process.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += t.user + t.system + t.children_user + t.children_system
    return total


def worker_pids(master: int) -> list[int]:
    """The worker processes of a uvicorn master (its children, less multiprocessing's resource
    tracker); the master itself when it has none (one process serves)."""
    try:
        children = psutil.Process(master).children()
    except psutil.NoSuchProcess:
        return []
    pids = []
    for child in children:
        try:
            if not any("resource_tracker" in part for part in child.cmdline()):
                pids.append(child.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return sorted(pids) or [master]


def peak_rss_mib(pid: int) -> float:
    """A process's peak resident memory (VmHWM, Linux), which psutil does not report."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0
