"""Token verification and minting; the only module that imports jose.

Keys, by algorithm family:

* HS256/384/512: ``AURION_JWT_SECRET``, and nothing else. A public key is never used as an
  HMAC secret (the classic algorithm-confusion attack).
* RS*/PS*/ES*: ``AURION_JWT_PUBLIC_KEY`` (PEM) and/or a JWKS (``AURION_JWKS_FILE``,
  ``AURION_JWKS_URL``). JWKS keys are cached; a token naming an unknown ``kid`` triggers at most
  one reload a minute, and the reload never blocks the event loop (async HTTP with a timeout,
  file reads in a worker thread).
* ``none`` is never accepted, whatever the allow-list says.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from jose import jwk, jwt
from jose.backends.base import Key
from jose.exceptions import JOSEError

from aurion.auth.principal import Principal
from aurion.errors import InvalidToken
from aurion.settings import Settings

logger = logging.getLogger("aurion.auth")

MAX_TOKEN_BYTES = 8 * 1024
JWKS_REFETCH_INTERVAL_SECONDS = 60.0
JWKS_MAX_AGE_SECONDS = 3600.0
JWKS_FETCH_TIMEOUT_SECONDS = 5.0
JWKS_MAX_BYTES = 512 * 1024

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
SUPPORTED_ALGORITHMS = HMAC_ALGORITHMS | RSA_ALGORITHMS | frozenset(EC_ALGORITHMS)

_NOT_ACCEPTED = "The token's algorithm is not accepted."


class JwksStore:
    """The JWKS keys by ``kid``: loaded from a file and/or a URL, reloaded on an unknown kid."""

    def __init__(
        self,
        url: str | None,
        file: str | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.file = file
        self._clock = clock
        self._keys: list[dict[str, Any]] = []
        self._constructed: dict[tuple[int, str], Key] = {}
        self._loaded_at: float | None = None
        self._last_attempt: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    @property
    def configured(self) -> bool:
        return bool(self.url or self.file)

    def keys(self, kid: str | None, alg: str) -> list[Key]:
        """Keys that may verify ``alg`` with this kid (any kid when the token names none)."""
        found = []
        for index, jwk_dict in enumerate(self._keys):
            if (kid is not None and jwk_dict.get("kid") != kid) or not _fits(alg, jwk_dict):
                continue
            key = self._constructed.get((index, alg))
            if key is None:
                try:
                    key = jwk.construct(jwk_dict, alg)
                except Exception:  # malformed key material: unusable, like a missing key
                    continue
                self._constructed[(index, alg)] = key
            found.append(key)
        return found

    def has_kid(self, kid: str) -> bool:
        return any(k.get("kid") == kid for k in self._keys)

    def stale(self) -> bool:
        if self._loaded_at is None:
            return True
        return self._clock() - self._loaded_at > JWKS_MAX_AGE_SECONDS

    async def refresh(self) -> bool:
        """Reload the keys unless that was tried less than a minute ago; True if reloaded."""
        async with self._lock:
            now = self._clock()
            if (
                self._last_attempt is not None
                and now - self._last_attempt < JWKS_REFETCH_INTERVAL_SECONDS
            ):
                return False
            self._last_attempt = now
            self.fetches += 1
            keys: list[dict[str, Any]] = []
            try:
                if self.file:
                    keys += _signing_keys(await asyncio.to_thread(_read_json_file, self.file))
                if self.url:
                    keys += _signing_keys(await _fetch_json(self.url))
            except Exception as exc:  # the old keys stay in use; the reason goes to the log
                logger.warning("JWKS reload failed: %s", _describe(exc))
                return False
            self._keys = keys
            self._constructed = {}
            self._loaded_at = now
            return True


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _read_json_file(path: str) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


async def _fetch_json(url: str) -> Any:
    async with (
        httpx.AsyncClient(timeout=JWKS_FETCH_TIMEOUT_SECONDS, follow_redirects=False) as client,
        client.stream("GET", url, headers={"Accept": "application/json"}) as response,
    ):
        response.raise_for_status()
        body = b""
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > JWKS_MAX_BYTES:
                raise ValueError(f"the JWKS document exceeds {JWKS_MAX_BYTES} bytes")
    return json.loads(body)


def _signing_keys(document: Any) -> list[dict[str, Any]]:
    """The asymmetric signature keys of a JWKS document (symmetric ``oct`` keys are ignored)."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    return [
        key
        for key in document["keys"]
        if isinstance(key, dict)
        and key.get("kty") in ("RSA", "EC")
        and key.get("use", "sig") == "sig"
    ]


def _fits(alg: str, key: dict[str, Any]) -> bool:
    """Whether a JWK may verify ``alg`` (its type, curve and declared alg agree)."""
    if key.get("alg") not in (None, alg):
        return False
    if alg in RSA_ALGORITHMS:
        return key.get("kty") == "RSA"
    if alg in EC_ALGORITHMS:
        return key.get("kty") == "EC" and key.get("crv") == EC_ALGORITHMS[alg]
    return False


