"""The webhooks API: register (the secret once), list, delete, the deliveries log; URL safety."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx
import pytest

from tests.support import TokenFactory, client_with

HOOKS = "/api/v2/webhooks"
EVERY = "conversations:read conversations:write events:read webhooks:write"


@pytest.fixture
def hook_auth(token_for: TokenFactory, workspace: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(workspace, 'webhooks:write')}"}


def body(**fields: Any) -> dict[str, Any]:
    return {"url": "http://127.0.0.1:9/hook", "types": ["child.created"], **fields}


class TestCreateWebhook:
    async def test_unauthenticated_is_401(self, client: httpx.AsyncClient) -> None:
        assert (await client.post(HOOKS, json=body())).status_code == 401

    async def test_without_the_scope_is_403(
        self, client: httpx.AsyncClient, token_for: TokenFactory, workspace: str
    ) -> None:
        headers = {"Authorization": f"Bearer {token_for(workspace, 'events:read')}"}
        for response in (
            await client.post(HOOKS, json=body(), headers=headers),
            await client.get(HOOKS, headers=headers),
            await client.delete(f"{HOOKS}/{uuid.uuid4()}", headers=headers),
            await client.get(f"{HOOKS}/{uuid.uuid4()}/deliveries", headers=headers),
        ):
            assert response.status_code == 403
            assert 'scope="webhooks:write"' in response.headers["www-authenticate"]

    async def test_created_with_a_secret_shown_once(
        self, client: httpx.AsyncClient, hook_auth: dict[str, str]
    ) -> None:
        created = await client.post(
            HOOKS,
            json=body(types=["child.created", "parent.reopened"], description=" CRM sync "),
            headers=hook_auth,
        )
        assert created.status_code == 201, created.text
        hook = created.json()
        assert set(hook) == {"id", "url", "types", "description", "created_at", "secret"}
        assert hook["url"] == "http://127.0.0.1:9/hook"
        assert hook["types"] == ["child.created", "parent.reopened"]
        assert hook["description"] == "CRM sync"
        assert hook["secret"].startswith("whsec_")
        assert len(base64.b64decode(hook["secret"].removeprefix("whsec_"))) == 32
        assert created.headers["location"] == f"{HOOKS}/{hook['id']}/deliveries"

        listed = (await client.get(HOOKS, headers=hook_auth)).json()
        secretless = {k: v for k, v in hook.items() if k != "secret"}
        assert listed == {"items": [secretless]}
        other = await client.post(HOOKS, json=body(), headers=hook_auth)
        assert other.json()["secret"] != hook["secret"]

    @pytest.mark.parametrize(
        ("fields", "loc"),
        [
            ({"url": "ftp://example.com/x"}, ["body", "url"]),
            ({"url": "not a url"}, ["body", "url"]),
            ({"url": "https://" + "a" * 2048}, ["body", "url"]),
            ({"types": []}, ["body", "types"]),
            ({"types": ["child.exploded"]}, ["body", "types", 0]),
            ({"types": ["child.created", "child.created"]}, ["body", "types"]),
            ({"description": "x" * 256}, ["body", "description"]),
            ({"secret": "whsec_mine"}, ["body", "secret"]),
        ],
    )
    async def test_invalid_is_422(
        self,
        client: httpx.AsyncClient,
        hook_auth: dict[str, str],
        fields: dict[str, Any],
        loc: list[Any],
    ) -> None:
        response = await client.post(HOOKS, json=body(**fields), headers=hook_auth)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == loc
        assert (await client.get(HOOKS, headers=hook_auth)).json() == {"items": []}


class TestUrlSafety:
    @pytest.mark.parametrize(
        "url",
        [
            "http://hooks.example.com/x",  # not https
            "https://127.0.0.1/x",
            "https://localhost:8443/x",
            "https://10.1.2.3/x",
            "https://192.168.0.10/x",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/x",
            "https://[::ffff:127.0.0.1]/x",
            "https://user:pw@127.0.0.1/x",
        ],
    )
    async def test_private_or_plain_urls_are_refused(
        self, database_url: str, token_for: TokenFactory, workspace: str, url: str
    ) -> None:
        headers = {"Authorization": f"Bearer {token_for(workspace, 'webhooks:write')}"}
        async with client_with(database_url, webhook_allow_private=False) as client:
            response = await client.post(HOOKS, json=body(url=url), headers=headers)
            assert response.status_code == 422, response.text
            assert response.json()["code"] == "webhook_url_not_allowed"
            assert (await client.get(HOOKS, headers=headers)).json() == {"items": []}

    @pytest.mark.parametrize("url", ["http://[/x", "http://127.0.0.1:99999/x", "https:///x"])
    async def test_urls_that_do_not_parse_are_refused(
        self, client: httpx.AsyncClient, hook_auth: dict[str, str], url: str
    ) -> None:
        response = await client.post(HOOKS, json=body(url=url), headers=hook_auth)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "webhook_url_not_allowed"


class TestDeleteWebhook:
    async def test_deleted_then_404(
        self, client: httpx.AsyncClient, hook_auth: dict[str, str]
    ) -> None:
        hook = (await client.post(HOOKS, json=body(), headers=hook_auth)).json()
        deleted = await client.delete(f"{HOOKS}/{hook['id']}", headers=hook_auth)
        assert deleted.status_code == 204
        assert deleted.content == b""
        assert (await client.get(HOOKS, headers=hook_auth)).json() == {"items": []}
        again = await client.delete(f"{HOOKS}/{hook['id']}", headers=hook_auth)
        assert again.status_code == 404
        assert again.json()["code"] == "webhook_not_found"

    async def test_another_workspace_cannot_see_or_delete_it(
        self, client: httpx.AsyncClient, hook_auth: dict[str, str], token_for: TokenFactory
    ) -> None:
        hook = (await client.post(HOOKS, json=body(), headers=hook_auth)).json()
        other = {"Authorization": f"Bearer {token_for(f'ws_{uuid.uuid4().hex[:12]}', EVERY)}"}
        assert (await client.get(HOOKS, headers=other)).json() == {"items": []}
        missing = await client.delete(f"{HOOKS}/{hook['id']}", headers=other)
        assert missing.status_code == 404
        log = await client.get(f"{HOOKS}/{hook['id']}/deliveries", headers=other)
        assert log.status_code == 404
        assert log.json()["code"] == "webhook_not_found"
        assert len((await client.get(HOOKS, headers=hook_auth)).json()["items"]) == 1


class TestListDeliveries:
    async def test_a_new_webhook_has_none(
        self, client: httpx.AsyncClient, hook_auth: dict[str, str]
    ) -> None:
        hook = (await client.post(HOOKS, json=body(), headers=hook_auth)).json()
        log = await client.get(f"{HOOKS}/{hook['id']}/deliveries", headers=hook_auth)
        assert log.status_code == 200
        assert log.json() == {"items": [], "next_cursor": None}

    @pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"cursor": "abc"}])
    async def test_bad_parameters_are_422(
        self, client: httpx.AsyncClient, hook_auth: dict[str, str], params: dict[str, Any]
    ) -> None:
        response = await client.get(
            f"{HOOKS}/{uuid.uuid4()}/deliveries", params=params, headers=hook_auth
        )
        assert response.status_code == 422
