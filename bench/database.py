"""The benchmark's database: a fresh one per run, and the rows it measures on.

Parents as a helpdesk has them (a customer, a team, an agent, tags, custom attributes, SLA
dates: all of which a child copies), messages on them, and the large data set (1,000,000
conversations and as many activities) of the data-size scenario. Seeding is direct SQL; the
measured requests only ever use the public API.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from aurion.db.embedded import EmbeddedPostgres
from aurion.db.migrate import upgrade
from bench.common import ROOT, WORKSPACE


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

MESSAGES_TO_COPY_SQL = """
SELECT p.id, (SELECT array_agg(m.id ORDER BY m.created_at, m.id) FROM (
                  SELECT id, created_at FROM messages
                  WHERE workspace_id = $1 AND conversation_id = p.id
                  ORDER BY created_at, id LIMIT $3) m)
FROM bench_parents p
WHERE p.run = $2
ORDER BY p.n
"""

# The service keeps counters on the conversation row; seeding keeps them exact too.
MESSAGE_COUNTERS_SQL = """
UPDATE conversations c SET n_messages = c.n_messages + $3
FROM bench_parents p
WHERE p.run = $2 AND c.workspace_id = $1 AND c.id = p.id
"""

# 1,000,000 conversations in one statement: 10 % top-level, each with 9 children, so the
# parent_id index is as full as the primary key; plus one activity per conversation.
LARGE_CONVERSATIONS_SQL = """
INSERT INTO conversations (
    workspace_id, id, parent_id, subject, status, priority, channel, source, company_id,
    company_name, contact_id, contact_name, contact_email, tags, custom_attrs, version,
    created_at, updated_at, n_activities)
SELECT $1, md5('large-' || g)::uuid,
       CASE WHEN g > $2 / 10 THEN md5('large-' || (g % ($2 / 10) + 1))::uuid END,
       'Conversation ' || g, (ARRAY['new', 'open', 'pending', 'resolved', 'closed'])[g % 5 + 1],
       (ARRAY['low', 'medium', 'high', 'urgent'])[g % 4 + 1], 'email', 'email',
       'comp_' || g % 1000, 'Company ' || g % 1000, 'contact_' || g % 50000,
       'Contact ' || g % 50000, 'c' || g || '@example.com', ARRAY['tag' || g % 20],
       jsonb_build_object('n', g), 1 + g % 3, now() - make_interval(secs => g), now(), 1
FROM generate_series(1, $2) g
"""

# Every parent's children counters, recounted (the yardstick does not keep them).
CHILDREN_COUNTERS_SQL = """
UPDATE conversations c SET n_children = k.n, n_open_children = k.open
FROM (
    SELECT parent_id, count(*) AS n,
           count(*) FILTER (WHERE status NOT IN ('resolved', 'closed')) AS open
    FROM conversations
    WHERE workspace_id = $1 AND parent_id IS NOT NULL AND deleted_at IS NULL
    GROUP BY parent_id
) k
WHERE c.workspace_id = $1 AND c.id = k.parent_id
"""

LARGE_ACTIVITIES_SQL = """
INSERT INTO activities (workspace_id, id, conversation_id, kind, actor, payload, created_at)
SELECT $1, {uuid}(), md5('large-' || g)::uuid, 'created', 'import', '{{}}', now()
FROM generate_series(1, $2) g
"""


class Database:
    """A database of the benchmark's own (fresh every run) in the embedded cluster under
    .data/bench-postgres, with the schema built by the migrations."""

    def __init__(self, name: str = "aurion_bench") -> None:
        self.name = name
        self.cluster = EmbeddedPostgres(ROOT / ".data" / "bench-postgres")
        self.started_here = False
        self.url = ""
        self.uuid_function = "gen_random_uuid"
        self.server_version = ""

    def start(self) -> None:
        self.started_here = not self.cluster.is_running()
        self.cluster.start("postgres")
        # A fresh database every run: no run inherits another's rows.
        self.cluster.drop_database(self.name)
        self.cluster.create_database(self.name)
        self.url = self.cluster.url(self.name)
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
        run_sql(self.url, MESSAGE_COUNTERS_SQL, args=(WORKSPACE, run, per_parent))

    def messages_to_copy(self, run: str, count: int) -> list[str]:
        """The parents of ``run``, each as "ID M1,M2,...": the ids of its ``count`` oldest
        messages, for the split scenario to copy (bench/wrk_requests.lua)."""
        rows = run_sql(self.url, MESSAGES_TO_COPY_SQL, args=(WORKSPACE, run, count))
        return [f"{r[0]} {','.join(str(m) for m in r[1])}" for r in rows]

    def load_large(self, conversations: int) -> None:
        run_sql(self.url, LARGE_CONVERSATIONS_SQL, args=(WORKSPACE, conversations))
        sql = LARGE_ACTIVITIES_SQL.format(uuid=self.uuid_function)
        run_sql(self.url, sql, args=(WORKSPACE, conversations))
        run_sql(self.url, CHILDREN_COUNTERS_SQL, args=(WORKSPACE,))

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
