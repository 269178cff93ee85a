"""Driving the targets: starting the HTTP servers, sending load with wrk, running pgbench, and
recording a py-spy profile. What a run measured is parsed here; what it cost is measured by
bench/measurement.py around it."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.common import ACTOR, CHILD_LIMIT, ROOT, SUBJECT, WORK, WORKSPACE, log
from bench.database import Database
from bench.measurement import percentile
from bench.yardstick import CREATE_CHILD_SQL
from harness.processes import free_port
from harness.server import Server, serve_aurion, start_server

LUA = ROOT / "bench" / "wrk_requests.lua"
# The HTTP targets, as apps other than the service (which starts as `aurion serve`).
APPS = {"reference": "bench.reference_app", "orm": "bench.orm_app"}
HTTP_TARGETS = ("reference", "orm", "service")
TARGETS = ("pgbench", *HTTP_TARGETS)


def start_targets(
    db: Database, *, workers: int, secret: str, pool: dict[str, str]
) -> dict[str, Server]:
    """The service as production runs it, and the two references with the same server
    (aurion/serving.py: uvicorn, ``workers`` processes each accepting on a socket of its own,
    uvloop, httptools, no access log; bench/serve.py)."""
    base_env = {
        **os.environ,
        "DATABASE_URL": db.url,
        "AURION_MAX_CHILDREN_PER_PARENT": str(CHILD_LIMIT),
        "BENCH_WORKSPACE": WORKSPACE,
        "BENCH_ACTOR": ACTOR,
        "PYTHONDONTWRITEBYTECODE": "1",
        **pool,
    }
    servers = {
        "service": serve_aurion(
            db.url,
            name="service",
            log_path=WORK / "service.log",
            env={**base_env, "AURION_ENV": "production", "AURION_JWT_SECRET": secret},
            workers=workers,
        )
    }
    for name, module in APPS.items():
        port = free_port()
        argv = [sys.executable, "-m", "bench.serve", f"{module}:create_app"]
        argv += ["--port", str(port), "--workers", str(workers)]
        servers[name] = start_server(
            argv,
            name=name,
            port=port,
            env=base_env,
            log_path=WORK / f"{name}.log",
            workers=workers,
        )
    for server in servers.values():
        log(f"{server.name} up on {server.base_url} (workers {server.worker_pids()})")
    return servers


def check_create(server: Server, parent: str, token: str) -> None:
    """One request by hand: a 201 with the child, or a clear failure before measuring."""
    response = httpx.post(
        f"{server.base_url}/api/v2/conversations/{parent}/children",
        json={"subject": SUBJECT},
        headers={
            "Authorization": f"Bearer {token}",
            "Idempotency-Key": f"check-{secrets.token_hex(8)}",
        },
        timeout=10,
    )
    if response.status_code != 201 or response.json().get("parent_id") != parent:
        raise RuntimeError(f"{server.name}: {response.status_code} {response.text[:500]}")


def check_richer(server: Server, mode: str, target: str, token: str) -> None:
    """One split (``target`` is "ID M1,M2,...") or batch by hand, as wrk will send it: 201 with
    the copies and the note, or the ten children, or a clear failure before measuring."""
    parent, _, copies = target.partition(" ")
    path = "children/batch"
    body: dict[str, Any] = {"children": [{"subject": SUBJECT}] * 10}
    if mode == "split":
        path = "children"
        body = {
            "subject": SUBJECT,
            "priority": "urgent",
            "message": {"body": "Split off.", "is_internal": True},
            "copy_message_ids": copies.split(","),
        }
    response = httpx.post(
        f"{server.base_url}/api/v2/conversations/{parent}/{path}",
        json=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Idempotency-Key": f"check-{secrets.token_hex(8)}",
        },
        timeout=10,
    )
    made = response.json() if response.status_code == 201 else {}
    count = len(made.get("items", [])) if mode == "batch" else len(made.get("messages", []))
    if count != (10 if mode == "batch" else len(copies.split(",")) + 1):
        raise RuntimeError(f"{server.name} {mode}: {response.status_code} {response.text[:500]}")


def run_wrk(
    base_url: str,
    *,
    mode: str,
    ids: list[str],
    token: str,
    concurrency: int,
    duration: int,
    tag: str,
) -> dict[str, Any]:
    """wrk (bench/wrk_requests.lua): ``children``, ``split`` or ``batch`` POSTs, or ``get``
    GETs, on ids drawn at random (for ``split``: "ID M1,M2,..." lines, the parent's messages to
    copy); any status but 201 (200 for GETs), socket error or timeout counts as an error."""
    ids_file = WORK / f"ids-{tag}.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    expected = "200" if mode == "get" else "201"
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration}s", "--timeout", "10s"]
    argv += ["-s", str(LUA), base_url, "--", mode, str(ids_file), token, tag, expected]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    ids_file.unlink()
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {done.stdout}\n{done.stderr}")
    data: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    if done.stderr.strip():
        data["stderr"] = done.stderr.strip()[:600]
    data["errors"] = sum(data[k] for k in ("unexpected_status", "connect", "read", "write"))
    data["errors"] += data["timeout"]
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    return data


def pgbench_script(uuid_function: str) -> str:
    """The yardstick's statement with pgbench variables for its parameters.

    pgbench cannot make UUIDs, so one small SELECT before it draws a parent and makes the ids
    (\\gset); the statement itself runs alone, autocommitted, as the reference runs it.
    """
    statement = re.sub(r"\$(\d+)", r":p\1", CREATE_CHILD_SQL.strip())
    return (
        "\\set pn random(1, :nparents)\n"
        f"SELECT id AS p2, {uuid_function}() AS p3, {uuid_function}() AS p6,"
        f" {uuid_function}() AS p7\n"
        "FROM bench_parents WHERE run = :run AND n = :pn\n"
        "\\gset\n"
        f"{statement};\n"
    )


def run_pgbench(
    db: Database, *, run: str, nparents: int, concurrency: int, duration: int
) -> dict[str, Any]:
    script = WORK / "pgbench_child.sql"
    script.write_text(pgbench_script(db.uuid_function))
    log_dir = WORK / f"pgbench-{run}"
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    argv = [str(db.cluster.bin_dir / "pgbench"), "-n", "-h", "127.0.0.1"]
    argv += ["-p", str(db.cluster.port), "-U", "postgres", "-M", "prepared"]
    argv += ["-c", str(concurrency), "-j", str(min(concurrency, 2)), "-T", str(duration)]
    argv += ["-f", str(script), "-D", f"run={run}", "-D", f"nparents={nparents}"]
    argv += ["-D", f"p1={WORKSPACE}", "-D", f"p4={SUBJECT}", "-D", f"p5={ACTOR}"]
    argv += ["--log", f"--log-prefix={log_dir / 'tx'}", db.name]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120)
    out = done.stdout + done.stderr
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    if tps is None:
        raise RuntimeError(f"pgbench failed:\n{out}")
    failed = re.search(r"number of failed transactions: (\d+)", out)
    latencies: list[float] = []
    for path in log_dir.iterdir():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2].isdigit():
                latencies.append(int(parts[2]))
    shutil.rmtree(log_dir, ignore_errors=True)
    latencies.sort()
    return {
        "requests": len(latencies),
        "rps": float(tps.group(1)),
        "p50_us": percentile(latencies, 0.50),
        "p99_us": percentile(latencies, 0.99),
        "errors": (int(failed.group(1)) if failed else 0) + (done.returncode != 0),
    }


def record_profile(server: Server, seconds: int, load: Callable[[], object]) -> Path | str:
    """py-spy on every worker of ``server`` while ``load()`` runs: the collapsed stacks' file,
    or why there is none."""
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        return "py-spy is not installed: no profile (pip install -e '.[bench]')."
    raw = WORK / f"profile-{server.name}.txt"
    raw.unlink(missing_ok=True)
    argv = [str(py_spy), "record", "--pid", str(server.process.pid), "--subprocesses"]
    argv += ["--nonblocking", "--gil", "--rate", "250", "--format", "raw"]
    argv += ["--duration", str(seconds + 1), "--output", str(raw)]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1)
    load()
    _, err = spy.communicate(timeout=60)
    if not raw.exists():
        return f"py-spy failed on {server.name}: {err.decode(errors='replace')[-300:]}"
    return raw
