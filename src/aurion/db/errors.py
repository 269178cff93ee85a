"""What a database failure means: "unavailable, retry shortly" or a bug.

The error handlers (``aurion.errors``) register ``DATABASE_EXCEPTIONS`` and ask
``is_database_unavailable``; nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncpg
from sqlalchemy import exc as sa_exc

# SQLSTATE classes that mean "the database cannot serve us right now", not "the query is wrong":
# 08 connection exception, 53 insufficient resources, 57 operator intervention (restart,
# pg_terminate_backend, statement timeout), 40 transaction rollback (deadlock, serialization).
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57", "40")
# A lock wait that outlasted lock_timeout: the row is too busy right now.
LOCK_NOT_AVAILABLE = "55P03"
# Driver errors without a SQLSTATE that mean the connection is gone.
_BROKEN_CONNECTION_ERRORS = {"ConnectionDoesNotExistError", "InterfaceError", "InternalClientError"}

# What a database failure can be raised as: SQLAlchemy's errors (engine, pool), asyncpg's own
# (statements run on the driver connection, aurion.db.driver), and the OS's (connect).
DATABASE_EXCEPTIONS: tuple[type[Exception], ...] = (
    sa_exc.DBAPIError,
    sa_exc.TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps (SQLAlchemy's ``orig``, causes, contexts), outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return chain


def sqlstate_of(exc: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE behind ``exc``, if any."""
    for item in _causes(exc):
        sqlstate = getattr(item, "sqlstate", None) or getattr(item, "pgcode", None)
        if isinstance(sqlstate, str):
            return sqlstate
    return None


def is_database_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps) says the database is down, busy or unreachable."""
    for item in _causes(exc):
        if isinstance(item, sa_exc.TimeoutError | TimeoutError | ConnectionError | OSError):
            return True
        if isinstance(item, sa_exc.DBAPIError) and item.connection_invalidated:
            return True
        if type(item).__name__ in _BROKEN_CONNECTION_ERRORS:
            return True
    sqlstate = sqlstate_of(exc)
    return sqlstate is not None and (
        sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES or sqlstate == LOCK_NOT_AVAILABLE
    )
