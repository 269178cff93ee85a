"""On Citus, each statement of a workspace runs on the worker that holds it, in one hop.

Citus 14 routes a statement to the single shard it touches, except one whose CTEs insert ("only
SELECT, UPDATE, or DELETE common table expressions may be router planned"): every write of the
API is such a statement (the key, the child, the activities, the event, the response), so the
coordinator ran it as several sub-plans, each a round trip to the worker, while the parent's
row lock was held there: 39 ms a child, and a burst on one parent queued into 503s.

So on a cluster where ``aurion db distribute`` has made ``aurion_delegate`` (migration 0006) a
distributed function, by workspace and with ``force_delegation``, the request path sends each
statement of one workspace (one with a ``:workspace_id`` parameter) as a call of it:

    SELECT <the statement's columns, read back from JSON>, error_code, ...
    FROM aurion_delegate(workspace, lock_timeout_ms, tables, statement, args)

* The coordinator passes the whole query to the worker holding the workspace's shards.
* There the statement, the same SQL as on plain PostgreSQL, runs on that worker's shards of
  the tables it names (written ``"@table"`` here; the function puts the shard's name in): as
  plain PostgreSQL, one snapshot, one transaction, and its plan prepared once per session.
* Its parameters travel as text (``($1[n])::type``, the types PostgreSQL infers for the
  statement), its rows as JSON cast back to their types in the select list: both learnt once
  per process and statement from a description of it (``Db.probe`` at start-up).
* An error of the statement (a refusal) comes back as a row, and is raised here as the error
  it was; one that crossed from the worker would cost the next statement a new connection.

Reads go the same way, though Citus would route them as they are: on the worker their plans
are cached too (a GET, sequentially: 2.2 ms through the coordinator's router planner, 1.6 ms
delegated; the children list 3.5 and 1.9 ms). Statements across workspaces (the webhook
delivery loop's, the purge of expired keys) are sent as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg

if TYPE_CHECKING:
    from aurion.db.driver import Statement

FUNCTION = "aurion_delegate(text,integer,text[],text,text[])"
HAS_CITUS_SQL = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"
# Whether `aurion db distribute` has made the function delegated, by its first argument.
DELEGATED_SQL = f"""
SELECT EXISTS (
    SELECT 1 FROM pg_dist_object
    WHERE classid = 'pg_proc'::regclass AND objid = to_regprocedure('{FUNCTION}')
      AND distribution_argument_index = 0 AND force_delegation
)
"""
TYPE_NAMES_SQL = (
    "SELECT format_type(t, NULL) FROM unnest($1::oid[]) WITH ORDINALITY AS u(t, n) ORDER BY n"
)
CALL_SQL = (
    "SELECT {columns}, error_code, error_message, error_detail, error_context "
    "FROM aurion_delegate($1, $2, $3, $4, $5)"
)
# Where a statement names a table (or a CTE, or a function: the database tells them apart).
TABLE_REFERENCE = re.compile(r"\b(FROM|JOIN|INTO|UPDATE)(\s+)([a-z_][a-z0-9_]*)\b", re.IGNORECASE)
_CTE_NAME = re.compile(r"\b([a-z_][a-z0-9_]*)\s+AS\s+(?:(?:NOT\s+)?MATERIALIZED\s+)?\(", re.I)
_NEXT_WORD = re.compile(r"\s+([a-z_][a-z0-9_]*)", re.IGNORECASE)
# Words that may follow a table's name when it has no alias.
_NOT_AN_ALIAS = frozenset(
    "WHERE SET ON USING JOIN LEFT RIGHT INNER FULL CROSS NATURAL ORDER GROUP HAVING LIMIT "
    "OFFSET FETCH FOR RETURNING VALUES SELECT DEFAULT OVERRIDING UNION EXCEPT INTERSECT WINDOW "
    "AND OR WITH TABLESAMPLE".split()
)
DISTRIBUTED_TABLES_SQL = """
SELECT t FROM unnest($1::text[]) AS t
WHERE EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = to_regclass(t))
"""


async def delegation_for(connection: asyncpg.Connection, lock_timeout_ms: int) -> Delegation | None:
    """A ``Delegation`` on a Citus cluster whose ``aurion_delegate`` is delegated by workspace;
    None elsewhere (plain PostgreSQL: statements go as they are)."""
    if not await connection.fetchval(HAS_CITUS_SQL):
        return None
    if not await connection.fetchval(DELEGATED_SQL):
        return None
    return Delegation(lock_timeout_ms)


@dataclass(frozen=True, slots=True)
class _Form:
    call: str  # the call, the statement's columns read from the JSON rows
    tables: list[str]  # the distributed tables the statement names
    inner: str  # the statement: its tables as "@name", its parameters read from $1 (text[])


class Delegation:
    """Sends statements through ``aurion_delegate``; one per process (its forms are cached)."""

    def __init__(self, lock_timeout_ms: int) -> None:
        self.lock_timeout_ms = lock_timeout_ms
        self._forms: dict[Statement, _Form] = {}

    async def describe(self, connection: asyncpg.Connection, statement: Statement) -> _Form:
        """How ``statement`` is sent: learnt from its description (once per process)."""
        form = self._forms[statement] = await _describe(connection, statement)
        return form

    async def fetch(
        self, connection: asyncpg.Connection, statement: Statement, values: Mapping[str, Any]
    ) -> list[asyncpg.Record]:
        """The rows of ``statement``, run on its workspace's worker; its error, raised here."""
        form = self._forms.get(statement) or await self.describe(connection, statement)
        args = [_as_text(value) for value in statement.args(values)]
        rows: list[asyncpg.Record] = await connection.fetch(
            form.call, values["workspace_id"], self.lock_timeout_ms, form.tables, form.inner, args
        )
        if rows and rows[0]["error_code"] is not None:
            error = rows[0]
            raise asyncpg.PostgresError.new(
                {
                    "C": error["error_code"],
                    "M": error["error_message"],
                    "D": error["error_detail"] or "",
                    "W": error["error_context"] or "",
                },
                query=statement.sql,
            )
        return rows


