"""The request path's database: statements on driver connections of SQLAlchemy's pool.

SQLAlchemy stays the engine and the pool (limits, timeouts, PgBouncer setup, invalidation);
a request borrows one of its connections and runs its statements on the asyncpg connection
underneath. Each write of the API is a single statement, and a single statement outside a
transaction block is a transaction of its own: one round trip, committed or rolled back as a
whole, with no BEGIN or COMMIT to send. Operations that need several statements open a
transaction explicitly (``Db.transaction``).

Behind PgBouncer (transaction pooling), asyncpg runs each statement as an unnamed prepared
statement in two round trips (prepare, then execute), which must reach the same server
connection: there every statement is wrapped in an explicit transaction.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Annotated, Any
from weakref import WeakSet

import asyncpg
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from aurion.db.delegation import Delegation, delegation_for
from aurion.db.engine import ConnectionQueue

# What ``aurion_refuse(code, detail)`` raises (migration 0003): a statement refusing the request.
REFUSED_SQLSTATE = "AUR01"
# Every statement that a Citus cluster runs through aurion_delegate: described at start-up.
DELEGABLE: WeakSet[Statement] = WeakSet()
_PLACEHOLDER = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


class Statement:
    """SQL with ``:name`` placeholders, compiled once into asyncpg's ``$n`` form.

    Names make statements composable from fragments (the idempotency claim, the rendering of
    the public object) without renumbering positional parameters by hand.
    """

    __slots__ = ("__weakref__", "delegable", "names", "sql", "template")

    def __init__(self, sql: str) -> None:
        self.template = sql
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"

        self.sql = _PLACEHOLDER.sub(number, sql)
        self.names = tuple(names)
        # A statement of one workspace: on Citus, sent through aurion_delegate to its worker.
        self.delegable = "workspace_id" in self.names
        if self.delegable:
            DELEGABLE.add(self)

    def render(self, placeholder: Callable[[int], str]) -> str:
        """The SQL with parameter ``n`` (1-based, as in ``sql``) written as ``placeholder(n)``."""
        return _PLACEHOLDER.sub(
            lambda match: placeholder(self.names.index(match.group(1)) + 1), self.template
        )

    def args(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(values[name] for name in self.names)


class Refused(Exception):
    """A statement refused its request (and rolled back): ``code``, and a ``detail`` value."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail


async def _fetch(
    connection: asyncpg.Connection,
    statement: Statement,
    values: Mapping[str, Any],
    delegation: Delegation | None,
) -> list[asyncpg.Record]:
    if delegation is not None and statement.delegable:
        return await delegation.fetch(connection, statement, values)
    return list(await connection.fetch(statement.sql, *statement.args(values)))


async def _run(
    connection: asyncpg.Connection,
    statement: Statement,
    values: Mapping[str, Any],
    wrap: bool,
    delegation: Delegation | None = None,
) -> list[asyncpg.Record]:
    try:
        if wrap and not connection.is_in_transaction():
            async with connection.transaction():
                return await _fetch(connection, statement, values, delegation)
        return await _fetch(connection, statement, values, delegation)
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == REFUSED_SQLSTATE:
            raise Refused(exc.message, exc.detail or "") from None
        raise


class Db:
    """Where the request path runs its statements.

    Each statement borrows a connection from the pool for itself and commits on its own (a
    single statement is a transaction): no connection is held while a request parses, checks
    or sends, and no BEGIN/COMMIT round trips. Statements inside ``transaction()`` share one
    connection and commit together. (``Db(connection=...)`` runs on a given connection.)
    """

    def __init__(
        self,
        *,
        queue: ConnectionQueue | None = None,
        connection: asyncpg.Connection | None = None,
        pgbouncer: bool = False,
        lock_timeout_ms: int | None = None,
        delegation: Delegation | None = None,
    ) -> None:
        self._queue = queue
        self._connection = connection
        self._wrap = pgbouncer
        self._bound: ContextVar[asyncpg.Connection | None] = ContextVar("bound", default=None)
        # Whether statements go through aurion_delegate (Citus): given, or learnt by ``probe``
        # (the application's start-up) or else on the first statement.
        self._lock_timeout_ms = lock_timeout_ms
        self._delegation = delegation
        self._probed = lock_timeout_ms is None

    async def probe(self) -> None:
        """Learn whether writes go through ``aurion_delegate`` (a Citus cluster), now rather
        than on the first statement (the application's start-up does)."""
        if self._probed:
            return
        assert self._queue is not None
        async with self._queue.driver() as connection:
            await self._probe(connection)

    async def _probe(self, connection: asyncpg.Connection) -> None:
        assert self._lock_timeout_ms is not None
        delegation = await delegation_for(connection, self._lock_timeout_ms)
        if delegation is not None:
            # Each statement's form for the call, learnt now: a request sends one statement.
            for statement in list(DELEGABLE):
                await delegation.describe(connection, statement)
        self._delegation = delegation
        self._probed = True

    async def fetchrow(
        self, statement: Statement, values: Mapping[str, Any]
    ) -> asyncpg.Record | None:
        rows = await self.fetch(statement, values)
        return rows[0] if rows else None

    async def fetch(self, statement: Statement, values: Mapping[str, Any]) -> list[asyncpg.Record]:
        """The statement's rows; ``Refused`` if it called ``aurion_refuse``."""
        connection = self._connection or self._bound.get()
        if connection is not None:
            if not self._probed:
                await self._probe(connection)
            return await _run(connection, statement, values, self._wrap, self._delegation)
        assert self._queue is not None
        async with self._queue.driver() as borrowed:
            if not self._probed:
                await self._probe(borrowed)
            return await _run(borrowed, statement, values, self._wrap, self._delegation)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """Several statements as one transaction: committed at the end, rolled back on error."""
        if self._connection is not None:
            async with self._connection.transaction():
                yield
            return
        assert self._queue is not None
        async with self._queue.driver() as connection, connection.transaction():
            token = self._bound.set(connection)
            try:
                yield
            finally:
                self._bound.reset(token)


@asynccontextmanager
async def driver_of(
    conn: AsyncConnection, *, pgbouncer: bool, delegation: Delegation | None = None
) -> AsyncIterator[Db]:
    """A ``Db`` on the driver connection under ``conn`` (invalidated if it broke in use)."""
    fairy = await conn.get_raw_connection()
    driver: asyncpg.Connection = fairy.driver_connection
    try:
        yield Db(connection=driver, pgbouncer=pgbouncer, delegation=delegation)
    finally:
        if driver.is_closed():
            await conn.invalidate()


async def get_db(request: Request) -> Db:
    """The application's ``Db`` (FastAPI dependency; not a generator: FastAPI's machinery
    for those cost about 150 µs of CPU per request, profiled)."""
    db: Db = request.app.state.db
    return db


DbDep = Annotated[Db, Depends(get_db)]
