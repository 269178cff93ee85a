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
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from harness.citus import CitusCluster, build, free_port, log

from aurion.auth.tokens import mint_token
from aurion.db.embedded import EmbeddedPostgres
from aurion.db.engine import async_url
from aurion.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".data" / "bench-citus"
LUA = ROOT / "bench" / "wrk_requests.lua"
WORKSPACE = "bench"
SCOPES = "conversations:read conversations:write"
TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(root_pids: list[int]) -> float:
    """CPU time (user + system) of these processes and all their descendants, from /proc."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        pid, ppid = int(entry.name), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        times[pid] = (int(fields[11]) + int(fields[12])) / TICKS
    total, todo = 0.0, list(root_pids)
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


def _postmaster(node: EmbeddedPostgres) -> int:
    return int((node.pgdata / "postmaster.pid").read_text().split()[0])


def _dsn(url: str) -> str:
    return async_url(url).replace("postgresql+asyncpg://", "postgresql://", 1)


async def _seed(url: str, count: int) -> list[str]:
    """``count`` fresh parents in the benchmark's workspace."""
    conn = await asyncpg.connect(_dsn(url))
    now = datetime.now(UTC)
    ids = [uuid.uuid4() for _ in range(count)]
    try:
        await conn.executemany(
            "INSERT INTO conversations (workspace_id, id, subject, status, version, created_at,"
            " updated_at, n_activities) VALUES ($1, $2, 'Benchmark parent', 'open', 1, $3, $3, 0)",
            [(WORKSPACE, i, now) for i in ids],
        )
    finally:
        await conn.close()
    return [str(i) for i in ids]


def _aurion(*args: str, url: str) -> None:
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run([sys.executable, "-m", "aurion.cli", *args], cwd=ROOT, env=env, check=True)


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    base: str


def _serve(url: str, secret: str, port: int, log_path: Path) -> Service:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "AURION_ENV": "production",
        "AURION_JWT_SECRET": secret,
        "AURION_MAX_CHILDREN_PER_PARENT": "1000000",
        "AURION_LOG_LEVEL": "WARNING",
    }
    out = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "aurion.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"aurion serve exited: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return Service(process, base)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError(f"aurion serve not ready after 60 s: {log_path.read_text()[-2000:]}")


def _wrk(
    base: str, mode: str, ids_file: Path, token: str, tag: str, connections: int, duration: int
) -> dict[str, Any]:
    expected = "201" if mode == "children" else "200"
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s"]
    argv += ["-s", str(LUA), base, "--", mode, str(ids_file), token, tag, expected]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {done.stdout}\n{done.stderr}")
    data: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    data["errors"] = sum(data[k] for k in ("unexpected_status", "connect", "read", "write"))
    data["errors"] += data["timeout"]
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    return data


def _measure(
    name: str, url: str, postmasters: list[int], secret: str, token: str, args: Any
) -> list[dict[str, Any]]:
    ids = asyncio.run(_seed(url, args.parents))
    ids_file = WORK / f"ids-{name}.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    service = _serve(url, secret, free_port(), WORK / f"serve-{name}.log")
    rows = []
    try:
        for mode in ("children", "get"):
            tag = f"{name}-{mode}-{secrets.token_hex(3)}"
            _wrk(service.base, mode, ids_file, token, f"{tag}-w", args.connections, 2)
            before_app = _cpu_seconds([service.process.pid])
            before_db = _cpu_seconds(postmasters)
            data = _wrk(service.base, mode, ids_file, token, tag, args.connections, args.duration)
            app_ms = (_cpu_seconds([service.process.pid]) - before_app) * 1000
            db_ms = (_cpu_seconds(postmasters) - before_db) * 1000
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
        service.process.terminate()
        service.process.wait(30)
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
