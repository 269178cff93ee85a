"""Child creation: one child, a batch, plain or rich, with or without an Idempotency-Key —
one statement each (see the package docstring)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from aurion.conversations.rendering import (
    RESOLVED,
    message_json_sql,
    rendered_cte,
    rendered_from,
    rendering_sql,
)
from aurion.conversations.repository.columns import (
    CONVERSATIONS,
    INHERITED_COLUMNS,
    LOCATION_PREFIX,
    MESSAGE_COLUMNS,
    MESSAGES,
    sql_type,
)
from aurion.db.driver import Db, Statement
from aurion.events.repository import event_cte
from aurion.idempotency.repository import CLAIM_CTE, UNCLAIMED_CTE, response_cte

# ------------------------------------------------------------------ child creation

# What a new message of a child is made of (a first message, or a copy of a parent's message).
NEW_MESSAGE_COLUMNS = tuple(c for c in MESSAGE_COLUMNS if c != "id")

# The CTE ``items`` has one row per child to create, with these columns: its number in the
# request (1, 2, ...), its ids, its subject, the names of the inherited columns it overrides
# and their values (``o_<column>``), its first message (``m_<column>``, all null for none), the
# parent's messages it copies, the ids of its new messages (copies first, in the parent's
# order, then the first message), of its two activities and of its event.
ITEM_COLUMNS: dict[str, str] = {
    "n": "integer",
    "child_id": "uuid",
    "subject": "text",
    "overridden": "text[]",
    **{f"o_{c}": sql_type(CONVERSATIONS, c) for c in INHERITED_COLUMNS},
    **{f"m_{c}": sql_type(MESSAGES, c) for c in NEW_MESSAGE_COLUMNS},
    "copy_ids": "uuid[]",
    "message_ids": "uuid[]",
    "activity_ids": "uuid[]",
    "event_id": "uuid",
}
_JSONB_ITEM_COLUMNS = frozenset(k for k, t in ITEM_COLUMNS.items() if t == "JSONB")

# A child with nothing but a subject needs none of the columns that describe what differs
# from the parent (the lean statement below does not read them).
PLAIN_ITEM_COLUMNS = ("child_id", "subject", "activity_ids", "event_id")


# What the statements read of a parent: the columns its checks and its reopening need, and
# those its children inherit. Not ``*``: a narrower row costs less to lock and to carry through
# the CTEs that follow (about 4-6 % of PostgreSQL's CPU for a coalesced statement of 1-6
# children, measured interleaved, medians of 300).
_PARENT_COLUMNS = ", ".join(
    (
        "id", "version", "status", "parent_id", "merged_into_id", "is_spam", "archived_at",
        "n_children", *INHERITED_COLUMNS,
    )
)  # fmt: skip

# The ids of a parent's reopening by its first new child: its activity and its event.
_REOPENING = ("reopened_activity_id", "reopened_event_id")


def _one_item(columns: Iterable[str]) -> str:
    """One child: each of ``columns`` a typed parameter of its own name."""
    return (
        "items AS (SELECT 1 AS n, "
        + ", ".join(f":{name}::{ITEM_COLUMNS[name]} AS {name}" for name in columns)
        + ")"
    )


# A batch: the items as a JSON array of objects, one row each.
_MANY_ITEMS = (
    "items AS (SELECT * FROM jsonb_to_recordset(:items::jsonb) AS i("
    + ", ".join(f"{name} {sql_type}" for name, sql_type in ITEM_COLUMNS.items())
    + "))"
)


def _inherited_or_overridden(column: str) -> str:
    return f"CASE WHEN '{column}' = ANY(i.overridden) THEN i.o_{column} ELSE ok.{column} END"


_copied = ", ".join(INHERITED_COLUMNS)
_copied_from_v = ", ".join(f"v.{c}" for c in INHERITED_COLUMNS)
_new_message = ", ".join(NEW_MESSAGE_COLUMNS)

# What differs from the parent: the parts of the statement that only a rich request needs (and
# what the lean statement has in their place, so that both share the rest of their text).
_RICH = {
    "stray": """ stray AS (
    -- The first id to copy (in request order) that is not a message of the parent.
    SELECT i.n, u.idx
    FROM items i CROSS JOIN LATERAL unnest(i.copy_ids) WITH ORDINALITY AS u(id, idx)
    WHERE (SELECT claimed FROM gate) AND NOT EXISTS (
        SELECT 1 FROM messages m
        WHERE m.workspace_id = :workspace_id AND m.id = u.id AND m.conversation_id = :parent_id
    )
    ORDER BY i.n, u.idx
    LIMIT 1
),""",
    "stray_check": "WHEN EXISTS (SELECT 1 FROM stray) THEN 'message_not_in_parent'",
    "stray_detail": "WHEN 'message_not_in_parent' THEN (SELECT n || ':' || idx FROM stray)",
    "resulting": ",\n        ".join(
        f"{_inherited_or_overridden(c)} AS {c}" for c in INHERITED_COLUMNS
    ),
    "n_messages": "coalesce(cardinality(i.copy_ids), 0) + (i.m_body IS NOT NULL)::int",
    "child_message": f"""
