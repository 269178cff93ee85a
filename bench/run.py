"""``make bench``: the child-creation endpoint against its ceiling and its references.

One run, one database, one machine:

* **pgbench** runs the endpoint's own SQL (``LOCK_PARENT_SQL`` + ``CREATE_CHILD_SQL`` in one
  transaction): the ceiling, what PostgreSQL alone can do.
* **reference**: a bare FastAPI endpoint running the same SQL on raw asyncpg
  (bench/reference_app.py).
* **orm**: the straightforward SQLAlchemy ORM implementation (bench/orm_app.py).
* **service**: the real thing, started as production starts it (``aurion serve --workers N``:
  uvicorn with uvloop and httptools, ``AURION_ENV=production``, JSON access logs to a file).

``wrk`` drives each HTTP target at every concurrency with a bearer token and a unique
Idempotency-Key per request (bench/wrk_requests.lua). Every run gets its own fresh parents
(``--parents`` of them, requests spread at random), so no run inherits the children of another
and the parent-row lock is contended as it would be in production, not serialised on one row.
Then the cost as data grows: child creation on parents with no messages, then again with
1,000,000 more conversations (and as many activities) in the tables and 10,000 messages on each
parent; and GET /api/v2/conversations/{id} embedding 200 messages. Finally py-spy profiles the
service's workers, and the peak memory of every worker is read from /proc.

Results go to stdout and to docs/performance.md. See ``--help`` for the knobs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from aurion.auth.tokens import mint_token
from aurion.conversations.repository import CREATE_CHILD_SQL, LOCK_PARENT_SQL
from aurion.db.embedded import EmbeddedPostgres
from aurion.db.migrate import upgrade
from aurion.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".data" / "bench"
LUA = ROOT / "bench" / "wrk_requests.lua"
DATABASE = "aurion_bench"
WORKSPACE = "bench"
ACTOR = "bench-user"
SUBJECT = "Benchmark child: refund the damaged item"
# High enough that no benchmarked request meets the children limit: every request is a 201.
CHILD_LIMIT = 1_000_000
HTTP_TARGETS = ("reference", "reference-idem", "orm", "service")
TARGETS = ("pgbench", *HTTP_TARGETS)


# ------------------------------------------------------------------------------ results


@dataclass
class Result:
    target: str
    scenario: str
    concurrency: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    round: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------------------ database


def run_sql(url: str, *statements: str, args: tuple[Any, ...] = ()) -> list[Any]:
    """Run statements on one connection (each in its own implicit transaction); the rows of
    the last one."""

    async def go() -> list[Any]:
        conn = await asyncpg.connect(url)
        try:
            for statement in statements[:-1]:
                await conn.execute(statement)
            return list(await conn.fetch(statements[-1], *args))
        finally:
            await conn.close()

    return asyncio.run(go())


PARENTS_TABLE = """
CREATE TABLE IF NOT EXISTS bench_parents (
    run text NOT NULL, n int NOT NULL, id uuid NOT NULL, PRIMARY KEY (run, n))
"""

# Parents as a helpdesk has them: a customer, a team and an agent, tags, custom attributes and
# SLA dates, all of which a child copies.
NEW_PARENTS_SQL = """
WITH new AS (
    INSERT INTO conversations (
        workspace_id, id, subject, status, version, created_at, updated_at, priority, urgency,
        impact, category, sub_category, channel, source, conversation_type, company_id,
        company_name, contact_id, contact_name, contact_email, contact_phone, contact_role,
        department_id, assignee_team_id, assignee_team_name, assignee_user_id,
        assignee_user_name, assigned_at, tags, custom_attrs, ai_language,
        sla_first_response_due, sla_resolution_due, sla_state)
    SELECT $1, {uuid}(), 'Order #' || g || ' arrived damaged', 'open', 1, now(), now(), 'high',
        'high', 'single_user', 'shipping', 'damaged_item', 'email', 'email', 'incident',
        'comp_' || g % 100, 'Acme Corp', 'contact_' || g, 'Jo Customer', 'jo@acme.example',
        '+1 555 0100', 'buyer', 'dept_support', 'team_billing', 'Billing', 'user_7',
        'Dana Agent', now(), ARRAY['vip', 'shipping'],
        jsonb_build_object('order_id', 'A-' || g, 'value_eur', 249.0), 'en',
        now() + interval '1 day', now() + interval '3 days', 'active'
    FROM generate_series(1, $3) g
    RETURNING id
)
INSERT INTO bench_parents (run, n, id) SELECT $2, row_number() OVER (), id FROM new
RETURNING id
"""

MESSAGES_SQL = """
INSERT INTO messages (workspace_id, id, conversation_id, body, content_type, sender_type,
                      sender_id, metadata, created_at)
SELECT $1, {uuid}(), p.id,
       'Message ' || g || ': my order arrived with a cracked screen. Could you help me?',
       'text/plain', CASE WHEN g % 2 = 0 THEN 'agent' ELSE 'contact' END, 'user_' || g % 7,
       '{{}}', now() - make_interval(secs => $3 - g)
FROM bench_parents p, generate_series(1, $3) g
WHERE p.run = $2
"""

# 1,000,000 conversations in one statement: 10 % top-level, each with 9 children, so the
# parent_id index is as full as the primary key; plus one activity per conversation.
LARGE_CONVERSATIONS_SQL = """
INSERT INTO conversations (
    workspace_id, id, parent_id, subject, status, priority, channel, source, company_id,
    company_name, contact_id, contact_name, contact_email, tags, custom_attrs, version,
    created_at, updated_at)
