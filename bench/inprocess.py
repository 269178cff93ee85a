"""Python CPU per request of the hot routes, in one process: the app and an ASGI client
(httpx.ASGITransport, no server, no socket) against the benchmark's embedded PostgreSQL.

CPU time of this process (``time.process_time``) is the steady figure on a busy machine: what
other jobs use is not counted, and PostgreSQL's CPU (its own processes) is reported apart. The
client's own share (httpx building requests and reading responses) is in the figure, the same
for every variant of the app, so differences between variants are the app's.

    .venv/bin/python -m bench.inprocess                     # this checkout, N=2000 per route
    .venv/bin/python -m bench.inprocess --profile get       # and a CPU-time cProfile of one route
    .venv/bin/python -m bench.inprocess --client asgi       # bare ASGI calls instead of httpx
    .venv/bin/python -m bench.inprocess --compare OTHER/src --rounds 5
        # alternate runs of this checkout and of another source tree (e.g. main's, from
        # `git archive main src | tar -x -C /tmp/main`), then the medians of each

Requests are sequential (one at a time): the figure is the cost of a request, not of waiting.
The routes take turns in blocks of 100 requests; a route's figure is the median of its blocks.
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
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from bench.common import CHILD_LIMIT, SCOPES, SUBJECT, WORK, WORKSPACE, log
from bench.database import Database
from bench.measurement import CpuMeter

# "client": the child creation request sent to a bare ASGI app that answers a fixed 201: what
# the client costs this process. The other routes' "app µs" are theirs minus this one.
CLIENT = "client"
ROUTES = (CLIENT, "child", "batch", "get", "list", "create")
# Not measured by default: /healthz (middleware and routing, no auth, no SQL).
FLOOR = "healthz"
DATABASE = "aurion_inprocess"  # and the process id: runs at the same time do not collide
PARENTS = 200
MESSAGES_PER_PARENT = 3
BATCH_SIZE = 5
BLOCK = 100  # requests of one route in a row

# Where the access log goes: formatted as in production, written nowhere.
_DEVNULL = open(os.devnull, "w")  # noqa: SIM115


@dataclass(frozen=True)
class Answer:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")


class AsgiClient:
    """The least a client can do (``--client asgi``): one ASGI call per request, no HTTP
    model. httpx's share of this process's CPU is not constant (more for an app that awaits
    a database than for the bare app), so "app µs" with httpx is an estimate; with this
    client, "python µs" is the app's own cost, near enough."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def get(self, url: str, *, headers: dict[str, str]) -> Answer:
        return await self.request("GET", url, None, headers)

    async def post(self, url: str, *, json: Any, headers: dict[str, str]) -> Answer:
        return await self.request("POST", url, json, headers)

    async def request(self, method: str, url: str, json: Any, headers: dict[str, str]) -> Answer:
        body = orjson.dumps(json) if json is not None else b""
        raw = [(b"host", b"bench")]
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        if json is not None:
            raw += [(b"content-type", b"application/json")]
            raw += [(b"content-length", str(len(body)).encode())]
        path, _, query = url.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": raw,
            "server": ("bench", 80),
            "client": ("127.0.0.1", 40000),
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # the client never disconnects
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return Answer(status, b"".join(chunks))


Client = httpx.AsyncClient | AsgiClient
Request = Callable[[Client, int], Awaitable[httpx.Response | Answer]]


async def _bare_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """Reads the request and answers a fixed body the size of a child conversation's."""
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"application/json"), (b"content-length", b"2600")]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": b" " * 2600})


def _requests(parents: list[str], token: str, bare: Client) -> dict[str, tuple[Request, int]]:
    """Each route: a function sending its i-th request, and the status it must answer."""
    auth = {"Authorization": f"Bearer {token}"}

    def fresh_key() -> dict[str, str]:
        return {**auth, "Idempotency-Key": uuid.uuid4().hex}

    def parent(i: int) -> str:
        return parents[i % len(parents)]

    async def child(c: Client, i: int) -> httpx.Response | Answer:
        url = f"/api/v2/conversations/{parent(i)}/children"
        return await c.post(url, json={"subject": SUBJECT}, headers=fresh_key())

    async def batch(c: Client, i: int) -> httpx.Response | Answer:
        body = {"children": [{"subject": f"{SUBJECT} {n}"} for n in range(BATCH_SIZE)]}
        url = f"/api/v2/conversations/{parent(i)}/children/batch"
        return await c.post(url, json=body, headers=fresh_key())

    async def get(c: Client, i: int) -> httpx.Response | Answer:
        return await c.get(f"/api/v2/conversations/{parent(i)}", headers=auth)

    async def children(c: Client, i: int) -> httpx.Response | Answer:
        return await c.get(f"/api/v2/conversations/{parent(i)}/children", headers=auth)

    async def create(c: Client, i: int) -> httpx.Response | Answer:
        body = {"subject": SUBJECT, "tags": ["vip"], "priority": "high"}
        return await c.post("/api/v2/conversations", json=body, headers=fresh_key())

    async def healthz(c: Client, i: int) -> httpx.Response | Answer:
        return await c.get("/healthz", headers={})

    async def client_only(c: Client, i: int) -> httpx.Response | Answer:
        return await child(bare, i)

    return {
        CLIENT: (client_only, 201),
        FLOOR: (healthz, 200),
        "child": (child, 201),
        "batch": (batch, 201),
        "get": (get, 200),
        "list": (children, 200),
        "create": (create, 201),
    }


