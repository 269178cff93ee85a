"""The API through a real PgBouncer in transaction pooling mode (AURION_DB_PGBOUNCER=true).

PgBouncer has only a few server connections for the app's many client connections, so
consecutive transactions of one client land on different server connections: anything the
driver keeps on a server connection between transactions (named prepared statements) breaks.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
from sqlalchemy import text

from harness.pgbouncer import PgBouncer
from tests.scaling.conftest import PGBOUNCER_POOL_SIZE
from tests.support import TokenFactory, make_settings, started_app

PARENT = {
    "subject": "Printer on fire",
    "priority": "high",
    "company_id": "comp_acme",
    "assignee_team_id": "team_ops",
    "tags": ["hardware"],
    "custom_attrs": {"floor": 3},
    "messages": [{"body": "It smokes.", "sender_type": "contact"}],
}


async def _parent(client: httpx.AsyncClient, auth: dict[str, str], **extra: Any) -> dict[str, Any]:
    response = await client.post("/api/v2/conversations", json={**PARENT, **extra}, headers=auth)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_create_read_and_list_through_pgbouncer(
    pgbouncer_client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    parent = await _parent(pgbouncer_client, auth)
    path = f"/api/v2/conversations/{parent['id']}/children"
    children = []
    for n in range(3):
        response = await pgbouncer_client.post(path, json={"subject": f"child {n}"}, headers=auth)
        assert response.status_code == 201, response.text
        assert response.headers["etag"] == '"1"'
        child = response.json()
        assert child["parent_id"] == parent["id"]
        assert child["tags"] == ["hardware"]
        assert child["custom_attrs"] == {"floor": 3}
        assert child["messages"] == []
        children.append(child["id"])

    got = await pgbouncer_client.get(f"/api/v2/conversations/{parent['id']}", headers=auth)
    assert got.status_code == 200
    assert got.headers["etag"] == '"4"'
    assert got.json()["tab_counts"] == {
        "activities": 4,
        "has_resolution": False,
        "messages": 1,
        "related": 3,
    }
    assert [m["body"] for m in got.json()["messages"]] == ["It smokes."]

    page = await pgbouncer_client.get(f"{path}?limit=2", headers=auth)
    assert page.status_code == 200
    rest = await pgbouncer_client.get(
        f"{path}?limit=2&cursor={page.json()['next_cursor']}", headers=auth
    )
    listed = [c["id"] for c in page.json()["items"] + rest.json()["items"]]
    assert listed == children[::-1]


async def test_refusals_through_pgbouncer(
    pgbouncer_client: httpx.AsyncClient, auth: dict[str, str], token_for: TokenFactory
) -> None:
    parent = await _parent(pgbouncer_client, auth)
    path = f"/api/v2/conversations/{parent['id']}/children"

    stranger = {"Authorization": f"Bearer {token_for('ws_someone_else')}"}
    other = await pgbouncer_client.post(path, json={"subject": "x"}, headers=stranger)
    assert (other.status_code, other.json()["code"]) == (404, "conversation_not_found")

    stale = await pgbouncer_client.post(
        path, json={"subject": "x"}, headers={**auth, "If-Match": '"7"'}
    )
    assert (stale.status_code, stale.json()["code"]) == (412, "precondition_failed")

    child = (await pgbouncer_client.post(path, json={"subject": "x"}, headers=auth)).json()
    grandchild = await pgbouncer_client.post(
        f"/api/v2/conversations/{child['id']}/children", json={"subject": "x"}, headers=auth
    )
    assert (grandchild.status_code, grandchild.json()["code"]) == (409, "parent_is_child")

    invalid = await pgbouncer_client.post(path, json={"subject": "\x00"}, headers=auth)
    assert invalid.status_code == 422


async def test_limit_holds_under_100_parallel_requests_through_pgbouncer(
    pgbouncer_client: httpx.AsyncClient, auth: dict[str, str], pgbouncer: PgBouncer
) -> None:
    parent = await _parent(pgbouncer_client, auth)
    path = f"/api/v2/conversations/{parent['id']}/children"
    responses = await asyncio.gather(
        *(pgbouncer_client.post(path, json={"subject": f"c{n}"}, headers=auth) for n in range(100))
    )
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 10, 409: 90}, statuses
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {
        "children_limit_reached"
    }
    got = await pgbouncer_client.get(f"/api/v2/conversations/{parent['id']}", headers=auth)
    assert got.json()["version"] == 11
    assert got.json()["tab_counts"]["related"] == 10

    # Plain children by one caller go together (one statement at a time per process), and
    # others take turns per parent: a burst of children with an override, spread over many
    # parents, opens many client connections.
    parents = [await _parent(pgbouncer_client, auth) for _ in range(20)]
    spread = await asyncio.gather(
        *(
            pgbouncer_client.post(
                f"/api/v2/conversations/{p['id']}/children",
                json={"subject": "s", "priority": "high"},
                headers=auth,
            )
            for p in parents
            for _ in range(3)
        )
    )
    assert Counter(r.status_code for r in spread) == {201: 60}

    # The traffic really went through PgBouncer, which multiplexed many client connections
    # over its few server connections.
    clients = [
        line
        for line in pgbouncer.admin("SHOW CLIENTS").splitlines()
        if f"|{pgbouncer.database}|" in line
    ]
    servers = [
        line
        for line in pgbouncer.admin("SHOW SERVERS").splitlines()
        if f"|{pgbouncer.database}|" in line
    ]
    assert len(clients) > PGBOUNCER_POOL_SIZE
    assert 0 < len(servers) <= PGBOUNCER_POOL_SIZE


async def test_server_side_timeouts_hold_behind_pgbouncer(pgbouncer: PgBouncer) -> None:
    """The app cannot send its timeouts through PgBouncer; the operator's recipe sets them."""
    settings = make_settings(pgbouncer.url, db_pgbouncer=True)
    async for app in started_app(settings):
        async with app.state.engine.connect() as conn:
            timeout = (await conn.execute(text("SHOW statement_timeout"))).scalar_one()
            name = (await conn.execute(text("SHOW application_name"))).scalar_one()
        assert (timeout, name) == ("5s", "aurion")


async def test_without_the_setting_pgbouncer_refuses_the_connection(pgbouncer: PgBouncer) -> None:
    """AURION_DB_PGBOUNCER is what makes the service work there: without it, 503s."""
    settings = make_settings(pgbouncer.url)
    async for app in started_app(settings):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/readyz")
        assert (response.status_code, response.json()["code"]) == (503, "database_unavailable")
