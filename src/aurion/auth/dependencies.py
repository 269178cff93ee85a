"""FastAPI dependencies that turn the Authorization header into a Principal with a scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from aurion.auth.principal import EVENTS_READ, READ, WEBHOOKS_WRITE, WRITE, Principal
from aurion.auth.tokens import TokenVerifier
from aurion.errors import InsufficientScope, InvalidToken, NotAuthenticated

REALM = "aurion"

# The scheme as OpenAPI declares it (and the docs page's Authorize button): BearerScope below.
SCHEME_NAME = "HTTPBearer"
SCHEME_DESCRIPTION = "A JWT with `sub`, `exp`, the workspace claim and a `scope` claim."


def _quoted(value: str) -> str:
    # RFC 6750 §3: error_description and scope use printable ASCII without '"' and '\\'.
    return "".join(c for c in value if " " <= c <= "~" and c not in '"\\')


def challenge(**params: str) -> dict[str, str]:
    """The RFC 6750 ``WWW-Authenticate`` header with the given auth-params."""
    value = f'Bearer realm="{REALM}"'
    for key, item in params.items():
        value += f', {key}="{_quoted(item)}"'
    return {"WWW-Authenticate": value}


async def authenticate(request: Request) -> Principal:
    """The caller's principal, from a verified bearer token."""
    header = request.headers.get("authorization")
    if not header:
        raise NotAuthenticated(headers=challenge())
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise NotAuthenticated(
            "The Authorization header must be 'Bearer <token>'.", headers=challenge()
        )
    try:
        verifier: TokenVerifier = request.app.state.verifier
        principal = await verifier.verify(token)
    except InvalidToken as exc:
        exc.headers = challenge(error="invalid_token", error_description=exc.message)
        raise
    # For the access log: which tenant a request acted for.
    request.scope.setdefault("state", {})["workspace_id"] = principal.workspace_id
    return principal


class BearerScope(HTTPBearer):
    """A dependency: the verified principal, which must hold ``scope`` (403 otherwise).

    An ``HTTPBearer``, so FastAPI declares the bearer scheme in OpenAPI for every operation that
    depends on it; but none of HTTPBearer's own parsing runs: ``authenticate`` checks the
    header. One dependency, where a scheme declared as a sub-dependency of the scope check
    made two: FastAPI spends about 50 µs of CPU solving each dependency of a request
    (bench/inprocess.py).
    """

    def __init__(self, scope: str) -> None:
        super().__init__(
            auto_error=False,
            bearerFormat="JWT",
            scheme_name=SCHEME_NAME,
            description=SCHEME_DESCRIPTION,
        )
        self.scope = scope

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        principal = await authenticate(request)
        if not principal.has_scope(self.scope):
            raise InsufficientScope(
                f"This operation needs the {self.scope} scope.",
                headers=challenge(error="insufficient_scope", scope=self.scope),
            )
        return principal


ReadPrincipal = Annotated[Principal, Depends(BearerScope(READ))]
WritePrincipal = Annotated[Principal, Depends(BearerScope(WRITE))]
EventsPrincipal = Annotated[Principal, Depends(BearerScope(EVENTS_READ))]
WebhooksPrincipal = Annotated[Principal, Depends(BearerScope(WEBHOOKS_WRITE))]

# The errors any authenticated operation can return (for OpenAPI ``responses``).
AUTH_ERRORS = (NotAuthenticated, InvalidToken, InsufficientScope)