async def _measure(
    db: Database, parents: list[str], args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    routes, n, warmup, profile, client_kind = (
        args.routes,
        args.n,
        args.warmup,
        args.profile,
        args.client,
    )
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
        bare_transport = httpx.ASGITransport(app=_bare_app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://bench") as httpx_client,
            httpx.AsyncClient(transport=bare_transport, base_url="http://bench") as bare_httpx,
        ):
            client: Client = httpx_client if client_kind == "httpx" else AsgiClient(app)
            bare: Client = bare_httpx if client_kind == "httpx" else AsgiClient(_bare_app)
            requests = _requests(parents, token, bare)
            for route in routes:
                send, expected = requests[route]
                for i in range(warmup):
                    response = await send(client, i)
                    assert response.status_code == expected, (route, response.text)
            # Blocks of each route in turn, and the median block of each: a burst of other
            # work on the machine spoils a block or two, not one route's figure.
            blocks: dict[str, list[float]] = {route: [] for route in routes}
            pg_seconds = dict.fromkeys(routes, 0.0)
            walls = dict.fromkeys(routes, 0.0)
            profiler = cProfile.Profile(time.process_time)  # CPU, not waiting
            sent = warmup
            for _ in range(max(1, n // BLOCK)):
                for route in routes:
                    send, expected = requests[route]
                    meter = CpuMeter(None, db.postmaster_pid())
                    if route == profile:
                        profiler.enable()
                    cpu, wall = time.process_time(), time.perf_counter()
                    for i in range(sent, sent + BLOCK):
                        response = await send(client, i)
                        if response.status_code != expected:
                            raise AssertionError(f"{route}: {response.status_code} {response.text}")
                    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                    if route == profile:
                        profiler.disable()
                    sent += BLOCK
                    blocks[route].append(1e6 * cpu / BLOCK)
                    walls[route] += wall
                    pg_seconds[route] += meter.per_request_ms(1)[1] / 1000
            for route in routes:
                measured = BLOCK * len(blocks[route])
                results[route] = {
                    "py_us": round(statistics.median(blocks[route]), 1),
                    "pg_us": round(1e6 * pg_seconds[route] / measured, 1),
                    "wall_us": round(1e6 * walls[route] / measured, 1),
                }
            if profile is not None:
                profiler.dump_stats(WORK / f"inprocess-{profile}.prof")
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
                print(out.getvalue(), file=sys.stderr)
    return results


def _table(rows: dict[str, dict[str, Any]]) -> str:
    client = rows.get(CLIENT, {}).get("py_us")
    lines = [
        f"{'route':<8} {'python µs/req':>14} {'app µs/req':>11} {'postgres µs/req':>16}"
        f" {'wall µs/req':>12}"
    ]
    for route, r in rows.items():
        app = "" if client is None or route == CLIENT else f"{r['py_us'] - client:.1f}"
        lines.append(f"{route:<8} {r['py_us']:>14} {app:>11} {r['pg_us']:>16} {r['wall_us']:>12}")
    return "\n".join(lines)


def _compare(args: argparse.Namespace) -> None:
    """Alternate runs of this checkout ("this") and of ``args.compare`` ("other"), medians."""
    variants = {"this": os.environ.get("PYTHONPATH", ""), "other": args.compare}
    runs: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in variants}
    db = Database(DATABASE)
    db.start()  # once: the runs find the cluster running, and leave it so
    try:
        _alternate(args, variants, runs)
    finally:
        db.cluster.drop_database(db.name)
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
    # Runs of one round are neighbours in time: their difference is steadier than the medians'.
    print("\nthis - other, median of the rounds' differences (python µs/req):")
    for route in args.routes:
        diffs = [t[route]["py_us"] - o[route]["py_us"] for t, o in zip(*runs.values(), strict=True)]
        each = ", ".join(f"{d:+.0f}" for d in diffs)
        print(f"{route:<8} {statistics.median(diffs):>+8.1f}  ({each})")


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
            argv += ["--routes", ",".join(args.routes), "--client", args.client]
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
    parser.add_argument(
        "--client",
        choices=("httpx", "asgi"),
        default="httpx",
        help="httpx.AsyncClient on httpx.ASGITransport, or bare ASGI calls (AsgiClient)",
    )
    args = parser.parse_args()
    if args.compare:
        _compare(args)
        return
    db = Database(f"{DATABASE}_{os.getpid()}")
    db.start()
    try:
        run = f"inprocess-{uuid.uuid4().hex[:8]}"
        parents = db.new_parents(run, PARENTS)
        db.add_messages(run, MESSAGES_PER_PARENT)
        db.settle()
        measured = _measure(db, parents, args)
        results = asyncio.run(measured)
    finally:
        db.cluster.drop_database(db.name)
        db.stop()
    print(json.dumps(results) if args.json else _table(results))


if __name__ == "__main__":
    main()