async def _describe(connection: asyncpg.Connection, statement: Statement) -> _Form:
    prepared = await connection.prepare(statement.sql)
    parameters = [t.oid for t in prepared.get_parameters()]
    attributes = prepared.get_attributes()
    names = await connection.fetch(TYPE_NAMES_SQL, parameters + [a.type.oid for a in attributes])
    types = [row[0] for row in names]
    columns = ", ".join(
        _column(a.name, type_name)
        for a, type_name in zip(attributes, types[len(parameters) :], strict=True)
    )
    inner = statement.render(lambda n: f"($1[{n}])::{types[n - 1]}")
    named = sorted({match.group(3) for match in TABLE_REFERENCE.finditer(inner)})
    tables = [row[0] for row in await connection.fetch(DISTRIBUTED_TABLES_SQL, named)]
    shadowed = {m.group(1) for m in _CTE_NAME.finditer(inner)} & set(tables)
    if shadowed:  # "FROM name" would be ambiguous here: the CTE, or the table's shard?
        raise ValueError(f"a CTE of the statement is named like the table {shadowed.pop()}")

    def shard(match: re.Match[str]) -> str:
        keyword, space, table = match.groups()
        if table not in tables:
            return match.group(0)
        following = _NEXT_WORD.match(inner, match.end())
        word = following.group(1).upper() if following else ""
        # Without an alias of its own, the shard keeps the table's name for the statement.
        alias = "" if word == "AS" or (word and word not in _NOT_AN_ALIAS) else f" AS {table}"
        return f'{keyword}{space}"@{table}"{alias}'

    inner = TABLE_REFERENCE.sub(shard, inner)
    return _Form(call=CALL_SQL.format(columns=columns), tables=tables, inner=inner)


def _column(name: str, type_name: str) -> str:
    """The select-list entry that reads column ``name`` back from the row's JSON."""
    quoted = '"' + name.replace('"', '""') + '"'
    literal = "'" + name.replace("'", "''") + "'"
    if type_name == "json":  # the value's own text, as PostgreSQL rendered it
        return f"result_row -> {literal} AS {quoted}"
    if type_name.endswith("]"):
        raise TypeError(f"column {name}: an array does not come back from JSON by a cast")
    # The scalar's JSON text is its text form (bytea as \x hex, times in ISO 8601).
    return f"(result_row ->> {literal})::{type_name} AS {quoted}"


def _as_text(value: Any) -> str | None:
    """A parameter in PostgreSQL's text form (cast back to its type by the statement)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, UUID)):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return "{" + ",".join(_array_element(item) for item in value) + "}"
    raise TypeError(f"no text form for a {type(value).__name__} parameter")


def _array_element(value: Any) -> str:
    text = _as_text(value)
    if text is None:
        return "NULL"
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