SELECT $1, md5('large-' || g)::uuid,
       CASE WHEN g > $2 / 10 THEN md5('large-' || (g % ($2 / 10) + 1))::uuid END,
       'Conversation ' || g, (ARRAY['new', 'open', 'pending', 'resolved', 'closed'])[g % 5 + 1],
       (ARRAY['low', 'medium', 'high', 'urgent'])[g % 4 + 1], 'email', 'email',
       'comp_' || g % 1000, 'Company ' || g % 1000, 'contact_' || g % 50000,
       'Contact ' || g % 50000, 'c' || g || '@example.com', ARRAY['tag' || g % 20],
       jsonb_build_object('n', g), 1 + g % 3, now() - make_interval(secs => g), now()
FROM generate_series(1, $2) g
"""

LARGE_ACTIVITIES_SQL = """
INSERT INTO activities (workspace_id, id, conversation_id, kind, actor, payload, created_at)
SELECT $1, {uuid}(), md5('large-' || g)::uuid, 'created', 'import', '{{}}', now()
FROM generate_series(1, $2) g
"""


class Database:
    """The benchmark's own database in an embedded cluster under .data/bench-postgres."""

    def __init__(self) -> None:
        self.cluster = EmbeddedPostgres(ROOT / ".data" / "bench-postgres")
        self.started_here = False
        self.url = ""
        self.uuid_function = "gen_random_uuid"
        self.server_version = ""

    def start(self) -> None:
        self.started_here = not self.cluster.is_running()
        self.cluster.start("postgres")
        # A fresh database every run: no run inherits another's rows.
        self.cluster.drop_database(DATABASE)
        self.cluster.create_database(DATABASE)
        self.url = self.cluster.url(DATABASE)
        upgrade(self.url)
        version = run_sql(self.url, PARENTS_TABLE, "SHOW server_version_num")[0][0]
        self.server_version = run_sql(self.url, "SHOW server_version")[0][0]
        # Ids as the service makes them (UUID v7, time-ordered) where the server can.
        self.uuid_function = "uuidv7" if int(version) >= 180000 else "gen_random_uuid"

    def stop(self) -> None:
        if self.started_here:
            self.cluster.stop()

    def new_parents(self, run: str, count: int) -> list[str]:
        sql = NEW_PARENTS_SQL.format(uuid=self.uuid_function)
        return [str(r[0]) for r in run_sql(self.url, sql, args=(WORKSPACE, run, count))]

    def add_messages(self, run: str, per_parent: int) -> None:
        sql = MESSAGES_SQL.format(uuid=self.uuid_function)
        run_sql(self.url, sql, args=(WORKSPACE, run, per_parent))

    def load_large(self, conversations: int) -> None:
        run_sql(self.url, LARGE_CONVERSATIONS_SQL, args=(WORKSPACE, conversations))
        sql = LARGE_ACTIVITIES_SQL.format(uuid=self.uuid_function)
        run_sql(self.url, sql, args=(WORKSPACE, conversations))

    def settle(self) -> None:
        """Statistics up to date and dirty pages written: every scenario starts alike."""
        run_sql(self.url, "VACUUM ANALYZE", "CHECKPOINT", "SELECT 1")

    def postmaster_pid(self) -> int:
        return int((self.cluster.pgdata / "postmaster.pid").read_text().split()[0])

    def sessions(self) -> int:
        """Connections opened so far (PostgreSQL 14+), to see pool churn."""
        rows = run_sql(self.url, "SELECT sum(sessions)::bigint FROM pg_stat_database")
        return int(rows[0][0] or 0)

    def counts(self) -> dict[str, int]:
        rows = run_sql(
            self.url,
            "SELECT (SELECT count(*) FROM conversations), (SELECT count(*) FROM messages),"
            " (SELECT count(*) FROM activities)",
        )
        return {"conversations": rows[0][0], "messages": rows[0][1], "activities": rows[0][2]}


# ------------------------------------------------------------------------------ servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command may contain spaces and parentheses: fields start after the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, *, with_children: bool = True) -> float:
    """CPU time of a process (user + system), plus that of its reaped children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # fields[0] is the state (field 3): utime, stime, cutime, cstime are fields 14..17.
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def tree_cpu_seconds(root: int) -> float:
    """A process tree's CPU: the root (with everything it reaped) and its live children."""
    return cpu_seconds(root) + sum(cpu_seconds(c) for c in _children(root))


