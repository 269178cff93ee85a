"""Token verification with every key source: secret, PEM, JWKS file, JWKS URL (issue #3).

The JWKS URL is served by a real HTTP server on 127.0.0.1, which counts its requests.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from aurion.auth.tokens import JWKS_REFETCH_INTERVAL_SECONDS, TokenVerifier
from aurion.errors import InvalidToken
from aurion.settings import Settings
from tests.security.keys import (
    EC_PRIVATE,
    EC_PUBLIC,
    RSA2_PRIVATE,
    RSA2_PUBLIC,
    RSA_PUBLIC,
    bearer,
    claims,
    hs256_with,
    public_jwk,
    sign,
    unsigned,
)
from tests.support import TEST_SECRET, make_settings, started_app


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"env": "test", "jwt_secret": None}
    values.update(overrides)
    return Settings(**values)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as info:
        await verifier.verify(token)
    return info.value.message


class TestPublicKey:
    async def test_rs256_with_a_pem_public_key(self) -> None:
        verifier = TokenVerifier(settings(jwt_public_key=RSA_PUBLIC))
        principal = await verifier.verify(sign(claims("ws_a")))
        assert principal.workspace_id == "ws_a"
        assert principal.subject == "agent-1"
        assert principal.scopes == {"conversations:read", "conversations:write"}

    async def test_es256_with_a_pem_public_key(self) -> None:
        verifier = TokenVerifier(settings(jwt_public_key=EC_PUBLIC))
        principal = await verifier.verify(sign(claims("ws_e"), EC_PRIVATE, "ES256"))
        assert principal.workspace_id == "ws_e"

    async def test_a_token_signed_by_another_key_is_refused(self) -> None:
        verifier = TokenVerifier(settings(jwt_public_key=RSA_PUBLIC))
        assert await refused(verifier, sign(claims("w"), RSA2_PRIVATE)) == (
            "The token's signature is invalid."
        )

    async def test_key_type_must_match_the_algorithm(self) -> None:
        """An ES256 token is not checked against an RSA key (nor the reverse)."""
        rsa_only = TokenVerifier(settings(jwt_public_key=RSA_PUBLIC))
        ec_only = TokenVerifier(settings(jwt_public_key=EC_PUBLIC))
        assert await refused(rsa_only, sign(claims("w"), EC_PRIVATE, "ES256"))
        assert await refused(ec_only, sign(claims("w")))

    async def test_hs256_is_never_verified_with_the_public_key(self) -> None:
        """Algorithm confusion: HS256 'signed' with the public PEM, no secret configured."""
        verifier = TokenVerifier(settings(jwt_public_key=RSA_PUBLIC))
        token = hs256_with(RSA_PUBLIC.encode(), claims("w"))
        assert await refused(verifier, token) == "The token's algorithm is not accepted."

    async def test_alg_none_is_refused_whatever_the_allow_list(self) -> None:
        verifier = TokenVerifier(settings(jwt_secret=TEST_SECRET, jwt_public_key=RSA_PUBLIC))
        assert await refused(verifier, unsigned(claims("w"))) == (
            "The token's algorithm is not accepted."
        )
        with pytest.raises(ValueError, match="NONE"):
            Settings(jwt_algorithms=["none", "HS256"])

    async def test_the_allow_list_is_enforced(self) -> None:
        verifier = TokenVerifier(
            settings(jwt_secret=TEST_SECRET, jwt_public_key=RSA_PUBLIC, jwt_algorithms=["RS256"])
        )
        assert (await verifier.verify(sign(claims("w")))).workspace_id == "w"
        hs = sign(claims("w"), TEST_SECRET, "HS256")
        assert await refused(verifier, hs) == "The token's algorithm is not accepted."
        rs512 = sign(claims("w"), alg="RS512")
        assert await refused(verifier, rs512) == "The token's algorithm is not accepted."

    async def test_algorithms_accept_a_comma_separated_environment_value(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AURION_JWT_ALGORITHMS", "rs256, ES256")
        assert Settings().jwt_algorithms == ["RS256", "ES256"]


class TestClaims:
    async def test_leeway_is_30_seconds_for_exp_and_nbf(self) -> None:
        verifier = TokenVerifier(settings(jwt_public_key=RSA_PUBLIC))
        now = int(time.time())
        assert await verifier.verify(sign(claims("w", exp=now - 20)))
        assert await verifier.verify(sign(claims("w", nbf=now + 20)))
        assert await refused(verifier, sign(claims("w", exp=now - 40))) == "The token has expired."
        assert await refused(verifier, sign(claims("w", nbf=now + 40))) == (
            "The token is not yet valid."
        )

    async def test_issuer_and_audience_are_ignored_when_not_configured(self) -> None:
        verifier = TokenVerifier(settings(jwt_public_key=RSA_PUBLIC))
        assert await verifier.verify(sign(claims("w", iss="anyone", aud="anything")))

    async def test_audience_may_be_a_list(self) -> None:
        verifier = TokenVerifier(settings(jwt_public_key=RSA_PUBLIC, jwt_audience="aurion-api"))
        assert await verifier.verify(sign(claims("w", aud=["other", "aurion-api"])))
        assert "audience" in await refused(verifier, sign(claims("w", aud=["other"])))

    @pytest.mark.parametrize(
        ("extra", "reason"),
        [
            ({"sub": ""}, "sub"),
            ({"sub": 42}, "sub"),
            ({"sub": "a\x00b"}, "forbidden characters"),
            ({"workspace_id": ""}, "workspace_id"),
            ({"workspace_id": ["ws"]}, "workspace_id"),
            ({"workspace_id": "w" * 256}, "workspace_id"),
            ({"workspace_id": "ws\nx"}, "forbidden characters"),
            ({"exp": "tomorrow"}, "invalid"),
        ],
    )
    async def test_malformed_claims_are_refused(self, extra: dict[str, Any], reason: str) -> None:
        verifier = TokenVerifier(settings(jwt_public_key=RSA_PUBLIC))
        assert reason in await refused(verifier, sign(claims("w", **extra)))

    async def test_workspace_claim_name_is_configurable(self) -> None:
        verifier = TokenVerifier(settings(jwt_public_key=RSA_PUBLIC, jwt_workspace_claim="tid"))
        principal = await verifier.verify(sign(claims("ignored", tid="tenant-7")))
        assert principal.workspace_id == "tenant-7"
        assert "tid" in await refused(verifier, sign(claims("w")))

    async def test_scp_list_and_scope_string_both_count(self) -> None:
        verifier = TokenVerifier(settings(jwt_public_key=RSA_PUBLIC))
        token = sign(claims("w", scope=None, scp=["conversations:read"]))
        assert (await verifier.verify(token)).scopes == {"conversations:read"}

    async def test_tokens_over_8_kib_are_refused_before_parsing(self) -> None:
        verifier = TokenVerifier(settings(jwt_public_key=RSA_PUBLIC))
        big = sign(claims("w", pad="x" * 8200))
        assert len(big) > 8192
        assert await refused(verifier, big) == "The token is too large."
        fits = sign(claims("w", pad="x" * 5000))
        assert await verifier.verify(fits)

    @pytest.mark.parametrize(
        "token",
        ["", ".", "..", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30.", "e30.e30.e30", "W10.e30.AA",
         "bnVsbA.e30.AA", "eyJhbGciOjF9.e30.AA", "eyJhbGciOiJSUzI1NiIsImtpZCI6MX0.e30.AA",
         "\x00\x01", "é.é.é"],
    )  # fmt: skip
    async def test_garbage_is_an_invalid_token_never_a_crash(self, token: str) -> None:
        verifier = TokenVerifier(settings(jwt_secret=TEST_SECRET, jwt_public_key=RSA_PUBLIC))
        assert await refused(verifier, token)


def jwks(*keys: dict[str, Any]) -> dict[str, Any]:
    return {"keys": list(keys)}


class TestJwksFile:
    async def test_keys_are_chosen_by_kid(self, tmp_path: Path) -> None:
        path = tmp_path / "jwks.json"
        path.write_text(
            json.dumps(
                jwks(
                    public_jwk(RSA_PUBLIC, "RS256", "rsa-1"),
                    public_jwk(RSA2_PUBLIC, "RS256", "rsa-2"),
                    public_jwk(EC_PUBLIC, "ES256", "ec-1"),
                )
            )
        )
        verifier = TokenVerifier(settings(jwks_file=str(path)))
        assert await verifier.verify(sign(claims("w1"), kid="rsa-1"))
        assert await verifier.verify(sign(claims("w2"), RSA2_PRIVATE, kid="rsa-2"))
        assert await verifier.verify(sign(claims("w3"), EC_PRIVATE, "ES256", kid="ec-1"))
        # A kid naming the wrong key fails on the signature.
        wrong = sign(claims("w4"), RSA2_PRIVATE, kid="rsa-1")
        assert await refused(verifier, wrong) == "The token's signature is invalid."
        # No kid: every key of the right type is tried.
        assert await verifier.verify(sign(claims("w5"), RSA2_PRIVATE))

    async def test_symmetric_keys_in_a_jwks_are_ignored(self, tmp_path: Path) -> None:
        path = tmp_path / "jwks.json"
        oct_key = {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0", "alg": "HS256"}
        path.write_text(json.dumps(jwks(oct_key)))
        verifier = TokenVerifier(settings(jwks_file=str(path)))
        token = hs256_with(b"secret", claims("w"))
        assert await refused(verifier, token) == "The token's algorithm is not accepted."

    async def test_a_rotated_file_is_reread_at_most_once_a_minute(self, tmp_path: Path) -> None:
        path = tmp_path / "jwks.json"
        path.write_text(json.dumps(jwks(public_jwk(RSA_PUBLIC, "RS256", "old"))))
        clock = Clock()
        verifier = TokenVerifier(settings(jwks_file=str(path)), clock=clock)
        assert await verifier.verify(sign(claims("w"), kid="old"))
        path.write_text(json.dumps(jwks(public_jwk(RSA2_PUBLIC, "RS256", "new"))))
        new_token = sign(claims("w"), RSA2_PRIVATE, kid="new")
        # Within the minute the unknown kid does not trigger a reload...
        clock.now += 10
        assert await refused(verifier, new_token) == "The token's signing key is unknown."
        assert verifier.jwks.fetches == 1
        # ...after it, the first unknown kid does.
        clock.now += JWKS_REFETCH_INTERVAL_SECONDS
        assert await verifier.verify(new_token)
        assert verifier.jwks.fetches == 2


class JwksServer:
    """A real HTTP server serving a JWKS document; counts requests, can be slow or broken."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = jwks()
        self.requests = 0
        self.delay = 0.0
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                time.sleep(outer.delay)
                body = json.dumps(outer.document).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> JwksServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    with JwksServer() as server:
        yield server


