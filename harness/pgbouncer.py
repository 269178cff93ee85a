"""PgBouncer in transaction pooling mode on a free port of 127.0.0.1, in front of a database.

As root it runs as the embedded cluster's system user (PgBouncer refuses to run as root).
The service's own timeouts are startup parameters PgBouncer refuses; operators set them on the
role (docs/scaling.md), here each server connection gets them when it opens.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from aurion.db.embedded import EmbeddedPostgres
from harness.processes import chown_tree, free_port, run_as, stop, wait_for_port

TIMEOUTS = (
    "SET statement_timeout = 5000; SET lock_timeout = 3000;"
    " SET idle_in_transaction_session_timeout = 30000"
)


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")


@dataclass
class PgBouncer:
    url: str  # the application's DATABASE_URL, through PgBouncer
    port: int
    database: str
    user: str
    process: subprocess.Popen[bytes]
    workdir: Path

    def admin(self, query: str) -> str:
        """A query on PgBouncer's admin console (``SHOW CLIENTS``, ...), its rows as text."""
        psql = EmbeddedPostgres(self.workdir).bin_dir / "psql"
        result = subprocess.run(
            [str(psql), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user]
            + ["-d", "pgbouncer", "-Atc", query],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return result.stdout

    def stop(self) -> None:
        stop(self.process)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_pgbouncer(database_url: str, *, pool_size: int, max_client_conn: int = 2000) -> PgBouncer:
    """PgBouncer with ``pool_size`` server connections to ``database_url``'s database."""
    binary = find_pgbouncer()
    if binary is None:
        raise RuntimeError(
            "pgbouncer is not installed: bash scripts/install-system-deps.sh pgbouncer"
        )
    target = make_url(database_url)
    database = str(target.database)
    host = target.host or str(target.query.get("host", "127.0.0.1"))
    user = target.username or "postgres"
    server = f"host={host} port={target.port or 5432} dbname={database} user={user}"
    if target.password:
        server += f" password={target.password}"
    server += f" connect_query='{TIMEOUTS}'"
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
default_pool_size = {pool_size}
max_client_conn = {max_client_conn}
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = {log}
pidfile = {workdir / "pgbouncer.pid"}
"""
    )
    user_to_run = run_as()
    chown_tree(workdir, user_to_run)
    process = subprocess.Popen(
        [binary, str(ini)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        user=user_to_run,
        start_new_session=True,
    )
    try:
        wait_for_port(port, process, what="pgbouncer", log=log)
    except BaseException:
        stop(process)
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    url = target.set(host="127.0.0.1", port=port, query={}).render_as_string(hide_password=False)
    return PgBouncer(url, port, database, user, process, workdir)
