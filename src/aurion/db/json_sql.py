"""SQL fragments that render API objects as JSON inside PostgreSQL.

A response rendered by the statement that wrote it is serialised once, can be stored with an
Idempotency-Key in that same statement, and is sent as the very bytes PostgreSQL produced (a
replay returns them again). Which fields an object has comes from its read schema, by
inclusion: ``json_object_sql`` is given the schema's fields, never "all columns".
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel
from sqlalchemy import DateTime, FromClause

# json_build_object takes at most 100 arguments (50 pairs); a larger object is the row_to_json of
# a one-row subselect. Both build json text in the given key order; jsonb_build_object would
# also sort and convert every value, which costs PostgreSQL several times more CPU per object.
_PAIRS_PER_CALL = 50


def utc_timestamp_sql(expr: str) -> str:
    """A timestamptz as the API writes times: ISO 8601 UTC to the second, ``...T14:15:22Z``."""
    return f"""to_char({expr} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""


def json_object_sql(pairs: Mapping[str, str]) -> str:
    """A json object of ``key: SQL expression`` pairs, in this order, of any size."""
    if len(pairs) <= _PAIRS_PER_CALL:
        return "json_build_object(" + ", ".join(f"'{k}', {v}" for k, v in pairs.items()) + ")"
    columns = ", ".join(f'{v} AS "{k}"' for k, v in pairs.items())
    return f"(SELECT row_to_json(o) FROM (SELECT {columns}) AS o)"


def schema_fields_sql(
    schema: type[BaseModel], table: FromClause, alias: str, computed: Mapping[str, str]
) -> dict[str, str]:
    """Each field of ``schema`` as SQL: ``computed[name]`` if given, else the column of that
    name (times formatted as the API writes them). A field that is neither is a bug, caught
    when the module that asks is imported."""
    pairs: dict[str, str] = {}
    for name in schema.model_fields:
        if name in computed:
            pairs[name] = computed[name]
            continue
        column = table.c.get(name)
        if column is None:
            raise LookupError(f"{schema.__name__}.{name} is neither a column nor computed")
        expr = f"{alias}.{name}"
        pairs[name] = utc_timestamp_sql(expr) if isinstance(column.type, DateTime) else expr
    return pairs