class TokenVerifier:
    """Verifies bearer tokens against the configured keys and claim rules.

    A verified token is remembered until it expires, so a client that reuses its token pays for
    the signature check once, not on every request.
    """

    def __init__(
        self,
        settings: Settings,
        cache_size: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        allowed = {a.upper() for a in settings.jwt_algorithms}
        self.algorithms = frozenset(allowed & SUPPORTED_ALGORITHMS)
        self.jwks = JwksStore(settings.jwks_url, settings.jwks_file, clock)
        self._keys: dict[tuple[str, str], Key] = {}
        self._cache: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._cache_size = cache_size

    def _key(self, name: str, material: str, alg: str) -> Key | None:
        key = self._keys.get((name, alg))
        if key is None:
            try:
                key = jwk.construct(material, alg)
            except Exception:  # a key that cannot serve this algorithm (wrong type or curve)
                return None
            self._keys[(name, alg)] = key
        return key

    async def _candidate_keys(self, alg: str, kid: str | None) -> list[Key]:
        if alg not in self.algorithms:
            raise InvalidToken(_NOT_ACCEPTED)
        if alg in HMAC_ALGORITHMS:
            # Only the shared secret verifies HS*: never a public key, never a JWKS entry.
            secret = self.settings.jwt_secret
            key = self._key("secret", secret, alg) if secret else None
            if key is None:
                raise InvalidToken(_NOT_ACCEPTED)
            return [key]
        pem = self.settings.jwt_public_key
        if not (pem or self.jwks.configured):
            raise InvalidToken(_NOT_ACCEPTED)
        if self.jwks.configured and (
            self.jwks.stale() or (kid is not None and not self.jwks.has_kid(kid))
        ):
            await self.jwks.refresh()
        keys = self.jwks.keys(kid, alg)
        if not keys and pem:
            key = self._key("pem", pem, alg)
            if key is not None:
                keys.append(key)
        if not keys:
            raise InvalidToken("The token's signing key is unknown.")
        return keys

    async def verify(self, token: str) -> Principal:
        """The principal a valid token stands for; ``InvalidToken`` otherwise."""
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("The token is too large.")
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None:
            exp, principal = cached
            if now <= exp + self.settings.jwt_leeway_seconds:
                return principal
            del self._cache[token]
        try:
            header = jwt.get_unverified_header(token)
        except Exception as exc:
            raise InvalidToken("The token is malformed.") from exc
        if not isinstance(header, dict):
            raise InvalidToken("The token is malformed.")
        alg = header.get("alg")
        kid = header.get("kid")
        if not isinstance(alg, str) or not isinstance(kid, str | None):
            raise InvalidToken("The token is malformed.")
        keys = await self._candidate_keys(alg, kid)
        claims = self._decode(token, keys, alg)
        principal = self._principal(claims)
        # Any nbf has passed by now, so the token stays valid until exp (plus leeway).
        self._cache[token] = (float(claims["exp"]), principal)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return principal

    def _decode(self, token: str, keys: list[Key], alg: str) -> dict[str, Any]:
        settings = self.settings
        options = {
            "leeway": settings.jwt_leeway_seconds,
            "require_exp": True,
            "require_sub": True,
            "verify_aud": settings.jwt_audience is not None,
            "require_aud": settings.jwt_audience is not None,
            "verify_iss": settings.jwt_issuer is not None,
            "require_iss": settings.jwt_issuer is not None,
        }
        try:
            claims = jwt.decode(
                token,
                keys,
                algorithms=[alg],
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                options=options,
            )
        except JOSEError as exc:
            raise InvalidToken(_reason(exc)) from exc
        except Exception as exc:  # a parser fed hostile input must not become a 500
            raise InvalidToken("The token is malformed.") from exc
        if not isinstance(claims, dict):
            raise InvalidToken("The token is malformed.")
        if isinstance(claims.get("exp"), bool) or not isinstance(claims.get("exp"), int | float):
            raise InvalidToken("The token's exp claim is invalid.")
        return claims

    def _principal(self, claims: dict[str, Any]) -> Principal:
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 255:
            raise InvalidToken("The token's sub claim is missing or invalid.")
        claim = self.settings.jwt_workspace_claim
        workspace = claims.get(claim)
        if isinstance(workspace, int) and not isinstance(workspace, bool):
            workspace = str(workspace)
        if not isinstance(workspace, str) or not workspace or len(workspace) > 255:
            raise InvalidToken(f"The token's {claim} claim is missing or invalid.")
        if not (sub.isprintable() and workspace.isprintable()):
            raise InvalidToken("The token's claims contain forbidden characters.")
        return Principal(subject=sub, workspace_id=workspace, scopes=_scopes(claims))


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    scopes: set[str] = set()
    scope = claims.get("scope")
    if isinstance(scope, str):
        scopes.update(scope.split())
    scp = claims.get("scp")
    if isinstance(scp, list):
        scopes.update(s for s in scp if isinstance(s, str))
    elif isinstance(scp, str):
        scopes.update(scp.split())
    return frozenset(scopes)


def _reason(exc: JOSEError) -> str:
    text = str(exc).lower()
    if "expired" in text:
        return "The token has expired."
    if "not yet valid" in text or "nbf" in text:
        return "The token is not yet valid."
    if "audience" in text or '"aud"' in text:
        return "The token's audience is not accepted."
    if "issuer" in text or '"iss"' in text:
        return "The token's issuer is not accepted."
    if '"sub"' in text or "subject" in text:
        return "The token's sub claim is missing or invalid."
    if '"exp"' in text:
        return "The token's exp claim is missing or invalid."
    if "signature" in text:
        return "The token's signature is invalid."
    return "The token is invalid."


def mint_token(
    settings: Settings,
    *,
    workspace: str,
    subject: str,
    scopes: str,
    ttl_seconds: int = 24 * 3600,
) -> str:
    """An HS256 token signed with the configured secret (local use, tests, benchmarks)."""
    if not settings.jwt_secret:
        raise RuntimeError("AURION_JWT_SECRET is not set; cannot mint tokens")
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        settings.jwt_workspace_claim: workspace,
        "scope": scopes,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return str(jwt.encode(claims, settings.jwt_secret, algorithm="HS256"))
