"""FastAPI dependencies that turn the Authorization header into a Principal with a scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from aurion.auth.principal import READ, WRITE, Principal
from aurion.errors import InsufficientScope, InvalidToken, NotAuthenticated

# Declares the scheme in OpenAPI (and the docs page's Authorize button); checks are ours.
bearer_scheme = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="A JWT with `sub`, `exp`, the workspace claim and a `scope` claim.",
)


def _challenge(**params: str) -> dict[str, str]:
    value = 'Bearer realm="aurion"'
    for key, item in params.items():
        value += f', {key}="{item}"'
    return {"WWW-Authenticate": value}


def authenticate(request: Request) -> Principal:
    """The caller's principal, from a verified bearer token."""
    header = request.headers.get("authorization")
    if not header:
        raise NotAuthenticated(headers=_challenge())
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise NotAuthenticated(
            "The Authorization header must be 'Bearer <token>'.", headers=_challenge()
        )
    try:
        return request.app.state.verifier.verify(token)  # type: ignore[no-any-return]
    except InvalidToken as exc:
        exc.headers = _challenge(error="invalid_token", error_description=exc.message)
        raise


def require_scope(scope: str):  # type: ignore[no-untyped-def]
    def dependency(
        request: Request,
        _credentials: Annotated[object, Depends(bearer_scheme)],
    ) -> Principal:
        principal = authenticate(request)
        # For the access log (RequestContextMiddleware): which tenant this request acted for.
        request.state.workspace_id = principal.workspace_id
        if not principal.has_scope(scope):
            raise InsufficientScope(
                f"This operation needs the {scope} scope.",
                headers=_challenge(error="insufficient_scope", scope=scope),
            )
        return principal

    return dependency


ReadPrincipal = Annotated[Principal, Depends(require_scope(READ))]
WritePrincipal = Annotated[Principal, Depends(require_scope(WRITE))]

# The errors any authenticated operation can return (for OpenAPI ``responses``).
AUTH_ERRORS = (NotAuthenticated, InvalidToken, InsufficientScope)