class TestJwksUrl:
    async def test_keys_are_fetched_once_and_cached(self, jwks_server: JwksServer) -> None:
        jwks_server.document = jwks(public_jwk(RSA_PUBLIC, "RS256", "k1"))
        verifier = TokenVerifier(settings(jwks_url=jwks_server.url))
        for n in range(5):
            assert await verifier.verify(sign(claims(f"w{n}"), kid="k1"))
        assert jwks_server.requests == 1

    async def test_unknown_kid_refetches_at_most_once_a_minute(
        self, jwks_server: JwksServer
    ) -> None:
        jwks_server.document = jwks(public_jwk(RSA_PUBLIC, "RS256", "k1"))
        clock = Clock()
        verifier = TokenVerifier(settings(jwks_url=jwks_server.url), clock=clock)
        assert await verifier.verify(sign(claims("w"), kid="k1"))
        assert jwks_server.requests == 1
        # An attacker sprays unknown kids: no request reaches the identity provider.
        for n in range(20):
            clock.now += 1
            assert await refused(verifier, sign(claims("w"), kid=f"bogus-{n}"))
        assert jwks_server.requests == 1
        # The provider rotates; a minute after the last fetch the new kid is picked up.
        jwks_server.document = jwks(
            public_jwk(RSA_PUBLIC, "RS256", "k1"), public_jwk(RSA2_PUBLIC, "RS256", "k2")
        )
        clock.now += JWKS_REFETCH_INTERVAL_SECONDS
        assert await verifier.verify(sign(claims("w"), RSA2_PRIVATE, kid="k2"))
        assert jwks_server.requests == 2
        # Known kids never trigger a fetch.
        assert await verifier.verify(sign(claims("w2"), kid="k1"))
        assert jwks_server.requests == 2

    async def test_concurrent_unknown_kids_share_one_fetch(self, jwks_server: JwksServer) -> None:
        jwks_server.document = jwks(public_jwk(RSA_PUBLIC, "RS256", "k1"))
        jwks_server.delay = 0.2
        verifier = TokenVerifier(settings(jwks_url=jwks_server.url))
        tokens = [sign(claims(f"w{n}"), kid="k1") for n in range(10)]
        results = await asyncio.gather(*(verifier.verify(t) for t in tokens))
        assert {p.workspace_id for p in results} == {f"w{n}" for n in range(10)}
        assert jwks_server.requests == 1

    async def test_the_fetch_does_not_block_the_event_loop(self, jwks_server: JwksServer) -> None:
        jwks_server.document = jwks(public_jwk(RSA_PUBLIC, "RS256", "k1"))
        jwks_server.delay = 0.5
        verifier = TokenVerifier(settings(jwks_url=jwks_server.url))
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        try:
            assert await verifier.verify(sign(claims("w"), kid="k1"))
        finally:
            task.cancel()
        # The loop kept running while the key server took 0.5 s to answer.
        assert ticks >= 20

    async def test_an_unreachable_key_server_is_a_401_not_a_crash(
        self, jwks_server: JwksServer
    ) -> None:
        jwks_server.status = 500
        verifier = TokenVerifier(settings(jwks_url=jwks_server.url))
        assert await refused(verifier, sign(claims("w"), kid="k1")) == (
            "The token's signing key is unknown."
        )
        closed = TokenVerifier(settings(jwks_url="http://127.0.0.1:9/jwks.json"))
        assert await refused(closed, sign(claims("w"), kid="k1"))

    async def test_end_to_end_with_the_api(
        self, jwks_server: JwksServer, database_url: str, workspace: str
    ) -> None:
        jwks_server.document = jwks(public_jwk(EC_PUBLIC, "ES256", "ec"))
        app_settings = make_settings(database_url, jwt_secret=None, jwks_url=jwks_server.url)
        async for app in started_app(app_settings):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                token = sign(claims(workspace), EC_PRIVATE, "ES256", kid="ec")
                created = await client.post(
                    "/api/v2/conversations", json={"subject": "Hi"}, headers=bearer(token)
                )
                assert created.status_code == 201, created.text
                hs = sign(claims(workspace), TEST_SECRET, "HS256")
                refused_hs = await client.get(
                    f"/api/v2/conversations/{created.json()['id']}", headers=bearer(hs)
                )
                assert refused_hs.status_code == 401
                assert 'error="invalid_token"' in refused_hs.headers["www-authenticate"]
