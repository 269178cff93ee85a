"""Every endpoint × every way a token can be wrong (issue #3): 401/403/404, never a leak.

The app under test verifies RS256 with a public key and checks issuer and audience, as a
production deployment would. Each request targets a real conversation of the token's
workspace, so a refusal is the token's doing, not a missing row's.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from aurion.auth.principal import READ, WRITE
from tests.security.keys import (
    RSA2_PRIVATE,
    RSA_PUBLIC,
    bearer,
    claims,
    hs256_with,
    sign,
    unsigned,
)
from tests.support import TEST_SECRET


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # {id} is a real conversation of the token's workspace
    scope: str
    body: dict[str, Any] | None
    success: int

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


ENDPOINTS = [
    Endpoint("POST", "/api/v2/conversations", WRITE, {"subject": "New"}, 201),
    Endpoint("POST", "/api/v2/conversations/{id}/children", WRITE, {"subject": "Child"}, 201),
    Endpoint("GET", "/api/v2/conversations/{id}/children", READ, None, 200),
    Endpoint("GET", "/api/v2/conversations/{id}", READ, None, 200),
]


def _now() -> int:
    return int(time.time())


# name -> (headers built from the workspace, expected status, expected code, expected error=)
def token_cases(workspace: str) -> dict[str, tuple[dict[str, str], int, str, str | None]]:
    valid = claims(workspace)
    return {
        "no header": ({}, 401, "not_authenticated", None),
        "not bearer": ({"Authorization": "Basic YWxhZGRpbjpvcGVuc2VzYW1l"}, 401,
                       "not_authenticated", None),
        "empty bearer": ({"Authorization": "Bearer "}, 401, "not_authenticated", None),
        "malformed": (bearer("not.a.jwt"), 401, "invalid_token", "invalid_token"),
        "garbage": (bearer("x" * 40), 401, "invalid_token", "invalid_token"),
        "oversized": (bearer(sign(claims(workspace, pad="p" * 9000))), 401, "invalid_token",
                      "invalid_token"),
        "bad signature": (bearer(sign(valid, RSA2_PRIVATE)), 401, "invalid_token",
                          "invalid_token"),
        "tampered claims": (bearer(_tamper(sign(valid), workspace)), 401, "invalid_token",
                            "invalid_token"),
        "expired": (bearer(sign(claims(workspace, exp=_now() - 120))), 401, "invalid_token",
                    "invalid_token"),
        "not yet valid": (bearer(sign(claims(workspace, nbf=_now() + 120))), 401,
                          "invalid_token", "invalid_token"),
        "alg none": (bearer(unsigned(valid)), 401, "invalid_token", "invalid_token"),
        "HS256 with the RSA public key as secret": (
            bearer(hs256_with(RSA_PUBLIC.encode(), valid)), 401, "invalid_token",
            "invalid_token"),
        "wrong issuer": (bearer(sign(claims(workspace, iss="https://evil.test/"))), 401,
                         "invalid_token", "invalid_token"),
        "no issuer": (bearer(sign(claims(workspace, iss=None))), 401, "invalid_token",
                      "invalid_token"),
        "wrong audience": (bearer(sign(claims(workspace, aud="other-api"))), 401,
                           "invalid_token", "invalid_token"),
        "no audience": (bearer(sign(claims(workspace, aud=None))), 401, "invalid_token",
                        "invalid_token"),
        "missing sub": (bearer(sign(claims(workspace, sub=None))), 401, "invalid_token",
                        "invalid_token"),
        "missing exp": (bearer(sign(claims(workspace, exp=None))), 401, "invalid_token",
                        "invalid_token"),
        "missing workspace claim": (bearer(sign(claims(workspace, workspace_id=None))), 401,
                                    "invalid_token", "invalid_token"),
        "missing scope": (bearer(sign(claims(workspace, scope=None))), 403,
                          "insufficient_scope", "insufficient_scope"),
        "unrelated scope": (bearer(sign(claims(workspace, scope="profile email"))), 403,
                            "insufficient_scope", "insufficient_scope"),
    }  # fmt: skip


def _tamper(token: str, workspace: str) -> str:
    """Swap the claims for another workspace's, keeping the original signature."""
    header, _, signature = token.split(".")
    other = sign(claims("ws_" + uuid.uuid4().hex)).split(".")[1]
    return f"{header}.{other}.{signature}"


