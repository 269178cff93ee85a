"""Signing keys and token builders for the security tests (real RSA/EC keys, real signatures)."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import time
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk, jwt

from aurion.auth.principal import READ_WRITE

ISSUER = "https://id.aurion.test/"
AUDIENCE = "aurion-api"


def _pems(private: Any) -> tuple[str, str]:
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private_pem, public_pem


RSA_PRIVATE, RSA_PUBLIC = _pems(rsa.generate_private_key(public_exponent=65537, key_size=2048))
RSA2_PRIVATE, RSA2_PUBLIC = _pems(rsa.generate_private_key(public_exponent=65537, key_size=2048))
EC_PRIVATE, EC_PUBLIC = _pems(ec.generate_private_key(ec.SECP256R1()))


def public_jwk(public_pem: str, alg: str, kid: str) -> dict[str, Any]:
    data: dict[str, Any] = jwk.construct(public_pem, alg).to_dict()
    data.update(kid=kid, use="sig", alg=alg)
    return data


def claims(workspace: str, scope: str | None = READ_WRITE, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "agent-1",
        "workspace_id": workspace,
        "scope": scope,
        "iat": now,
        "exp": now + 600,
        "iss": ISSUER,
        "aud": AUDIENCE,
    }
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


@functools.cache
def _signer(key: str, alg: str) -> Any:
    # Loading a PEM private key validates it (slow for RSA): once per key, not per token.
    return jwk.construct(key, alg)


def sign(
    payload: dict[str, Any], key: str = RSA_PRIVATE, alg: str = "RS256", kid: str | None = None
) -> str:
    headers = {"kid": kid} if kid else None
    return str(jwt.encode(payload, _signer(key, alg), algorithm=alg, headers=headers))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(payload: dict[str, Any]) -> str:
    """An ``alg: none`` token: header and claims, empty signature."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(payload).encode())}."


def hs256_with(secret: bytes, payload: dict[str, Any]) -> str:
    """HS256 signed with any bytes: python-jose refuses a PEM as HMAC key; attackers do not."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{_b64(json.dumps(payload).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
