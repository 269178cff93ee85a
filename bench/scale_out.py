"""``make bench``, scale-out part: 1, 2 and 4 service processes behind nginx, then via PgBouncer.

Each process is a separate ``aurion serve --workers 1`` on its own port, as separate hosts
would run it; nginx (bench/nginx.conf.template) spreads the requests over them. wrk drives
child creations through nginx exactly as bench/run.py drives the service (same Lua script,
unique Idempotency-Key per request, fresh parents per run, requests spread over them). While
wrk runs, the CPU time of every process is read from /proc, so the report shows where the
machine's cores went: the service processes, PostgreSQL, PgBouncer, nginx, wrk.

Database paths ("via"): ``direct``; ``pgbouncer`` (transaction pooling, AURION_DB_PGBOUNCER=true);
and ``uncached``, the PgBouncer setting without PgBouncer, which separates what the setting costs
(no statement caches) from what the extra hop costs.

Reuses bench/run.py's database, server and wrk helpers. Results: stdout and
.data/bench/scale_out.json (docs/scaling.md discusses them).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from aurion.auth.tokens import mint_token
from aurion.db.embedded import SYSTEM_USER
from aurion.db.migrate import upgrade
from aurion.settings import Settings
from bench.run import (
    ACTOR,
    CHILD_LIMIT,
    PARENTS_TABLE,
    WORK,
    WORKSPACE,
    Database,
    Server,
    free_port,
    log,
    run_sql,
    run_wrk,
)

TEMPLATE = Path(__file__).with_name("nginx.conf.template")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ScaleDatabase(Database):
    """bench/run.py's database on the same cluster, under a name of its own."""

    name = "aurion_scale_out"

    def start(self) -> None:
        self.started_here = not self.cluster.is_running()
        self.cluster.start("postgres")
        self.cluster.drop_database(self.name)
        self.cluster.create_database(self.name)
        self.url = self.cluster.url(self.name)
        upgrade(self.url)
        run_sql(self.url, PARENTS_TABLE, "SELECT 1")
        self.server_version = run_sql(self.url, "SHOW server_version")[0][0]


def _run_as() -> str | None:
    """nginx and PgBouncer run as an ordinary user; as root, the embedded cluster's."""
    if os.geteuid() != 0:
        return None
    pwd.getpwnam(SYSTEM_USER)  # created by the embedded cluster
    return SYSTEM_USER


def _workdir(name: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"aurion-{name}-"))
    path.chmod(0o755)
    return path


def _chown(path: Path, user: str | None) -> None:
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for item in (path, *path.rglob("*")):
        os.chown(item, entry.pw_uid, entry.pw_gid)


