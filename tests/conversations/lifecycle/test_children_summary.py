"""GET .../children: the status filter and the summary (SPEC §8.6)."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conversations.lifecycle.support import new_child, new_conversation, url
from tests.support import child_url


async def test_filter_and_summary_over_all_children(
    client: httpx.AsyncClient, engine: AsyncEngine, auth: dict[str, str]
) -> None:
    parent = await new_conversation(client, auth)
    children = [await new_child(client, auth, parent["id"], f"c{i}") for i in range(7)]
    for child, status in zip(
        children, ["pending", "resolved", "closed", "resolved", "on_hold", "new"], strict=False
    ):
        response = await client.patch(url(child["id"]), json={"status": status}, headers=auth)
        assert response.status_code == 200
    deleted = await new_child(client, auth, parent["id"], "gone")
    await client.delete(url(deleted["id"]), headers=auth)
    expected = {
        "total": 7,
        "by_status": {
            "new": 1, "open": 1, "pending": 1, "on_hold": 1, "resolved": 2, "closed": 1,
        },
        "percent_resolved": 42,
    }  # fmt: skip

    page = await client.get(
        child_url(parent["id"]), params={"status": "resolved,closed"}, headers=auth
    )
    assert page.status_code == 200
    body = page.json()
    assert [c["subject"] for c in body["items"]] == ["c3", "c2", "c1"]
    assert body["summary"] == expected

    first = (
        await client.get(
            child_url(parent["id"]), params={"status": "resolved", "limit": 1}, headers=auth
        )
    ).json()
    assert [c["subject"] for c in first["items"]] == ["c3"]
    assert first["summary"] == expected
    second = (
        await client.get(
            child_url(parent["id"]),
            params={"status": "resolved", "limit": 1, "cursor": first["next_cursor"]},
            headers=auth,
        )
    ).json()
    assert [c["subject"] for c in second["items"]] == ["c1"]
    assert second["next_cursor"] is None
    assert second["summary"] == expected


@pytest.mark.parametrize("status", ["done", "open,", "", "open,,closed", "OPEN"])
async def test_unknown_status_is_422(
    client: httpx.AsyncClient, auth: dict[str, str], status: str
) -> None:
    parent = await new_conversation(client, auth)
    response = await client.get(child_url(parent["id"]), params={"status": status}, headers=auth)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "status"]
