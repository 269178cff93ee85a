"""Each lifecycle operation is ONE statement, a cascade over 50 children and refusals included.

As in tests/conversations/test_write_path.py: a query logger on each driver connection of the
pool records what a request sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from tests.conftest import make_settings, started_app
from tests.conversations.lifecycle.support import new_child, new_conversation, url
from tests.support import child_url

Sent = list[str]


@pytest.fixture
async def traced(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Sent]]:
    settings = make_settings(
        database_url,
        max_children_per_parent=50,
        idempotency_purge_interval_seconds=0,
        auto_resolve_parent=True,
    )
    sent: Sent = []
    async for app in started_app(settings):

        @event.listens_for(app.state.engine.sync_engine, "connect")
        def trace(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.driver_connection.add_query_logger(
                lambda query: sent.append(query.query)
            )

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client, sent


async def _statements(sent: Sent, call: Any) -> tuple[httpx.Response, Sent]:
    sent.clear()
    response = await call
    return response, [s for s in sent if s.strip() and not s.lstrip().upper().startswith("SET")]


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
        response, statements = await _statements(sent, call)
        assert response.status_code == expected[name], (name, response.text)
        assert len(statements) == 1, (name, len(statements))