def _wait_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    import socket

    for _ in range(150):
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} does not listen on 127.0.0.1:{port}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Proxy:
    """nginx in front of the service processes (what run_wrk needs: ``base``)."""

    port: int
    process: subprocess.Popen[bytes]
    workdir: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, upstream_ports: list[int]) -> Proxy:
        nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
        if nginx is None:
            raise RuntimeError("nginx is not installed: bash scripts/install-system-deps.sh nginx")
        workdir = _workdir("nginx")
        port = free_port()
        servers = "\n".join(f"        server 127.0.0.1:{p};" for p in upstream_ports)
        conf = TEMPLATE.read_text()
        for key, value in (("prefix", str(workdir)), ("port", str(port)), ("servers", servers)):
            conf = conf.replace("{{" + key + "}}", value)
        (workdir / "nginx.conf").write_text(conf)
        user = _run_as()
        _chown(workdir, user)
        process = subprocess.Popen(
            [nginx, "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "stderr.log").open("wb"),
            user=user,
            start_new_session=True,
        )
        _wait_port(port, process, "nginx")
        return cls(port, process, workdir)

    def stop(self) -> None:
        _stop(self.process)
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class PgBouncer:
    """PgBouncer in transaction pooling mode in front of the benchmark database."""

    url: str
    process: subprocess.Popen[bytes]
    workdir: Path

    @classmethod
    def start(cls, database_url: str, pool_size: int) -> PgBouncer:
        binary = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
        if binary is None:
            raise RuntimeError("pgbouncer is not installed: scripts/install-system-deps.sh")
        target = make_url(database_url)
        user = target.username or "postgres"
        workdir = _workdir("pgbouncer")
        port = free_port()
        # The service's timeouts, which PgBouncer does not let clients send (docs/scaling.md).
        timeouts = (
            "SET statement_timeout = 5000; SET lock_timeout = 3000;"
            " SET idle_in_transaction_session_timeout = 30000"
        )
        (workdir / "userlist.txt").write_text(f'"{user}" ""\n')
        (workdir / "pgbouncer.ini").write_text(
            f"""[databases]
{target.database} = host={target.host} port={target.port} dbname={target.database} \
user={user} connect_query='{timeouts}'

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir / "userlist.txt"}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 2000
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = {workdir / "pgbouncer.log"}
pidfile = {workdir / "pgbouncer.pid"}
"""
        )
        run_as = _run_as()
        _chown(workdir, run_as)
        process = subprocess.Popen(
            [binary, str(workdir / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=run_as,
            start_new_session=True,
        )
        _wait_port(port, process, "pgbouncer")
        url = target.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
        return cls(url, process, workdir)

    def stop(self) -> None:
        _stop(self.process)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _cpu_by_process(roots: dict[str, set[int]]) -> dict[int, tuple[str, float]]:
    """Our processes (each component's root processes and their children) and the CPU seconds
    each has used so far. Other PostgreSQL clusters on the machine are not counted."""
    found: dict[int, tuple[str, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(stat.parent.name), int(fields[1])
        for name, pids in roots.items():
            if pid in pids or ppid in pids:
                found[pid] = (name, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
                break
    return found


def _cores(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], elapsed: float
) -> dict[str, float]:
    """Cores used per component between two readings (processes gone by then are missed)."""
    used: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        used[name] = used.get(name, 0.0) + seconds - before.get(pid, (name, 0.0))[1]
    return {name: round(total / elapsed, 2) for name, total in used.items()}


@dataclass
class Outcome:
    processes: int
    via: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    backends: int  # PostgreSQL connections to the database right after the run
    load: float  # the machine's 1-minute load average when the run ended
    cores: dict[str, float] = field(default_factory=dict)


def measure(
    db: Database,
    *,
    processes: int,
    via: str,
    database_url: str,
    secret: str,
    token: str,
    args: argparse.Namespace,
    bouncer_pid: int | None = None,
) -> Outcome:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "AURION_ENV": "production",
        "AURION_JWT_SECRET": secret,
        "AURION_MAX_CHILDREN_PER_PARENT": str(CHILD_LIMIT),
        # "uncached" is the PgBouncer setting without PgBouncer: what the setting itself costs.
        "AURION_DB_PGBOUNCER": "false" if via == "direct" else "true",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    aurion = str(Path(sys.executable).parent / "aurion")
    servers: list[Server] = []
    proxy: Proxy | None = None
    try:
        for i in range(processes):
            port = free_port()
            argv = [aurion, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
            server = Server(f"scale-{via}-{processes}p-{i}", argv, env, port)
            server.start()
            servers.append(server)
        proxy = Proxy.start([s.port for s in servers])
        run = f"scale-{via}-{processes}p-{secrets.token_hex(3)}"
        parents = db.new_parents(run, args.parents)
        common = {"mode": "children", "ids": parents, "token": token}
        run_wrk(proxy, **common, concurrency=args.connections, duration=2, tag=f"{run}-w")
        postmaster = int((db.cluster.pgdata / "postmaster.pid").read_text().split()[0])
        roots = {
            "service": {s.process.pid for s in servers if s.process},
            "postgres": {postmaster},
            "nginx": {proxy.process.pid},
            "pgbouncer": {bouncer_pid} if bouncer_pid else set(),
        }
        before, clock = _cpu_by_process(roots), time.monotonic()
        # wrk exits before its CPU could be read from /proc: its rusage, as our child, instead.
        wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        data: dict[str, Any] = run_wrk(
            proxy,
            **common,
            concurrency=args.connections,
            duration=args.duration,
            tag=run,
        )
        after, elapsed = _cpu_by_process(roots), time.monotonic() - clock
        wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cores = _cores(before, after, elapsed)
        wrk_seconds = wrk_after.ru_utime + wrk_after.ru_stime
        wrk_seconds -= wrk_before.ru_utime + wrk_before.ru_stime
        cores["wrk"] = round(wrk_seconds / elapsed, 2)
        backends = run_sql(
            db.url,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()",
        )[0][0]
        return Outcome(
            processes=processes,
            via=via,
            rps=round(data["rps"], 1),
            p50_ms=round(data["p50_us"] / 1000, 1),
            p99_ms=round(data["p99_us"] / 1000, 1),
            errors=int(data["errors"]),
            requests=int(data["requests"]),
            backends=int(backends),
            load=round(os.getloadavg()[0], 2),
            cores=cores,
        )
    finally:
        if proxy is not None:
            proxy.stop()
        for server in servers:
            server.stop()


def report(outcomes: list[Outcome], args: argparse.Namespace) -> str:
    """One line per configuration: the median of its rounds, and every round's req/s."""
    lines = [
        f"Child creations through nginx: wrk -c{args.connections}, {args.duration} s per run,"
        f" {args.rounds} interleaved round(s), {args.parents} fresh parents per run,"
        f" {os.cpu_count()} CPUs. Medians; CPU in cores used during the run.",
        "",
        "| processes | database via | req/s (median) | req/s per round | p50 ms | p99 ms |"
        " errors | PG backends | CPU cores: service / postgres / pgbouncer / nginx / wrk |"
        " CPU ms per request: service / postgres / pgbouncer | load avg |",
        "|---:|---|---:|---|---:|---:|---:|---:|---|---|---|",
    ]
    configs: dict[tuple[int, str], list[Outcome]] = {}
    for o in outcomes:
        configs.setdefault((o.processes, o.via), []).append(o)
    for (processes, via), runs in configs.items():

        def med(get: Any, runs: list[Outcome] = runs) -> float:
            return float(statistics.median(get(o) for o in runs))

        cores = " / ".join(
            f"{med(lambda o, k=k: o.cores.get(k, 0.0)):.2f}"
            for k in ("service", "postgres", "pgbouncer", "nginx", "wrk")
        )
        # CPU time per request does not depend on how much of the machine others leave us.
        per_request = " / ".join(
            f"{med(lambda o, k=k: 1000 * o.cores.get(k, 0.0) / max(o.rps, 1e-9)):.2f}"
            for k in ("service", "postgres", "pgbouncer")
        )
        lines.append(
            f"| {processes} | {via} | {med(lambda o: o.rps):.0f} |"
            f" {', '.join(f'{o.rps:.0f}' for o in runs)} | {med(lambda o: o.p50_ms):.1f} |"
            f" {med(lambda o: o.p99_ms):.1f} | {sum(o.errors for o in runs)} |"
            f" {med(lambda o: o.backends):.0f} | {cores} | {per_request} |"
            f" {', '.join(f'{o.load:.1f}' for o in runs)} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--processes", default="1,2,4", help="Process counts (default 1,2,4).")
    parser.add_argument(
        "--pgbouncer-processes",
        default="2,4",
        help="Process counts to run again through PgBouncer ('' to skip; default 2,4).",
    )
    parser.add_argument(
        "--uncached-processes",
        default="2",
        help="Process counts to run direct with AURION_DB_PGBOUNCER=true, i.e. without"
        " statement caches: the setting's own cost ('' to skip; default 2).",
    )
    parser.add_argument("--pgbouncer-pool", type=int, default=8, help="PgBouncer server pool.")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections.")
    parser.add_argument("--duration", type=int, default=10, help="Seconds per measured run.")
    parser.add_argument("--parents", type=int, default=1000, help="Fresh parents per run.")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="Rounds; each runs every configuration once, so machine noise hits all alike.",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    db = ScaleDatabase()
    db.start()
    secret = secrets.token_urlsafe(48)
    settings = Settings(env="production", jwt_secret=secret)
    token = mint_token(
        settings,
        workspace=WORKSPACE,
        subject=ACTOR,
        scopes="conversations:read conversations:write",
    )
    outcomes: list[Outcome] = []
    bouncer: PgBouncer | None = None
    plan = [(int(n), "direct") for n in args.processes.split(",") if n]
    plan += [(int(n), "uncached") for n in args.uncached_processes.split(",") if n]
    plan += [(int(n), "pgbouncer") for n in args.pgbouncer_processes.split(",") if n]
    try:
        if any(via == "pgbouncer" for _, via in plan):
            bouncer = PgBouncer.start(db.url, args.pgbouncer_pool)
        for round_no in range(1, args.rounds + 1):
            for processes, via in plan:
                log(f"scale-out round {round_no}: {processes} process(es) behind nginx, {via}")
                url = bouncer.url if via == "pgbouncer" and bouncer else db.url
                outcome = measure(
                    db,
                    processes=processes,
                    via=via,
                    database_url=url,
                    secret=secret,
                    token=token,
                    args=args,
                    bouncer_pid=bouncer.process.pid if bouncer else None,
                )
                outcomes.append(outcome)
                log(f"  {outcome}")
    finally:
        if bouncer is not None:
            bouncer.stop()
        db.stop()
    text = report(outcomes, args)
    (WORK / "scale_out.json").write_text(json.dumps([o.__dict__ for o in outcomes], indent=1))
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