child_message AS (
    -- Copies in the parent's order (new ids in that order), then the first message.
    INSERT INTO messages (
        workspace_id, id, conversation_id, conversation_version, {_new_message},
        source_message_id, created_at
    )
    SELECT :workspace_id, i.message_ids[c.rank], i.child_id, 1,
        c.{", c.".join(NEW_MESSAGE_COLUMNS)}, c.id::text, :now
    FROM ok CROSS JOIN items i CROSS JOIN LATERAL (
        SELECT m.*, row_number() OVER (ORDER BY m.created_at, m.id) AS rank
        FROM messages m
        WHERE m.workspace_id = :workspace_id AND m.conversation_id = :parent_id
          AND m.id = ANY(i.copy_ids)
    ) AS c
    UNION ALL
    SELECT :workspace_id, i.message_ids[coalesce(cardinality(i.copy_ids), 0) + 1], i.child_id,
        1, i.m_{", i.m_".join(NEW_MESSAGE_COLUMNS)}, NULL, :now
    FROM ok CROSS JOIN items i
    WHERE i.m_body IS NOT NULL
    RETURNING *
),""",
    "change": "to_jsonb(i.overridden), 'copied_message_ids', to_jsonb(i.copy_ids)",
    # Its messages are another CTE's rows: the child is rendered once both are written.
    "child_alias": "",
    "returning": "RETURNING *",
    "rendered": rendered_cte(
        "child",
        f"(SELECT coalesce(json_agg({message_json_sql('m')} ORDER BY m.created_at, m.id), "
        "'[]'::json) FROM child_message m WHERE m.conversation_id = child.id)",
    ),
}
_PLAIN = {
    "stray": "",
    "stray_check": "",
    "stray_detail": "",
    "resulting": ", ".join(f"ok.{c} AS {c}" for c in INHERITED_COLUMNS),
    "n_messages": "0",
    "child_message": "",
    "change": "'[]'::jsonb, 'copied_message_ids', '[]'::jsonb",
    # No messages to embed: the child is rendered as it is inserted.
    "child_alias": " AS child",
    "returning": "RETURNING " + rendering_sql("child", "'[]'::json"),
    "rendered": rendered_from("child"),
}


def _create_children_sql(
    claim: str, items: str, out: str, response: str, *, rich: bool = True, coalesced: bool = False
) -> Statement:
    """Create the children of ``items``, all or none; ``out`` is the CTE whose ``body`` the
    statement returns (and ``response`` stores with the key). Without ``rich``, the lean
    statement of a child that differs from its parent in nothing but its subject (``items``
    has only ``PLAIN_ITEM_COLUMNS``): no overrides, message or copies.

    The children of one request have one parent, ``:parent_id``, which gets one new version.
    ``coalesced``: the items are several requests (``GROUP_ITEM_COLUMNS``), each with its own
    parent (``i.parent_id``) and the ids of its parent's reopening; a parent gets a new
    version per request, as if they had come one by one. Parents are locked in the order of
    their ids, so two statements that lock the same parents cannot deadlock."""
    part = _RICH if rich else _PLAIN
    change = f"'overridden_fields', {part['change']}"
    if coalesced:
        of_item = "i.parent_id"
        reopening = ", ".join(
            f"(array_agg(i.{name} ORDER BY i.n))[1] AS {name}" for name in _REOPENING
        )
        version_step = "ok.size"
    else:
        of_item = ":parent_id::uuid"
        reopening = ", ".join(f":{name}::uuid AS {name}" for name in _REOPENING)
        version_step = "1"
    return Statement(
        f"""
