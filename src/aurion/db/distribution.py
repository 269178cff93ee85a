"""Distribute the tables by workspace on a Citus cluster (``aurion db distribute``).

The list of tables comes from the SQLAlchemy metadata, so a table added by a later migration is
distributed the next time the command runs (it is idempotent: run it after every
``aurion db upgrade``). Every table with a ``workspace_id`` column is hash-distributed on it, all
in one colocation group, so a workspace's rows of every table live on the same shard and each
request is a single-shard transaction. A table without ``workspace_id`` would be shared by all
workspaces: it becomes a reference table (copied to every node); there is none today.

Two more things the service needs on Citus, also done here:

* ``aurion_delegate`` becomes a function distributed by its workspace argument, with
  ``force_delegation``: the service then runs each write statement on the worker that holds
  the workspace, in one hop (``aurion.db.delegation``).
* The schema's other functions (``aurion_refuse``, which the write statements call) are
  propagated to every node, so a statement that runs on a worker finds them.
* The database shows shards in the catalogue to sessions named ``aurion`` (the service's
  ``application_name``). By default Citus hides them by adding a filter to every query of
  ``pg_class``; asyncpg's type introspection, which each new connection runs, then took
  0.4-1.7 s instead of 5-25 ms on this cluster, and a burst on fresh connections ran into the
  pool timeout (503s).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from aurion.db.base import Base
from aurion.db.delegation import DELEGATED_SQL
from aurion.db.delegation import FUNCTION as DELEGATE_FUNCTION
from aurion.models import load_all_models

DISTRIBUTION_COLUMN = "workspace_id"

HAS_CITUS_SQL = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"

# citus_tables lists the tables Citus already manages, with how (distributed or reference).
DISTRIBUTED_SQL = """
SELECT table_name::text AS name, citus_table_type AS kind, distribution_column AS column_name,
       shard_count
FROM citus_tables
"""

# The first table fixes the shard count of the group; the others join its colocation group.
DISTRIBUTE_FIRST_SQL = (
    "SELECT create_distributed_table($1::regclass, $2, colocate_with => 'none', shard_count => $3)"
)
DISTRIBUTE_COLOCATED_SQL = (
    "SELECT create_distributed_table($1::regclass, $2, colocate_with => $3::text)"
)
REFERENCE_SQL = "SELECT create_reference_table($1::regclass)"

# Functions of the schema not yet propagated to the workers (an extension's are its own).
LOCAL_FUNCTIONS_SQL = """
SELECT p.oid::regprocedure::text FROM pg_proc p
WHERE p.pronamespace = 'public'::regnamespace
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
  AND NOT EXISTS (SELECT 1 FROM pg_dist_object o
                  WHERE o.classid = 'pg_proc'::regclass AND o.objid = p.oid)
ORDER BY 1
"""
DISTRIBUTE_FUNCTION_SQL = "SELECT create_distributed_function($1::regprocedure)"
# aurion_delegate (aurion.db.delegation): a call runs on the worker holding its workspace.
DELEGATE_SQL = (
    "SELECT create_distributed_function($1::regprocedure, 'workspace', "
    "colocate_with => $2::text, force_delegation => true)"
)

APPLICATION_NAME = "aurion"
SHOW_SHARDS_SQL = (
    "SELECT format('ALTER DATABASE %I SET citus.show_shards_for_app_name_prefixes = %L', "
    "current_database(), $1::text)"
)

MISSING_TABLES_SQL = "SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NULL"


class CitusMissing(RuntimeError):
    """The database has no Citus extension: nothing can be distributed."""


@dataclass(frozen=True, slots=True)
class Outcome:
    table: str
    action: str  # "distributed", "reference", "already distributed", "already reference"
    shard_count: int | None


def tables() -> list[Table]:
    """The application's tables, parents before the tables that reference them."""
    load_all_models()
    return list(Base.metadata.sorted_tables)


async def has_citus(conn: AsyncConnection) -> bool:
    return bool((await conn.exec_driver_sql(HAS_CITUS_SQL)).scalar_one())


async def distribute(conn: AsyncConnection, shard_count: int) -> list[Outcome]:
    """Distribute every table not yet distributed; commits after each table."""
    if not await has_citus(conn):
        raise CitusMissing(
            "this database has no Citus extension: install Citus on every node, run "
            "CREATE EXTENSION citus on each and add the workers (docs/scaling.md, section 4)"
        )
    names = [table.name for table in tables()]
    missing = (await conn.exec_driver_sql(MISSING_TABLES_SQL, (names,))).scalars().all()
    if missing:
        raise RuntimeError(
            f"no table {', '.join(missing)} in this database: run 'aurion db upgrade' first"
        )
    known = {row.name: row for row in (await conn.exec_driver_sql(DISTRIBUTED_SQL)).all()}
    await conn.commit()
    outcomes: list[Outcome] = []
    anchor: str | None = None
    for table in tables():
        name = table.name
        existing = known.get(name)
        distributed = DISTRIBUTION_COLUMN in table.columns
        if existing is not None:
            if existing.kind == "distributed" and existing.column_name != DISTRIBUTION_COLUMN:
                raise RuntimeError(
                    f"{name} is distributed by {existing.column_name}, not {DISTRIBUTION_COLUMN}"
                )
            outcomes.append(Outcome(name, f"already {existing.kind}", existing.shard_count))
            if distributed and anchor is None:
                anchor, shard_count = name, int(existing.shard_count)
            continue
        if not distributed:
            await conn.exec_driver_sql(REFERENCE_SQL, (name,))
            action = "reference"
        elif anchor is None:
            await conn.exec_driver_sql(
                DISTRIBUTE_FIRST_SQL, (name, DISTRIBUTION_COLUMN, shard_count)
            )
            anchor, action = name, "distributed"
        else:
            await conn.exec_driver_sql(
                DISTRIBUTE_COLOCATED_SQL, (name, DISTRIBUTION_COLUMN, anchor)
            )
            action = "distributed"
        await conn.commit()
        outcomes.append(Outcome(name, action, None if action == "reference" else shard_count))
    if not (await conn.exec_driver_sql(DELEGATED_SQL)).scalar_one():
        await conn.exec_driver_sql(DELEGATE_SQL, (DELEGATE_FUNCTION, anchor))
        await conn.commit()
        outcomes.append(
            Outcome(DELEGATE_FUNCTION, "function delegated to the worker of its workspace", None)
        )
    functions = (await conn.exec_driver_sql(LOCAL_FUNCTIONS_SQL)).scalars().all()
    for function in functions:
        await conn.exec_driver_sql(DISTRIBUTE_FUNCTION_SQL, (function,))
        await conn.commit()
        outcomes.append(Outcome(function, "function propagated to every node", None))
    alter = (await conn.exec_driver_sql(SHOW_SHARDS_SQL, (APPLICATION_NAME,))).scalar_one()
    await conn.exec_driver_sql(alter)
    await conn.commit()
    return outcomes
