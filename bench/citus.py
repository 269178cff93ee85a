"""What distribution costs per request on one box: the same wrk run on PostgreSQL and on Citus.

    python -m bench.citus --tarball ../shared/vendor/citus-14.0.1.tar.gz [--duration 10]

Two databases on this machine, both durable (fsync on), both fed by one ``aurion serve``
process (production settings, the default pool): a plain PostgreSQL (the embedded server), and
a Citus coordinator with two workers (harness/citus.py) after ``aurion db upgrade`` and
``aurion db distribute``. Against each, wrk creates children with bench/wrk_requests.lua (a
bearer token, a unique Idempotency-Key per request, parents drawn at random from 1,000 fresh
ones), then reads conversations. The two databases alternate over the rounds, so a burst of
load on the shared machine hits both alike. While wrk runs, the CPU time of the service
process and of every PostgreSQL process of the database (all three nodes for Citus) is read
from /proc: CPU milliseconds per request are the numbers that survive a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from aurion.auth.tokens import mint_token
from aurion.db.embedded import EmbeddedPostgres
from aurion.settings import Settings
from bench.common import CHILD_LIMIT, SCOPES, WORKSPACE, log
from bench.common import WORK as BENCH_WORK
from bench.database import NEW_PARENTS_SQL, PARENTS_TABLE, run_sql
from bench.driver import run_wrk
from harness.citus import CitusCluster, build
from harness.processes import tree_cpu_seconds
from harness.server import serve_aurion

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".data" / "bench-citus"


def _postmaster(node: EmbeddedPostgres) -> int:
    return int((node.pgdata / "postmaster.pid").read_text().split()[0])


def _aurion(*args: str, url: str) -> None:
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run([sys.executable, "-m", "aurion.cli", *args], cwd=ROOT, env=env, check=True)


def _measure(
    name: str, url: str, postmasters: list[int], secret: str, token: str, args: Any
) -> list[dict[str, Any]]:
    """One round on one database: child creations, then reads, through one service process."""
    run = f"citus-{name}-{secrets.token_hex(3)}"
    sql = NEW_PARENTS_SQL.format(uuid="gen_random_uuid")
    parents = [
        str(r[0]) for r in run_sql(url, PARENTS_TABLE, sql, args=(WORKSPACE, run, args.parents))
    ]
    env = {
        "AURION_ENV": "production",
        "AURION_JWT_SECRET": secret,
        "AURION_MAX_CHILDREN_PER_PARENT": str(CHILD_LIMIT),
        "AURION_LOG_LEVEL": "WARNING",
    }
    server = serve_aurion(
        url, name=f"{run} serve", log_path=WORK / f"{run}.log", env=env, workers=1
    )
    rows = []
    try:
        for mode in ("children", "get"):

            def load(duration: int, tag: str, mode: str = mode) -> dict[str, Any]:
                return run_wrk(
                    server.base_url,
                    mode=mode,
                    ids=parents,
                    token=token,
                    concurrency=args.connections,
                    duration=duration,
                    tag=tag,
                )

            load(2, f"{run}-{mode}-w")
            before_app = tree_cpu_seconds(server.process.pid)
            before_db = tree_cpu_seconds(*postmasters)
            data = load(args.duration, f"{run}-{mode}")
            app_ms = (tree_cpu_seconds(server.process.pid) - before_app) * 1000
            db_ms = (tree_cpu_seconds(*postmasters) - before_db) * 1000
            requests = max(int(data["requests"]), 1)
            rows.append(
                {
                    "database": name,
                    "mode": mode,
                    "rps": round(data["rps"], 1),
                    "p50_ms": round(data["p50_us"] / 1000, 1),
                    "p99_ms": round(data["p99_us"] / 1000, 1),
                    "errors": int(data["errors"]),
                    "service_cpu_ms": round(app_ms / requests, 2),
                    "postgres_cpu_ms": round(db_ms / requests, 2),
                    "load": round(os.getloadavg()[0], 1),
                }
            )
            log(f"  {rows[-1]}")
    finally:
        server.stop()
    return rows


def report(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| database | request | req/s per round | p50 ms | p99 ms | errors "
        "| CPU ms per request: service / PostgreSQL (all nodes) | load avg |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    for database in ("postgresql", "citus"):
        for mode in ("children", "get"):
            runs = [r for r in rows if r["database"] == database and r["mode"] == mode]
            if not runs:
                continue

            def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
                values = sorted(r[key] for r in runs)
                return float(values[len(values) // 2])

            rps = ", ".join(f"{r['rps']:.0f}" for r in runs)
            request = "POST children" if mode == "children" else "GET conversation"
            lines.append(
                f"| {database} | {request} | {rps} | {med('p50_ms')} | {med('p99_ms')} "
                f"| {sum(r['errors'] for r in runs)} "
                f"| {med('service_cpu_ms')} / {med('postgres_cpu_ms')} "
                f"| {', '.join(str(r['load']) for r in runs)} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.citus", description=__doc__)
    parser.add_argument("--tarball", default=os.environ.get("CITUS_SRC"))
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--parents", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if not args.tarball:
        parser.error("name the Citus source tarball (--tarball or CITUS_SRC)")
    if not shutil.which("wrk"):
        parser.error("wrk is missing: bash scripts/install-system-deps.sh")
    WORK.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    token = mint_token(
        Settings(env="production", jwt_secret=secret),
        workspace=WORKSPACE,
        subject="bench",
        scopes=SCOPES,
    )
    plain = EmbeddedPostgres(WORK / "postgresql")
    cluster = CitusCluster(build(Path(args.tarball)), WORK / "citus", fast_unsafe=False)
    rows: list[dict[str, Any]] = []
    try:
        shutil.rmtree(plain.data_dir, ignore_errors=True)
        WORK.mkdir(parents=True, exist_ok=True)
        BENCH_WORK.mkdir(parents=True, exist_ok=True)  # run_wrk's files
        plain_url = plain.start("aurion")
        citus_url = cluster.start()
        for url in (plain_url, citus_url):
            _aurion("db", "upgrade", url=url)
        _aurion("db", "distribute", url=citus_url)
        for round_no in range(1, args.rounds + 1):
            for name, url, nodes in (
                ("postgresql", plain_url, [plain]),
                ("citus", citus_url, cluster.nodes),
            ):
                log(f"round {round_no}: {name}")
                postmasters = [_postmaster(node) for node in nodes]
                rows += _measure(name, url, postmasters, secret, token, args)
    finally:
        cluster.remove()
        plain.stop()
    (WORK / "citus.json").write_text(json.dumps(rows, indent=1))
    print()
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
