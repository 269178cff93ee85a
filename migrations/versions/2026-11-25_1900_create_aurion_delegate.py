"""aurion_delegate(): a write statement run where its workspace lives (Citus)

On plain PostgreSQL the function exists and is not used. On a Citus cluster, ``aurion db
distribute`` makes it a distributed function, by its first argument (the workspace) and with
``force_delegation``: a call is passed by the coordinator to the worker that holds the
workspace's shards, and runs there as one local transaction. The service then sends each write
statement (one with an INSERT in its CTEs, which Citus 14 would not route to one shard) through
it: ``aurion.db.delegation``.

``statement`` names each table it reads or writes as ``"@table"``: that is replaced by the
workspace's shard of the table, which is on this node, so the statement runs as plain
PostgreSQL on local tables, as it would without Citus. (Citus itself would run a statement
with an INSERT in a CTE as sub-plans whose results it ships to every node, in a two-phase
commit: 35 ms a child, measured.) It refers to its arguments as ``$1[n]`` (text, cast back to
the parameter's type), so one function serves every statement; its rows come back as JSON
(the caller casts each column back).

An error (a refusal by ``aurion_refuse`` above all) is caught, its statement rolled back, and
returned as a row (``error_code``, ``error_message``, ``error_detail``, ``error_context``) for
the service to raise: an error that crossed from the worker would make Citus close its
connection to the worker, and the next statement pay for a new one (about 40 ms, measured).
``lock_timeout`` is set here because Citus does not pass the coordinator's on to the worker.

Each statement is prepared in the worker's session (per statement and shard; at most 64, then
they are all deallocated): planning the longest statements, about 16 KiB of SQL, took most of
the time of a call otherwise (a child creation: 6.9 ms a call, 2.7 ms prepared, measured).

Revision ID: 0006_delegate
Revises: 0005_webhooks
Create Date: 2026-11-25 19:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006_delegate"
down_revision: str | None = "0005_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DELEGATE_FUNCTION = """
CREATE OR REPLACE FUNCTION aurion_delegate(
    workspace text, lock_timeout_ms integer, tables text[], statement text, args text[]
) RETURNS TABLE (
    error_code text, error_message text, error_detail text, error_context text, result_row json
)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    max_prepared constant integer := 64;
    result record;
    results json[] := '{}';
    t text;
    shard text;
    prepared text;
BEGIN
    PERFORM set_config('lock_timeout', lock_timeout_ms::text, true);
    FOREACH t IN ARRAY tables LOOP
        shard := shard_name(t::regclass, get_shard_id_for_distribution_column(t, workspace));
        IF to_regclass(shard) IS NULL THEN  -- not delegated after all: not on this node
            shard := quote_ident(t);
        END IF;
        statement := replace(statement, format('"@%s"', t), shard);
    END LOOP;
    -- Planned once per session, statement and shard; a bounded number of them.
    prepared := 'aurion_' || md5(statement);
    IF NOT EXISTS (SELECT 1 FROM pg_prepared_statements WHERE name = prepared) THEN
        IF (SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'aurion\\_%')
                >= max_prepared THEN
            FOR t IN SELECT name FROM pg_prepared_statements WHERE name LIKE 'aurion\\_%' LOOP
                EXECUTE format('DEALLOCATE %I', t);
            END LOOP;
        END IF;
        EXECUTE format('PREPARE %I(text[]) AS %s', prepared, statement);
    END IF;
    BEGIN
        FOR result IN EXECUTE format('EXECUTE %I(%L)', prepared, args) LOOP
            results := results || row_to_json(result);
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS error_code = RETURNED_SQLSTATE, error_message = MESSAGE_TEXT,
            error_detail = PG_EXCEPTION_DETAIL, error_context = PG_EXCEPTION_CONTEXT;
        RETURN NEXT;
        RETURN;
    END;
    RETURN QUERY SELECT NULL::text, NULL::text, NULL::text, NULL::text, r FROM unnest(results) AS r;
END
$$
"""


def upgrade() -> None:
    op.execute(DELEGATE_FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS aurion_delegate(text, integer, text[], text, text[])")
