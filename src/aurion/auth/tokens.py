"""Token verification and minting; the only module that imports jose."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from jose import jwt
from jose.exceptions import JOSEError

from aurion.auth.principal import Principal
from aurion.errors import InvalidToken
from aurion.settings import Settings

MAX_TOKEN_BYTES = 8 * 1024
_SYMMETRIC = {"HS256", "HS384", "HS512"}
_ASYMMETRIC = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"}


class TokenVerifier:
    """Verifies bearer tokens against the configured keys and claim rules.

    A verified token is remembered until it expires, so a client that reuses its token pays for
    the signature check once, not on every request.
    """

    def __init__(self, settings: Settings, cache_size: int = 4096) -> None:
        self.settings = settings
        self.algorithms = [a for a in settings.jwt_algorithms if a.upper() != "NONE"]
        self._cache: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._cache_size = cache_size

    def _key_for(self, alg: str) -> Any:
        if alg not in self.algorithms:
            raise InvalidToken("The token's algorithm is not accepted.")
        if alg in _SYMMETRIC:
            # A public key is never used as an HMAC secret (the classic algorithm-confusion bug).
            if not self.settings.jwt_secret:
                raise InvalidToken("The token's algorithm is not accepted.")
            return self.settings.jwt_secret
        if alg in _ASYMMETRIC:
            if self.settings.jwt_public_key:
                return self.settings.jwt_public_key
            raise InvalidToken("The token's algorithm is not accepted.")
        raise InvalidToken("The token's algorithm is not accepted.")

    def verify(self, token: str) -> Principal:
        """The principal a valid token stands for; ``InvalidToken`` otherwise."""
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None:
            exp, principal = cached
            if now <= exp + self.settings.jwt_leeway_seconds:
                return principal
            del self._cache[token]
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("The token is too large.")
        try:
            header = jwt.get_unverified_header(token)
        except JOSEError as exc:
            raise InvalidToken("The token is malformed.") from exc
        alg = str(header.get("alg", ""))
        key = self._key_for(alg)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                options={
                    "leeway": self.settings.jwt_leeway_seconds,
                    "require_exp": True,
                    "require_sub": True,
                    "verify_aud": self.settings.jwt_audience is not None,
                    "verify_iss": self.settings.jwt_issuer is not None,
                },
            )
        except JOSEError as exc:
            raise InvalidToken(_reason(exc)) from exc
        principal = self._principal(claims)
        # Any nbf has passed by now, so the token stays valid until exp (plus leeway).
        self._cache[token] = (float(claims["exp"]), principal)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return principal

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
        if "\x00" in workspace or "\x00" in sub:
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
    if "audience" in text:
        return "The token's audience is not accepted."
    if "issuer" in text:
        return "The token's issuer is not accepted."
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