CASES = list(token_cases("ws_names_only"))


async def _parent(client: httpx.AsyncClient, workspace: str) -> str:
    response = await client.post(
        "/api/v2/conversations", json={"subject": "Parent"}, headers=bearer(sign(claims(workspace)))
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _call(
    client: httpx.AsyncClient, endpoint: Endpoint, conversation_id: str, headers: dict[str, str]
) -> httpx.Response:
    return await client.request(
        endpoint.method,
        endpoint.path.format(id=conversation_id),
        json=endpoint.body,
        headers=headers,
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
@pytest.mark.parametrize("case", CASES)
async def test_refused_token(
    rsa_client: httpx.AsyncClient, workspace: str, endpoint: Endpoint, case: str
) -> None:
    parent = await _parent(rsa_client, workspace)
    headers, status, code, error = token_cases(workspace)[case]
    # test_valid_token_is_accepted is the control: the same request with a good token works.
    response = await _call(rsa_client, endpoint, parent, headers)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert set(body) == {"detail", "code"}
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="aurion"')
    if error is None:
        assert "error=" not in challenge
    else:
        assert f'error="{error}"' in challenge
    if status == 403:
        assert f'scope="{endpoint.scope}"' in challenge
    # Nothing about the conversation leaks into a refusal.
    assert parent not in response.text


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
async def test_valid_token_is_accepted(
    rsa_client: httpx.AsyncClient, workspace: str, endpoint: Endpoint
) -> None:
    """The control for the refusals: the same request with a valid token succeeds."""
    parent = await _parent(rsa_client, workspace)
    response = await _call(rsa_client, endpoint, parent, bearer(sign(claims(workspace))))
    assert response.status_code == endpoint.success, response.text
    assert "www-authenticate" not in response.headers


@pytest.mark.parametrize("endpoint", ENDPOINTS[1:], ids=str)
async def test_other_workspace_sees_a_404_identical_to_a_missing_id(
    rsa_client: httpx.AsyncClient, workspace: str, endpoint: Endpoint
) -> None:
    parent = await _parent(rsa_client, workspace)
    intruder = bearer(sign(claims("ws_intruder_" + uuid.uuid4().hex)))
    foreign = await _call(rsa_client, endpoint, parent, intruder)
    missing = await _call(rsa_client, endpoint, str(uuid.uuid4()), intruder)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.content == missing.content
    assert foreign.json() == {"detail": "Conversation not found.", "code": "conversation_not_found"}

    def visible(response: httpx.Response) -> dict[str, str]:
        return {k: v for k, v in response.headers.items() if k != "x-request-id"}

    assert visible(foreign) == visible(missing)
    # And the owner still sees it unchanged: the intruder wrote nothing.
    owner = bearer(sign(claims(workspace)))
    got = await rsa_client.get(f"/api/v2/conversations/{parent}", headers=owner)
    assert got.status_code == 200
    assert got.json()["version"] == 1
    children = await rsa_client.get(f"/api/v2/conversations/{parent}/children", headers=owner)
    assert children.json()["items"] == []


async def test_create_in_another_workspace_is_impossible(
    rsa_client: httpx.AsyncClient, workspace: str
) -> None:
    """The workspace comes from the token only: a body cannot name another one."""
    response = await rsa_client.post(
        "/api/v2/conversations",
        json={"subject": "x", "workspace_id": "ws_victim"},
        headers=bearer(sign(claims(workspace))),
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "workspace_id"]


async def test_hs256_token_with_the_shared_secret_still_works(
    rsa_client: httpx.AsyncClient, workspace: str
) -> None:
    """Both key types configured: HS256 uses the secret, RS256 the public key."""
    token = sign(claims(workspace), TEST_SECRET, "HS256")
    response = await rsa_client.post(
        "/api/v2/conversations", json={"subject": "x"}, headers=bearer(token)
    )
    assert response.status_code == 201, response.text
