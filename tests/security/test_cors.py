"""CORS for the browser frontend: real preflights against the configured origins (issue #3)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import TokenFactory, make_settings, started_app

FRONTEND = "https://app.aurion.example"


@pytest.fixture(scope="module")
async def cors_client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(database_url, cors_origins=[FRONTEND, "http://localhost:5173"])
    async for app in started_app(settings):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


def preflight(origin: str, method: str = "POST", headers: str = "") -> dict[str, str]:
    values = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        values["Access-Control-Request-Headers"] = headers
    return values


REQUESTED = "authorization, content-type, idempotency-key, if-match"


async def test_preflight_for_a_child_creation_is_allowed(cors_client: httpx.AsyncClient) -> None:
    url = f"/api/v2/conversations/{uuid.uuid4()}/children"
    response = await cors_client.options(url, headers=preflight(FRONTEND, "POST", REQUESTED))
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == FRONTEND
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"].lower()
    for header in ("authorization", "content-type", "idempotency-key", "if-match"):
        assert header in allowed
    assert int(response.headers["access-control-max-age"]) > 0
    # Bearer tokens, not cookies: credentials are never allowed.
    assert "access-control-allow-credentials" not in response.headers
    assert "origin" in response.headers.get("vary", "").lower()


@pytest.mark.parametrize(("method", "suffix"), [("PATCH", ""), ("DELETE", ""), ("PUT", "/parent")])
async def test_preflight_for_the_lifecycle_operations_is_allowed(
    cors_client: httpx.AsyncClient, method: str, suffix: str
) -> None:
    url = f"/api/v2/conversations/{uuid.uuid4()}{suffix}"
    response = await cors_client.options(url, headers=preflight(FRONTEND, method, REQUESTED))
    assert response.status_code == 200
    assert method in response.headers["access-control-allow-methods"]


async def test_preflight_from_an_unknown_origin_is_refused(
    cors_client: httpx.AsyncClient,
) -> None:
    response = await cors_client.options(
        "/api/v2/conversations", headers=preflight("https://evil.example", "POST", REQUESTED)
    )
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


async def test_preflight_for_an_unlisted_header_or_method_is_refused(
    cors_client: httpx.AsyncClient,
) -> None:
    header = await cors_client.options(
        "/api/v2/conversations", headers=preflight(FRONTEND, "POST", "x-forwarded-user")
    )
    method = await cors_client.options(
        "/api/v2/conversations", headers=preflight(FRONTEND, "TRACE")
    )
    assert header.status_code == 400
    assert method.status_code == 400


async def test_responses_expose_the_headers_a_frontend_reads(
    cors_client: httpx.AsyncClient, token_for: TokenFactory, workspace: str
) -> None:
    headers = {"Origin": FRONTEND, "Authorization": f"Bearer {token_for(workspace)}"}
    response = await cors_client.post(
        "/api/v2/conversations", json={"subject": "From the browser"}, headers=headers
    )
    assert response.status_code == 201
    assert response.headers["access-control-allow-origin"] == FRONTEND
    exposed = {
        h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")
    }
    assert exposed >= {"location", "etag", "retry-after", "idempotent-replayed", "x-request-id"}


async def test_refusals_carry_cors_headers_so_the_browser_can_read_them(
    cors_client: httpx.AsyncClient,
) -> None:
    response = await cors_client.post(
        "/api/v2/conversations", json={"subject": "x"}, headers={"Origin": FRONTEND}
    )
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == FRONTEND
    assert "www-authenticate" in response.headers


async def test_no_origins_configured_means_no_cors(client: httpx.AsyncClient) -> None:
    """The default: AURION_CORS_ORIGINS is empty, so browsers on other origins get nothing."""
    response = await client.options(
        "/api/v2/conversations", headers=preflight(FRONTEND, "POST", REQUESTED)
    )
    assert "access-control-allow-origin" not in response.headers
    assert response.status_code == 405


async def test_origins_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from aurion.settings import Settings

    monkeypatch.setenv("AURION_CORS_ORIGINS", "https://a.example, https://b.example/")
    assert Settings().cors_origins == ["https://a.example", "https://b.example"]
    monkeypatch.setenv("AURION_CORS_ORIGINS", '["https://c.example"]')
    assert Settings().cors_origins == ["https://c.example"]
    monkeypatch.setenv("AURION_CORS_ORIGINS", "app.example")
    with pytest.raises(ValueError, match="not an origin"):
        Settings()
