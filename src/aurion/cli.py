"""The ``aurion`` command: serve, db upgrade | purge-keys | distribute, token, seed, openapi."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from aurion.auth.principal import EVERY_SCOPE
from aurion.db.location import DatabaseLocation
from aurion.settings import Settings, get_settings


def _database_url(database: DatabaseLocation) -> str:
    url = database.url()
    if database.started is not None:
        # stderr: stdout carries only a command's result (PARENT=$(aurion seed) works).
        print(
            f"Started embedded PostgreSQL (data in {database.started.data_dir}).", file=sys.stderr
        )
    return url


def _stop_database(database: DatabaseLocation) -> None:
    if database.started is not None:
        database.stop_if_started()
        print("Stopped embedded PostgreSQL.", file=sys.stderr)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _serve(args: argparse.Namespace) -> int:
    from aurion.db.migrate import upgrade
    from aurion.serving import OPTIONS, serve

    settings = get_settings()
    database = DatabaseLocation(settings)
    url = _database_url(database)
    # Workers are separate processes: they find the database through the environment.
    os.environ["DATABASE_URL"] = url
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers share their metrics through files, so any worker's /metrics shows them all.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="aurion-metrics-")
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal: make that an
    # exit that runs the cleanup below (stopping the embedded server) instead of a hard kill.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        if args.migrate:
            upgrade(url)
            print("Database migrated to the latest revision.")
        if args.print_token and settings.jwt_secret:
            _print_demo(settings, url, args.workspace, f"http://{args.host}:{args.port}")
        serve(
            "aurion.app:create_app",
            host=args.host,
            port=args.port,
            workers=args.workers,
            **OPTIONS,
            log_config=None,
            proxy_headers=True,
            timeout_graceful_shutdown=args.graceful_timeout,
        )
    finally:
        _stop_database(database)
    return 0


def _print_demo(settings: Settings, url: str, workspace: str, base: str) -> None:
    """The docs URL, a token, and a command that creates a child of a new demo parent, which
    works as pasted (in another terminal, once the server is up)."""
    from aurion.auth.tokens import mint_token
    from aurion.demo import DEMO_CHILD_SUBJECT, seed_demo_parent

    token = mint_token(settings, workspace=workspace, subject="dev-user", scopes=EVERY_SCOPE)
    parent = asyncio.run(seed_demo_parent(settings, url, workspace))
    body = json.dumps({"subject": DEMO_CHILD_SUBJECT})
    print(f"\nDocs:  {base}/docs")
    print(f"Token (workspace {workspace!r}, 24 h, every scope):\n\n{token}\n")
    print(f"Demo parent conversation: {parent}")
    print("Create a child of it (in another terminal, once the server is up):\n")
    print(
        f"curl -X POST {base}/api/v2/conversations/{parent}/children "
        f'-H "Authorization: Bearer {token}" -H "Content-Type: application/json" '
        f"-d '{body}'\n"
    )


def _db_upgrade(args: argparse.Namespace) -> int:
    from aurion.db.migrate import upgrade

    upgrade(_database_url(DatabaseLocation(get_settings())), args.revision)
    print(f"Database upgraded to {args.revision}.")
    return 0


def _purge_keys(args: argparse.Namespace) -> int:
    from aurion.db.engine import create_engine
    from aurion.idempotency.service import purge_expired

    settings = get_settings()
    url = _database_url(DatabaseLocation(settings))

    async def run() -> int:
        engine = create_engine(settings, url)
        try:
            async with engine.connect() as conn:
                return await purge_expired(conn)
        finally:
            await engine.dispose()

    print(f"Purged {asyncio.run(run())} expired idempotency keys.")
    return 0


def _worker(args: argparse.Namespace) -> int:
    from aurion.observability import configure_logging
    from aurion.webhooks.delivery import Deliverer, delivery_engine

    settings = get_settings()
    configure_logging(settings.log_level, as_json=settings.logs_as_json)
    url = _database_url(DatabaseLocation(settings))

    async def run() -> None:
        deliverer = Deliverer(delivery_engine(settings, url), settings)
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(deliverer.run())
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass
        finally:
            await deliverer.engine.dispose()

    print("Delivering webhooks (SIGTERM or Ctrl-C stops).", flush=True)
    asyncio.run(run())
    return 0


def _distribute(args: argparse.Namespace) -> int:
    from aurion.db import distribution
    from aurion.db.engine import create_engine

    settings = get_settings()
    url = _database_url(DatabaseLocation(settings))

    async def run() -> list[distribution.Outcome]:
        engine = create_engine(settings, url)
        try:
            async with engine.connect() as conn:
                return await distribution.distribute(conn, args.shard_count)
        finally:
            await engine.dispose()

    try:
        outcomes = asyncio.run(run())
    except distribution.CitusMissing as exc:
        print(f"aurion db distribute: {exc}", file=sys.stderr)
        return 1
    for outcome in outcomes:
        if outcome.shard_count:
            how = f" (by {distribution.DISTRIBUTION_COLUMN}, {outcome.shard_count} shards)"
        else:
            how = " (copied to every node)" if "reference" in outcome.action else ""
        print(f"{outcome.table}: {outcome.action}{how}")
    print(
        f"Sessions named {distribution.APPLICATION_NAME!r} see shards in the catalogue "
        "(citus.show_shards_for_app_name_prefixes): fast connection set-up."
    )
    return 0


def _token(args: argparse.Namespace) -> int:
    from aurion.auth.tokens import mint_token

    print(
        mint_token(
            get_settings(),
            workspace=args.workspace,
            subject=args.sub,
            scopes=args.scope,
            ttl_seconds=args.ttl,
        )
    )
    return 0


def _seed(args: argparse.Namespace) -> int:
    from aurion.db.migrate import upgrade
    from aurion.demo import seed_demo_parent

    settings = get_settings()
    url = _database_url(DatabaseLocation(settings))
    upgrade(url)
    print(asyncio.run(seed_demo_parent(settings, url, args.workspace)))
    return 0


def _openapi(args: argparse.Namespace) -> int:
    from aurion.app import openapi_document

    target = Path(args.path)
    target.write_text(openapi_document(), encoding="utf-8")
    print(f"wrote {target}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aurion",
        description="Aurion Conversations API: helpdesk conversations and child conversations.\n"
        "Every command uses DATABASE_URL (postgresql://user:pass@host:5432/db); without it, an\n"
        "embedded PostgreSQL whose data lives under AURION_DATA_DIR (default .data/).\n"
        "Settings are AURION_* environment variables (README.md, Configuration).",
        epilog="examples:\n"
        "  aurion serve --migrate --print-token       # local: migrate, print a try-it command\n"
        "  aurion worker                              # deliver webhooks on its own\n"
        "  aurion db upgrade                          # once per deploy, before serving\n"
        "  aurion serve --host 0.0.0.0 --port 8000    # production (AURION_ENV=production)\n"
        "  TOKEN=$(aurion token --workspace demo --sub me)\n"
        "  PARENT=$(aurion seed --workspace demo)\n\n"
        "Run 'aurion COMMAND --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="Serve the API over HTTP (uvicorn).",
        description="Serve the API over HTTP with uvicorn: /api/v2/conversations..., the docs "
        "(/docs, /redoc, /openapi.json) and operations endpoints (/healthz, /readyz, /metrics). "
        "Logs go to stdout: readable lines in development, JSON lines in production "
        "(AURION_LOG_FORMAT). SIGTERM stops accepting connections and lets in-flight "
        "requests finish.",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="Interface to bind (default 127.0.0.1; 0.0.0.0 in a container).",
    )
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default 8000).")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="Worker processes (default 1). Each accepts connections on a socket of its own "
        "(SO_REUSEPORT, on Linux), so that connections spread over them, and has its own "
        "connection pool (AURION_DB_POOL_SIZE); /metrics on any of them reports the sum over "
        "all of them.",
    )
    serve.add_argument(
        "--migrate",
        action="store_true",
        help="Apply database migrations before serving (development; production runs "
        "'aurion db upgrade' once per deploy).",
    )
    serve.add_argument(
        "--print-token",
        action="store_true",
        help="Before serving, print the docs URL, a development bearer token, and a curl "
        "command that creates a child of a new demo parent (as 'aurion seed' makes).",
    )
    serve.add_argument(
        "--workspace", default="demo", help="Workspace of the printed token (default demo)."
    )
    serve.add_argument(
        "--graceful-timeout",
        type=int,
        default=20,
        metavar="SECONDS",
        help="Seconds in-flight requests get to finish on SIGTERM (default 20).",
    )
    serve.set_defaults(func=_serve)

    db = sub.add_parser(
        "db",
        help="Database commands: upgrade (migrations), purge-keys, distribute (Citus).",
        description="Database commands, against DATABASE_URL or the embedded PostgreSQL.",
    )
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    up = db_sub.add_parser(
        "upgrade",
        help="Apply migrations (Alembic) up to a revision.",
        description="Apply the migrations in migrations/ (Alembic) up to --revision. Safe to "
        "re-run: an up-to-date database is left alone. Run it once per deploy, before the new "
        "version serves (docker-compose.yml's migrate service does).",
    )
    up.add_argument(
        "--revision", default="head", help="Target Alembic revision (default head: the latest)."
    )
    up.set_defaults(func=_db_upgrade)
    purge = db_sub.add_parser(
        "purge-keys",
        help="Delete expired Idempotency-Key records (the service also does this hourly).",
    )
    purge.set_defaults(func=_purge_keys)
    distribute = db_sub.add_parser(
        "distribute",
        help="Distribute the tables by workspace on a Citus cluster (after db upgrade).",
        description="On a Citus coordinator (docs/scaling.md): distribute every table of the "
        "schema by workspace_id, all colocated, so each request is a single-shard transaction. "
        "Idempotent: tables already distributed are left alone, so run it after every "
        "'aurion db upgrade' (a new table gets distributed). Exits 1 with one line when the "
        "database has no Citus extension. Existing rows are copied into the shards; writes to "
        "a table wait while it is being distributed.",
    )
    distribute.add_argument(
        "--shard-count",
        type=int,
        default=32,
        metavar="N",
        help="Shards per table, fixed once for the colocation group (default 32; several "
        "times the number of worker cores leaves room to add nodes).",
    )
    distribute.set_defaults(func=_distribute)

    worker = sub.add_parser(
        "worker",
        help="Deliver webhooks (without serving HTTP).",
        description="Deliver events to webhooks until stopped: what every 'aurion serve' "
        "process also does unless AURION_WEBHOOK_DELIVERY=false. Run as many as you like; no "
        "attempt is sent twice.",
    )
    worker.set_defaults(func=_worker)

    token = sub.add_parser(
        "token",
        help="Mint an HS256 bearer token with AURION_JWT_SECRET.",
        description="Mint an HS256 bearer token signed with AURION_JWT_SECRET, for local use "
        "and tests; production tokens come from your identity provider. Prints only the "
        "token, so TOKEN=$(aurion token ...) works.",
    )
    token.add_argument(
        "--workspace", required=True, help="Workspace the token acts in (the workspace claim)."
    )
    token.add_argument(
        "--sub", required=True, help="Subject: the user or integration id (the sub claim)."
    )
    token.add_argument(
        "--scope",
        default=EVERY_SCOPE,
        help=f'Space-separated scopes (default: every scope, "{EVERY_SCOPE}").',
    )
    token.add_argument(
        "--ttl",
        type=int,
        default=24 * 3600,
        metavar="SECONDS",
        help="Lifetime in seconds (default 86400: 24 h).",
    )
    token.set_defaults(func=_token)

    seed = sub.add_parser(
        "seed",
        help="Create a demo parent conversation with messages; print its id.",
        description="Create a demo parent conversation (customer, team, SLA, tags, three "
        "messages) and print only its id, so PARENT=$(aurion seed) works. Applies the "
        "migrations first.",
    )
    seed.add_argument(
        "--workspace",
        default="demo",
        help="Workspace to create it in (default demo, as the token 'make run' prints).",
    )
    seed.set_defaults(func=_seed)

    openapi = sub.add_parser(
        "openapi",
        help="Write the OpenAPI document (openapi.json).",
        description="Write the OpenAPI document of the API, with settings at their defaults so "
        "the file is the same on every machine ('make openapi'; tests/test_openapi.py fails when "
        "the committed openapi.json drifts from the code). Needs no database.",
    )
    openapi.add_argument(
        "path", nargs="?", default="openapi.json", help="Where to write it (default openapi.json)."
    )
    openapi.set_defaults(func=_openapi)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a command-line tool reports, it does not dump a traceback
        if os.environ.get("AURION_DEBUG"):
            raise
        print(f"aurion: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
