"""Real processes for the scale-out tests: the server with several workers, and PgBouncer.

Both listen on 127.0.0.1 only and are stopped when the session ends. PgBouncer, like
PostgreSQL, refuses to run as root: as root it runs as the embedded cluster's system user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from aurion.db.embedded import SYSTEM_USER
from aurion.settings import Settings
from tests.conftest import ROOT, TEST_SECRET, make_settings, started_app

# Server connections PgBouncer may open to PostgreSQL: far fewer than the app's client
# connections, so transactions of different clients share server connections all the time.
PGBOUNCER_POOL_SIZE = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}:\n{_tail(log)}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"


def stop(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL to the process group it leads (started with start_new_session)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


# --- PgBouncer -----------------------------------------------------------------------------


def _find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")


@pytest.fixture(scope="session")
def pgbouncer_bin() -> str:
    """The pgbouncer binary, installed with scripts/install-system-deps.sh if missing."""
    found = _find_pgbouncer()
    if found:
        return found
    try:
        result = subprocess.run(
            ["bash", str(ROOT / "scripts" / "install-system-deps.sh"), "pgbouncer"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        output = (result.stdout + result.stderr)[-1500:]
    except (OSError, subprocess.TimeoutExpired) as exc:
        output = str(exc)
    found = _find_pgbouncer()
    if not found:
        pytest.skip(
            "PgBouncer is not installed and scripts/install-system-deps.sh pgbouncer could "
            f"not install it (needs root or sudo and the Debian package mirror):\n{output}"
        )
    return found


@dataclass(frozen=True)
class PgBouncer:
    url: str  # the application's DATABASE_URL, through PgBouncer
    port: int
    database: str
    admin: Callable[[str], str]  # a query on PgBouncer's admin console (SHOW ...), as text


def _run_as() -> str | None:
    """The user PgBouncer runs as: ourselves, or the embedded cluster's user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", SYSTEM_USER], check=True, capture_output=True)
    return SYSTEM_USER


def _psql() -> str | None:
    from aurion.db.embedded import EmbeddedPostgres

    try:
        path = EmbeddedPostgres(ROOT / ".data" / "unused").bin_dir / "psql"
    except RuntimeError:
        return shutil.which("psql")
    return str(path) if path.exists() else shutil.which("psql")


@pytest.fixture(scope="session")
def pgbouncer(pgbouncer_bin: str, database_url: str) -> Iterator[PgBouncer]:
    """PgBouncer in transaction pooling mode on a free 127.0.0.1 port, in front of the test DB."""
    target = make_url(database_url)
    database = str(target.database)
    host = target.host or str(target.query.get("host", "127.0.0.1"))
    server = f"host={host} port={target.port or 5432} dbname={database}"
    if target.username:
        server += f" user={target.username}"
    if target.password:
        server += f" password={target.password}"
    # The app's own timeouts are startup parameters PgBouncer refuses; operators set them on the
    # role (docs/scaling.md). Here each server connection gets them when it opens.
    server += (
        " connect_query='SET statement_timeout = 5000; SET lock_timeout = 3000;"
        " SET idle_in_transaction_session_timeout = 30000'"
    )
    user = target.username or "postgres"
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="aurion-pgbouncer-"))
    workdir.chmod(0o755)
    (workdir / "userlist.txt").write_text(f'"{user}" ""\n')
    ini = workdir / "pgbouncer.ini"
    log = workdir / "pgbouncer.log"
    ini.write_text(
        f"""[databases]
{database} = {server}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir / "userlist.txt"}
admin_users = {user}
pool_mode = transaction
default_pool_size = {PGBOUNCER_POOL_SIZE}
max_client_conn = 1000
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = {log}
pidfile = {workdir / "pgbouncer.pid"}
"""
    )
    run_as = _run_as()
    if run_as:
        entry = pwd.getpwnam(run_as)
        for path in (workdir, *workdir.iterdir()):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    process = subprocess.Popen(
        [pgbouncer_bin, str(ini)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        user=run_as,
        start_new_session=True,
    )
    psql = _psql()

    def admin(query: str) -> str:
        if psql is None:
            pytest.skip("psql is needed to read PgBouncer's admin console")
        result = subprocess.run(
            [psql, "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", "pgbouncer", "-Atc"]
            + [query],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return result.stdout

    try:
        wait_for_port(port, process, log, timeout=15)
        url = target.set(host="127.0.0.1", port=port, query={}).render_as_string(
            hide_password=False
        )
        yield PgBouncer(url=url, port=port, database=database, admin=admin)
    finally:
        stop(process)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def pgbouncer_settings(pgbouncer: PgBouncer) -> Settings:
    return make_settings(pgbouncer.url, db_pgbouncer=True, max_children_per_parent=10)


@pytest.fixture(scope="session")
async def pgbouncer_app(pgbouncer_settings: Settings) -> AsyncIterator[FastAPI]:
    async for started in started_app(pgbouncer_settings):
        yield started


@pytest.fixture(scope="session")
async def pgbouncer_client(pgbouncer_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=pgbouncer_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


# --- The real server, several workers --------------------------------------------------------


@dataclass(frozen=True)
class Server:
    base_url: str
    process: subprocess.Popen[bytes]

    def worker_pids(self) -> list[int]:
        """Process ids of the uvicorn workers (the children of the supervisor)."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) != self.process.pid:
                continue
            # The supervisor's other child is multiprocessing's resource tracker.
            cmdline = (stat.parent / "cmdline").read_bytes()
            if b"resource_tracker" not in cmdline:
                pids.append(int(stat.parent.name))
        return pids


def _aurion_command() -> list[str]:
    script = Path(sys.executable).parent / "aurion"
    return [str(script)] if script.exists() else [sys.executable, "-m", "aurion.cli"]


def start_server(database_url: str, workers: int, log: Path, **env: str) -> Server:
    port = free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "AURION_ENV": "test",
        "AURION_JWT_SECRET": TEST_SECRET,
        "AURION_LOG_LEVEL": "WARNING",
        # The tests check counts, not latency: on a busy CI machine a request may wait a while
        # for the parent's lock or a pooled connection without that being a failure.
        "AURION_DB_POOL_TIMEOUT_SECONDS": "30",
        "AURION_DB_LOCK_TIMEOUT_MS": "30000",
        **env,
    }
    command = [*_aurion_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", str(workers), "--graceful-timeout", "2"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=environment, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(base_url=f"http://127.0.0.1:{port}", process=process)
    try:
        wait_for_port(port, process, log, timeout=60)
        deadline = time.monotonic() + 30
        # One worker is the server process itself (uvicorn forks no children then).
        while workers > 1 and len(server.worker_pids()) < workers and time.monotonic() < deadline:
            time.sleep(0.1)
        for _ in range(300):
            try:
                if httpx.get(f"{server.base_url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    except BaseException:
        stop(process)
        raise
    return server


@pytest.fixture(scope="module")
def server_factory(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Server]]:
    """Starts real servers (``aurion serve --workers N``); all are stopped after the module."""
    started: list[Server] = []

    def make(workers: int = 2, **env: Any) -> Server:
        log = tmp_path_factory.mktemp("server") / "server.log"
        server = start_server(database_url, workers, log, **{k: str(v) for k, v in env.items()})
        started.append(server)
        return server

    yield make
    for server in started:
        stop(server.process)
