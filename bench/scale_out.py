"""``make bench``, scale-out part: 1, 2 and 4 service processes behind nginx, then via PgBouncer.

Each process is a separate ``aurion serve --workers 1`` on its own port, as separate hosts
would run it; nginx (bench/nginx.conf.template) spreads the requests over them. wrk drives
child creations through nginx exactly as bench/driver.py drives the service (same Lua script,
unique Idempotency-Key per request, fresh parents per run, requests spread over them). While
wrk runs, the CPU time of every process tree is read (psutil, harness/processes.py), so the
report shows where the machine's cores went: the service processes, PostgreSQL, PgBouncer,
nginx, wrk.

Database paths ("via"): ``direct``; ``pgbouncer`` (transaction pooling, AURION_DB_PGBOUNCER=true);
and ``uncached``, the PgBouncer setting without PgBouncer, which separates what the setting costs
(no statement caches) from what the extra hop costs.

The servers and PgBouncer start through harness/ (as in the tests), the database and wrk are
bench/database.py's and bench/driver.py's. Results: stdout and .data/bench/scale_out.json
(docs/scaling.md discusses them).
"""

from __future__ import annotations

import argparse
import json
import os
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

from aurion.auth.tokens import mint_token
from aurion.settings import Settings
from bench.common import ACTOR, CHILD_LIMIT, SCOPES, WORK, WORKSPACE, log
from bench.database import Database, run_sql
from bench.driver import run_wrk
from harness.pgbouncer import PgBouncer, start_pgbouncer
from harness.processes import chown_tree, free_port, run_as, stop, tree_cpu_seconds, wait_for_port
from harness.server import Server, serve_aurion

TEMPLATE = Path(__file__).with_name("nginx.conf.template")


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
        workdir = Path(tempfile.mkdtemp(prefix="aurion-nginx-"))
        workdir.chmod(0o755)
        port = free_port()
        servers = "\n".join(f"        server 127.0.0.1:{p};" for p in upstream_ports)
        conf = TEMPLATE.read_text()
        for key, value in (("prefix", str(workdir)), ("port", str(port)), ("servers", servers)):
            conf = conf.replace("{{" + key + "}}", value)
        (workdir / "nginx.conf").write_text(conf)
        user = run_as()
        chown_tree(workdir, user)
        process = subprocess.Popen(
            [nginx, "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "stderr.log").open("wb"),
            user=user,
            start_new_session=True,
        )
        wait_for_port(port, process, what="nginx", log=workdir / "stderr.log")
        return cls(port, process, workdir)

    def stop(self) -> None:
        stop(self.process)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _cores(before: dict[str, float], after: dict[str, float], elapsed: float) -> dict[str, float]:
    """Cores used per component between two readings of its CPU seconds."""
    return {name: round((after[name] - before[name]) / elapsed, 2) for name in after}


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
        "AURION_ENV": "production",
        "AURION_JWT_SECRET": secret,
        "AURION_MAX_CHILDREN_PER_PARENT": str(CHILD_LIMIT),
        # "uncached" is the PgBouncer setting without PgBouncer: what the setting itself costs.
        "AURION_DB_PGBOUNCER": "false" if via == "direct" else "true",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    servers: list[Server] = []
    proxy: Proxy | None = None
    try:
        for i in range(processes):
            name = f"scale-{via}-{processes}p-{i}"
            servers.append(
                serve_aurion(
                    database_url,
                    name=name,
                    log_path=WORK / f"{name}.log",
                    env=env,
                    workers=1,
                )
            )
        proxy = Proxy.start([s.port for s in servers])
        run = f"scale-{via}-{processes}p-{secrets.token_hex(3)}"
        parents = db.new_parents(run, args.parents)
        base = proxy.base

        def load(duration: int, tag: str) -> dict[str, Any]:
            return run_wrk(
                base,
                mode="children",
                ids=parents,
                token=token,
                concurrency=args.connections,
                duration=duration,
                tag=tag,
            )

        load(2, f"{run}-w")
        roots = {
            "service": [s.process.pid for s in servers],
            "postgres": [db.postmaster_pid()],
            "nginx": [proxy.process.pid],
            "pgbouncer": [bouncer_pid] if bouncer_pid else [],
        }

        def cpu() -> dict[str, float]:
            return {name: tree_cpu_seconds(*pids) for name, pids in roots.items()}

        before, clock = cpu(), time.monotonic()
        # wrk exits before its CPU could be read from /proc: its rusage, as our child, instead.
        wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        data = load(args.duration, run)
        after, elapsed = cpu(), time.monotonic() - clock
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
    parser.add_argument(
        "--quick",
        action="store_true",
        help="A smoke run: 1 and 2 processes direct, 2 via PgBouncer, 3 s, one round.",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.processes, args.pgbouncer_processes, args.uncached_processes = "1,2", "2", ""
        args.duration, args.rounds = 3, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    db = Database("aurion_scale_out")
    db.start()
    secret = secrets.token_urlsafe(48)
    settings = Settings(env="production", jwt_secret=secret)
    token = mint_token(settings, workspace=WORKSPACE, subject=ACTOR, scopes=SCOPES)
    outcomes: list[Outcome] = []
    bouncer: PgBouncer | None = None
    plan = [(int(n), "direct") for n in args.processes.split(",") if n]
    plan += [(int(n), "uncached") for n in args.uncached_processes.split(",") if n]
    plan += [(int(n), "pgbouncer") for n in args.pgbouncer_processes.split(",") if n]
    try:
        if any(via == "pgbouncer" for _, via in plan):
            bouncer = start_pgbouncer(db.url, pool_size=args.pgbouncer_pool)
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
