"""Each lifecycle operation is ONE statement, a cascade over 50 children and refusals included.

As in tests/conversations/test_write_path.py: ``traced_client`` records what a request sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conversations.lifecycle.support import new_child, new_conversation, url
from tests.support import Sent, child_url, statements_sent, traced_client


@pytest.fixture
async def traced(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Sent]]:
    async with traced_client(
        database_url,
        max_children_per_parent=50,
        idempotency_purge_interval_seconds=0,
        auto_resolve_parent=True,
    ) as traced:
        yield traced


async def test_each_lifecycle_request_is_one_statement(
    traced: tuple[httpx.AsyncClient, Sent], auth: dict[str, str]
) -> None:
    client, sent = traced
    parent = await new_conversation(client, auth)
    other = await new_conversation(client, auth)
    children = [await new_child(client, auth, parent["id"], f"c{i}") for i in range(50)]
    loose = await new_conversation(client, auth)
    # A new connection introspects types on first use: warm every statement up once.
    warm = await new_conversation(client, auth)
    warm_child = await new_child(client, auth, warm["id"])
    await client.patch(url(warm_child["id"]), json={"status": "pending"}, headers=auth)
    await client.patch(url(warm["id"]), json={"subject": "w"}, headers=auth)
    await client.put(url(warm_child["id"], "/parent"), json={"parent_id": None}, headers=auth)
    await client.get(url(warm["id"], "/activities"), headers=auth)
    await client.get(child_url(warm["id"]), params={"status": "open"}, headers=auth)
    await client.delete(url(warm["id"]), headers=auth)

    calls = {
        "update": client.patch(url(loose["id"]), json={"subject": "s"}, headers=auth),
        "update, no change": client.patch(url(loose["id"]), json={"subject": "s"}, headers=auth),
        "refused: open children": client.patch(
            url(parent["id"]), json={"status": "resolved"}, headers=auth
        ),
        "child resolved": client.patch(
            url(children[0]["id"]), json={"status": "resolved"}, headers=auth
        ),
        "cascade over 49 children": client.patch(
            url(parent["id"], "?children=resolve"), json={"status": "closed"}, headers=auth
        ),
        "child reopened, parent reopened": client.patch(
            url(children[1]["id"]), json={"status": "open"}, headers=auth
        ),
        "attach": client.put(
            url(loose["id"], "/parent"), json={"parent_id": other["id"]}, headers=auth
        ),
        "refused: full parent": client.put(
            url(loose["id"], "/parent"), json={"parent_id": parent["id"]}, headers=auth
        ),
        "detach": client.put(url(loose["id"], "/parent"), json={"parent_id": None}, headers=auth),
        "children list": client.get(
            child_url(parent["id"]), params={"status": "closed"}, headers=auth
        ),
        "activities": client.get(url(parent["id"], "/activities"), headers=auth),
        "delete a parent of 50": client.delete(url(parent["id"]), headers=auth),
    }
    expected = dict.fromkeys(calls, 200)
    expected.update({"refused: open children": 409, "refused: full parent": 409})
    expected["delete a parent of 50"] = 204
    for name, call in calls.items():
        response, statements = await statements_sent(sent, call)
        assert response.status_code == expected[name], (name, response.text)
        assert len(statements) == 1, (name, len(statements))
