"""Python CPU per request of the hot routes, in one process: the app and an ASGI client
(httpx.ASGITransport, no server, no socket) against the benchmark's embedded PostgreSQL.

CPU time of this process (``time.process_time``) is the steady figure on a busy machine: what
other jobs use is not counted, and PostgreSQL's CPU (its own processes) is reported apart. The
client's own share (httpx building requests and reading responses) is in the figure, the same
for every variant of the app, so differences between variants are the app's.

    .venv/bin/python -m bench.inprocess                     # this checkout, N=2000 per route
    .venv/bin/python -m bench.inprocess --profile get       # and a cProfile top-25 of one route
    .venv/bin/python -m bench.inprocess --compare OTHER/src --rounds 5
        # alternate runs of this checkout and of another source tree (e.g. main's, from
        # `git archive main src | tar -x -C /tmp/main`), then the medians of each

Requests are sequential (one at a time): the figure is the cost of a request, not of waiting.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import logging
import os
import pstats
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from bench.common import CHILD_LIMIT, SCOPES, SUBJECT, WORK, WORKSPACE, log
from bench.database import Database
from bench.measurement import CpuMeter

ROUTES = ("child", "batch", "get", "list", "create")
# Not measured by default: /healthz, the floor (client, middleware, routing, no auth, no SQL).
FLOOR = "healthz"
DATABASE = "aurion_inprocess"
PARENTS = 200
MESSAGES_PER_PARENT = 3
BATCH_SIZE = 5

# Where the access log goes: formatted as in production, written nowhere.
_DEVNULL = open(os.devnull, "w")  # noqa: SIM115

Request = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


def _requests(parents: list[str], token: str) -> dict[str, tuple[Request, int]]:
    """Each route: a function sending its i-th request, and the status it must answer."""
    auth = {"Authorization": f"Bearer {token}"}

    def fresh_key() -> dict[str, str]:
        return {**auth, "Idempotency-Key": uuid.uuid4().hex}

    def parent(i: int) -> str:
        return parents[i % len(parents)]

    async def child(c: httpx.AsyncClient, i: int) -> httpx.Response:
        url = f"/api/v2/conversations/{parent(i)}/children"
        return await c.post(url, json={"subject": SUBJECT}, headers=fresh_key())

    async def batch(c: httpx.AsyncClient, i: int) -> httpx.Response:
        body = {"children": [{"subject": f"{SUBJECT} {n}"} for n in range(BATCH_SIZE)]}
        url = f"/api/v2/conversations/{parent(i)}/children/batch"
        return await c.post(url, json=body, headers=fresh_key())

    async def get(c: httpx.AsyncClient, i: int) -> httpx.Response:
        return await c.get(f"/api/v2/conversations/{parent(i)}", headers=auth)

    async def children(c: httpx.AsyncClient, i: int) -> httpx.Response:
        return await c.get(f"/api/v2/conversations/{parent(i)}/children", headers=auth)

    async def create(c: httpx.AsyncClient, i: int) -> httpx.Response:
        body = {"subject": SUBJECT, "tags": ["vip"], "priority": "high"}
        return await c.post("/api/v2/conversations", json=body, headers=fresh_key())

    async def healthz(c: httpx.AsyncClient, i: int) -> httpx.Response:
        return await c.get("/healthz")

    return {
        FLOOR: (healthz, 200),
        "child": (child, 201),
        "batch": (batch, 201),
        "get": (get, 200),
        "list": (children, 200),
        "create": (create, 201),
    }


async def _measure(
    db: Database, parents: list[str], routes: list[str], n: int, warmup: int, profile: str | None
) -> dict[str, dict[str, float]]:
    # Imported here: --compare runs this module with another source tree first on sys.path.
    from aurion.app import create_app
    from aurion.auth.tokens import mint_token
    from aurion.settings import Settings

    secret = secrets.token_hex(32)
    settings = Settings(
        database_url=db.url,
        env="production",
        jwt_secret=secret,
        max_children_per_parent=CHILD_LIMIT,
        webhook_delivery=False,
        idempotency_purge_interval_seconds=0,
    )
    app = create_app(settings)
    # The client's own costs, kept out of the figures where they are pure overhead: httpx logs
    # every request at INFO, and its ASGI transport looks for sniffio (not installed) on the
    # disk at every request; None in sys.modules makes that import fail at once.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(_DEVNULL)
    token = mint_token(settings, workspace=WORKSPACE, subject="bench-user", scopes=SCOPES)
    results: dict[str, dict[str, float]] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            requests = _requests(parents, token)
            for route in routes:
                send, expected = requests[route]
                for i in range(warmup):
                    response = await send(client, i)
                    assert response.status_code == expected, (route, response.text)
                meter = CpuMeter(None, db.postmaster_pid())
                profiler = cProfile.Profile() if route == profile else None
                cpu, wall = time.process_time(), time.perf_counter()
                if profiler is not None:
                    profiler.enable()
                for i in range(n):
                    response = await send(client, warmup + i)
                    if response.status_code != expected:
                        raise AssertionError(f"{route}: {response.status_code} {response.text}")
                if profiler is not None:
                    profiler.disable()
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                _, pg_ms = meter.per_request_ms(n)
                results[route] = {
                    "py_us": round(1e6 * cpu / n, 1),
                    "pg_us": round(1000 * pg_ms, 1),
                    "wall_us": round(1e6 * wall / n, 1),
                }
                if profiler is not None:
                    profiler.dump_stats(WORK / f"inprocess-{route}.prof")
                    out = io.StringIO()
                    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
                    print(out.getvalue(), file=sys.stderr)
    return results


def _table(rows: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'route':<8} {'python µs/req':>14} {'postgres µs/req':>16} {'wall µs/req':>12}"]
    for route, r in rows.items():
        lines.append(f"{route:<8} {r['py_us']:>14} {r['pg_us']:>16} {r['wall_us']:>12}")
    return "\n".join(lines)


def _compare(args: argparse.Namespace) -> None:
    """Alternate runs of this checkout ("this") and of ``args.compare`` ("other"), medians."""
    variants = {"this": os.environ.get("PYTHONPATH", ""), "other": args.compare}
    runs: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in variants}
    db = Database(DATABASE)
    db.start()  # once: the runs find it running, and leave it so
    try:
        _alternate(args, variants, runs)
    finally:
        db.stop()
    for name, results in runs.items():
        medians = {
            route: {
                key: round(statistics.median(r[route][key] for r in results), 1)
                for key in ("py_us", "pg_us", "wall_us")
            }
            for route in args.routes
        }
        where = variants[name] or "this checkout"
        print(f"\n{name} ({where}), medians of {len(results)} runs:\n{_table(medians)}")


def _alternate(
    args: argparse.Namespace,
    variants: dict[str, str],
    runs: dict[str, list[dict[str, dict[str, float]]]],
) -> None:
    for round_ in range(args.rounds):
        order = list(variants) if round_ % 2 == 0 else list(variants)[::-1]
        for name in order:
            env = {**os.environ, "PYTHONPATH": variants[name]}
            argv = [sys.executable, "-m", "bench.inprocess", "--json", "-n", str(args.n)]
            argv += ["--routes", ",".join(args.routes)]
            out = subprocess.run(argv, env=env, check=True, capture_output=True, text=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            runs[name].append(result)
            log(f"round {round_ + 1} {name}: " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="measured requests per route")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--routes", type=lambda s: s.split(","), default=list(ROUTES))
    parser.add_argument(
        "--profile",
        choices=(*ROUTES, FLOOR),
        help="cProfile top-25 of this route (all of it in .data/bench/inprocess-ROUTE.prof)",
    )
    parser.add_argument("--compare", metavar="SRC", help="another source tree to alternate with")
    parser.add_argument("--rounds", type=int, default=5, help="--compare: rounds")
    parser.add_argument("--json", action="store_true", help="one JSON line (for --compare)")
    args = parser.parse_args()
    if args.compare:
        _compare(args)
        return
    db = Database(DATABASE)
    db.start()
    try:
        run = f"inprocess-{uuid.uuid4().hex[:8]}"
        parents = db.new_parents(run, PARENTS)
        db.add_messages(run, MESSAGES_PER_PARENT)
        db.settle()
        measured = _measure(db, parents, args.routes, args.n, args.warmup, args.profile)
        results = asyncio.run(measured)
    finally:
        db.stop()
    print(json.dumps(results) if args.json else _table(results))


if __name__ == "__main__":
    main()
