"""The request path's database handle: statements on the driver connection of a pooled one.

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
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection

# What ``aurion_refuse(code, detail)`` raises (migration 0003): a statement refusing the request.
REFUSED_SQLSTATE = "AUR01"
_PLACEHOLDER = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


class Statement:
    """SQL with ``:name`` placeholders, compiled once into asyncpg's ``$n`` form.

    Names make statements composable from fragments (the idempotency claim, the rendering of
    the public object) without renumbering positional parameters by hand.
    """

    __slots__ = ("names", "sql")

    def __init__(self, sql: str) -> None:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"

        self.sql = _PLACEHOLDER.sub(number, sql)
        self.names = tuple(names)

    def args(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(values[name] for name in self.names)


class Refused(Exception):
    """A statement refused its request (and rolled back): ``code``, and a ``detail`` value."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail


class Db:
    """One request's connection. Statements commit on their own unless in ``transaction()``."""

    __slots__ = ("connection", "_wrap")

    def __init__(self, connection: asyncpg.Connection, *, pgbouncer: bool = False) -> None:
        self.connection = connection
        self._wrap = pgbouncer

    async def fetchrow(
        self, statement: Statement, values: Mapping[str, Any]
    ) -> asyncpg.Record | None:
        rows = await self.fetch(statement, values)
        return rows[0] if rows else None

    async def fetch(self, statement: Statement, values: Mapping[str, Any]) -> list[asyncpg.Record]:
        """The statement's rows; ``Refused`` if it called ``aurion_refuse``."""
        args = statement.args(values)
        try:
            if self._wrap and not self.connection.is_in_transaction():
                async with self.connection.transaction():
                    return list(await self.connection.fetch(statement.sql, *args))
            return list(await self.connection.fetch(statement.sql, *args))
        except asyncpg.PostgresError as exc:
            if exc.sqlstate == REFUSED_SQLSTATE:
                raise Refused(exc.message, exc.detail or "") from None
            raise

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """Several statements as one transaction: committed at the end, rolled back on error."""
        async with self.connection.transaction():
            yield


@asynccontextmanager
async def driver_of(conn: AsyncConnection, *, pgbouncer: bool) -> AsyncIterator[Db]:
    """The driver connection under ``conn``, invalidated in the pool if it broke in use."""
    fairy = await conn.get_raw_connection()
    driver: asyncpg.Connection = fairy.driver_connection
    try:
        yield Db(driver, pgbouncer=pgbouncer)
    finally:
        if driver.is_closed():
            await conn.invalidate()


async def get_db(request: Request) -> AsyncIterator[Db]:
    """The request's database handle (FastAPI dependency), queued fairly for the pool."""
    state = request.app.state
    async with state.connection_queue.connect() as conn:
        async with driver_of(conn, pgbouncer=state.settings.db_pgbouncer) as db:
            yield db


DbDep = Annotated[Db, Depends(get_db)]