WITH {claim},
{items},
batch AS (
    -- Per parent: its new children, the first of them, and the ids of its reopening.
    SELECT {of_item} AS for_parent, count(*)::int AS size,
        (array_agg(i.child_id ORDER BY i.n))[1] AS first_child_id, {reopening}
    FROM items i
    GROUP BY 1
), p AS (
    -- The parents, locked: a concurrent creation under one waits here and then reads the
    -- latest version, so every check below (the children counter above all) is current.
    SELECT {_PARENT_COLUMNS} FROM conversations
    WHERE workspace_id = :workspace_id AND id IN (SELECT for_parent FROM batch)
      AND deleted_at IS NULL AND (SELECT claimed FROM gate)
    ORDER BY id
    FOR NO KEY UPDATE
),{part["stray"]} checked AS (
    SELECT p.*, b.size, b.first_child_id, {", ".join(f"b.{n}" for n in _REOPENING)}, CASE
        WHEN NOT (SELECT claimed FROM gate) THEN NULL
        WHEN p.id IS NULL THEN 'conversation_not_found'
        {part["stray_check"]}
        WHEN :if_match::int[] IS NOT NULL AND p.version <> ALL(:if_match::int[])
            THEN 'precondition_failed'
        WHEN p.merged_into_id IS NOT NULL THEN 'parent_merged'
        WHEN p.is_spam THEN 'parent_is_spam'
        WHEN p.archived_at IS NOT NULL THEN 'parent_archived'
        WHEN p.parent_id IS NOT NULL THEN 'parent_is_child'
        WHEN p.n_children + b.size > :max_children THEN 'children_limit_reached'
    END AS refusal
    FROM batch b LEFT JOIN p ON p.id = b.for_parent
), ok AS (
    SELECT * FROM checked WHERE refusal IS NULL AND id IS NOT NULL
), parent AS (
    -- One new version of the parent per request: a batch is one, coalesced requests many.
    UPDATE conversations c SET
        version = c.version + {version_step},
        updated_at = :now,
        n_children = c.n_children + ok.size,
        n_open_children = c.n_open_children + ok.size,
        n_activities = c.n_activities + ok.size
            + CASE WHEN c.status IN {RESOLVED} THEN 1 ELSE 0 END,
        status = CASE WHEN c.status IN {RESOLVED} THEN 'open' ELSE c.status END
    FROM ok
    WHERE c.workspace_id = :workspace_id AND c.id = ok.id
), child AS (
    INSERT INTO conversations{part["child_alias"]} (
        workspace_id, id, parent_id, subject, status, version, created_at, updated_at,
        source, assigned_at, n_messages, n_activities, {_copied}
    )
    SELECT :workspace_id, i.child_id, ok.id, i.subject, 'open', 1, :now, :now,
        'child',
        CASE WHEN v.assignee_user_id IS NOT NULL OR v.assignee_team_id IS NOT NULL
             THEN :now::timestamptz END,
        {part["n_messages"]}, 1, {_copied_from_v}
    FROM items i JOIN ok ON ok.id = {of_item} CROSS JOIN LATERAL (SELECT
        {part["resulting"]}
    ) AS v
    {part["returning"]}
),{part["child_message"]} activity AS (
    INSERT INTO activities (workspace_id, id, conversation_id, kind, actor, payload, created_at)
    SELECT :workspace_id, a.id, a.conversation_id, a.kind, :caller, a.payload, :now
    FROM items i JOIN ok ON ok.id = {of_item} CROSS JOIN LATERAL (VALUES
        (i.activity_ids[1], i.child_id, 'created_from_parent',
         jsonb_build_object('parent_id', ok.id, {change})),
        (i.activity_ids[2], ok.id, 'child_created',
         jsonb_build_object('child_id', i.child_id, 'subject', i.subject, {change}))
    ) AS a(id, conversation_id, kind, payload)
    UNION ALL
    SELECT :workspace_id, ok.reopened_activity_id, ok.id, 'reopened', :caller,
        jsonb_build_object('from_status', ok.status, 'reason', 'child_created',
                           'child_id', ok.first_child_id), :now
    FROM ok
    WHERE ok.status IN {RESOLVED}
), {part["rendered"]},{
            event_cte(
                "child_created",
                "child.created",
                f"(SELECT r.*, i.event_id, {of_item} AS parent_id "
                "FROM rendered r JOIN items i ON i.child_id = r.id)",
                "s.event_id",
                "json_build_object('conversation_id', s.id, 'parent_id', s.parent_id, "
                "'conversation', s.doc)",
            )
        },{
            event_cte(
                "parent_reopened",
                "parent.reopened",
                f"(SELECT * FROM ok WHERE ok.status IN {RESOLVED})",
                "s.reopened_event_id",
                "json_build_object('conversation_id', s.id, 'reason', 'child_created', "
                "'child_id', s.first_child_id)",
            )
        }{response}