class Server:
    """One HTTP target: a uvicorn master we started, and its worker processes."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.port = port
        self.log_path = WORK / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log_file = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} did not become healthy; see {self.log_path}")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        assert self.process is not None
        # uvicorn --workers N: master -> N workers (plus multiprocessing's resource tracker).
        pids = [p for p in _children(self.process.pid) if _status_kib(p, "VmRSS") > 20_000]
        return sorted(pids) or [self.process.pid]

    def peak_rss_mib(self) -> list[float]:
        return [round(_status_kib(pid, "VmHWM") / 1024, 1) for pid in self.workers()]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def check_create(self, parent: str, token: str) -> None:
        """One request by hand: a 201 with the child, or a clear failure before measuring."""
        request = urllib.request.Request(
            f"{self.base}/api/v2/conversations/{parent}/children",
            data=json.dumps({"subject": SUBJECT}).encode(),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Idempotency-Key": f"check-{secrets.token_hex(8)}",
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                body = json.loads(response.read())
                if response.status != 201 or body.get("parent_id") != parent:
                    raise RuntimeError(f"{self.name}: unexpected answer {response.status} {body}")
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{self.name}: {exc.code} {exc.read()[:500]!r}") from exc


def start_servers(
    db: Database, workers: int, secret: str, pool: dict[str, str]
) -> dict[str, Server]:
    python = str(Path(sys.executable))
    base_env = {
        **os.environ,
        "DATABASE_URL": db.url,
        "AURION_MAX_CHILDREN_PER_PARENT": str(CHILD_LIMIT),
        "BENCH_WORKSPACE": WORKSPACE,
        "BENCH_ACTOR": ACTOR,
        "PYTHONDONTWRITEBYTECODE": "1",
        **pool,
    }
    service_env = {**base_env, "AURION_ENV": "production", "AURION_JWT_SECRET": secret}
    uvicorn_options = [
        "--factory",
        "--host",
        "127.0.0.1",
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    servers: dict[str, Server] = {}
    port = free_port()
    servers["service"] = Server(
        "service",
        [
            str(Path(sys.executable).parent / "aurion"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        service_env,
        port,
    )
    for name, module, extra in (
        ("reference", "bench.reference_app", {}),
        ("reference-idem", "bench.reference_app", {"BENCH_IDEMPOTENCY": "1"}),
        ("orm", "bench.orm_app", {}),
    ):
        port = free_port()
        servers[name] = Server(
            name,
            [
                python,
                "-m",
                "uvicorn",
                f"{module}:create_app",
                "--port",
                str(port),
                *uvicorn_options,
            ],
            {**base_env, **extra},
            port,
        )
    for server in servers.values():
        server.start()
        log(f"{server.name} up on {server.base} (workers {server.workers()})")
    return servers


# ------------------------------------------------------------------------------ load


def run_wrk(
    server: Server,
    *,
    mode: str,
    ids: list[str],
    token: str,
    concurrency: int,
    duration: int,
    tag: str,
) -> dict[str, Any]:
    ids_file = WORK / f"ids-{tag}.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    expected = "201" if mode == "children" else "200"
    argv = [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        server.base,
        "--",
        mode,
        str(ids_file),
        token,
        tag,
        expected,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
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
    """The endpoint's two statements with pgbench variables for their parameters.

    pgbench cannot make UUIDs, so one small SELECT before the transaction draws a parent and
    makes the ids, the time and the activity payloads (\\gset); the transaction itself is the
    service's: BEGIN, LOCK_PARENT_SQL, CREATE_CHILD_SQL, COMMIT.
    """

    def params(sql: str) -> str:
        return re.sub(r"\$(\d+)", r":p\1", sql.strip())

    return (
        "\\set pn random(1, :nparents)\n"
        "SELECT c.p2, c.p3, c.p5,\n"
        f"    ARRAY[{uuid_function}(), {uuid_function}()]::text AS p7,\n"
        "    ARRAY[c.p3, c.p2]::text AS p8,\n"
        "    '{created_from_parent,child_created}' AS p9,\n"
        "    ARRAY[json_build_object('parent_id', c.p2)::text,\n"
        "          json_build_object('child_id', c.p3, 'subject', :p4::text)::text]::text AS p10\n"
        f"FROM (SELECT id AS p2, {uuid_function}() AS p3, clock_timestamp() AS p5\n"
        "      FROM bench_parents WHERE run = :run AND n = :pn) c\n"
        "\\gset\n"
        "BEGIN;\n"
        f"{params(LOCK_PARENT_SQL)};\n"
        f"{params(CREATE_CHILD_SQL)};\n"
        "COMMIT;\n"
    )


def run_pgbench(
    db: Database, *, run: str, nparents: int, concurrency: int, duration: int
) -> dict[str, Any]:
    script = WORK / "pgbench_child.sql"
    script.write_text(pgbench_script(db.uuid_function))
    log_dir = WORK / f"pgbench-{run}"
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    argv = [
        str(db.cluster.bin_dir / "pgbench"),
        "-n",
        "-h",
        "127.0.0.1",
        "-p",
        str(db.cluster.port),
        "-U",
        "postgres",
        "-M",
        "prepared",
        "-c",
        str(concurrency),
        "-j",
        str(min(concurrency, 2)),
        "-T",
        str(duration),
        "-f",
        str(script),
        "-D",
        f"run={run}",
        "-D",
        f"nparents={nparents}",
        "-D",
        f"p1={WORKSPACE}",
        "-D",
        f"p4={SUBJECT}",
        "-D",
        f"p6={CHILD_LIMIT}",
        "-D",
        f"p11={ACTOR}",
        "--log",
        f"--log-prefix={log_dir / 'tx'}",
        DATABASE,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120)
    out = done.stdout + done.stderr
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    if tps is None:
        raise RuntimeError(f"pgbench failed:\n{out}")
    failed = re.search(r"number of failed transactions: (\d+)", out)
    aborted = 1 if done.returncode != 0 else 0
    latencies: list[int] = []
    for path in log_dir.iterdir():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2].isdigit():
                latencies.append(int(parts[2]))
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0

    return {
        "requests": len(latencies),
        "rps": float(tps.group(1)),
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "errors": (int(failed.group(1)) if failed else 0) + aborted,
    }


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.db = Database()
        self.secret = secrets.token_urlsafe(48)
        self.token = ""
        self.servers: dict[str, Server] = {}
        self.results: list[Result] = []
        self.runs = 0
        self.profiles: dict[str, dict[str, Any]] = {}
        self.memory: dict[str, list[float]] = {}
        self.data_counts: dict[str, dict[str, int]] = {}
        self.notes: list[str] = []
        self.load_before = f"{os.getloadavg()[0]:.2f}"

    # one measured run of one target, on fresh parents
    def measure(
        self,
        target: str,
        concurrency: int,
        *,
        scenario: str = "matrix",
        round_no: int = 0,
        parents: list[str] | None = None,
        run: str | None = None,
        mode: str = "children",
        duration: int | None = None,
    ) -> Result:
        self.runs += 1
        duration = duration or self.args.duration
        if parents is None:
            run = f"r{self.runs}-{target}-c{concurrency}"
            parents = self.db.new_parents(run, self.args.parents)
        assert run is not None
        pg_root = self.db.postmaster_pid()
        process = self.servers[target].process if target in self.servers else None
        app_root = process.pid if process else None
        sessions_before = self.db.sessions()
        pg_cpu_before = tree_cpu_seconds(pg_root)
        app_cpu_before = tree_cpu_seconds(app_root) if app_root else 0.0
        if target == "pgbench":
            data = run_pgbench(
                self.db,
                run=run,
                nparents=len(parents),
                concurrency=concurrency,
                duration=duration,
            )
        else:
            data = run_wrk(
                self.servers[target],
                mode=mode,
                ids=parents,
                token=self.token,
                concurrency=concurrency,
                duration=duration,
                tag=f"{run}-{secrets.token_hex(4)}",
            )
        requests = max(int(data["requests"]), 1)
        time.sleep(0.5)  # let pgbench's backends exit and be reaped, so their CPU counts
        pg_cpu = tree_cpu_seconds(pg_root) - pg_cpu_before
        app_cpu = (tree_cpu_seconds(app_root) - app_cpu_before) if app_root else 0.0
        # Minus this function's own two counting connections.
        new_sessions = self.db.sessions() - sessions_before - 1
        data["app_cpu_ms"] = round(1000 * app_cpu / requests, 3)
        data["pg_cpu_ms"] = round(1000 * pg_cpu / requests, 3)
        data["new_connections"] = new_sessions
        result = Result(
            target=target,
            scenario=scenario,
            concurrency=concurrency,
            requests=int(data["requests"]),
            rps=round(float(data["rps"]), 1),
            p50_ms=round(data["p50_us"] / 1000, 2),
            p99_ms=round(data["p99_us"] / 1000, 2),
            errors=int(data["errors"]),
            round=round_no,
            detail={
                k: v
                for k, v in data.items()
                if k
                in (
                    "stderr",
                    "unexpected_status",
                    "connect",
                    "read",
                    "write",
                    "timeout",
                    "app_cpu_ms",
                    "pg_cpu_ms",
                    "new_connections",
                )
            },
        )
        self.results.append(result)
        log(
            f"{scenario:>12} {target:>9} c={concurrency:<3} {result.rps:9.1f} req/s  "
            f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  errors {result.errors}  "
            f"CPU/req app {data['app_cpu_ms']:.2f} ms pg {data['pg_cpu_ms']:.2f} ms  "
            f"new connections {new_sessions}"
        )
        if result.errors:
            log(f"   errors: {result.detail}")
        return result

    def run(self) -> None:
        args = self.args
        WORK.mkdir(parents=True, exist_ok=True)
        if shutil.which("wrk") is None:
            raise SystemExit("wrk is not installed: run `make system-deps` (apt-get install wrk)")
        log("starting PostgreSQL (embedded, .data/bench-postgres) and a fresh database")
        self.db.start()
        try:
            settings = Settings(jwt_secret=self.secret)
            self.token = mint_token(
                settings,
                workspace=WORKSPACE,
                subject=ACTOR,
                scopes="conversations:read conversations:write",
            )
            pool = {}
            if args.pool_size is not None:
                pool["AURION_DB_POOL_SIZE"] = str(args.pool_size)
            if args.max_overflow is not None:
                pool["AURION_DB_MAX_OVERFLOW"] = str(args.max_overflow)
            self.servers = start_servers(self.db, args.workers, self.secret, pool)
            self._run_all()
        finally:
            for server in self.servers.values():
                server.stop()
            self.db.stop()

    def _run_all(self) -> None:
        args = self.args
        warm = self.db.new_parents("warmup", args.parents)
        for name in HTTP_TARGETS:
            self.servers[name].check_create(warm[0], self.token)
        log("warm-up (pools, statement caches)")
        for name in HTTP_TARGETS:
            run_wrk(
                self.servers[name],
                mode="children",
                ids=warm,
                token=self.token,
                concurrency=max(args.concurrency),
                duration=3,
                tag=f"warm-{name}-{secrets.token_hex(4)}",
            )
        self.db.settle()

        log("matrix: every target at every concurrency, fresh parents per run")
        for i, concurrency in enumerate(args.concurrency):
            rounds = args.rounds if concurrency == args.ratio_concurrency else 1
            for r in range(rounds):
                shift = (i + r) % len(TARGETS)
                order = list(TARGETS[shift:] + TARGETS[:shift])
                for target in order:
                    if target in args.targets:
                        self.measure(target, concurrency, round_no=r)

        if not args.skip_data:
            self._data_growth()
        if not args.skip_profile:
            for name in ("service", "reference"):
                self._profile(name)
        for name, server in self.servers.items():
            self.memory[name] = server.peak_rss_mib()

    def _data_growth(self) -> None:
        """Child creation (and GET) on small tables, then on large ones.

        Each case has one set of parents that all its runs share (service and reference
        alternating, ``--rounds`` times), so both cases accumulate children alike.
        """
        args = self.args
        c = args.ratio_concurrency
        k = args.flat_parents
        log(f"data growth: {k} parents, concurrency {c}")
        empty = self.db.new_parents("empty", k)
        get_small = self.db.new_parents("get-200", k)
        self.db.add_messages("get-200", 200)
        self.db.settle()
        self.data_counts["before"] = self.db.counts()
        for r in range(args.rounds):
            for target in ("service", "reference"):
                self.measure(
                    target, c, scenario="no-messages", round_no=r, parents=empty, run="empty"
                )
        self.measure(
            "service", c, scenario="get-200/200", parents=get_small, run="get-200", mode="get"
        )

        log(
            f"loading {args.large:,} conversations and as many activities, and {k} parents "
            f"with {args.messages:,} messages each"
        )
        started = time.monotonic()
        self.db.load_large(args.large)
        large = self.db.new_parents("large", k)
        self.db.add_messages("large", args.messages)
        self.db.settle()
        self.data_counts["after"] = self.db.counts()
        took = time.monotonic() - started
        self.notes.append(f"Loading the large data set (and VACUUM ANALYZE) took {took:.0f} s.")
        log(f"loaded in {took:.0f} s: {self.data_counts['after']}")
        for r in range(args.rounds):
            for target in ("service", "reference"):
                self.measure(
                    target, c, scenario="10k-messages", round_no=r, parents=large, run="large"
                )
        self.measure("service", c, scenario="get-200/10k", parents=large, run="large", mode="get")

    def _profile(self, name: str) -> None:
        server = self.servers[name]
        assert server.process is not None
        py_spy = Path(sys.executable).parent / "py-spy"
        if not py_spy.exists():
            self.notes.append("py-spy is not installed: no profile (pip install -e '.[bench]').")
            return
        c = self.args.ratio_concurrency
        run = f"profile-{name}"
        parents = self.db.new_parents(run, self.args.parents)
        raw = WORK / f"profile-{name}.txt"
        duration = self.args.duration
        spy = subprocess.Popen(
            [
                str(py_spy),
                "record",
                "--pid",
                str(server.process.pid),
                "--subprocesses",
                "--nonblocking",
                "--gil",
                "--rate",
                "250",
                "--format",
                "raw",
                "--duration",
                str(duration + 1),
                "--output",
                str(raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1)
        self.measure(name, c, scenario="profiled", parents=parents, run=run, duration=duration)
        _, err = spy.communicate(timeout=60)
        if not raw.exists():
            self.notes.append(f"py-spy failed on {name}: {err.decode(errors='replace')[-300:]}")
            return
        self.profiles[name] = summarise_profile(raw)
        log(f"profile of {name}: {raw} (collapsed stacks)")


# ------------------------------------------------------------------------------ profile


_PACKAGES = (
    "aurion",
    "bench",
    "asyncpg",
    "sqlalchemy",
    "pydantic",
    "pydantic_core",
    "fastapi",
    "starlette",
    "uvicorn",
    "jose",
    "logging",
    "asyncio",
    "anyio",
    "uuid_utils",
    "orjson",
    "json",
)


def _frame_path(frame: str) -> str:
    match = re.search(r"\(([^()]*?):\d+\)$", frame)
    return match.group(1) if match else ""


def _package(frame: str) -> str:
    """The top-level package of a frame: py-spy names files relative to sys.path."""
    path = _frame_path(frame)
    if not path:
        return "other"
    head = path.split("/", 1)[0] if "/" in path else path.removesuffix(".py")
    if head in _PACKAGES:
        return head
    return "stdlib" if not path.startswith("/") and "/" not in path.strip("/") else "other"


def _function(frame: str) -> str:
    # "Class.method (package/module.py:123)" -> "package/module.py:Class.method"
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    return f"{match.group(2)}:{match.group(1)}"


def summarise_profile(raw: Path) -> dict[str, Any]:
    """Self time by package (the leaf frame's), and the functions most often on the stack."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if _frame_path(f)]
        if not frames:
            continue
        total += count
        own[_package(frames[-1])] += count
        for name in {_function(f) for f in frames}:
            inclusive[name] += count
    if not total:
        return {"samples": 0}
    # The application's own functions and the libraries it calls; the server, the framework's
    # middleware and the event loop are on nearly every stack and say nothing.
    wanted = ("aurion/", "sqlalchemy/", "asyncpg/", "anyio/", "logging/", "fastapi/dependencies/")
    interesting = [(name, n) for name, n in inclusive.most_common() if name.startswith(wanted)]
    return {
        "samples": total,
        "self_by_package": {k: round(100 * v / total, 1) for k, v in own.most_common()},
        "inclusive": [(name, round(100 * n / total, 1)) for name, n in interesting[:25]],
    }


# ------------------------------------------------------------------------------ report


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "src"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return rev + (" + uncommitted changes in src/" if dirty else "")
    except OSError:
        return "unknown"


def _fmt(value: float) -> str:
    return f"{value:.2f}" if value == value else "n/a"


def build_report(bench: Bench, started: datetime, elapsed: float) -> str:
    args = bench.args
    res = bench.results
    c32 = args.ratio_concurrency

    def pick(target: str, scenario: str, concurrency: int) -> list[Result]:
        return [
            r
            for r in res
            if r.target == target and r.scenario == scenario and r.concurrency == concurrency
        ]

    def med(target: str, scenario: str, concurrency: int, attr: str = "rps") -> float:
        return _median([getattr(r, attr) for r in pick(target, scenario, concurrency)])

    lines: list[str] = []
    add = lines.append
    add("# Performance")
    add("")
    add(
        "Generated by `make bench` (bench/run.py); the numbers below are from the run described "
        "here, nothing is edited by hand. Re-run it to refresh them."
    )
    add("")
    add("## The run")
    add("")
    add(f"- Date: {started.strftime('%Y-%m-%d %H:%M UTC')}, {elapsed / 60:.1f} minutes")
    add(
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical CPUs (load average before: "
        f"{bench.load_before}, after: {os.getloadavg()[0]:.2f})"
    )
    add(
        f"- PostgreSQL {bench.db.server_version} (embedded, same machine, default durability), "
        f"Python {platform.python_version()}, code at {git_revision()}"
    )
    add(
        f"- Each HTTP target: uvicorn, {args.workers} workers, uvloop + httptools; "
        "pool 10 + 10 overflow connections per worker. Load: `wrk` (1 thread), "
        f"{args.duration} s per measurement; pgbench `-M prepared`."
    )
    add(
        f"- Every measurement gets {args.parents} fresh parents and spreads its requests over "
        "them at random (so a run never sees another run's children, and the parent lock is "
        "contended as in real use rather than serialised on one row). The children limit is "
        f"set to {CHILD_LIMIT:,} so every request must be a 201; any other status, and any "
        "socket error or timeout, counts as an error. Every request sends a bearer token and "
        "a unique `Idempotency-Key`."
    )
    add("")
    add("## Child creation: the service against its ceiling and its references")
    add("")
    add(
        "| concurrency | target | requests/s | p50 ms | p99 ms | errors "
        "| CPU ms/request: HTTP workers | PostgreSQL |"
    )
    add("|---:|---|---:|---:|---:|---:|---:|---:|")
    for concurrency in args.concurrency:
        for target in TARGETS:
            runs = pick(target, "matrix", concurrency)
            if not runs:
                continue
            note = f" (median of {len(runs)})" if len(runs) > 1 else ""
            app_cpu = _median([r.detail.get("app_cpu_ms", 0.0) for r in runs])
            pg_cpu = _median([r.detail.get("pg_cpu_ms", 0.0) for r in runs])
            add(
                f"| {concurrency} | {target}{note} | {med(target, 'matrix', concurrency):.0f} | "
                f"{med(target, 'matrix', concurrency, 'p50_ms'):.2f} | "
                f"{med(target, 'matrix', concurrency, 'p99_ms'):.2f} | "
                f"{sum(r.errors for r in runs)} | "
                f"{app_cpu:.2f} | {pg_cpu:.2f} |"
            )
    add("")
    add("Ratios of requests/s (medians where a concurrency was measured more than once):")
    add("")
    add(
        "| concurrency | service / reference | service / ORM | service / pgbench "
        "| service / reference-idem |"
    )
    add("|---:|---:|---:|---:|---:|")
    for concurrency in args.concurrency:
        s = med("service", "matrix", concurrency)
        add(
            f"| {concurrency} | {_fmt(s / med('reference', 'matrix', concurrency))} | "
            f"{_fmt(s / med('orm', 'matrix', concurrency))} | "
            f"{_fmt(s / med('pgbench', 'matrix', concurrency))} | "
            f"{_fmt(s / med('reference-idem', 'matrix', concurrency))} |"
        )
    add("")
    add(
        "`reference-idem` is the bare reference plus the idempotency store's own two statements "
        "(claim the key first, store the response last): the SQL the service runs for these "
        "requests, so service / reference-idem is the cost of the Python layers alone."
    )
    rounds = sorted({r.round for r in pick("service", "matrix", c32)})
    per_round_ref = []
    per_round_orm = []
    per_round_idem: list[float] = []
    for rnd in rounds:

        def one(target: str, rnd: int = rnd) -> float:
            return next(
                (r.rps for r in pick(target, "matrix", c32) if r.round == rnd), float("nan")
            )

        per_round_ref.append(one("service") / one("reference"))
        per_round_idem.append(one("service") / one("reference-idem"))
        per_round_orm.append(one("service") / one("orm"))
    add("")
    add(
        f"At concurrency {c32}, per round (each round runs every target back to back, in a "
        "rotating order): service/reference "
        + ", ".join(_fmt(x) for x in per_round_ref)
        + "; service/ORM "
        + ", ".join(_fmt(x) for x in per_round_orm)
        + "; service/reference-idem "
        + ", ".join(_fmt(x) for x in per_round_idem)
        + "."
    )

    def cpu(target: str) -> tuple[float, float]:
        runs = pick(target, "matrix", c32)
        return (
            _median([r.detail.get("app_cpu_ms", float("nan")) for r in runs]),
            _median([r.detail.get("pg_cpu_ms", float("nan")) for r in runs]),
        )

    if pick("service", "matrix", c32) and pick("reference", "matrix", c32):
        s_app, s_pg = cpu("service")
        r_app, r_pg = cpu("reference")
        o_app, o_pg = cpu("orm") if pick("orm", "matrix", c32) else (float("nan"),) * 2
        i_app, i_pg = (
            cpu("reference-idem") if pick("reference-idem", "matrix", c32) else (float("nan"),) * 2
        )
        add("")
        add(
            "CPU time per request is steadier than requests/s on a shared machine (it does not "
            "depend on what else runs): at concurrency "
            f"{c32} the service's workers spend {s_app:.2f} ms and PostgreSQL {s_pg:.2f} ms "
            f"per request; the reference's {r_app:.2f} + {r_pg:.2f} ms (with the idempotency "
            f"SQL {i_app:.2f} + {i_pg:.2f} ms); the ORM's "
            f"{o_app:.2f} + {o_pg:.2f} ms. Where the CPUs are the bottleneck, throughput goes "
            "as the inverse of the total: reference/service cost "
            f"**{_fmt((r_app + r_pg) / (s_app + s_pg))}**, ORM/service cost "
            f"**{_fmt((o_app + o_pg) / (s_app + s_pg))}**, reference-idem/service cost "
            f"**{_fmt((i_app + i_pg) / (s_app + s_pg))}**."
        )

    errors_total = sum(r.errors for r in res)
    ratio_ref = _median(per_round_ref)
    ratio_orm = _median(per_round_orm)

    if not args.skip_data:
        add("")
        add("## Cost as data grows")
        add("")
        before = bench.data_counts.get("before", {})
        after = bench.data_counts.get("after", {})
        add(
            f"Child creation at concurrency {c32} on {args.flat_parents} parents (one set per "
            f"case, shared by that case's runs), first with no messages on them "
            f"(tables: {before.get('conversations', 0):,} "
            f"conversations, {before.get('messages', 0):,} messages, "
            f"{before.get('activities', 0):,} activities), then after loading "
            f"{args.large:,} conversations (one INSERT ... SELECT generate_series; 10 % "
            f"parents with 9 children each) and as many activities, with {args.messages:,} "
            f"messages on each parent (tables: {after.get('conversations', 0):,} conversations, "
            f"{after.get('messages', 0):,} messages, {after.get('activities', 0):,} "
            "activities). Fewer parents than above (each needs its messages), so the numbers are "
            "comparable with each other rather than with the matrix."
        )
        add("")
        add(
            "| target | data | requests/s | p50 ms | p99 ms | errors "
            "| CPU ms/request: HTTP workers | PostgreSQL |"
        )
        add("|---|---|---:|---:|---:|---:|---:|---:|")
        for target in ("service", "reference"):
            for scenario, label in (("no-messages", "no messages"), ("10k-messages", "large")):
                runs = pick(target, scenario, c32)
                add(
                    f"| {target} (median of {len(runs)}) | {label} | "
                    f"{med(target, scenario, c32):.0f} | "
                    f"{med(target, scenario, c32, 'p50_ms'):.2f} | "
                    f"{med(target, scenario, c32, 'p99_ms'):.2f} | "
                    f"{sum(r.errors for r in runs)} | "
                    f"{_median([r.detail.get('app_cpu_ms', 0.0) for r in runs]):.2f} | "
                    f"{_median([r.detail.get('pg_cpu_ms', 0.0) for r in runs]):.2f} |"
                )
        growth = med("service", "no-messages", c32) / med("service", "10k-messages", c32)
        growth_ref = med("reference", "no-messages", c32) / med("reference", "10k-messages", c32)
        add("")
        add(
            f"Cost ratio large / empty (requests/s empty ÷ requests/s large): service "
            f"**{_fmt(growth)}**, reference {_fmt(growth_ref)} (target: service ≤ 1.2)."
        )
        add("")
        add(f"GET /api/v2/conversations/{{id}} at concurrency {c32} (service):")
        add("")
        add(
            "| parent's messages | embedded | requests/s | p50 ms | p99 ms | errors "
            "| CPU ms/request: HTTP workers | PostgreSQL |"
        )
        add("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for scenario, total in (("get-200/200", 200), ("get-200/10k", args.messages)):
            runs = pick("service", scenario, c32)
            if runs:
                r0 = runs[0]
                add(
                    f"| {total:,} | 200 | {r0.rps:.0f} | {r0.p50_ms:.2f} | "
                    f"{r0.p99_ms:.2f} | {r0.errors} | {r0.detail.get('app_cpu_ms', 0.0):.2f} | "
                    f"{r0.detail.get('pg_cpu_ms', 0.0):.2f} |"
                )
    else:
        growth = float("nan")

    add("")
    add("## Memory")
    add("")
    add("Peak resident memory (VmHWM) of each worker process at the end of the run:")
    add("")
    add("| target | per worker, MiB |")
    add("|---|---|")
    for name, values in bench.memory.items():
        add(f"| {name} | {', '.join(f'{v:.0f}' for v in values)} |")

    if bench.profiles:
        add("")
        add("## Profile")
        add("")
        add(
            f"py-spy (`record --subprocesses --nonblocking --gil`, 250 Hz) on the workers during "
            f"an extra {args.duration} s run at concurrency {c32}; only samples holding the GIL "
            "count (a thread waiting does not). Self time by package of the innermost Python "
            "frame (C extensions such as orjson, pydantic-core, httptools and asyncpg's "
            "protocol count under the Python frame that called them):"
        )
        for name, prof in bench.profiles.items():
            if not prof.get("samples"):
                continue
            add("")
            add(
                f"**{name}** ({prof['samples']} samples): "
                + ", ".join(f"{k} {v}%" for k, v in prof["self_by_package"].items())
            )
        prof = bench.profiles.get("service", {})
        if prof.get("inclusive"):
            add("")
            add("Service: functions most often on the stack (inclusive share of samples):")
            add("")
            add("| function | % |")
            add("|---|---:|")
            for name, share in prof["inclusive"][:20]:
                add(f"| `{name}` | {share} |")

    ref_med = med("reference", "matrix", c32)
    idem_med = med("reference-idem", "matrix", c32)
    svc_med = med("service", "matrix", c32)
    if ref_med == ref_med and idem_med == idem_med and svc_med == svc_med:
        add("")
        add("## Where the gap to the bare reference comes from")
        add("")
        add(
            f"At concurrency {c32} (medians): the service reaches {_fmt(svc_med / ref_med)}× "
            f"the bare reference. That splits into the extra SQL of an idempotent request "
            f"(reference-idem / reference = {_fmt(idem_med / ref_med)}: the same endpoint on "
            "raw asyncpg with the idempotency store's claim and store statements, six round "
            "trips instead of four) and the Python layers around the same SQL (service / "
            f"reference-idem = {_fmt(svc_med / idem_med)}: authentication, FastAPI dependencies, "
            "SQLAlchemy's execution layer, middleware, logging and metrics). The profile above "
            "says which of those layers costs what."
        )
    add("")
    add("## Targets")
    add("")
    verdicts = [
        ("service ≥ 0.8× the bare reference (c=32, median of rounds)", ratio_ref, 0.8, True),
        ("service ≥ 4× the ORM implementation (c=32, median of rounds)", ratio_orm, 4.0, True),
        ("child creation, large / empty cost ≤ 1.2", growth, 1.2, False),
    ]
    for label, value, bound, at_least in verdicts:
        if value != value:
            continue
        met = value >= bound if at_least else value <= bound
        add(f"- {label}: **{value:.2f}** — {'met' if met else 'NOT met'}")
    if per_round_idem and per_round_idem[0] == per_round_idem[0]:
        add(
            "- for reading: service / reference-idem (same SQL, the Python layers alone): "
            f"**{_median(per_round_idem):.2f}**"
        )
    verdict = "met" if not errors_total else "NOT met"
    add(f"- zero errors: **{errors_total}** errors in all runs — {verdict}")
    for note in bench.notes:
        add(f"- {note}")
    add("")
    add("## How to read these numbers")
    add("")
    add(
        "The machine is small and shared: PostgreSQL, the two workers and wrk share its CPUs, "
        "and other jobs may run at the same time. Absolute numbers move from run to run; the "
        "ratios, measured back to back within one run, are the stable part, and the "
        f"concurrency-{c32} comparison is repeated {args.rounds} times (medians). pgbench is "
        "the ceiling (PostgreSQL with no HTTP or Python at all); its per-transaction latency "
        "includes one small SELECT that draws the parent and makes the ids. The bare "
        "reference and the ORM implementation have no authentication, idempotency or access "
        "log; the service has all three, plus its middleware and error handling."
    )
    add("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers per target (2)")
    parser.add_argument("--duration", type=int, default=8, help="seconds per measurement (8)")
    parser.add_argument(
        "--concurrency",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 8, 32, 64],
        help="comma-separated concurrencies (1,8,32,64)",
    )
    parser.add_argument(
        "--ratio-concurrency", type=int, default=32, help="concurrency of the target ratios (32)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="repeats at that concurrency (3)")
    parser.add_argument("--parents", type=int, default=1000, help="fresh parents per run (1000)")
    parser.add_argument(
        "--flat-parents", type=int, default=128, help="parents in the data-growth runs (128)"
    )
    parser.add_argument(
        "--large", type=int, default=1_000_000, help="conversations to load (1,000,000)"
    )
    parser.add_argument("--messages", type=int, default=10_000, help="messages per parent (10,000)")
    parser.add_argument(
        "--targets",
        type=lambda s: [x for x in s.split(",") if x],
        default=list(TARGETS),
        help="comma-separated subset of pgbench,reference,orm,service (all)",
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        default=None,
        help="AURION_DB_POOL_SIZE for every target (default: the service's default)",
    )
    parser.add_argument(
        "--max-overflow",
        type=int,
        default=None,
        help="AURION_DB_MAX_OVERFLOW for every target (default: the service's default)",
    )
    parser.add_argument("--skip-data", action="store_true", help="skip the data-growth part")
    parser.add_argument("--skip-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument(
        "--output", default=str(ROOT / "docs" / "performance.md"), help="report file"
    )
    parser.add_argument("--no-report", action="store_true", help="print only; do not write")
    args = parser.parse_args(argv)
    if args.ratio_concurrency not in args.concurrency:
        args.concurrency.append(args.ratio_concurrency)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC)
    clock = time.monotonic()
    bench = Bench(args)
    bench.run()
    report = build_report(bench, started, time.monotonic() - clock)
    (WORK / "results.json").write_text(
        json.dumps([asdict(r) for r in bench.results], indent=1, default=str)
    )
    print()
    print(report)
    if not args.no_report:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(report)
        log(f"written to {output}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