SELECT (SELECT claimed FROM gate) AS claimed, {out}.{
            "body, group_out.lengths" if coalesced else "body"
        }, (
    -- One row whatever the number of parents: {out} is computed once.
    SELECT aurion_refuse(checked.refusal, CASE checked.refusal
        {part["stray_detail"]}
        WHEN 'precondition_failed' THEN checked.version::text
        WHEN 'parent_merged' THEN checked.merged_into_id::text
        WHEN 'parent_is_child' THEN checked.parent_id::text
        WHEN 'children_limit_reached' THEN greatest(:max_children - checked.n_children, 0)::text
    END)
    FROM checked
    WHERE checked.refusal IS NOT NULL
    LIMIT 1
) AS refused
FROM (VALUES (1)) AS one(x) LEFT JOIN {out} ON true
"""
    )


# A batch's response: its children's objects in request order, as one JSON document.
_BATCH_RENDERED = """
batch_rendered AS (
    SELECT convert_to(json_build_object('items', json_agg(r.doc ORDER BY i.n))::text, 'UTF8')
        AS body, NULL::uuid AS id, NULL::int AS version
    FROM rendered r JOIN items i ON i.child_id = r.id
    HAVING count(*) > 0
)"""

_ONE_ITEM = _one_item(name for name in ITEM_COLUMNS if name != "n")
_PLAIN_ITEM = _one_item(PLAIN_ITEM_COLUMNS)
# The response refers to the child.created event, which carries the same object.
_CHILD_RESPONSE = "," + response_cte(201, "rendered", LOCATION_PREFIX, event_id=":event_id::uuid")
CREATE_CHILD = _create_children_sql(UNCLAIMED_CTE, _ONE_ITEM, "rendered", "")
CREATE_CHILD_IDEMPOTENT = _create_children_sql(CLAIM_CTE, _ONE_ITEM, "rendered", _CHILD_RESPONSE)
CREATE_PLAIN_CHILD = _create_children_sql(UNCLAIMED_CTE, _PLAIN_ITEM, "rendered", "", rich=False)
CREATE_PLAIN_CHILD_IDEMPOTENT = _create_children_sql(
    CLAIM_CTE, _PLAIN_ITEM, "rendered", _CHILD_RESPONSE, rich=False
)
CREATE_CHILDREN = _create_children_sql(
    UNCLAIMED_CTE, _MANY_ITEMS, "batch_rendered", "," + _BATCH_RENDERED
)
CREATE_CHILDREN_IDEMPOTENT = _create_children_sql(
    CLAIM_CTE,
    _MANY_ITEMS,
    "batch_rendered",
    "," + _BATCH_RENDERED + "," + response_cte(201, "batch_rendered", None),
)


# ------------------------------------------------------------ coalesced child creation

# Single creations of plain children by one caller that arrived while another ran
# (``Turns.together``), under one parent or several: each request is an item with its own
# parent and Idempotency-Key (or none), claimed, created and answered as if it had come alone,
# in one statement that commits once and locks each parent once. Each claims its own key (a
# duplicate of a live key, or of an earlier item's, is not claimed: the request replays), a
# parent's version goes up once per child, and the answer is each item's body, in request
# order (null: not claimed). Any refusal refuses them all (nothing written): the service then
# runs them apart, so each gets its own answer.
GROUP_ITEM_COLUMNS: dict[str, str] = {
    "n": "integer",
    "parent_id": "uuid",
    **{name: ITEM_COLUMNS[name] for name in PLAIN_ITEM_COLUMNS},
    **{name: "uuid" for name in _REOPENING},
    "key": "text",
    "fingerprint": "text",
    "expires_at": "timestamptz",
}
_GROUP_CLAIM = (
    "requested AS (SELECT * FROM jsonb_to_recordset(:items::jsonb) AS r("
    + ", ".join(f"{name} {sql_type}" for name, sql_type in GROUP_ITEM_COLUMNS.items())
    + """)
), claim AS (
    -- In the order of the keys, so two statements claiming the same keys cannot deadlock.
    INSERT INTO idempotency_keys AS k
        (workspace_id, subject, key, fingerprint, created_at, expires_at)
    SELECT DISTINCT ON (r.key) :workspace_id, :caller, r.key, r.fingerprint, :now, r.expires_at
    FROM requested r
    WHERE r.key IS NOT NULL
    ORDER BY r.key, r.n
    ON CONFLICT (workspace_id, subject, key) DO UPDATE
        SET fingerprint = EXCLUDED.fingerprint, created_at = EXCLUDED.created_at,
            expires_at = EXCLUDED.expires_at
        WHERE k.expires_at <= EXCLUDED.created_at
    RETURNING k.key
)"""
)
_GROUP_ITEMS = """
items AS (
    -- The requests that create a child: no key, or the first with a key this claimed.
    SELECT r.* FROM requested r
    WHERE r.key IS NULL OR (
        r.key IN (SELECT key FROM claim)
        AND r.n = (SELECT min(q.n) FROM requested q WHERE q.key = r.key))
), gate AS (
    SELECT EXISTS (SELECT 1 FROM items) AS claimed
)"""
# The bodies one after another, and each one's length in request order (null: not claimed):
# scalar and json columns, which come back through aurion_delegate on Citus too.
_GROUP_OUT = """
group_out AS (
    SELECT coalesce(string_agg(r.body, ''::bytea ORDER BY q.n), ''::bytea) AS body,
        json_agg(length(r.body) ORDER BY q.n) AS lengths
    FROM requested q LEFT JOIN items i ON i.n = q.n LEFT JOIN rendered r ON r.id = i.child_id
)"""
CREATE_PLAIN_CHILDREN_TOGETHER = _create_children_sql(
    _GROUP_CLAIM,
    _GROUP_ITEMS,
    "group_out",
    ","
    + response_cte(
        201,
        "(SELECT r.*, i.key, i.event_id FROM rendered r JOIN items i ON i.child_id = r.id "
        "WHERE i.key IS NOT NULL)",
        LOCATION_PREFIX,
        key="r.key",
        event_id="r.event_id",
    )
    + ","
    + _GROUP_OUT,
    rich=False,
    coalesced=True,
)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def create_child(
    db: Db, values: dict[str, Any], item: dict[str, Any], *, idempotent: bool
) -> Any:
    """Create one child (values: workspace_id, caller, parent_id, now, max_children, if_match,
    reopened_activity_id, reopened_event_id, and the claim's; ``item``: the ``ITEM_COLUMNS``
    but ``n``). The row has ``claimed`` (false: the key is taken, nothing was written) and
    ``body`` (the child, rendered).

    A child that differs from its parent only in its subject (the usual case) is created by
    the lean statement, which does not plan or run what overrides, messages and copies need."""
    params = {k: _json(v) if k in _JSONB_ITEM_COLUMNS and v is not None else v
              for k, v in item.items()}  # fmt: skip
    if not is_plain(item):
        statement = CREATE_CHILD_IDEMPOTENT if idempotent else CREATE_CHILD
    else:
        statement = CREATE_PLAIN_CHILD_IDEMPOTENT if idempotent else CREATE_PLAIN_CHILD
    return await db.fetchrow(statement, {**values, **params})


async def create_children(
    db: Db, values: dict[str, Any], items: list[dict[str, Any]], *, idempotent: bool
) -> Any:
    """Create a batch of children, all or none: as ``create_child``, with ``items`` in request
    order (``n`` = 1, 2, ...); ``body`` is ``{"items": [...]}``."""
    statement = CREATE_CHILDREN_IDEMPOTENT if idempotent else CREATE_CHILDREN
    return await db.fetchrow(statement, {**values, "items": _json(items)})


def is_plain(item: dict[str, Any]) -> bool:
    """Whether a child (``ITEM_COLUMNS``) differs from its parent in its subject alone."""
    return not item["overridden"] and not item["copy_ids"] and item["m_body"] is None


async def create_plain_children_together(
    db: Db, values: dict[str, Any], items: list[dict[str, Any]]
) -> list[bytes | None]:
    """Create plain children for several requests at once (values: workspace_id, caller,
    now, max_children, if_match (null); ``items``: ``GROUP_ITEM_COLUMNS``, ``n`` = 1, 2,
    ...). Each item's body (the child, rendered), or None where its key was not claimed;
    ``Refused`` if any item would be refused, and then nothing is written."""
    row = await db.fetchrow(CREATE_PLAIN_CHILDREN_TOGETHER, {**values, "items": _json(items)})
    assert row is not None
    joined: bytes = row["body"]
    bodies: list[bytes | None] = []
    start = 0
    for length in row["lengths"]:  # json: decoded by the pool's connections (SQLAlchemy's codec)
        if length is None:
            bodies.append(None)
        else:
            bodies.append(joined[start : start + length])
            start += length
    return bodies
